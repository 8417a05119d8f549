"""FER+ face shards: raw FER+ (either layout, read by :mod:`crossmodal.io.ferplus`) -> cleaned shards.

Each sample holds a grey PNG, the 10 raw votes, the split and the image name. The set's folder is
named by the fingerprint of its inputs (source listing, cleaning, splits, shard size) and reused
only when that matches; images that need converting, or that fail to read, are counted as skips.
"""
from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from PIL import Image

from crossmodal.emotions import FERPLUS_VOTE_COLUMNS
from crossmodal.io.ferplus import (
    IMAGE_SIZE,
    CleaningReport,
    detect_layout,
    encode_png,
    load_ferplus_image,
    read_ferplus,
)
from crossmodal.io.skips import SkipLog
from crossmodal.pipeline.cache import claim
from crossmodal.pipeline.fingerprint import input_fingerprint, shard_folder
from crossmodal.pipeline.lock import folder_lock
from crossmodal.pipeline.shards import ShardJob, load_manifest, write_shard_set

log = logging.getLogger(__name__)


def ferplus_fingerprint(
    source: str | Path, *, cleaning: str = "cntk", splits: Sequence[str] = ("train", "val", "test"), samples_per_shard: int = 2000
) -> dict[str, Any]:
    """What FER+ face shards are built from: the source's listing and the settings that change them."""
    return input_fingerprint("ferplus", sources={"source": source},
                             settings={"cleaning": cleaning, "splits": list(splits), "samples_per_shard": samples_per_shard})


def ferplus_folder(data_dir: str | Path, source: str | Path, fingerprint: dict[str, Any]) -> Path:
    """``<data_dir>/ferplus/<source name>-<cleaning>-<digest8>``."""
    return shard_folder(data_dir, "ferplus", f"{Path(source).resolve().name}-{fingerprint['settings']['cleaning']}", fingerprint)


def prepare_ferplus(
    source: str | Path,
    out_dir: str | Path,
    *,
    cleaning: str = "cntk",
    splits: Sequence[str] = ("train", "val", "test"),
    samples_per_shard: int = 2000,
    strict: bool = False,
    fingerprint: dict[str, Any] | None = None,
    named_by: str | None = "out_dir",
):
    """Write face shards (``<split>-NNNNNN.tar``) into ``out_dir``, resuming unfinished ones; a finished set of the
    same inputs (``fingerprint``, default: from the arguments) is reused, one of other inputs is an error naming
    ``named_by`` (the config key). The manifest's meta holds the cleaning counts."""
    splits = list(splits)
    if fingerprint is None:
        fingerprint = ferplus_fingerprint(source, cleaning=cleaning, splits=splits, samples_per_shard=samples_per_shard)
    with folder_lock(out_dir, "FER+ shards"):
        if claim(out_dir, fingerprint, strict=strict, named_by=named_by, what="FER+ face shard set"):
            return load_manifest(out_dir)
        return _write_ferplus(source, Path(out_dir), cleaning, splits, samples_per_shard, strict, fingerprint)


def _write_ferplus(source, out_dir: Path, cleaning: str, splits: list[str], samples_per_shard: int, strict: bool,
                   fingerprint: dict[str, Any]):
    report, read_skips = CleaningReport(cleaning), SkipLog(strict=strict)
    items = read_ferplus(source, splits, cleaning, report=report, skips=read_skips)  # logs the cleaning counts
    jobs = []
    for split in splits:
        in_split = [item for item in items if item.split == split]
        for start in range(0, len(in_split), samples_per_shard):
            jobs.append(ShardJob(f"{split}-{start // samples_per_shard:06d}", in_split[start:start + samples_per_shard]))

    def make_samples(job: ShardJob, skips: SkipLog) -> Iterable[dict[str, Any]]:
        for item in job.items:
            where = str(item.path_or_pixels) if isinstance(item.path_or_pixels, Path) else f"{item.split}/{item.name}"
            try:
                image = load_ferplus_image(item, strict=strict)
            except ValueError as exn:
                skips.skip("corrupt_image", where, str(exn))
                continue
            if isinstance(item.path_or_pixels, Path) and _needed_conversion(item.path_or_pixels):
                skips.counts["converted_to_48x48_grey (kept)"] += 1  # counted, not dropped
            yield {
                "__key__": item.key,
                "png": encode_png(image),
                "json": {"name": item.name, "split": item.split, "votes": [int(v) for v in item.votes]},
            }

    meta = {"dataset": "ferplus", "layout": detect_layout(source), "cleaning_report": report.as_dict(),
            "read_skipped": read_skips.as_dict(), "vote_columns": list(FERPLUS_VOTE_COLUMNS), "fingerprint": fingerprint}
    manifest, stats = write_shard_set(out_dir, jobs, make_samples, meta=meta, strict=strict, desc="FER+ shards")
    log.info("FER+ shards in %s: %d written, %d reused; %d images", out_dir, stats["written"], stats["reused"], manifest.total)
    return manifest


def _needed_conversion(path: Path) -> bool:
    try:
        with Image.open(path) as pil:
            return pil.mode != "L" or pil.size != (IMAGE_SIZE, IMAGE_SIZE)
    except OSError:
        return False
