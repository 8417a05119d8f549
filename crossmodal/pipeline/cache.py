"""Reuse a prepared set only when it was built from the same inputs (docs/conventions.md, "Shard format").

Every builder calls :func:`claim` on its output folder, under :func:`crossmodal.pipeline.lock.folder_lock`:
a finished set of the same fingerprint is reused (under ``strict``, one that recorded skips is an error); an
unfinished one is stamped (``fingerprint.json``) and built, so a half-built one is never finished with
other inputs; anything else is an error showing both fingerprints, what differs and how to fix it.
"""
from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from crossmodal.pipeline.fingerprint import describe, fingerprint_differences
from crossmodal.utils.atomic import write_json

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
STAMP = "fingerprint.json"


class CacheMismatch(ValueError):
    """A folder holds a set built from other inputs than this run's."""


class CachedSkips(RuntimeError):
    """``strict=true`` and the reused set recorded skipped items."""


def read_manifest(folder: str | Path) -> dict[str, Any] | None:
    path = Path(folder) / MANIFEST
    if not path.exists():
        return None
    return json.loads(path.read_text())


def claim(
    folder: str | Path,
    fingerprint: Mapping[str, Any],
    *,
    strict: bool = False,
    named_by: str | None = None,
    what: str = "shard set",
    write_stamp: bool = True,
) -> bool:
    """True: ``folder`` holds a finished set of these inputs (reuse it). False: build it there.

    ``named_by``: the config key through which the user named the folder (for the message), or
    None for a folder named by :func:`~crossmodal.pipeline.fingerprint.shard_folder`.
    """
    folder = Path(folder)
    manifest = read_manifest(folder)
    if manifest is not None:
        stored = (manifest.get("meta") or {}).get("fingerprint")
        if stored and stored.get("digest") == fingerprint["digest"]:
            check_skips(folder, manifest, strict)
            log.info("%s: reusing %s (inputs match: fingerprint %s)", what, folder, fingerprint["digest"][:8])
            return True
        raise CacheMismatch(mismatch_message(folder, stored, fingerprint, named_by, what))
    if not write_stamp:  # another rank of the same run: rank 0 checks and stamps the unfinished folder
        return False
    stamp = folder / STAMP
    has_shards = folder.is_dir() and any(folder.glob("*.tar"))
    if stamp.exists():
        stored = json.loads(stamp.read_text())
        if stored.get("digest") != fingerprint["digest"] and has_shards:
            raise CacheMismatch(mismatch_message(folder, stored, fingerprint, named_by, what, finished=False))
    elif has_shards:
        raise CacheMismatch(mismatch_message(folder, None, fingerprint, named_by, what, finished=False))
    folder.mkdir(parents=True, exist_ok=True)
    write_json(stamp, dict(fingerprint))
    return False


def check_skips(folder: str | Path, manifest: Mapping[str, Any] | None, strict: bool) -> None:
    """``strict=true`` refuses a cached set whose manifest records skipped items."""
    if not strict or manifest is None:
        return
    counts = dict((manifest.get("skipped") or {}).get("counts") or {})
    meta = manifest.get("meta") or {}
    for reason, n in ((meta.get("read_skipped") or {}).get("counts") or {}).items():  # FER+ rows dropped while reading
        counts[reason] = counts.get(reason, 0) + n
    counts = {reason: n for reason, n in counts.items() if n and "(kept)" not in reason}
    if counts:
        examples = {**((meta.get("read_skipped") or {}).get("examples") or {}), **((manifest.get("skipped") or {}).get("examples") or {})}
        first = next((paths[0] for reason, paths in examples.items() if paths and reason in counts), None)
        raise CachedSkips(
            f"strict=true, but the cached shard set {folder} was built with skips: "
            + ", ".join(f"{n} {reason}" for reason, n in sorted(counts.items()))
            + (f" (e.g. {first})" if first else "")
            + ". Fix or remove those inputs and delete the folder to rebuild it under strict=true, or run with strict=false"
        )


def mismatch_message(
    folder: Path, stored: Mapping[str, Any] | None, wanted: Mapping[str, Any], named_by: str | None, what: str,
    finished: bool = True,
) -> str:
    held = "holds a" if finished else "holds an unfinished"
    lines = [
        f"{folder} {held} {what} built from other inputs than this run's, so it is not reused.",
        f"  in the folder: {describe(stored)}",
        f"  this run:      {describe(wanted)}",
        "  differences:   " + "; ".join(fingerprint_differences(stored, wanted)),
    ]
    if named_by:
        lines.append(f"Fix: point {named_by} at another folder (or leave it unset: the run then names the folder from its "
                     f"inputs and builds or finds the set there), or delete {folder} to rebuild it in place.")
    else:
        lines.append(f"Fix: delete {folder} (it was changed after it was built) and run again.")
    return "\n".join(lines)


def find_sets(kind_dir: str | Path, accept: Callable[[Mapping[str, Any]], bool]) -> list[tuple[Path, dict[str, Any]]]:
    """Finished sets under ``kind_dir`` (e.g. ``<data_dir>/distill``) whose fingerprint ``accept`` s."""
    found = []
    for manifest_path in sorted(Path(kind_dir).glob(f"*/{MANIFEST}")):
        try:
            fingerprint = (json.loads(manifest_path.read_text()).get("meta") or {}).get("fingerprint")
        except (OSError, ValueError):
            continue
        if fingerprint and accept(fingerprint):
            found.append((manifest_path.parent, fingerprint))
    return found


def note_unfingerprinted(kind_dir: str | Path, what: str) -> None:
    """Log the older sets (no fingerprint) beside a new one: they are not reused, and why."""
    old = [p.parent for p in sorted(Path(kind_dir).glob(f"*/{MANIFEST}"))
           if not (json.loads(p.read_text()).get("meta") or {}).get("fingerprint")]
    if old:
        log.info("%s: %d older set(s) in %s record no input fingerprint (%s) and are not reused: "
                 "what built them cannot be checked. Delete them when no longer needed",
                 what, len(old), kind_dir, ", ".join(p.name for p in old[:5]))
