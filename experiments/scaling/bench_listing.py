"""What a VoxCeleb2-sized manifest costs: listing, splitting, planning and fingerprinting (issue 21, items 2 and 6).

    python experiments/scaling/bench_listing.py --sizes 11000 110000 1100000
    python experiments/scaling/bench_listing.py --sizes 110000 --tree /tmp/vox2_tree   # + the file walks

VoxCeleb2's shape: 6,112 identities, ~150k videos, 1,128,246 utterances (~7.4 per video). For each
size N (utterances; identities and videos scaled with it), in memory: the identity split
(``make_split``), the split assignment and shard plan (``plan_jobs``), the set's ``manifest.json``
(N / 64 shards: write, load, per-split paths and counts). With ``--tree``: a VoxCeleb2 layout of N
empty ``<id>/<video>/<n>.mp4`` files (made once), walked by ``discover`` (layout detection + items)
and by the fingerprint's listing (``input_fingerprint``). Each figure is wall and CPU seconds, and CPU seconds per
million entries, so growth that is worse than linear shows up as a rising per-million figure.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

VOX2 = {"identities": 6112, "videos": 150_480, "utterances": 1_128_246}


def shape(n: int) -> list[tuple[str, str, str]]:
    """(identity, video, utterance) of N utterances in VoxCeleb2's proportions."""
    identities = max(2, round(n * VOX2["identities"] / VOX2["utterances"]))
    videos = max(identities, round(n * VOX2["videos"] / VOX2["utterances"]))
    # utterance k is the (k // videos)-th of video k % videos, which belongs to identity video % identities
    return [(f"id{(k % videos) % identities:05d}", f"yt{k % videos:07d}", f"{k // videos:05d}") for k in range(n)]


def timed(results: dict, name: str, n: int, fn):
    """Run ``fn``; record wall and CPU seconds (CPU: this process's, robust to a shared machine's load)."""
    wall, cpu = time.perf_counter(), time.process_time()
    value = fn()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    results[name] = {"wall_seconds": round(wall, 3), "cpu_seconds": round(cpu, 3), "cpu_seconds_per_million": round(cpu / n * 1e6, 2)}
    print(f"  {name:<28} {wall:8.2f} s wall {cpu:8.2f} s CPU  ({cpu / n * 1e6:7.2f} CPU s per million)", flush=True)
    return value


def bench_memory(n: int) -> dict:
    from crossmodal.io.splits import make_split
    from crossmodal.pipeline.pairs import PairItem, plan_jobs
    from crossmodal.pipeline.shards import load_manifest, write_json

    results: dict = {}
    entries = shape(n)
    items = [PairItem("centred_video", i, v, u, f"/vox2/{i}/{v}/{u}.mp4") for i, v, u in entries]
    split = timed(results, "make_split", n, lambda: make_split([(i.identity, i.video) for i in items], seed=0,
                                                                 unheard_fraction=0.2, heard_fraction=0.05))
    jobs = timed(results, "assign + plan_jobs", n, lambda: plan_jobs(items, split, 64))
    with tempfile.TemporaryDirectory() as tmp:
        shards = [{"name": f"{job.name}.tar", "count": len(job.items)} for job in jobs]
        timed(results, "manifest write", n, lambda: write_json(Path(tmp) / "manifest.json", {"meta": {}, "shards": shards}))
        manifest = timed(results, "manifest load", n, lambda: load_manifest(tmp))
        timed(results, "split paths + counts", n, lambda: [(manifest.paths(f"{s}-"), manifest.count(f"{s}-"))
                                                           for s in ("train", "heard", "unheard")])
    results["shards"] = len(jobs)
    results["heard_videos"], results["unheard_identities"] = len(split.heard), len(split.unheard)
    return results


def make_tree(root: Path, n: int) -> None:
    """N empty files in the VoxCeleb2 layout (kept: made once per root and size)."""
    stamp = root / f".made-{n}"
    if stamp.exists():
        return
    started = time.perf_counter()
    made_dirs: set[str] = set()
    for index, (identity, video, utterance) in enumerate(shape(n)):
        folder = root / identity / video
        if str(folder) not in made_dirs:
            folder.mkdir(parents=True, exist_ok=True)
            made_dirs.add(str(folder))
        (folder / f"{utterance}.mp4").touch()
        if index and index % 100_000 == 0:
            print(f"  tree: {index} files in {time.perf_counter() - started:.0f} s", flush=True)
    stamp.touch()


def bench_tree(root: Path, n: int) -> dict:
    from crossmodal.pipeline.fingerprint import input_fingerprint
    from crossmodal.pipeline.pairs import PairsConfig, discover

    make_tree(root, n)
    results: dict = {}
    layout, items = timed(results, "discover (layout + items)", n, lambda: discover(PairsConfig(source=str(root))))
    timed(results, "fingerprint listing", n, lambda: input_fingerprint("pairs", sources={"source": root}))
    results["layout"], results["items"] = layout, len(items)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[11_000, 110_000, 1_100_000])
    parser.add_argument("--tree", type=Path, default=None, help="folder for the VoxCeleb2-layout file trees (one per size)")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    report = {}
    for n in args.sizes:
        print(f"N = {n:,} utterances", flush=True)
        report[n] = bench_memory(n)
        if args.tree:
            report[n]["tree"] = bench_tree(args.tree / f"vox2-{n}", n)
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
