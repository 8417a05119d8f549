"""crossmodal performance benchmarks P1-P6 (`make bench`): each prints ratios measured side by side in one run.

    .venv/bin/python experiments/perf/run_all.py            # full: a few minutes on 2 cores
    .venv/bin/python experiments/perf/run_all.py --quick    # smoke run, ~1-2 min
    .venv/bin/python experiments/perf/run_all.py --only P1,P3 --json results.json

P1 framework overhead, P2 input pipeline, P3 teacher cache, P4 streaming memory, P5 front-end (perfkit.py);
P6 extraction overhead (bench_extract.py, run as a subprocess); TEACHER the CPU teacher's old forward vs its
inference form (bench_teacher.py, a subprocess; issue 22 goal 2). The benchmark shards are built once
from real EmoDB speech and FER+ faces when ../shared/data has them (synthesised otherwise) and cached
in --work-dir. See experiments/perf/README.md for the figures and what they mean.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
os.environ.setdefault("WANDB_MODE", "disabled")

import perfkit  # noqa: E402
from benchdata import BenchDataSpec, default_sources, make_bench_data, subset_shards  # noqa: E402

BENCHES = {"P1": perfkit.p1, "P2": perfkit.p2, "P3": perfkit.p3, "P4": perfkit.p4, "P5": perfkit.p5}
DATA = {
    "full": BenchDataSpec(segments=96, segment_seconds=8.0, per_shard=32, heard=8),
    "quick": BenchDataSpec(segments=32, segment_seconds=8.0, per_shard=16, heard=4),
    "tiny": BenchDataSpec(segments=6, segment_seconds=5.0, per_shard=3, heard=2),
}




def p6(work: Path, data: dict, sizes: perfkit.Sizes) -> dict:
    """P6 (bench_extract.py, another engineer's): run it on a subset of the same pair shards; pass its output on."""
    pairs = subset_shards(Path(data["pairs"]), work / "p6_pairs", sizes.p6_segments)
    cmd = [sys.executable, str(HERE / "bench_extract.py"), "--pairs", str(pairs), "--copies", "1", "--repeats", str(sizes.p6_repeats),
           "--work-dir", str(work / "p6")]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("P6")]
    if proc.returncode != 0:
        print(f"P6 extraction overhead: bench_extract.py failed ({proc.returncode}): {proc.stderr.strip().splitlines()[-1:]}")
        return {"error": proc.stderr[-2000:]}
    for line in lines:
        print(line)
    try:
        result = json.loads(proc.stdout[proc.stdout.index("{"): proc.stdout.rindex("}") + 1])
    except ValueError:
        result = {}
    result["lines"] = lines
    result["command"] = " ".join(cmd)
    return result


def teacher(work: Path, data: dict, sizes: perfkit.Sizes) -> dict:
    """TEACHER (bench_teacher.py): the CPU teacher, old forward vs inference form, on real FER+ test faces."""
    faces = 64 * sizes.p6_segments  # 1024 full, 256 quick, 128 tiny
    cmd = [sys.executable, str(HERE / "bench_teacher.py"), "--faces", str(faces), "--repeats", str(sizes.repeats),
           "--json", str(work / "teacher.json")]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("Teacher")]
    if proc.returncode != 0:
        print(f"TEACHER: bench_teacher.py failed ({proc.returncode}): {proc.stderr.strip().splitlines()[-1:]}")
        return {"error": proc.stderr[-2000:]}
    for line in lines:
        print(line)
    result = json.loads((work / "teacher.json").read_text())
    result["lines"], result["command"] = lines, " ".join(cmd)
    return result


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, ~1-2 min")
    parser.add_argument("--tiny", action="store_true", help="the smallest sizes (tests): checks the benchmarks run, figures meaningless")
    parser.add_argument("--only", default="P1,P2,P3,P4,P5,P6,TEACHER", help="comma-separated subset, e.g. P1,P4")
    parser.add_argument("--work-dir", default=os.environ.get("CROSSMODAL_PERF_DIR", str(Path(os.environ.get("TMPDIR", "/tmp")) / "crossmodal_perf")))
    parser.add_argument("--emodb", default=None, help="EmoDB folder (default: ../shared/data/emodb when there)")
    parser.add_argument("--ferplus", default=None, help="FER+ folder (default: ../shared/data/ferplus when there)")
    parser.add_argument("--synthetic", action="store_true", help="synthesised audio and faces even when the real data is there")
    parser.add_argument("--json", default=None, help="write all figures to this JSON file")
    parser.add_argument("--repeats", type=int, default=0, help="rounds of alternation (default: 3 full, 1 quick)")
    # internal: the P1 bare loop runs in its own process, as the Lightning run does
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--shards", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--steps", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--out", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.child == "p1_bare":
        perfkit.p1_bare_run(Path(args.work_dir), args.shards, args.steps, Path(args.out))
        return {}

    level = "tiny" if args.tiny else "quick" if args.quick else "full"
    sizes = {"tiny": perfkit.TINY, "quick": perfkit.QUICK, "full": perfkit.Sizes()}[level]
    if args.repeats:
        sizes = dataclasses.replace(sizes, repeats=args.repeats)
    work = Path(args.work_dir) / level
    work.mkdir(parents=True, exist_ok=True)
    emodb, ferplus = (None, None) if args.synthetic else default_sources()
    spec = DATA[level]
    spec.emodb, spec.ferplus = args.emodb or emodb, args.ferplus or ferplus

    started = time.time()
    print(f"crossmodal perf ({level}) {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} on {perfkit.machine()}; {perfkit.load_now()}")
    data = make_bench_data(work / "data", spec)
    print(f"data: {data['segments']} training segments, {data['frames']} face frames; {data['voices']}; {data['faces']}; "
          f"distillation shards by the shipped teacher ({time.time() - started:.0f} s incl. building when not cached)")
    chosen = [name.strip().upper() for name in args.only.split(",") if name.strip()]
    results: dict = {"level": level, "machine": perfkit.machine(), "data": data, "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    for name in chosen:
        tick = time.time()
        try:
            results[name] = {"P6": p6, "TEACHER": teacher}.get(name, BENCHES.get(name))(work, data, sizes)
        except Exception as exn:  # noqa: BLE001 - one broken benchmark must not hide the others
            import traceback

            traceback.print_exc()
            print(f"{name}: FAILED: {exn}")
            results[name] = {"error": str(exn)}
        results.setdefault(name, {})["seconds"] = round(time.time() - tick, 1)
        print(f"  ({name} took {time.time() - tick:.0f} s; {perfkit.load_now()})", flush=True)
    print(f"total {time.time() - started:.0f} s; {perfkit.load_now()}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1, default=str))
    failed = [name for name in chosen if "error" in results.get(name, {})]
    if failed:
        raise SystemExit(f"benchmarks failed: {', '.join(failed)}")
    return results


if __name__ == "__main__":
    main()
