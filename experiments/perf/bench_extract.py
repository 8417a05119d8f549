"""P6: teacher-logit extraction throughput vs the teacher's plain batched forward pass on the same frames.

    .venv/bin/python experiments/perf/bench_extract.py --source /path/to/grid [--teacher teacher.safetensors] [--copies 8]
    .venv/bin/python experiments/perf/bench_extract.py --pairs data/pairs/voxceleb1

The plain pass gets every face frame already decoded in memory and runs ``preprocess`` +
``forward`` in batches: the floor for the teacher itself. Extraction (crossmodal.tasks.extract)
reads the pair shards, decodes the JPEG/PNG frames, runs the same teacher in the same batches and
writes the distillation shards (flac copy, logits, times, json, atomic renames, sidecars). The
ratio extraction time / plain time is the overhead of decoding and writing; target <= 1.3.
Both are measured side by side in one process, alternating, ``--repeats`` times; medians reported.
On a shared machine the load changes between runs, so the bench also reports ``ratio_in_run``:
each extraction's wall time over the time spent inside the teacher in that same run.
``--copies`` replicates the pair segments (with new keys) into shards of ``--segments-per-shard``
segments, for a larger, steadier workload with shards the size real ones have.
"""
from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def replicate(pairs_dir: Path, out: Path, copies: int, segments_per_shard: int) -> Path:
    """``copies`` copies of every segment of ``pairs_dir`` (keys made unique), ``segments_per_shard`` per shard.

    Real pair shards hold ``videos_per_shard`` (64) videos, i.e. hundreds of segments and thousands
    of frames, so the teacher runs on full batches; a handful of GRID clips alone would not.
    """
    from crossmodal.pipeline.shards import ShardJob, iter_shard, load_manifest, write_shard_set

    manifest = load_manifest(pairs_dir)
    units = [(path, copy) for copy in range(copies) for path in manifest.paths()]
    samples = []
    for path, copy in units:
        for sample in iter_shard(path):
            sample = {k: v for k, v in sample.items() if not k.startswith("__") or k == "__key__"}
            sample["__key__"] = f"{sample['__key__']}_c{copy}"
            samples.append(sample)
    jobs = [ShardJob(f"train-{i // segments_per_shard:06d}", samples[i : i + segments_per_shard])
            for i in range(0, len(samples), segments_per_shard)]
    write_shard_set(out, jobs, lambda job, skips: iter(job.items), meta=manifest.meta, desc="replicate")
    return out


def all_frames(pairs) -> np.ndarray:
    from crossmodal.pipeline.extract import _read_pair_shard

    frames = []
    for path in pairs.paths():
        samples, _ = _read_pair_shard(path, strict=True)
        frames += [s["frames"] for s in samples]
    return np.concatenate(frames)


@torch.inference_mode()
def plain_forward(teacher, frames: np.ndarray, batch_size: int) -> float:
    started = time.perf_counter()
    for start in range(0, len(frames), batch_size):
        teacher(teacher.preprocess(torch.from_numpy(frames[start : start + batch_size])))
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", help="raw talking-face videos (e.g. the GRID folder); pair shards are built first")
    parser.add_argument("--pairs", help="an existing pair shard set instead of --source")
    parser.add_argument("--teacher", default=None, help="teacher file (default: the shipped teacher_cpu.safetensors)")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--copies", type=int, default=8, help="replicate the pair segments this many times")
    parser.add_argument("--segments-per-shard", type=int, default=64, help="segments per replicated shard")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: leave the default)")
    parser.add_argument("--workers", type=int, default=0, help="decoding worker processes for extraction")
    parser.add_argument("--work-dir", default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    from crossmodal.models.loading import load_teacher
    from crossmodal.pipeline.extract import extract_logits
    from crossmodal.pipeline.pairs import PairsConfig, prepare_pairs
    from crossmodal.pipeline.shards import load_manifest

    work = Path(args.work_dir or tempfile.mkdtemp(prefix="bench_extract-"))
    if args.pairs:
        base = Path(args.pairs)
    elif args.source:
        base = prepare_pairs(PairsConfig(source=args.source, data_dir=str(work / "data"), videos_per_shard=4)).root
    else:
        parser.error("give --source (raw videos) or --pairs (a pair shard set)")
    pairs = load_manifest(replicate(base, work / "replicated", args.copies, args.segments_per_shard) if args.copies > 1 else base)
    teacher = load_teacher(args.teacher)
    frames = all_frames(pairs)
    plain_forward(teacher, frames[: args.batch_size], args.batch_size)  # warm-up

    plain_times, extract_times, inside_times = [], [], []
    for repeat in range(args.repeats):
        plain_times.append(plain_forward(teacher, frames, args.batch_size))
        out = work / f"distill-{repeat}"
        shutil.rmtree(out, ignore_errors=True)
        _, stats = extract_logits(pairs, out, teacher, teacher_name="bench", batch_size=args.batch_size, num_workers=args.workers)
        assert stats["frames"] == len(frames), (stats, len(frames))
        extract_times.append(stats["seconds"])
        inside_times.append(stats["teacher_seconds"])
    plain, extract = statistics.median(plain_times), statistics.median(extract_times)
    result = {
        "frames": int(len(frames)),
        "segments": pairs.total,
        "shards": len(pairs.shards),
        "frame_shape": list(frames.shape[1:]),
        "teacher": getattr(teacher, "name", "?"),
        "batch_size": args.batch_size,
        "torch_threads": torch.get_num_threads(),
        "workers": args.workers,
        "plain_frames_per_s": round(len(frames) / plain, 1),
        "extract_frames_per_s": round(len(frames) / extract, 1),
        "ratio": round(extract / plain, 3),
        # The same overhead measured inside each extraction run (wall time / time in the teacher):
        # insensitive to load that changes between the side-by-side runs on a shared machine.
        "ratio_in_run": round(statistics.median(e / i for e, i in zip(extract_times, inside_times)), 3),
        "plain_s": [round(t, 3) for t in plain_times],
        "extract_s": [round(t, 3) for t in extract_times],
    }
    print(json.dumps(result, indent=1))
    print(f"P6 extraction / plain forward = {result['ratio']:.2f}x (target <= 1.3x): "
          f"{result['extract_frames_per_s']} vs {result['plain_frames_per_s']} frames/s on {len(frames)} frames; "
          f"in-run wall / teacher time = {result['ratio_in_run']:.2f}x")


if __name__ == "__main__":
    main()
