"""The face-voice agreement curve (hparams_search=agreement_curve): the distilled student's UA on the
unheard speakers of the 5 EmoDB speaker folds for each agreement p, with eGeMAPS+LR and chance on
the same folds as flat lines.

    python -m crossmodal.run -m hparams_search=agreement_curve hydra.sweep.dir=SWEEP
    python experiments/agreement/summary.py SWEEP [MORE_SWEEPS...] [--out DIR] [--expected 10]

Every figure comes from experiments/cpu_transfer/cv_summary.py's ``summarise`` (imported, not
copied): per p, its runs are summarised as that study's distilled row (mean UA over the runs with a
95 % t-interval over folds x seeds, and the pooled UA with a 95 % bootstrap over speakers); the
baselines are its eGeMAPSv02+LR and chance rows over the folds any run of the sweep covers. The
paired change against p = 1 is a t-interval over the (fold, seed) pairs both points ran.

A sweep still running is summarised from its finished runs only: every row says how many of the
``--expected`` runs per p (5 folds x 2 seeds = 10) it has, and which folds and seeds; the table's
title and the figure say PARTIAL until every p has them all.

Writes agreement.md, agreement.json and agreement.png into --out (default: the first sweep folder).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "cpu_transfer"))
from cv_summary import find_runs, summarise, write_outputs  # noqa: E402

from crossmodal.eval.metrics import t_interval  # noqa: E402


def agreement_of(config: dict[str, Any]) -> float:
    """The run's ``data.prepare.agreement`` (runs from before the knob: 1, every face agrees)."""
    return float(((config.get("data") or {}).get("prepare") or {}).get("agreement", 1.0))


def curve(sweeps: list[Path], cache: Path, bootstrap: int = 2000, expected: int = 10) -> dict[str, Any]:
    runs = find_runs(sweeps)
    if any(run.kind != "distilled" for run in runs):
        raise SystemExit("the agreement curve is of the distilled student only; "
                         f"{sum(run.kind != 'distilled' for run in runs)} runs here are supervised")
    by_p: dict[float, list[Path]] = {}
    for run in runs:
        by_p.setdefault(agreement_of(run.config), []).append(run.path)
    everything = summarise([run.path for run in runs], bootstrap=bootstrap, cache=cache)  # baselines on every fold run
    baselines = {name: everything["rows"][name] for name in ("egemaps", "chance")}
    points = []
    for p in sorted(by_p, reverse=True):
        result = summarise(by_p[p], bootstrap=bootstrap, cache=cache)
        row = result["rows"]["distilled"]
        points.append({"agreement": p, "runs": row["runs"], "folds": result["folds"], "seeds": result["seeds"],
                       "mean": row["mean"], "t_low": row["t_low"], "t_high": row["t_high"], "pooled": row["pooled"],
                       "boot_low": row["boot_low"], "boot_high": row["boot_high"], "per_run": row["per_run"],
                       "per_speaker_norm": {k: result["rows"]["distilled_spk"][k] for k in ("mean", "t_low", "t_high")}})
    reference = next((pt for pt in points if pt["agreement"] == 1.0), None)
    for point in points:
        if reference is not None and point is not reference:
            shared = sorted(set(point["per_run"]) & set(reference["per_run"]))
            if shared:
                diff, low, high = t_interval([point["per_run"][k] - reference["per_run"][k] for k in shared])
                point.update(delta=diff, delta_low=low, delta_high=high, paired=len(shared))
    complete = all(pt["runs"] >= expected for pt in points) and len(points) >= 5
    return {"points": points, "baselines": baselines, "folds": everything["folds"], "groups": everything["groups"],
            "classes": everything["classes"], "expected_runs_per_point": expected, "complete": complete,
            "findings": findings(points, baselines)}


def findings(points: list[dict[str, Any]], baselines: dict[str, Any]) -> dict[str, Any]:
    """Where the curve crosses the flat lines: the largest p whose mean (and whose interval, from 2
    runs on) is at or below chance and below eGeMAPS+LR, None when no point is."""
    chance, egemaps = baselines["chance"].get("mean"), baselines["egemaps"].get("mean")

    def first(test) -> float | None:
        hits = [pt["agreement"] for pt in points if test(pt)]
        return max(hits) if hits else None

    return {
        "chance": chance, "egemaps": egemaps,
        "not_above_chance_interval": first(lambda pt: chance is not None and pt["runs"] > 1 and pt["t_low"] <= chance),
        "mean_not_above_chance": first(lambda pt: chance is not None and pt["mean"] <= chance),
        "mean_below_egemaps": first(lambda pt: egemaps is not None and pt["mean"] < egemaps),
        "interval_below_egemaps": first(lambda pt: egemaps is not None and pt["runs"] > 1 and pt["t_high"] < egemaps),
    }


def interval(row: dict[str, Any], low: str = "t_low", high: str = "t_high", runs: int | None = None) -> str:
    """``[low, high]``, or a note when one run (or fold) gives no interval."""
    if (row["runs"] if runs is None else runs) < 2:
        return "(1 run: no interval)"
    return f"[{row[low]:.3f}, {row[high]:.3f}]"


