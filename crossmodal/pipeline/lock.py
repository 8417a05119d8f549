"""One writer per output folder: a second run into the same folder waits, then reuses the set.

``folder_lock(folder)`` takes ``<folder>/.lock`` (an OS file lock, released when the holder exits or dies) and
records who holds it in ``<folder>/.lock.owner``, so a waiting run can say for whom it waits. Under
torch.distributed only rank 0 takes the lock, the other ranks wait for it in a barrier (never for each other).
"""
from __future__ import annotations

import json
import logging
import os
import socket
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch.distributed as dist
from filelock import FileLock, Timeout

from crossmodal.utils.atomic import write_json

log = logging.getLogger(__name__)

LOCK = ".lock"
OWNER = ".lock.owner"
REPORT_SECONDS = 60.0


def _owner(folder: Path) -> str:
    try:
        info = json.loads((folder / OWNER).read_text())
    except (OSError, ValueError):
        return "another process (owner unknown)"
    return f"pid {info.get('pid')} on {info.get('host')} (since {info.get('since')}: {info.get('command')})"


@contextmanager
def folder_lock(folder: str | Path, what: str = "shard set", *, rank: int = 0, world_size: int = 1) -> Iterator[None]:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    distributed = world_size > 1 and dist.is_available() and dist.is_initialized()
    lock = FileLock(str(folder / LOCK)) if rank == 0 else None
    if lock is not None:
        try:
            lock.acquire(timeout=0)
        except Timeout:
            started = time.monotonic()
            log.info("%s: %s is being built by %s; waiting for it to finish, then reusing it", what, folder, _owner(folder))
            while True:
                try:
                    lock.acquire(timeout=REPORT_SECONDS)
                    break
                except Timeout:
                    log.info("%s: still waiting for %s (%.0f s so far)", what, _owner(folder), time.monotonic() - started)
            log.info("%s: %s is free after %.1f s", what, folder, time.monotonic() - started)
        owner = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%Y-%m-%d %H:%M:%S"),
                 "command": " ".join(sys.argv)[:300]}
        write_json(folder / OWNER, owner, indent=None)
    if distributed:
        dist.barrier()  # the other ranks start only once rank 0 holds the folder
    try:
        yield
    finally:
        if lock is not None:
            (folder / OWNER).unlink(missing_ok=True)
            lock.release()
