"""Building a pair shard set: reuse a finished set of the same inputs (:func:`prepare_pairs`),
plan the split and the shards, build them on every rank (in loader workers, :func:`build_shard_set`,
shared with the pseudo-pairs), wait for the other ranks, and write the manifest.
:class:`PairsConfig` (``conf/prep/pairs.yaml``'s target) is the settings with ``prepare()``."""
from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from crossmodal.io.splits import SPLIT_FILE, IdentitySplit, load_split_file, make_split, save_split
from crossmodal.pipeline.cache import check_skips, claim, note_unfingerprinted
from crossmodal.pipeline.lock import folder_lock
from crossmodal.pipeline.pairs.config import PairSettings
from crossmodal.pipeline.pairs.discovery import discover
from crossmodal.pipeline.pairs.tracks import BuildStats, item_samples
from crossmodal.pipeline.parallel import SkipRecorder, prefetched, skip_summary, wait_for_shards
from crossmodal.pipeline.shards import (
    Manifest,
    ShardJob,
    SkipLog,
    dist_info,
    load_manifest,
    shard_done,
    write_manifest,
    write_shard_set,
)
from crossmodal.utils.atomic import write_json

log = logging.getLogger(__name__)


@dataclass
class PairsConfig(PairSettings):
    """The pair-data settings (:class:`PairSettings`) that build their shard set: ``prepare()``."""

    def prepare(self, rank: int | None = None, world_size: int | None = None, strict: bool | None = None) -> Manifest:
        return prepare_pairs(self, rank=rank, world_size=world_size, strict=strict)


def plan_split(cfg: Any, videos: Sequence[tuple[str, str]], out_dir: Path, rank: int,
               split: IdentitySplit | None = None) -> tuple[IdentitySplit, Path]:
    """``split``, else the recipe's split file, else a split of the (identity, video) pairs made from seed +
    fractions (the same on every rank and re-run); rank 0 saves it as splits.json beside the shards."""
    if split is None and cfg.split_file:
        split = load_split_file(cfg.split_file)
    elif split is None:
        split = make_split(videos, seed=cfg.seed, unheard_fraction=cfg.unheard_fraction, heard_fraction=cfg.heard_fraction)
    split_path = out_dir / SPLIT_FILE
    if rank == 0:
        save_split(split, split_path, (identity for identity, _ in videos))
    return split, split_path


def plan_jobs(items: Sequence[Any], split: IdentitySplit, per_shard: int,
              key: Callable[[Any], tuple[str, str]] = lambda item: (item.identity, item.video)) -> list[ShardJob]:
    """``(split name, item)`` pairs in shards of ``per_shard`` items, named by split; ``key``: an item's (identity, video)."""
    by_split: dict[str, list[tuple[str, Any]]] = {"train": [], "heard": [], "unheard": []}
    for item in items:
        which = split.assign(*key(item))
        by_split[which].append((which, item))
    return [ShardJob(f"{which}-{start // per_shard:06d}", members[start : start + per_shard])
            for which, members in by_split.items() for start in range(0, len(members), per_shard)]


def prepare_pairs(cfg_data: Any, *, rank: int | None = None, world_size: int | None = None, strict: bool | None = None) -> Manifest:
    """Build (or reuse, or resume) the pair shards of ``cfg_data`` (a PairsConfig, dict or config node); with
    ``data.pairs`` set, the set there is used as is (built from ``data.source`` with these settings, when that is set)."""
    cfg = PairsConfig.from_cfg(cfg_data)
    return reuse_or_build(cfg, _build_pairs, "pair shard", bool(cfg.source), rank=rank, world_size=world_size, strict=strict)


def reuse_or_build(cfg: Any, build: Callable[..., Manifest], what: str, inputs_known: bool, *, rank: int | None,
                   world_size: int | None, strict: bool | None, out_dir: str | Path | None = None,
                   named_by: str | None = None) -> Manifest:
    """The shard set of the pair recipe ``cfg``: ``data.pairs`` when set (checked against the recipe when
    ``inputs_known``); else a finished set of the same inputs in the folder named from their fingerprint (or
    ``out_dir``, named by the config key ``named_by``), or ``build(cfg, out_dir, fingerprint, rank, world_size,
    strict)`` there, resuming an unfinished one."""
    strict = cfg.strict if strict is None else strict
    if cfg.pairs:  # that finished set, checked against the recipe when its inputs are known
        folder = Path(cfg.pairs)
        if not (folder / "manifest.json").exists():
            raise FileNotFoundError(f"data.pairs={folder} holds no finished pair shard set (no manifest.json). "
                                    "Build one with task=prepare data.source=..., or drop data.pairs")
        if inputs_known:
            claim(folder, cfg.fingerprint(), strict=strict, named_by="data.pairs", what="pair shard set",
                  write_stamp=False)
        manifest = load_manifest(folder)
        check_skips(folder, {"skipped": manifest.skipped, "meta": manifest.meta}, strict)
        return manifest
    if rank is None or world_size is None:
        rank, world_size = dist_info()
    fingerprint = cfg.fingerprint()
    out_dir = Path(out_dir) if out_dir else cfg.folder_for(fingerprint)
    if rank == 0 and not named_by and not (out_dir / "manifest.json").exists():
        note_unfingerprinted(out_dir.parent, f"{what}s")
    with folder_lock(out_dir, f"{what}s", rank=rank, world_size=world_size):
        if claim(out_dir, fingerprint, strict=strict, named_by=named_by, what=f"{what} set", write_stamp=True):
            return load_manifest(out_dir)
        return build(cfg, out_dir, fingerprint, rank, world_size, strict)


