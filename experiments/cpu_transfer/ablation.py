"""The recipe ablation of the CPU transfer: one row per recipe, each a speaker-fold sweep
(hparams_search=cpu_transfer_cv with that recipe's overrides), judged like cv_summary.py.

    python experiments/cpu_transfer/ablation.py base=SWEEP_A "log-mel unnormalised=SWEEP_B" ... [--out DIR]

The first row is the reference. Each row gives its runs, mean UA on the unheard speakers (6 emotions)
with a 95 % t-interval over its runs (folds x seeds), and the change against the reference with a 95 %
t-interval over the (fold, seed) pairs both rows ran: the pairs share speakers, splits and seed, so
the paired interval is the one that says whether a change helped.

A recipe is chosen on the validation speakers only (``test/ua_heard``: each fold's held-out training
speaker, at the checkpoint the run kept), never on the unheard ones: the ``validation UA`` column is
the choice (with its paired change against the reference, the evidence a choice rests on), the
unheard columns are what the choice is worth. The last row, ``chosen per fold``, is
the nested version: in each fold the recipe with the best validation-speaker UA (over its seeds),
scored on that fold's unheard speakers. The overrides each row used are
read back from its runs' Hydra overrides (the ones that differ from the reference's).

Writes ablation.md, ablation.json and ablation.png into --out (default: the current folder).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cv_summary import find_runs, named_folders, paired_change  # noqa: E402

from crossmodal.eval.metrics import t_interval  # noqa: E402

SWEEP_KEYS = ("data.prepare.fold", "seed", "experiment", "hydra", "paths.", "logger", "hparams_search",
              "data.prepare.speaker_folds", "teacher_ckpt", "data.num_workers")


def run_overrides(path: Path) -> list[str]:
    """The Hydra overrides of one job, less the ones the sweep itself varies or that only place files."""
    overrides = path / ".hydra" / "overrides.yaml"
    values = yaml.safe_load(overrides.read_text()) if overrides.exists() else []
    return sorted(v for v in values if not v.lstrip("+~").startswith(SWEEP_KEYS))


def rows(named: list[tuple[str, Path]]) -> list[dict[str, Any]]:
    out = []
    reference: tuple[dict, dict] | None = None
    for name, sweep in named:
        runs = find_runs([sweep])
        kinds = {run.kind for run in runs}
        scores = {(run.kind, run.fold, run.seed): run.ua for run in runs}
        validation = {(run.kind, run.fold, run.seed): validation_ua(run.path) for run in runs}
        mean, low, high = t_interval(list(scores.values()))
        row: dict[str, Any] = {"name": name, "sweep": str(sweep), "students": sorted(kinds), "runs": len(runs),
                               "folds": sorted({run.fold for run in runs}), "seeds": sorted({run.seed for run in runs}),
                               "ua_mean": mean, "ua_ci95": [low, high],
                               "validation_ua_mean": float(np.mean(list(validation.values()))),
                               "per_run_validation": {f"{k}/fold{f}-seed{s}": v for (k, f, s), v in sorted(validation.items())},
                               "per_run": {f"{k}/fold{f}-seed{s}": v for (k, f, s), v in sorted(scores.items())},
                               "overrides": run_overrides(runs[0].path)}
        if reference is None:
            reference = scores, validation
        else:
            change, validation_change = paired_change(scores, reference[0]), paired_change(validation, reference[1])
            if change:
                row.update(delta=change["mean"], delta_ci95=change["ci95"], paired=change["pairs"],
                           validation_delta=validation_change["mean"], validation_delta_ci95=validation_change["ci95"])
        out.append(row)
    if len(out) > 1:
        out.append(chosen_per_fold(out))
    return out


def validation_ua(job: Path) -> float:
    metrics = json.loads((job / "metrics.json").read_text())
    if "test/ua_heard" not in metrics:
        raise SystemExit(f"{job}/metrics.json: no test/ua_heard (the validation speaker's UA)")
    return float(metrics["test/ua_heard"])


def chosen_per_fold(table: list[dict[str, Any]]) -> dict[str, Any]:
    """Nested choice: per fold, the row whose runs have the best mean validation-speaker UA."""
    folds = sorted(set.intersection(*(set(row["folds"]) for row in table)))
    chosen, scores = {}, []
    for fold in folds:
        def mean_of(values: dict[str, float], fold=fold) -> float:
            return float(np.mean([v for key, v in values.items() if f"/fold{fold}-" in key]))
        best = max(table, key=lambda row: mean_of(row["per_run_validation"]))
        chosen[fold] = best["name"]
        scores += [v for key, v in best["per_run"].items() if f"/fold{fold}-" in key]
    mean, low, high = t_interval(scores)
    return {"name": "chosen per fold (validation speaker)", "students": sorted({s for row in table for s in row["students"]}),
            "runs": len(scores), "folds": folds, "seeds": [], "ua_mean": mean, "ua_ci95": [low, high],
            "validation_ua_mean": float("nan"), "chosen": {str(k): v for k, v in chosen.items()},
            "overrides": [f"fold {k}: {v}" for k, v in chosen.items()], "per_run": {}, "per_run_validation": {}}


def render(table: list[dict[str, Any]]) -> str:
    lines = ["| recipe | student | runs | validation UA (the choice) | its change vs first row (paired) | unheard UA | 95 % t-interval "
             "| change vs first row (paired) | overrides |",
             "|---|---|---|---|---|---|---|---|---|"]
    for row in table:
        delta = validation_delta = ""
        if "delta" in row:
            delta = f"{row['delta']:+.3f} [{row['delta_ci95'][0]:+.3f}, {row['delta_ci95'][1]:+.3f}] ({row['paired']} pairs)"
            low, high = row["validation_delta_ci95"]
            validation_delta = f"{row['validation_delta']:+.3f} [{low:+.3f}, {high:+.3f}]"
        overrides = " ".join(f"`{o}`" for o in row["overrides"]) or "(the recipe's defaults)"
        chosen = "" if np.isnan(row["validation_ua_mean"]) else f"{row['validation_ua_mean']:.3f}"
        lines.append(f"| {row['name']} | {', '.join(row['students'])} | {row['runs']} | {chosen} | {validation_delta} | **{row['ua_mean']:.3f}** | "
                     f"[{row['ua_ci95'][0]:.3f}, {row['ua_ci95'][1]:.3f}] | {delta} | {overrides} |")
    return "\n".join(lines) + "\n"


def plot(table: list[dict[str, Any]], path: Path, target: float | None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from crossmodal.utils.figures import save_and_send

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
    save_and_send(fig, path.stem, path.parent, loggers=[])  # the project's PNG writer (closes the figure)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("rows", nargs="+", help="NAME=SWEEP_DIR, the reference first")
    parser.add_argument("--out", type=Path, default=Path("."))
    parser.add_argument("--target", type=float, default=None, help="a UA to draw as a line (e.g. eGeMAPS+LR)")
    args = parser.parse_args(argv)
    table = rows(named_folders(parser, args.rows))
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
