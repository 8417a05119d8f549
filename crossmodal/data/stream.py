"""Shard sets -> batches on webdataset's pipeline: :class:`ShardStream` (training: resampled and endless, each
sample seeded on its own, so batches survive a resume and any worker count; evaluation: exact-once across ranks and
workers), cut into epochs by :class:`EpochLoader` or read by :func:`eval_loader`. Skipped samples are counted in
``batch["skipped"]`` (``strict`` raises :class:`BadSampleError` instead). How and why: docs/streaming.md.
"""
from __future__ import annotations

import logging
import multiprocessing as mp
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import KW_ONLY, dataclass
from itertools import islice
from typing import Any

import numpy as np
import torch
import webdataset as wds
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from crossmodal.io.skips import BadSampleError
from crossmodal.pipeline.shards import Manifest, dist_info, iter_shard, load_manifest

log = logging.getLogger(__name__)


@dataclass(eq=False)
class ShardStream(IterableDataset):
    """Shards (paths, http(s) URLs or ``pipe:`` commands) -> samples -> decoded -> batches, for training (resampled)
    or evaluation (exact-once). ``decode(sample)`` turns a raw webdataset sample into a dict for ``collate`` (None:
    skip it, counted; raise to say why)."""

    shards: Sequence[str]
    decode: Callable[[dict[str, Any]], dict[str, Any] | None]
    collate: Callable[[list[dict[str, Any]]], dict[str, Any]]
    batch_size: int
    _: KW_ONLY
    train: bool
    seed: int = 0
    shuffle_buffer: int = 0
    strict: bool = False
    # training only: the samples of each shard read whole without a skip, kept as raw bytes up to this budget
    # (per loader process) and replayed instead of parsing the tar again; the same samples in the same order
    cache_mb: float = 0.0

    def __post_init__(self) -> None:
        if not self.shards:
            raise ValueError("no shards to read: the shard list is empty")
        self.shards = [str(url) for url in self.shards]
        # samples in the buffer before the first is yielded: a batch's worth (at least webdataset's default
        # 100), not the whole buffer, which each epoch (a new stream) would read before its first batch
        self.shuffle_initial = min(self.shuffle_buffer, max(self.batch_size, 100))
        self.cache = _ShardCache(int(self.cache_mb * 2**20) if self.train else 0)
        self.epoch = 0
        # Batches this rank has already consumed in the current epoch (set on a mid-epoch resume).
        self.skip_batches = 0
        # (rank, world) pinned by the loader in the main process before its workers start: a
        # spawned/forkserver worker has no torch.distributed group and would read (0, 1).
        self.dist: tuple[int, int] | None = None

    def __iter__(self) -> Iterator[dict[str, Any]]:
        rank, world = self.dist or dist_info()
        info = get_worker_info()
        worker, num_workers = (info.id, info.num_workers) if info is not None else (0, 1)
        skipped = [0]  # samples skipped since this worker's last batch

        def on_member_error(exn: Exception) -> bool:
            if self.strict:
                raise BadSampleError(f"corrupt shard member: {exn}") from exn
            log.warning("skipped a corrupt shard member: %s", exn)
            skipped[0] += 1
            return True

        # The loader takes batches from its workers round-robin, starting with worker 0, so batch
        # i of an epoch comes from the stream seeded as "role" i % W. After a resume that skips
        # `skip_batches`, worker w takes the role that produces the next batch in order.
        skip = self.skip_batches if self.train else 0
        role = (worker + skip) % num_workers
        if self.train:
            # make_seed hashes its arguments: ints only (a str's hash differs in every process)
            seed = wds.utils.make_seed(self.seed, self.epoch, rank, role)
            shards = [wds.ResampledShards(self.shards, seed=seed, worker_seed=int, deterministic=True)]
            shuffle = wds.shuffle(self.shuffle_buffer, self.shuffle_initial, seed=seed) if self.shuffle_buffer > 1 else None
            numbered = _seeded((self.seed, self.epoch, rank, role))
        else:
            if len(self.shards) < world * num_workers:
                raise ValueError(
                    f"{len(self.shards)} shards cannot be read exactly once by {world} ranks x {num_workers} loader "
                    f"workers (at least one shard each). Lower data.num_workers to {max(1, len(self.shards) // world)} "
                    "or write the data into more, smaller shards (data.samples_per_shard)."
                )
            # wds.split_by_node with the rank the loader pinned (a forkserver worker has no process group)
            shards = [wds.SimpleShardList(self.shards), lambda urls: islice(urls, rank, None, world),
                      wds.split_by_worker]
            shuffle = numbered = None
        pipeline = wds.DataPipeline(
            *shards,
            _read_shards(on_member_error, self.cache),
            shuffle,
            numbered,
            _decoded(self.decode, self.strict, skipped),
            wds.batched(self.batch_size, collation_fn=None, partial=True),
            _drop_batches(len(range(role, skip, num_workers)), skipped),
            _collated(self.collate, skipped),
        )
        return iter(pipeline)