def _build_pairs(cfg: PairsConfig, out_dir: Path, fingerprint: dict[str, Any], rank: int, world_size: int, strict: bool) -> Manifest:
    layout, items = discover(cfg)
    if layout == "videos":
        from crossmodal.io.video import require_cv2

        require_cv2()
    split, split_path = plan_split(cfg, [(i.identity, i.video) for i in items], out_dir, dist_info()[0])
    jobs = plan_jobs(items, split, cfg.videos_per_shard)
    log.info("pairs: %d items (%s layout) from %s -> %d shards in %s", len(items), layout, cfg.source, len(jobs), out_dir)
    meta = {
        "kind": "pairs",
        "name": cfg.dataset_name,
        "source": str(cfg.source),
        "layout": layout,
        "split_file": str(split_path),
        "split_source": split.source,
        "frame_rate": cfg.frame_rate,
        "sample_rate": cfg.sample_rate,
        "crop_size": cfg.crop_size,
        "grey": cfg.grey,
        "segment_seconds": cfg.segment_seconds,
        "synthetic": False,
        "items": len(items),
        "fingerprint": fingerprint,
    }
    manifest = build_shard_set(out_dir, jobs, lambda item, split, skips, stats: item_samples(item, split, cfg, skips, stats),
                               meta, num_workers=cfg.num_workers, strict=strict, desc="pair shards", rank=rank,
                               world_size=world_size)
    stats = manifest.meta.get("stats") or {}
    log.info("pairs: %d segments, %d face frames (%d sampled, %d without a face) in %s; %s", stats.get("segments", 0),
             stats.get("frames", 0), stats.get("frames_sampled", 0), stats.get("frames_no_face", 0), out_dir, skip_summary(manifest))
    return manifest


def build_shard_set(
    out_dir: Path,
    jobs: Sequence[ShardJob],
    samples_of: Callable[[Any, str, SkipLog, BuildStats], Iterable[dict[str, Any]]],
    meta: dict[str, Any],
    *,
    num_workers: int,
    strict: bool,
    desc: str,
    rank: int,
    world_size: int,
) -> Manifest:
    """Build this rank's unfinished shards of ``jobs`` (each ``(split, item)`` of a job through
    ``samples_of(item, split, skips, stats)``, in ``num_workers`` loader processes), write each
    shard's stats sidecar, wait for the other ranks; rank 0 writes the manifest (``meta`` with the
    summed ``stats``), the other ranks return it once written."""

    def build(job: ShardJob) -> tuple[list[dict[str, Any]], list, dict]:
        recorder, stats, samples = SkipRecorder(), BuildStats(), []
        for split, item in job.items:
            samples.extend(samples_of(item, split, recorder, stats))
        return samples, recorder.events, dataclasses.asdict(stats)

    todo = [job for job in jobs[rank::world_size] if not shard_done(out_dir, job.name)]
    results = prefetched(todo, build, num_workers)

    def make_samples(job: ShardJob, skips: SkipLog) -> Iterator[dict[str, Any]]:
        name, (samples, events, stats) = next(results)
        if name != job.name:  # pragma: no cover - the order is fixed by construction
            raise RuntimeError(f"{desc}: shard order mismatch: built {name}, writing {job.name}")
        for reason, where, detail in events:
            skips.skip(reason, where, detail)
        write_json(out_dir / f"{job.name}.stats.json", stats)
        yield from samples

    write_shard_set(out_dir, jobs, make_samples, strict=strict, desc=desc, rank=rank, world_size=world_size, finalize=False)
    names = [job.name for job in jobs]
    if world_size > 1:
        wait_for_shards(out_dir, names)
    if rank != 0:  # rank 0 sums the per-shard stats sidecars into the manifest
        while not (out_dir / "manifest.json").exists():
            time.sleep(1.0)
        return load_manifest(out_dir)
    stats = BuildStats()
    for name in names:
        path = out_dir / f"{name}.stats.json"
        if path.exists():
            stats.add(json.loads(path.read_text()))
    return write_manifest(out_dir, names, {**meta, "stats": dataclasses.asdict(stats)})
