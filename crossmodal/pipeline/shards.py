"""Shard sets: the format every prepared artefact is written in, and its manifest (docs/conventions.md,
"Shard format"). A shard is done only when its tar *and* its sidecar ``<name>.json`` exist, each renamed into
place, so a writer killed at any point leaves no shard that looks whole. Sets are read from a local folder, an
``http(s)://`` folder URL or a ``pipe:`` command with ``{name}`` (docs/streaming.md); only folders are written.
"""
from __future__ import annotations

import io
import json
import logging
import os
import tarfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import webdataset as wds

from crossmodal.io.skips import SkipLog
from crossmodal.utils.atomic import atomic_path, write_json

log = logging.getLogger(__name__)
MANIFEST = "manifest.json"

@dataclass
class ShardJob:
    """The inputs that make one output shard. ``name`` has no extension, e.g. ``train-000003``."""

    name: str
    items: Sequence[Any]


@dataclass
class Manifest:
    """A shard set's index. ``root``: its folder (a Path), or the remote location string."""

    root: Path | str
    shards: list[dict[str, Any]]
    meta: dict[str, Any] = field(default_factory=dict)
    skipped: dict[str, Any] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return self.count()

    def paths(self, prefix: str | None = None) -> list[str]:
        """Shard paths, optionally only those whose name starts with ``prefix`` (e.g. a split)."""
        return [shard_url(self.root, s["name"]) for s in self.shards if prefix is None or s["name"].startswith(prefix)]

    def count(self, prefix: str | None = None) -> int:
        return sum(s["count"] for s in self.shards if prefix is None or s["name"].startswith(prefix))


def shard_done(out_dir: Path, name: str) -> bool:
    return (out_dir / f"{name}.tar").exists() and (out_dir / f"{name}.json").exists()


def write_shard(path: Path, samples: Iterable[dict[str, Any]]) -> int:
    """Write samples (``__key__`` without dots, fields named by extension, encoded by webdataset) to ``path``
    atomically; return how many were written."""
    path = Path(path)
    count = 0
    with atomic_path(path) as tmp, open(tmp, "wb") as f, wds.TarWriter(f) as writer:
        for sample in samples:
            key = sample.get("__key__")
            if not key or "." in key:
                raise ValueError(f"sample key {key!r} must be non-empty and contain no dots (writing {path})")
            writer.write(sample)
            count += 1
    return count


def write_shard_set(
    out_dir: str | Path,
    jobs: Sequence[ShardJob],
    make_samples: Callable[[ShardJob, SkipLog], Iterable[dict[str, Any]]],
    *,
    meta: dict[str, Any] | None = None,
    strict: bool = False,
    desc: str = "writing shards",
    rank: int = 0,
    world_size: int = 1,
    finalize: bool = True,
) -> tuple[Manifest | None, dict[str, int]]:
    """Produce every job's shard that is not already done (``make_samples(job, skips)``, this rank's jobs
    ``rank::world_size``), then write the manifest, or leave it to :func:`write_manifest` after a barrier
    (``finalize=False``). Returns the manifest (or None when not finalised) and ``{"written": n, "reused": n}``."""
    from crossmodal.utils.progress import progress

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    check_writable(out_dir)
    names = [job.name for job in jobs]
    if len(set(names)) != len(names):
        raise ValueError(f"shard names must be unique in {out_dir}")
    mine = list(jobs)[rank::world_size]
    # the temporary files a killed writer left behind, of this rank's files only (others may be writing theirs)
    for name in [job.name for job in mine] + (["manifest"] if rank == 0 else []):
        for tmp in out_dir.glob(f".{name}.*.tmp-*"):
            tmp.unlink(missing_ok=True)
    todo = [job for job in mine if not shard_done(out_dir, job.name)]
    stats = {"written": 0, "reused": len(mine) - len(todo)}
    if stats["reused"]:
        log.info("%s: %d of %d shards already written in %s, reusing them", desc, stats["reused"], len(mine), out_dir)
    for job in progress(todo, desc=desc, unit="shard"):
        skips = SkipLog(strict=strict)
        count = write_shard(out_dir / f"{job.name}.tar", make_samples(job, skips))
        write_json(out_dir / f"{job.name}.json", {"name": f"{job.name}.tar", "count": count, "skipped": skips.as_dict()})
        stats["written"] += 1
    manifest = write_manifest(out_dir, names, meta) if finalize else None
    return manifest, stats