# Pipeline stages: webdataset filters, given their arguments here and the previous stage's iterator by the pipeline.


class _ShardCache:
    """Raw samples of whole shards, by URL, up to ``budget`` bytes (0: keep nothing)."""

    def __init__(self, budget: int) -> None:
        self.budget, self.used, self.kept = budget, 0, {}

    def offer(self, url: str, samples: list[dict[str, Any]]) -> None:
        size = sum(len(v) for sample in samples for v in sample.values() if isinstance(v, bytes))
        if self.used + size <= self.budget:
            self.kept[url], self.used = samples, self.used + size


@wds.pipelinefilter
def _read_shards(shards: Iterator[dict[str, Any]], on_error: Callable[[Exception], bool],
                 cache: _ShardCache) -> Iterator[dict[str, Any]]:
    errors: list[Exception] = []

    def counted(exn: Exception) -> bool:
        errors.append(exn)
        return on_error(exn)

    for shard in shards:
        url = shard["url"]
        if url in cache.kept:
            yield from (dict(sample) for sample in cache.kept[url])  # copies: later stages add keys
            continue
        before = len(errors)
        samples: list[dict[str, Any]] | None = [] if cache.budget else None
        for sample in iter_shard(url, handler=counted):
            if samples is not None:
                samples.append(dict(sample))
            yield sample
        if samples is not None and len(errors) == before:  # read to its end, nothing skipped: replayable
            cache.offer(url, samples)


@wds.pipelinefilter
def _seeded(samples: Iterator[dict[str, Any]], stream_seed: tuple[int, ...]) -> Iterator[dict[str, Any]]:
    """Give each training sample ``__seed__``, from (seed, epoch, rank, role, its index in this stream):
    its decode draws its random window from that (:func:`sample_generator`), so the draw does not
    depend on the worker count or on the process's generator, and a resumed stream draws the same."""
    for index, sample in enumerate(samples):
        # SeedSequence mixes its inputs (make_seed's linear hash maps (role, 31) and (role + 1, 0) together)
        sample["__seed__"] = int(np.random.SeedSequence((*stream_seed, index)).generate_state(1, np.uint64)[0])
        yield sample


def sample_generator(sample: dict[str, Any]) -> torch.Generator | None:
    """The generator of a training sample numbered by the stream (None: the process's own)."""
    return torch.Generator().manual_seed(sample["__seed__"]) if "__seed__" in sample else None


@wds.pipelinefilter
def _decoded(samples: Iterator[dict[str, Any]], decode: Callable[[dict[str, Any]], dict[str, Any] | None],
             strict: bool, skipped: list[int]) -> Iterator[dict[str, Any]]:
    for sample in samples:
        try:
            decoded = decode(sample)
        except BadSampleError:
            raise
        except Exception as exn:  # noqa: BLE001 - any decode failure is a bad sample
            if strict:
                raise BadSampleError(f"sample {sample.get('__key__')} in {sample.get('__url__')}: {exn}") from exn
            log.warning("skipped sample %s in %s: %s", sample.get("__key__"), sample.get("__url__"), exn)
            skipped[0] += 1
            continue
        if decoded is None:
            skipped[0] += 1
            continue
        yield decoded


@wds.pipelinefilter
def _drop_batches(batches: Iterator[list[dict[str, Any]]], count: int, skipped: list[int]) -> Iterator[Any]:
    """Resume: drop this worker's first ``count`` batches (the killed run consumed them and counted
    their skips)."""
    for _ in range(count):
        if next(batches, None) is None:
            return
        skipped[0] = 0
    yield from batches


