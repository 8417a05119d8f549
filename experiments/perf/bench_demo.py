"""`make demo` timed step by step (issue 22, goal 1: at most 90 s on 2 idle cores, install excluded).

Runs what `make demo` runs (``WANDB_MODE=${WANDB_MODE:-offline} python -m crossmodal.run``) with a
fresh data folder and run folder in a temporary directory, so every step really runs (pseudo-pairs,
the teacher's logits, training, test, summary and report), then reads the steps' times from the
run's own log (run.log timestamps):

    start-up       launch -> the first preparation line (imports, config, Trainer)
    pseudo-pairs   -> "extracting teacher logits"
    teacher        -> the extraction's "extract: N frames ..." line
    training       -> "`Trainer.fit` stopped" (loader start, sanity check, every epoch and its validation)
    test+report    -> the process exits (test, student file, summary, report.html, W&B offline sync)

    .venv/bin/python experiments/perf/bench_demo.py [--runs 2] [--keep DIR] [-- extra overrides]

The load average is printed before and after each run: on a shared machine the total moves with
it, so a figure for the 90-s goal is only meaningful from a run at load < 1.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
TARGET = 90.0
STAMP = re.compile(r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})\]")
MARKS = {  # step end -> the first run.log line containing this text
    "start-up": "pseudo-pair shards for",
    "pseudo-pairs": "extracting teacher logits",
    "teacher": "extract: ",
    "training": "`Trainer.fit` stopped",
}


def load_now() -> str:
    return "load average " + " ".join(f"{v:.2f}" for v in os.getloadavg())


def line_times(log: str) -> list[tuple[float, str]]:
    out = []
    for line in log.splitlines():
        match = STAMP.match(line)
        if match:
            stamp = dt.datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S,%f")
            out.append((stamp.timestamp(), line))
    return out


def steps(log: str, launched: float, exited: float) -> dict[str, float]:
    """Seconds per step from the run log's timestamps (local time, as Hydra's logger writes them)."""
    lines = line_times(log)
    marks, previous, out = {}, launched, {}
    for step, text in MARKS.items():
        found = next((t for t, line in lines if text in line and t >= previous - 1e-3), None)
        if found is None:
            raise SystemExit(f"bench_demo: run.log has no line with {text!r} (step {step}); did the data folder exist already?")
        marks[step] = found
        out[step] = found - previous
        previous = found
    out["test+report"] = exited - previous
    epochs = [float(m) for m in re.findall(r"epoch \d+/\d+ done in ([\d.]+) s", log)]
    out["epochs"] = len(epochs)
    out["epoch_median"] = sorted(epochs)[len(epochs) // 2] if epochs else float("nan")
    out["total"] = exited - launched
    return out


def run_once(work: Path, overrides: list[str]) -> dict[str, float]:
    run_dir, data_dir = work / "run", work / "data"
    env = dict(os.environ, WANDB_MODE=os.environ.get("WANDB_MODE") or "offline")
    cmd = [sys.executable, "-m", "crossmodal.run", f"hydra.run.dir={run_dir}", f"paths.data_dir={data_dir}", *overrides]
    before = load_now()
    launched = time.time()
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    exited = time.time()
    if proc.returncode != 0:
        raise SystemExit(f"bench_demo: the demo failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    result = steps((run_dir / "run.log").read_text(), launched, exited)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    result["ua_unheard"] = metrics.get("test/ua_unheard")
    result["load_before"], result["load_after"] = before, load_now()
    return result


def main(argv: list[str] | None = None) -> list[dict[str, float]]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--keep", type=Path, help="keep the run and data folders here (default: a temporary directory, removed)")
    parser.add_argument("--json", type=Path)
    parser.add_argument("overrides", nargs="*", help="extra overrides for the run (key=value)")
    args = parser.parse_args(argv)
    results = []
    for n in range(args.runs):
        root = Path(tempfile.mkdtemp(prefix="bench_demo_")) if args.keep is None else args.keep / f"run{n}"
        root.mkdir(parents=True, exist_ok=True)
        try:
            result = run_once(root, args.overrides)
        finally:
            if args.keep is None:
                shutil.rmtree(root, ignore_errors=True)
        results.append(result)
        parts = ", ".join(f"{k} {result[k]:.1f} s" for k in (*MARKS, "test+report"))
        verdict = "met" if result["total"] <= TARGET else "NOT met"
        print(f"demo run {n + 1}: total {result['total']:.1f} s (target <= {TARGET:.0f} s on 2 idle cores: {verdict}); {parts}; "
              f"{result['epochs']} epochs, median {result['epoch_median']:.2f} s; UA {result['ua_unheard']:.4f}; "
              f"{result['load_before']} before, {result['load_after']} after", flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return results


if __name__ == "__main__":
    main()
