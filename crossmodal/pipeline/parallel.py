"""Building shard sets in parallel: jobs built in loader worker processes (:func:`prefetched`),
their skips recorded for replay in the writer (:class:`SkipRecorder`), and the ranks waiting for
each other's shards and rank 0's manifest. Shared by pair, pseudo-pair and extraction builds."""
from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from crossmodal.pipeline.shards import Manifest, ShardJob, SkipLog, shard_done


def prefetched(
    todo: Sequence[ShardJob], build: Callable[[ShardJob], Any], num_workers: int
) -> Iterator[tuple[str, Any]]:
    """``(job.name, build(job))`` for each job in order, built in ``num_workers`` loader processes: worker w
    builds jobs w, w+W, ..., which the DataLoader's round-robin returns in job order. Results must pickle."""
    if num_workers <= 0 or len(todo) <= 1:
        for job in todo:
            yield job.name, build(job)
        return
    import torch.utils.data as tud

    class _Jobs(tud.IterableDataset):
        def __iter__(self):
            info = tud.get_worker_info()
            wid, n = (info.id, info.num_workers) if info else (0, 1)
            for job in list(todo)[wid::n]:
                yield job.name, build(job)

    workers = min(num_workers, len(todo))
    loader = tud.DataLoader(_Jobs(), batch_size=None, num_workers=workers, collate_fn=lambda x: x, prefetch_factor=1)
    yield from loader


class SkipRecorder(SkipLog):
    """Records skips in a worker so the shard writer can replay them into the shard's SkipLog."""

    def __init__(self) -> None:
        super().__init__(strict=False)
        self.events: list[tuple[str, str, str]] = []

    def skip(self, reason: str, where: str, detail: str = "") -> None:
        self.events.append((reason, where, detail))


def wait_for_shards(out_dir: Path, names: Sequence[str], poll_seconds: float = 2.0) -> None:
    """Block until every shard is written (other ranks), via torch.distributed or by polling."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        return
    while not all(shard_done(out_dir, n) for n in names):
        time.sleep(poll_seconds)


def skip_summary(manifest: Manifest) -> str:
    counts = manifest.skipped.get("counts", {})
    return "nothing skipped" if not counts else "skipped " + ", ".join(f"{n} {r}" for r, n in sorted(counts.items()))
