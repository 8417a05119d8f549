"""Atomic file writes: a reader sees the old file or the whole new one, never a part.

:func:`atomic_path` serves libraries that want a file name; :func:`tmp_path_for` + :func:`publish` a
write that only one of several processes publishes.
"""
from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

__all__ = ["atomic_path", "publish", "tmp_path_for", "write_bytes", "write_json", "write_text"]


def tmp_path_for(path: str | Path) -> Path:
    """The temporary file a write of ``path`` goes through: hidden, beside it, named by this process."""
    path = Path(path)
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


def publish(tmp: str | Path, path: str | Path, *, mode: int | None = None) -> Path:
    """Finish an atomic write whose data is in ``tmp`` (from :func:`tmp_path_for`): fsync it, give it
    permission bits ``mode`` when set, rename it over ``path``."""
    tmp, path = Path(tmp), Path(path)
    if not tmp.exists():
        raise FileNotFoundError(f"nothing was written to {tmp} (the temporary file for {path})")
    with open(tmp, "rb+") as f:
        os.fsync(f.fileno())
    if mode is not None:
        os.chmod(tmp, mode)
    os.replace(tmp, path)
    return path


@contextmanager
def atomic_path(path: str | Path, *, mode: int | None = None) -> Iterator[Path]:
    """Yield a temporary path to write ``path`` through; on success it is fsynced and renamed over
    ``path`` (with permission bits ``mode`` when given), on error it is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = tmp_path_for(path)
    try:
        yield tmp
        publish(tmp, path, mode=mode)
    finally:
        tmp.unlink(missing_ok=True)


def write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (creating its folder); return the path."""
    path = Path(path)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
    return path


def write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically; return the path."""
    return write_bytes(path, text.encode("utf-8"))


def write_json(path: str | Path, obj: Any, *, indent: int | None = 1, sort_keys: bool = True) -> Path:
    """Write ``obj`` as JSON (with a final newline) to ``path`` atomically; return the path."""
    return write_text(path, json.dumps(obj, indent=indent, sort_keys=sort_keys) + "\n")
