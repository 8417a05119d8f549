"""What a prepared artefact was built from, and the folder it lives in.

A *fingerprint* is a plain JSON dict recorded in ``manifest.json`` ``meta.fingerprint``:

    {"kind": "distill", "format_version": 1,
     "sources":  {"source": {"path": "/data/grid", "files": 11, "bytes": 4.5e6, "listing_sha256": "..."}},
     "settings": {...the settings that change the output...},
     "teacher":  {"sha256": "..."} | None,            # the teacher file's bytes, whatever its format
     "inputs":   {"pairs": <the pair set's fingerprint>},   # artefacts this one is built from
     "about":    {"teacher_file": "..."},             # for people; not part of the digest
     "digest":   "<sha256 of everything above but `about`>"}

A source's listing is a stat walk (relative names, sizes, mtimes), never a read of the files, so a
corpus of a million files is listed in seconds; a long walk logs its progress. The teacher is
hashed from its file bytes (a few MB), so a retrained or converted teacher is a new input.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

# Bump when the layout of any shard set changes: older sets then no longer match and are rebuilt.
SHARD_FORMAT_VERSION = 1
PROGRESS_SECONDS = 5.0  # a listing slower than this logs how far it got, every this many seconds


def input_fingerprint(
    kind: str,
    *,
    sources: Mapping[str, str | Path | None] | None = None,
    settings: Mapping[str, Any] | None = None,
    teacher: str | Path | None = None,
    inputs: Mapping[str, Mapping[str, Any] | None] | None = None,
    format_version: int = SHARD_FORMAT_VERSION,
) -> dict[str, Any]:
    """The fingerprint (module docstring) of a ``kind`` artefact (``ferplus``, ``pairs``, ``distill``) built from
    ``sources`` (raw files or folders), ``settings``, ``teacher`` and ``inputs``; None values are recorded as None."""
    fingerprint: dict[str, Any] = {
        "kind": kind,
        "format_version": int(format_version),
        "sources": {name: (_listing(Path(path)) if path else None) for name, path in sorted((sources or {}).items())},
        "settings": json.loads(json.dumps(dict(settings or {}), sort_keys=True, default=str)),
        "teacher": {"sha256": file_sha256(teacher)} if teacher else None,
        "inputs": {name: dict(value) if value else None for name, value in sorted((inputs or {}).items())},
        "about": {"teacher_file": str(Path(teacher).resolve())} if teacher else {},
    }
    fingerprint["digest"] = fingerprint_digest(fingerprint)
    return fingerprint


def shard_folder(data_dir: str | Path, kind: str, stem: str, fingerprint: Mapping[str, Any]) -> Path:
    """``<data_dir>/<kind>/<readable-stem>-<digest[:8]>``: one folder per distinct set of inputs."""
    readable = re.sub(r"[^A-Za-z0-9_.-]+", "-", str(stem)).strip("-.") or kind
    return Path(data_dir) / kind / f"{readable}-{fingerprint['digest'][:8]}"


def fingerprint_digest(fingerprint: Mapping[str, Any]) -> str:
    body = {k: v for k, v in fingerprint.items() if k not in ("digest", "about")}
    return hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()


def file_sha256(path: str | Path) -> str:
    """sha256 of a file's bytes (teacher files: .pt, .safetensors, .ckpt, .pth alike)."""
    from crossmodal.models.modelfile import file_digest

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"cannot fingerprint {path}: no such file")
    return file_digest(path)