def write_manifest(out_dir: str | Path, names: Sequence[str], meta: dict[str, Any] | None = None) -> Manifest:
    """Gather the sidecars of ``names`` (all must be done) into ``manifest.json``."""
    out_dir = Path(out_dir)
    missing = [n for n in names if not shard_done(out_dir, n)]
    if missing:
        raise RuntimeError(f"{len(missing)} shards are not written yet in {out_dir} (first: {missing[0]}); re-run to finish them")
    shards, skips = [], SkipLog()
    for name in names:
        side = json.loads((out_dir / f"{name}.json").read_text())
        shards.append({"name": side["name"], "count": side["count"]})
        skips.merge(side.get("skipped", {}))
    manifest = Manifest(out_dir, shards, dict(meta or {}), skips.as_dict())
    write_json(out_dir / MANIFEST, {"meta": manifest.meta, "shards": shards, "skipped": manifest.skipped})
    return manifest


def load_manifest(path: str | Path, key: str | None = None) -> Manifest:
    """Load ``manifest.json`` from a shard-set location: a folder (or the file itself), an
    ``http(s)://`` folder URL or a ``pipe:`` template (see the module docstring). ``key``: the
    config key that named the location, for the error when there is no manifest there."""
    if is_remote(path):
        root: Path | str = str(path).rstrip("/")
        url = shard_url(root, MANIFEST)
        try:
            data = json.loads(read_url(url))
        except (OSError, ValueError) as exn:
            raise FileNotFoundError(
                f"no shard manifest at {url} ({exn}). A remote shard location is read-only, so nothing is built there: "
                f"write the set locally (`task=prepare` or `task=extract`), copy the whole folder (tars + manifest.json) "
                f"to the server or bucket, and point {key or 'the data config'} at it"
            ) from exn
    else:
        path = Path(check_location(path, key))
        file = path / MANIFEST if path.is_dir() else path
        if not file.exists():
            raise FileNotFoundError(f"no shard manifest at {file}. Run the matching `task=prepare` (or `task=extract`) "
                                    "first, or point the data config at a folder that holds manifest.json")
        root, data = file.parent, json.loads(file.read_text())
    return Manifest(root, data["shards"], data.get("meta", {}), data.get("skipped", {}))


def check_writable(folder: Path, need_bytes: int = 0) -> None:
    """Fail before any work when the output folder cannot be written or the disk is too full."""
    folder = Path(folder)
    probe = folder / f".write-test-{os.getpid()}"
    try:
        probe.write_bytes(b"ok")
        probe.unlink()
    except OSError as exn:
        raise PermissionError(f"cannot write to {folder}: {exn}") from exn
    if need_bytes:
        free = os.statvfs(folder).f_bavail * os.statvfs(folder).f_frsize
        if free < need_bytes:
            raise OSError(f"{folder} has {free / 1e9:.2f} GB free but about {need_bytes / 1e9:.2f} GB is needed")


def dist_info() -> tuple[int, int]:
    """(rank, world_size) of this process, from torch.distributed or the launcher's environment."""
    return wds.utils.pytorch_worker_info()[:2]


def stack_field(batch: list[dict[str, Any]], name: str) -> torch.Tensor:
    """Stack one field of a list of samples into a tensor (numpy arrays, tensors or numbers)."""
    values = [b[name] for b in batch]
    if isinstance(values[0], torch.Tensor):
        return torch.stack(values)
    return torch.as_tensor(np.stack(values) if isinstance(values[0], np.ndarray) else values)


def tar_member_names(path: str | Path) -> list[str]:
    """The member names of one shard, in order (``<key>.<field>``)."""
    return [f"{sample['__key__']}.{name}" for sample in iter_shard(str(path))
            for name in sample if not name.startswith("__")]


REMOTE_PREFIXES = ("http://", "https://", "pipe:")