@wds.pipelinefilter
def _collated(batches: Iterator[list[dict[str, Any]]], collate: Callable[[list[dict[str, Any]]], dict[str, Any]],
              skipped: list[int]) -> Iterator[dict[str, Any]]:
    for batch in batches:
        out = collate(batch)
        out["skipped"] = torch.tensor(skipped[0])
        skipped[0] = 0
        yield out


def check_remote_set(location: str, key: str, fingerprint: dict[str, Any] | None, strict: bool, what: str) -> Manifest:
    """A remote shard set is read-only: check it instead of building it. It must have a manifest
    (else an error naming ``key``), match this run's ``fingerprint`` when the run has one, and hold
    no recorded skips under ``strict``."""
    from crossmodal.pipeline.cache import CacheMismatch, check_skips, mismatch_message

    manifest = load_manifest(location, key=key)
    stored = manifest.meta.get("fingerprint")
    if fingerprint and (stored or {}).get("digest") != fingerprint.get("digest"):
        raise CacheMismatch(mismatch_message(location, stored, fingerprint, key, what))
    check_skips(location, {"meta": manifest.meta, "skipped": manifest.skipped}, strict)
    return manifest


def worker_context(dataset: ShardStream | None = None) -> Any:
    """The start method of loader workers: forkserver (spawn where there is none), never fork: a fork of a
    process running other threads (DDP's, the pin-memory thread) copies the locks they hold and can hang forever.
    The server preloads torch, webdataset and the decode/collate modules once, so a worker starts in a fraction
    of a second (only the server's first start takes the preload list)."""
    if "forkserver" not in mp.get_all_start_methods():
        return mp.get_context("spawn")
    ctx = mp.get_context("forkserver")
    preload = ["__main__", __name__]
    for fn in (getattr(dataset, "decode", None), getattr(dataset, "collate", None)):
        module = getattr(fn, "__module__", None)
        if module and module not in preload:
            preload.append(module)
    ctx.set_forkserver_preload(preload)  # only takes effect before the server's first start
    return ctx


@dataclass
class _WorkerInit:
    """worker_init_fn of non-fork workers: exit as soon as the main process is gone, even when it was SIGKILLed
    (DataLoader watches the parent, but a forkserver worker's parent is the server, which outlives a killed main
    process), then run the caller's own init. A pidfd turns readable when the main process exits (zombie
    included); elsewhere the pid is polled."""

    main_pid: int
    then: Callable[[int], None] | None

    def __call__(self, worker_id: int) -> None:
        import select
        import threading
        import time

        try:
            pidfd = os.pidfd_open(self.main_pid)
        except (AttributeError, OSError):
            pidfd = None

        def wait() -> None:
            if pidfd is not None:
                select.select([pidfd], [], [])
            else:
                while True:
                    time.sleep(1.0)
                    try:
                        os.kill(self.main_pid, 0)
                    except ProcessLookupError:
                        break
            os._exit(1)

        threading.Thread(target=wait, name="crossmodal-exit-with-main", daemon=True).start()
        if self.then is not None:
            self.then(worker_id)


def _worker_kwargs(dataset: ShardStream, num_workers: int, kwargs: dict[str, Any]) -> dict[str, Any]:
    """DataLoader arguments shared by both loaders: workers started once per loader, not per epoch."""
    # the workers' base seed from the loader's own generator, not the process's: starting a loader
    # (after a resume, or a first validation) must not move the training step's random draws
    out = {"pin_memory": torch.cuda.is_available(), "generator": torch.Generator().manual_seed(dataset.seed), **kwargs}
    if num_workers > 0:
        out.setdefault("multiprocessing_context", worker_context(dataset))
        out.setdefault("persistent_workers", True)
        context = out["multiprocessing_context"]
        method = context if isinstance(context, str) else context.get_start_method()
        if method != "fork":
            out["worker_init_fn"] = _WorkerInit(os.getpid(), kwargs.get("worker_init_fn"))
    return out


class _LiveStream(IterableDataset):
    """A training :class:`ShardStream` whose every ``iter()`` (in a persistent worker) first reads the epoch, the
    resume skip and the rank from the shared memory where the main process wrote them."""

    def __init__(self, stream: ShardStream, state: torch.Tensor) -> None:
        super().__init__()
        self.stream = stream
        self.state = state  # int64 [epoch, skip_batches, rank, world], in shared memory

    def __iter__(self) -> Iterator[dict[str, Any]]:
        epoch, skip, rank, world = (int(v) for v in self.state.tolist())
        self.stream.epoch, self.stream.skip_batches, self.stream.dist = epoch, skip, (rank, world)
        return iter(self.stream)


