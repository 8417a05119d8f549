"""The real preparation path on a folder of talking-face videos, per stage (issue 21, item 1).

    python experiments/scaling/bench_grid.py /data/grid_s1/data/s1 --work /tmp/grid_bench [--clips 128]

GRID speaker s1 (1,000 clips, CC BY 4.0) is in the GitHub repository TVR28/LipNet under data/s1.
Two runs of the entry point, as a user types them: ``experiment=extract_logits task=prepare`` (pairs:
decode, face detection and tracking, audio alignment, segments) and then ``experiment=extract_logits``
(reuses the pairs, runs the shipped teacher on every face frame). Per stage: CPU seconds of the run
(``getrusage`` of the child), video-seconds per core-second, peak RSS; then the share of sampled frames
with a face and the disk per hour of video of both shard sets. ``--clips N`` links the first N clips
into the work folder and uses those. Runs resume: a stage whose shards are there is reused (and then
costs only its start-up).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
VIDEO = (".mpg", ".mp4", ".avi", ".mov", ".mkv")


def _stage(name: str, overrides: list[str], work: Path) -> dict[str, Any]:
    env = dict(os.environ, WANDB_MODE="disabled", CROSSMODAL_NO_PROGRESS="1")
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    cmd = [sys.executable, "-m", "crossmodal.run", *overrides, f"paths.data_dir={work / 'data'}", f"hydra.run.dir={work / name}",
           "logger=csv", "report=false"]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{name} failed:\n{proc.stderr[-3000:]}")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"command": "python " + " ".join(cmd[1:]), "wall_seconds": round(time.perf_counter() - started, 1),
            "cpu_seconds": round(cpu, 1), "peak_rss_mb_any_run_so_far": round(after.ru_maxrss / 1024, 1)}


def _size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.glob("*.tar"))


def bench(source: Path, work: Path, clips: int | None = None) -> dict[str, Any]:
    from crossmodal.io.video import video_duration

    videos = sorted(p for p in source.iterdir() if p.suffix.lower() in VIDEO)
    if not videos:
        raise FileNotFoundError(f"no videos ({', '.join(VIDEO)}) in {source}")
    if clips:
        subset = work / f"clips-{clips}"
        subset.mkdir(parents=True, exist_ok=True)
        for video in videos[:clips]:
            if not (subset / video.name).exists():
                (subset / video.name).symlink_to(video)
        source, videos = subset, videos[:clips]
    seconds = sum(video_duration(v) for v in videos)
    base = ["experiment=extract_logits", f"prep.source={source}"]
    pairs = _stage("prepare", [*base, "task=prepare"], work)
    extract = _stage("extract", base, work)
    pair_sets = sorted((work / "data" / "pairs").glob("*"))
    distill_sets = sorted((work / "data" / "distill").glob("*"))
    stats = json.loads((pair_sets[-1] / "manifest.json").read_text())["meta"].get("stats", {})
    hours = seconds / 3600
    for stage in (pairs, extract):
        stage["video_seconds_per_core_second"] = round(seconds / max(stage["cpu_seconds"], 1e-9), 2)
    return {
        "source": str(source), "clips": len(videos), "video_seconds": round(seconds, 1), "pairs": pairs, "extract": extract,
        "frames_sampled": stats.get("frames_sampled"), "frames_with_face": stats.get("frames"),
        "face_share": round(stats["frames"] / stats["frames_sampled"], 4) if stats.get("frames_sampled") else None,
        "pairs_mb_per_hour": round(_size(pair_sets[-1]) / 1e6 / hours, 1),
        "distill_mb_per_hour": round(_size(distill_sets[-1]) / 1e6 / hours, 1) if distill_sets else None,
        "load_average": list(os.getloadavg()),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("source", type=Path, help="a folder of talking-face videos (e.g. GRID s1: .../data/s1)")
    parser.add_argument("--work", type=Path, required=True, help="shards, run folders (reused: a second run resumes)")
    parser.add_argument("--clips", type=int, default=None, help="only the first N clips")
    args = parser.parse_args(argv)
    print(json.dumps(bench(args.source, args.work, args.clips), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
