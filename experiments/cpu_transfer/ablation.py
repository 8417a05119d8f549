"""The recipe ablation of the CPU transfer: one row per recipe, each a speaker-fold sweep
(hparams_search=cpu_transfer_cv with that recipe's overrides), judged like cv_summary.py.

    python experiments/cpu_transfer/ablation.py base=SWEEP_A "log-mel unnormalised=SWEEP_B" ... [--out DIR]

The first row is the reference. Each row gives its runs, mean UA on the unheard speakers (6 emotions)
with a 95 % t-interval over its runs (folds x seeds), and the change against the reference with a 95 %
t-interval over the (fold, seed) pairs both rows ran: the pairs share speakers, splits and seed, so
the paired interval is the one that says whether a change helped. The overrides each row used are
read back from its runs' Hydra overrides (the ones that differ from the reference's).

Writes ablation.md, ablation.json and ablation.png into --out (default: the current folder).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cv_summary import find_runs, t_interval  # noqa: E402

SWEEP_KEYS = ("data.prepare.fold", "seed", "experiment", "hydra", "paths.", "logger", "hparams_search",
              "data.prepare.speaker_folds", "teacher_ckpt", "data.num_workers")


def run_overrides(path: Path) -> list[str]:
    """The Hydra overrides of one job, less the ones the sweep itself varies or that only place files."""
    overrides = path / ".hydra" / "overrides.yaml"
    values = yaml.safe_load(overrides.read_text()) if overrides.exists() else []
    return sorted(v for v in values if not v.lstrip("+~").startswith(SWEEP_KEYS))


def rows(named: list[tuple[str, Path]]) -> list[dict[str, Any]]:
    out = []
    reference: dict[tuple[str, int, int], float] | None = None
    for name, sweep in named:
        runs = find_runs([sweep])
        kinds = {run.kind for run in runs}
        scores = {(run.kind, run.fold, run.seed): run.ua for run in runs}
        mean, low, high = t_interval(list(scores.values()))
        row: dict[str, Any] = {"name": name, "sweep": str(sweep), "students": sorted(kinds), "runs": len(runs),
                               "folds": sorted({run.fold for run in runs}), "seeds": sorted({run.seed for run in runs}),
                               "ua_mean": mean, "ua_ci95": [low, high],
                               "per_run": {f"{k}/fold{f}-seed{s}": v for (k, f, s), v in sorted(scores.items())},
                               "overrides": run_overrides(runs[0].path)}
        if reference is None:
            reference = scores
        else:
            shared = sorted(set(scores) & set(reference))
            if shared:
                diff, dlow, dhigh = t_interval([scores[key] - reference[key] for key in shared])
                row.update(delta=diff, delta_ci95=[dlow, dhigh], paired=len(shared))
        out.append(row)
    return out


def render(table: list[dict[str, Any]]) -> str:
    lines = ["| recipe | student | runs | mean UA | 95 % t-interval | change vs first row (paired) | overrides |",
             "|---|---|---|---|---|---|---|"]
    for row in table:
        delta = ""
        if "delta" in row:
            delta = f"{row['delta']:+.3f} [{row['delta_ci95'][0]:+.3f}, {row['delta_ci95'][1]:+.3f}] ({row['paired']} pairs)"
        overrides = " ".join(f"`{o}`" for o in row["overrides"]) or "(the recipe's defaults)"
        lines.append(f"| {row['name']} | {', '.join(row['students'])} | {row['runs']} | **{row['ua_mean']:.3f}** | "
                     f"[{row['ua_ci95'][0]:.3f}, {row['ua_ci95'][1]:.3f}] | {delta} | {overrides} |")
    return "\n".join(lines) + "\n"


def plot(table: list[dict[str, Any]], path: Path, target: float | None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from crossmodal.utils.atomic import atomic_path

    fig, ax = plt.subplots(figsize=(7, 0.5 * len(table) + 1.2))
    y = np.arange(len(table))[::-1]
    means = np.array([row["ua_mean"] for row in table])
    errors = np.array([[row["ua_mean"] - row["ua_ci95"][0], row["ua_ci95"][1] - row["ua_mean"]] for row in table]).T
    ax.barh(y, means, xerr=errors, color="#4c78a8", capsize=3)
    ax.set_yticks(y, [row["name"] for row in table])
    if target is not None:
        ax.axvline(target, color="#e45756", linestyle="--", label=f"eGeMAPS+LR {target:.3f}")
        ax.legend(loc="lower right")
    ax.set_xlabel("UA on unheard speakers (6 emotions), 95 % t-interval over folds x seeds")
    ax.set_xlim(0, 1)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("rows", nargs="+", help="NAME=SWEEP_DIR, the reference first")
    parser.add_argument("--out", type=Path, default=Path("."))
    parser.add_argument("--target", type=float, default=None, help="a UA to draw as a line (e.g. eGeMAPS+LR)")
    args = parser.parse_args(argv)
    named = []
    for item in args.rows:
        name, sep, sweep = item.rpartition("=")
        if not sep or not name:
            parser.error(f"{item!r}: write NAME=SWEEP_DIR")
        named.append((name, Path(sweep)))
    table = rows(named)
    from crossmodal.utils.atomic import write_json, write_text

    args.out.mkdir(parents=True, exist_ok=True)
    text = render(table)
    write_text(args.out / "ablation.md", text)
    write_json(args.out / "ablation.json", table)
    plot(table, args.out / "ablation.png", args.target)
    print(text, end="")
    print(f"wrote {args.out / 'ablation.md'}, ablation.json, ablation.png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