class EpochLoader:
    """Training loader over an endless :class:`ShardStream`: ``batches_per_epoch`` batches per epoch, resumable
    mid-epoch. Lightning calls ``sampler.set_epoch`` before each epoch (it reseeds the shard draw) and keeps
    ``state_dict`` in checkpoints: a resumed run skips the batches the killed one consumed."""

    def __init__(self, dataset: ShardStream, num_workers: int, batches_per_epoch: int, **kwargs: Any) -> None:
        if batches_per_epoch < 1:
            raise ValueError(f"batches_per_epoch must be at least 1, got {batches_per_epoch}")
        self.dataset = dataset
        self.batches_per_epoch = batches_per_epoch
        self._state = torch.zeros(4, dtype=torch.int64).share_memory_()
        self.loader = DataLoader(
            _LiveStream(dataset, self._state), batch_size=None, num_workers=num_workers,
            **_worker_kwargs(dataset, num_workers, kwargs),
        )
        self._epochs = wds.DataPipeline(self.loader)  # what wds.WebLoader is; cut by with_epoch below
        self.sampler = self  # Lightning's per-epoch hook looks for ``dataloader.sampler.set_epoch``
        self._consumed = 0
        self._resume_skip = 0

    def set_epoch(self, epoch: int) -> None:
        if epoch != self.dataset.epoch:
            self._resume_skip = 0
        self.dataset.epoch = epoch

    def __len__(self) -> int:
        return self.batches_per_epoch

    def __iter__(self) -> Iterator[dict[str, Any]]:
        skip, self._resume_skip = self._resume_skip, 0
        self.dataset.skip_batches = skip
        self._consumed = skip
        rank, world = dist_info()  # here, in the main process, where torch.distributed is set up
        self._state.copy_(torch.tensor([self.dataset.epoch, skip, rank, world], dtype=torch.int64))
        # the first batch (re)starts the workers' streams: they read _state then
        for batch in self._epochs.with_epoch(nbatches=self.batches_per_epoch - skip):
            self._consumed += 1
            yield batch

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.dataset.epoch, "consumed": self._consumed}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.dataset.epoch = state["epoch"]
        self._resume_skip = state["consumed"] % self.batches_per_epoch


class _EvalLoader(DataLoader):
    """A DataLoader that pins the rank on its ShardStream before its workers start."""

    def __iter__(self) -> Any:
        self.dataset.dist = dist_info()
        return super().__iter__()


def batch_nbytes(batch: Any) -> int:
    """Bytes held by the tensors of a batch (dicts, lists and tuples of tensors)."""
    if isinstance(batch, torch.Tensor):
        return batch.element_size() * batch.numel()
    if isinstance(batch, dict):
        return sum(batch_nbytes(value) for value in batch.values())
    if isinstance(batch, (list, tuple)):
        return sum(batch_nbytes(value) for value in batch)
    return 0


class ReplayedPasses:
    """An evaluation loader whose batches (the same on every pass: whole clips, no random draw) are kept after
    its first complete pass when they fit in ``budget_bytes`` and replayed by later passes. A pass cut short
    (Lightning's sanity check) keeps nothing; a set larger than the budget is read on every pass."""

    def __init__(self, loader: DataLoader, budget_bytes: int) -> None:
        self.loader = loader
        self.budget_bytes = budget_bytes
        self._batches: list[Any] | None = None

    def __iter__(self) -> Iterator[Any]:
        if self._batches is not None:
            yield from self._batches
            return
        kept: list[Any] | None = [] if self.budget_bytes > 0 else None
        size = 0
        for batch in self.loader:
            if kept is not None:
                size += batch_nbytes(batch)
                if size <= self.budget_bytes:
                    kept.append(batch)
                else:
                    kept = None  # too large to keep: stream it every time
            yield batch
        if kept is not None:
            self._batches = kept


def eval_loader(dataset: ShardStream, num_workers: int, **kwargs: Any) -> DataLoader:
    """Evaluation loader: each sample exactly once across ranks and workers (every iteration)."""
    if dataset.train:
        raise ValueError("eval_loader needs a ShardStream with train=False")
    return _EvalLoader(dataset, batch_size=None, num_workers=num_workers, **_worker_kwargs(dataset, num_workers, kwargs))