def _listing(path: Path) -> dict[str, Any]:
    """Resolved path, file count, total bytes and a sha256 over ``relative name, size, mtime`` lines."""
    resolved = path.resolve()
    if not resolved.exists():
        raise FileNotFoundError(f"cannot fingerprint {path}: it does not exist")
    digest = hashlib.sha256()
    files = total = 0
    if resolved.is_file():
        stat = resolved.stat()
        digest.update(f"{resolved.name}\t{stat.st_size}\t{stat.st_mtime_ns}\n".encode())
        return {"path": str(resolved), "files": 1, "bytes": stat.st_size, "listing_sha256": digest.hexdigest()}
    started = last_report = time.monotonic()
    seen_dirs: set[tuple[int, int]] = set()
    for folder, dirs, names in os.walk(resolved, followlinks=True):
        stat = os.stat(folder)
        if (stat.st_dev, stat.st_ino) in seen_dirs:  # a symlink loop
            dirs[:] = []
            continue
        seen_dirs.add((stat.st_dev, stat.st_ino))
        dirs.sort()
        relative = os.path.relpath(folder, resolved)
        for name in sorted(names):
            try:
                stat = os.stat(os.path.join(folder, name))
            except OSError:  # a dangling symlink: listed by name, it is part of what the user handed us
                digest.update(f"{relative}/{name}\tmissing\n".encode())
                continue
            digest.update(f"{relative}/{name}\t{stat.st_size}\t{stat.st_mtime_ns}\n".encode())
            files += 1
            total += stat.st_size
        now = time.monotonic()
        if now - last_report > PROGRESS_SECONDS:
            last_report = now
            log.info("fingerprint: listing %s: %d files (%.1f GB) in %.0f s so far", resolved, files, total / 1e9, now - started)
    if time.monotonic() - started > PROGRESS_SECONDS:
        log.info("fingerprint: listed %s: %d files in %.0f s", resolved, files, time.monotonic() - started)
    return {"path": str(resolved), "files": files, "bytes": total, "listing_sha256": digest.hexdigest()}


def fingerprint_differences(old: Mapping[str, Any] | None, new: Mapping[str, Any] | None) -> list[str]:
    """Which inputs differ, one line each (``settings.cleaning: 'cntk' -> 'none'``)."""
    if not old:
        return ["the existing set records no input fingerprint (built before fingerprints, or by hand)"]
    if not new:
        return ["this run has no input fingerprint to compare"]
    flat_old, flat_new = _flatten(old), _flatten(new)
    lines = []
    for key in sorted(set(flat_old) | set(flat_new)):
        a, b = flat_old.get(key, "(absent)"), flat_new.get(key, "(absent)")
        if a != b:
            lines.append(f"{key}: {_short(a)} -> {_short(b)}")
    return lines or ["nothing but the digest (a different fingerprint recipe)"]


def _flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(node, Mapping):
        out: dict[str, Any] = {}
        for key, value in node.items():
            if key in ("digest", "about"):
                continue
            out.update(_flatten(value, f"{prefix}.{key}" if prefix else str(key)))
        return out
    return {prefix: node}


def _short(value: Any) -> str:
    text = json.dumps(value, default=str)
    return text[:13] + '..."' if re.fullmatch(r'"[0-9a-f]{32,}"', text) else text


def describe(fingerprint: Mapping[str, Any] | None, nested: bool = False) -> str:
    """One line for messages: kind, digest, sources, teacher, settings (those of inputs left out)."""
    if not fingerprint:
        return "no fingerprint"
    parts = [f"{fingerprint.get('kind')} {str(fingerprint.get('digest', ''))[:8]}"]
    for name, listing in (fingerprint.get("sources") or {}).items():
        if listing:
            parts.append(f"{name}={listing['path']} ({listing['files']} files, {listing['bytes'] / 1e6:.1f} MB)")
    for name, upstream in (fingerprint.get("inputs") or {}).items():
        if upstream:
            parts.append(f"{name}=[{describe(upstream, nested=True)}]")
    if fingerprint.get("teacher"):
        parts.append(f"teacher sha256 {fingerprint['teacher']['sha256'][:12]}")
    if fingerprint.get("settings") and not nested:
        parts.append("settings " + json.dumps(fingerprint["settings"], sort_keys=True, default=str))
    return ", ".join(parts)