def render(result: dict[str, Any]) -> str:
    points, base = result["points"], result["baselines"]
    status = "complete" if result["complete"] else (
        f"PARTIAL: {sum(pt['runs'] for pt in points)} of {5 * result['expected_runs_per_point']} runs")
    lines = [f"Face-voice agreement curve, distilled student, speaker folds ({status}); UA over "
             f"{len(result['classes'])} emotions on each fold's unheard speakers.", "",
             "| agreement p | runs (of expected) | folds | seeds | mean UA | 95 % t-interval | pooled UA | 95 % bootstrap (speakers) "
             "| change vs p = 1 (paired) | outputs standardised per speaker |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for pt in points:
        delta = (f"{pt['delta']:+.3f} {interval(pt, 'delta_low', 'delta_high', pt['paired'])} ({pt['paired']} pairs)"
                 if "delta" in pt else "")
        spk = pt["per_speaker_norm"]
        lines.append(f"| {pt['agreement']:g} | {pt['runs']} ({result['expected_runs_per_point']}) | "
                     f"{','.join(map(str, pt['folds']))} | {','.join(map(str, pt['seeds']))} | **{pt['mean']:.3f}** | "
                     f"{interval(pt)} | {pt['pooled']:.3f} | [{pt['boot_low']:.3f}, {pt['boot_high']:.3f}] | "
                     f"{delta} | {spk['mean']:.3f} {interval(spk, runs=pt['runs'])} |")
    for name in ("egemaps", "chance"):
        row = base[name]
        if row.get("runs"):
            lines.append(f"| {row['title']} (flat line) | {row['runs']} folds | {','.join(map(str, result['folds']))} | | "
                         f"**{row['mean']:.3f}** | {interval(row)} | {row['pooled']:.3f} | "
                         f"[{row['boot_low']:.3f}, {row['boot_high']:.3f}] | | |")
    f = result["findings"]

    def say(p):
        return "no p measured" if p is None else f"p = {p:g}"

    lines += ["", f"Largest p whose mean is at or below chance ({f['chance']:.3f}): {say(f['mean_not_above_chance'])}; "
              f"whose t-interval (2+ runs) reaches down to chance: {say(f['not_above_chance_interval'])}. "
              f"Largest p whose mean is below eGeMAPS+LR ({f['egemaps']:.3f}): {say(f['mean_below_egemaps'])}; "
              f"whose whole t-interval (2+ runs) is below it: {say(f['interval_below_egemaps'])}."]
    if base["egemaps"].get("note"):
        lines.append(f"eGeMAPSv02 + LR: {base['egemaps']['note']}.")
    return "\n".join(lines)


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from crossmodal.utils.figures import save_and_send

    points, base = result["points"], result["baselines"]
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    p = np.array([pt["agreement"] for pt in points])
    mean = np.array([pt["mean"] for pt in points])
    err = np.array([[pt["mean"] - pt["t_low"] for pt in points], [pt["t_high"] - pt["mean"] for pt in points]])
    for pt in points:
        ax.scatter([pt["agreement"]] * len(pt["per_run"]), list(pt["per_run"].values()), s=10, color="#9ecae9", zorder=2)
    ax.errorbar(p, mean, yerr=err, fmt="o-", color="#1f5fa8", capsize=4, zorder=3,
                label="distilled student: mean UA, 95 % t-interval (dots: runs)")
    for name, color in (("egemaps", "#e45756"), ("chance", "#7f7f7f")):
        row = base[name]
        if row.get("runs"):
            ax.axhline(row["mean"], color=color, linestyle="--", label=f"{row['title']} {row['mean']:.3f}")
            if name == "egemaps":
                ax.axhspan(row["t_low"], row["t_high"], color=color, alpha=0.08)
    ax.set_xlabel("agreement p (share of each speaker's clips whose faces show the voice's emotion)", fontsize=8)
    ax.set_ylabel(f"UA on unheard speakers ({len(result['classes'])} emotions)")
    ax.set_xlim(-0.02, 1.05)
    ax.set_ylim(0, 1)
    runs = sum(pt["runs"] for pt in points)
    title = f"Agreement curve, EmoDB speaker folds {','.join(map(str, result['folds']))}"
    if not result["complete"]:
        title += f" - PARTIAL ({runs} of {5 * result['expected_runs_per_point']} runs)"
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    save_and_send(fig, path.stem, path.parent, loggers=[])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sweeps", nargs="+", type=Path, help="sweep folders of hparams_search=agreement_curve")
    parser.add_argument("--out", type=Path, help="where to write agreement.{md,json,png} (default: the first sweep folder)")
    parser.add_argument("--bootstrap", type=int, default=2000, help="bootstrap draws over speakers")
    parser.add_argument("--expected", type=int, default=10, help="runs per p in the full study (5 folds x 2 seeds)")
    args = parser.parse_args(argv)
    out = args.out or args.sweeps[0]
    result = curve(args.sweeps, cache=args.sweeps[0], bootstrap=args.bootstrap, expected=args.expected)
    write_outputs(out, "agreement", render(result), result, plot)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