def is_remote(location: str | Path) -> bool:
    """True for an ``http(s)://`` URL or a ``pipe:`` command (read-only locations)."""
    return isinstance(location, str) and location.startswith(REMOTE_PREFIXES)


def check_location(location: str | Path, key: str | None = None) -> str | Path:
    """Refuse a URL scheme webdataset would not fetch here (``s3://``, ``gs://`` ...) instead of
    reading it as a local folder name."""
    text = str(location)
    scheme, sep, _ = text.partition("://")
    if sep and scheme.isalnum() and scheme not in ("file",) and not is_remote(text):
        raise ValueError(
            f"{key or 'shard location'}={text}: {scheme}:// is not read directly. Use an http(s):// URL of the folder, "
            f"or a pipe: command with {{name}} for the file, e.g. pipe:aws s3 cp {text.rstrip('/')}/{{name}} -"
        )
    return location


def shard_location(value: str | Path | None, key: str) -> Path | str | None:
    """A configured shard-set location (``key`` names the config key): None, the remote location
    string (``http(s)://`` or ``pipe:``), or a local folder as a Path."""
    if value is None or value == "":
        return None
    if is_remote(value):
        _check_pipe(str(value), key)
        return str(value).rstrip("/")
    return Path(check_location(value, key))


def _check_pipe(location: str, key: str) -> None:
    if location.startswith("pipe:") and "{name}" not in location:
        raise ValueError(f"{key}={location}: a pipe: location needs {{name}} where the file name goes, "
                         "e.g. pipe:aws s3 cp s3://bucket/set/{name} -")


def shard_url(location: str | Path, name: str) -> str:
    """The URL of the file ``name`` (a shard or ``manifest.json``) in the shard set at ``location``."""
    if isinstance(location, str) and location.startswith("pipe:"):
        _check_pipe(location, "the shard location")
        return location.replace("{name}", name)
    if is_remote(location):
        from urllib.parse import quote

        return f"{str(location).rstrip('/')}/{quote(name)}"
    return str(Path(location) / name)


def _close(stream: Any, url: str, finished: bool) -> None:
    """Close a stream; a download or command that failed is an error (not when we stopped reading early:
    the command then dies of SIGPIPE)."""
    try:
        stream.close()
    except OSError as exn:
        if finished:
            raise OSError(f"reading {url} failed: {exn}") from exn


def read_url(url: str) -> bytes:
    """The whole content of ``url`` (a local path, http(s) via curl, or pipe:), through webdataset's gopen."""
    stream = wds.gopen(url, "rb")  # a missing local file raises FileNotFoundError naming it
    try:
        data = stream.read()
    except OSError as exn:
        _close(stream, url, False)
        raise OSError(f"reading {url} failed: {exn}") from exn
    _close(stream, url, True)
    return data


def _reraise(exn: Exception) -> bool:
    raise exn


def iter_shard(url: str, handler: Callable[[Exception], bool] | None = None) -> Iterator[dict[str, Any]]:
    """The samples of one tar shard (a path, an http(s) URL or a ``pipe:`` command), members grouped by key:
    ``{"__key__", "__url__", field: bytes}``. A shard that cannot be opened, or is not a tar, raises OSError
    naming it; a member that breaks later (a truncated tar) goes to ``handler``: True skips the rest of the
    shard, False (or no handler) raises."""
    handler = handler or _reraise
    stream = wds.gopen(url, "rb")
    started = finished = False

    def members() -> Iterator[dict[str, Any]]:
        nonlocal started
        for member in wds.tariterators.tar_file_iterator(stream, handler=handler):
            started = True
            member["__url__"] = url
            yield member

    try:
        yield from wds.tariterators.group_by_keys(members(), handler=handler)
        finished = True
    except (tarfile.TarError, OSError) as exn:
        if not started:  # nothing readable at all: a wrong location, a failed download or command
            _close(stream, url, True)  # raises with the command's exit status when it failed
            raise OSError(f"{url} is not a readable tar shard ({exn})") from exn
        if not handler(exn):
            raise
    finally:
        _close(stream, url, finished)


def load_npy(data: bytes) -> np.ndarray:
    return np.load(io.BytesIO(data), allow_pickle=False)
