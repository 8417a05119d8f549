"""task=extract: build the pair shards if needed, run the teacher over their faces, report.

    python -m crossmodal.run experiment=extract_logits prep.source=/data/grid [teacher_ckpt=...] [teacher_precision=fp32]
    python -m crossmodal.run experiment=extract_logits prep.pairs=/data/pairs/voxceleb1

The recipe is the ``prep`` node: a PairsConfig (talking-face videos) or a PseudoPairsConfig (a labelled
corpus x FER+ faces); ``teacher_precision`` (README.md) is recorded in the shards' fingerprint and manifest.
The work itself is :mod:`crossmodal.pipeline.extract`; this task starts the processes the trainer config
asks for, and reports throughput, counts of segments, frames and skips, and a histogram of the teacher's
dominant emotion per segment (argmax of the max-pooled logits, the paper's statistic) saved to ``plots/``.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from crossmodal.config.checks import ConfigError
from crossmodal.emotions import EMOTIONS
from crossmodal.models.loading import load_teacher, teacher_digest, teacher_name
from crossmodal.models.teacher_int8 import resolve_precision
from crossmodal.pipeline.distill_sets import distill_fingerprint, distill_folder
from crossmodal.pipeline.extract import extract_logits, summarise
from crossmodal.pipeline.pairs import prepare_report
from crossmodal.pipeline.shards import Manifest
from crossmodal.tasks.common import build_recipe

log = logging.getLogger(__name__)


def run(cfg, ctx) -> dict[str, Any]:
    data = build_recipe(cfg, "experiment=extract_logits prep.source=VIDEOS (or prep.pairs=PAIR_SHARDS), "
                                 "or experiment=pseudo_pairs prep.source=EMODB prep.ferplus=FERPLUS")
    if not callable(getattr(data, "prepare", None)):
        raise ConfigError(f"task=extract needs pair data (prep=pairs or prep=pseudo_pairs), got prep._target_={cfg.prep.get('_target_')}")
    strict = bool(cfg.get("strict")) or data.strict
    # trainer=ddp / trainer.gpus=N / num_nodes: one process per device, each extracting its shards
    fabric = ctx.launch_processes()
    rank, world, device = fabric.global_rank, fabric.world_size, fabric.device
    # The teacher first: a missing or unreadable teacher fails before any decoding work.
    teacher_ckpt = cfg.get("teacher_ckpt")
    precision = resolve_precision(cfg.get("teacher_precision"), device)
    teacher = load_teacher(teacher_ckpt, device=device, precision=precision)
    name = teacher_name(teacher_ckpt)
    digest = teacher_digest(teacher_ckpt)
    pairs = data.prepare(rank=rank, world_size=world, strict=strict)
    # The folder is named from the inputs (pairs, the teacher file's bytes, settings): a retrained
    # teacher or other videos get new shards, and distill_* finds these by the teacher's digest.
    fingerprint = distill_fingerprint(pairs.meta.get("fingerprint"), teacher_ckpt, logits_dtype=data.logits_dtype,
                                      pairs_root=pairs.root, precision=precision)
    pairs_name = pairs.meta.get("name") or pairs.root.name
    out_dir = Path(data.distill_dir) if data.distill_dir else distill_folder(data.data_dir, pairs_name, teacher_ckpt, fingerprint)
    manifest, stats = extract_logits(
        pairs, out_dir, teacher, teacher_name=name, teacher_id=digest, batch_size=data.batch_size,
        logits_dtype=data.logits_dtype, num_workers=data.num_workers, strict=strict, rank=rank, world_size=world,
        device=device, fingerprint=fingerprint, named_by="prep.distill_dir" if data.distill_dir else None,
    )
    stats = _all_ranks(stats, device) if world > 1 else stats
    if manifest is None:  # not rank 0
        return {}
    summary = summarise(manifest)
    metrics = report(pairs, manifest, stats, summary)
    from crossmodal.utils.plots import bar_figure

    title = f"teacher {name} on {pairs.root.name}: dominant emotion of {summary['segments']} segments"
    ctx.save_figure("extract/dominant_emotion", bar_figure({e: summary["dominant"].get(e, 0) for e in EMOTIONS}, title=title,
                                                           ylabel="segments"))
    return metrics


def _all_ranks(work: dict[str, Any], device: Any) -> dict[str, Any]:
    """This run's work over every rank: counts summed, wall and teacher time of the slowest rank."""
    import torch.distributed as dist

    summed, slowest = ("frames", "segments", "written", "reused"), ("seconds", "teacher_seconds")
    counts = torch.tensor([float(work.get(k, 0)) for k in summed], dtype=torch.float64, device=device)
    times = torch.tensor([float(work.get(k, 0.0)) for k in slowest], dtype=torch.float64, device=device)
    dist.all_reduce(counts, op=dist.ReduceOp.SUM)
    dist.all_reduce(times, op=dist.ReduceOp.MAX)
    return {**work, **{k: int(v) for k, v in zip(summed, counts.tolist())}, **dict(zip(slowest, times.tolist()))}


def report(pairs: Manifest, distill: Manifest, work: dict[str, Any], summary: dict[str, Any]) -> dict[str, Any]:
    """Flat metrics for metrics.json, and the printed summary line with the throughput."""
    metrics: dict[str, Any] = {
        "extract/segments": summary["segments"],
        "extract/frames": summary["frames"],
        "extract/shards_written": work.get("written", 0),
        "extract/shards_reused": work.get("reused", 0),
        "extract/frames_this_run": work["frames"],
        "extract/seconds": round(work["seconds"], 3),
        "extract/teacher_seconds": round(work["teacher_seconds"], 3),
    }
    if work["frames"]:
        metrics["extract/frames_per_s"] = round(work["frames"] / max(work["seconds"], 1e-9), 2)
    metrics.update({f"extract/segments/{split}": n for split, n in sorted(summary["per_split"].items())})
    metrics.update({f"extract/dominant/{emotion}": n for emotion, n in summary["dominant"].items()})
    for key in ("label_agreement", "frame_label_agreement"):
        if key in summary:
            metrics[f"extract/{key}"] = round(summary[key], 4)
    metrics.update(prepare_report(pairs))
    counts = distill.skipped.get("counts", {})
    metrics["extract/skipped"] = sum(counts.values())
    metrics.update({f"extract/skipped/{reason}": n for reason, n in sorted(counts.items())})
    throughput = (
        f"{metrics['extract/frames_per_s']:.1f} frames/s ({work['frames']} frames in {work['seconds']:.1f} s)"
        if work["frames"]
        else f"all {work.get('reused', 0)} shards reused, nothing to extract"
    )
    skipped = {**{f"pairs/{k}": v for k, v in pairs.skipped.get("counts", {}).items()},
               **{f"extract/{k}": v for k, v in distill.skipped.get("counts", {}).items()}}
    message = (
        f"extract: {summary['segments']} segments, {summary['frames']} face frames -> {distill.root} "
        f"(teacher in {distill.meta.get('teacher_precision', 'fp32')})\n"
        f"extract: throughput {throughput}\n"
        f"extract: skipped {skipped or 'nothing'}; dominant emotion per segment {summary['dominant']}"
    )
    if "label_agreement" in summary:
        message += (f"\nextract: teacher agrees with the true label on {summary['label_agreement']:.1%} of segments "
                    f"({summary['frame_label_agreement']:.1%} of frames)")
    log.info(message)  # Hydra's logging puts it on the console and in run.log
    return metrics
