"""Record the demo's figures: how far they move between runs, and the entry README.md and the tests read.

    # runs of `make demo` (fresh data folder each), the first one as a user runs it:
    WANDB_MODE=disabled python -m crossmodal.run hydra.run.dir=/tmp/demo/a paths.data_dir=/tmp/demo/a-data
    OMP_NUM_THREADS=1 WANDB_MODE=disabled python -m crossmodal.run cpu_threads=1 hydra.run.dir=/tmp/demo/b paths.data_dir=/tmp/demo/b-data
    python experiments/demo/record.py /tmp/demo/a /tmp/demo/b ...            # the spread table (Markdown)
    python experiments/demo/record.py /tmp/demo/a /tmp/demo/b ... --write    # + recorded.json "demo"
    python experiments/demo/record.py /tmp/demo/a --block                    # the README's demo block

The first run is the reference: its figures are recorded. For each tolerance group (``ua``, ``wa``,
``auc_mean``, ``auc``: crossmodal.tasks.demo.DEMO_FIGURES) the largest distance of any other run's
figure from the reference is recorded as ``measured``; the ``tolerance`` is that, or the floor given
with ``--floor GROUP=VALUE`` when larger (say why in experiments/demo/README.md). Other entries of
recorded.json are left as they are.
"""
from __future__ import annotations

import argparse
import json
import math
import subprocess
from pathlib import Path

from crossmodal.tasks import demo
from crossmodal.utils.atomic import write_text

ROOT = Path(__file__).resolve().parents[2]


def load_metrics(run_dir: Path) -> dict[str, float]:
    path = run_dir / "metrics.json"
    if not path.exists():
        raise SystemExit(f"{path} does not exist: pass the run folders (hydra.run.dir) of finished demo runs")
    return json.loads(path.read_text())


def spread(runs: list[dict[str, float]]) -> tuple[dict[str, float], dict[str, float]]:
    """(reference figures, largest distance from the reference per tolerance group)."""
    reference = {k: float(v) for k, v in runs[0].items() if k in demo.DEMO_FIGURES}
    moved = dict.fromkeys(sorted(set(demo.DEMO_FIGURES.values())), 0.0)
    for run in runs[1:]:
        for key, value in reference.items():
            other = run.get(key)
            if other is None:
                raise SystemExit(f"a run lacks {key}: all runs must be of the same demo")
            moved[demo.DEMO_FIGURES[key]] = max(moved[demo.DEMO_FIGURES[key]], abs(float(other) - value))
    return reference, moved


def table(names: list[str], runs: list[dict[str, float]], reference: dict[str, float]) -> str:
    lines = ["| figure | " + " | ".join(names) + " | max distance from the first |", "|---" * (len(names) + 2) + "|"]
    for key in reference:
        values = [float(run[key]) for run in runs]
        lines.append(f"| {key} | " + " | ".join(f"{v:.4f}" for v in values)
                     + f" | {max(abs(v - values[0]) for v in values):.4f} |")
    return "\n".join(lines)


def write_recorded(reference: dict[str, float], measured: dict[str, float], tolerance: dict[str, float], source: str,
                   commit: str | None = None) -> None:
    """recorded.json with its ``demo`` entry replaced, one top-level entry per line (as written by hand)."""
    recorded = json.loads(demo.RECORDED.read_text())
    commit = commit or subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT).stdout.strip()
    recorded["demo"] = {"figures": {k: round(v, 6) for k, v in reference.items()},
                        "measured": {k: round(v, 4) for k, v in measured.items()},
                        "tolerance": {k: round(v, 4) for k, v in tolerance.items()},
                        "commit": commit, "source": source}
    body = ",\n".join(f" {json.dumps(key)}: {json.dumps(value)}" for key, value in recorded.items())
    write_text(demo.RECORDED, "{\n" + body + "\n}\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", type=Path, help="demo run folders; the first is the reference")
    parser.add_argument("--write", action="store_true", help="write the reference and tolerance into recorded.json")
    parser.add_argument("--block", action="store_true", help="print the README's demo block for the reference")
    parser.add_argument("--floor", action="append", default=[], metavar="GROUP=VALUE",
                        help="the smallest tolerance of a group (e.g. ua=0.04)")
    parser.add_argument("--source", default="experiments/demo/README.md")
    parser.add_argument("--commit", help="the commit the runs ran (default: HEAD)")
    args = parser.parse_args()
    runs = [load_metrics(run) for run in args.runs]
    reference, moved = spread(runs)
    print(table([run.name for run in args.runs], runs, reference))
    floors = {}
    for item in args.floor:
        group, _, value = item.partition("=")
        if group not in moved or not value:
            raise SystemExit(f"--floor {item}: expected GROUP=VALUE with GROUP one of {sorted(moved)}")
        floors[group] = float(value)
    tolerance = {group: max(value, floors.get(group, 0.0)) for group, value in moved.items()}
    print("largest distance from the first run:", {k: round(v, 4) for k, v in moved.items()})
    print("tolerance:", {k: round(v, 4) for k, v in tolerance.items()})
    if args.write:
        write_recorded(reference, moved, tolerance, args.source, args.commit)
        print(f"wrote the demo entry of {demo.RECORDED}")
    if args.block:
        from crossmodal.run import _compose

        classes = list(_compose([], []).model.label_classes)
        text = demo.summary_text(reference, demo.recorded_figures(), classes, "logs/demo/runs/<time>")
        assert not any(math.isnan(v) for v in reference.values())
        print("```text\n$ make demo" + text + "\n```")


if __name__ == "__main__":
    main()
