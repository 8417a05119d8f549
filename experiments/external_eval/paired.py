"""Recipes compared fold by fold on one corpus, from their evaluation runs' fold_scores.json.

    python experiments/external_eval/paired.py baseline=RUN_SEED0,RUN_SEED1 short_windows=RUN_SEED0,RUN_SEED1 ... \
        [--protocol speakers] [--out DIR] [--stem paired]

Each LABEL=RUN[,RUN...] is one recipe: its ``experiment=eval_<corpus>`` runs (one per seed, e.g. the fold students
of one seed through ``benchmark.student_per_fold``, with ``benchmark.baselines=[chance,random_init,zero_shot]``).
The runs of every recipe are given in the same seed order and scored the same corpus with the same protocol, so
run i's fold j of one recipe and of another heard and scored the same speakers: they pair.

Per recipe, over its (run, fold) scores (UA %, mean with a 95 % t-interval): zero-shot, the probe on the student's
embedding, the probe on its random-init twin's, the paired student - twin, and the paired change of the embedding
probe against the first recipe's. Writes <stem>.md, .json and .png into --out (default: the current folder).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "cpu_transfer"))
from cv_summary import named_folders, paired_change, write_outputs  # noqa: E402

ROWS = {"zero_shot": "zero-shot", "probe_embedding": "probe on the student's embedding",
        "random_init_embedding": "probe on its random-init twin's"}


def fold_scores(runs: list[Path], protocol: str) -> dict[str, dict[tuple[int, int], float]]:
    """Per row, UA by (run index, fold) over the recipe's runs."""
    scores: dict[str, dict[tuple[int, int], float]] = {row: {} for row in ROWS}
    for index, run in enumerate(runs):
        path = run / "fold_scores.json"
        if not path.exists():
            raise SystemExit(f"{path} is missing: evaluate with experiment=eval_<corpus> (it writes fold_scores.json)")
        values = json.loads(path.read_text())
        for row in ROWS:
            key = f"{row}/{protocol}"
            if key not in values:
                raise SystemExit(f"{path} has no {key}: evaluate with benchmark.baselines=[chance,random_init,zero_shot]")
            scores[row].update({(index, fold): ua for fold, ua in enumerate(values[key]["ua"])})
    return scores


def compare(recipes: list[tuple[str, list[Path]]], protocol: str) -> dict[str, Any]:
    from crossmodal.eval.metrics import t_interval

    result: dict[str, Any] = {"protocol": protocol, "recipes": []}
    first: dict[tuple[int, int], float] | None = None
    for label, runs in recipes:
        scores = fold_scores(runs, protocol)
        entry: dict[str, Any] = {"label": label, "runs": [str(r) for r in runs], "pairs": len(scores["zero_shot"])}
        for row in ROWS:
            mean, low, high = t_interval(list(scores[row].values()))
            entry[row] = {"mean": mean, "ci95": [low, high]}
        twin = scores["random_init_embedding"]
        entry["student_minus_twin"] = paired_change(scores["probe_embedding"], twin)
        if first is None:
            first = scores["probe_embedding"]
        else:
            entry["embedding_vs_first"] = paired_change(scores["probe_embedding"], first)
        result["recipes"].append(entry)
    return result


def render(result: dict[str, Any]) -> str:
    def cell(v: dict[str, Any] | None, sign: str = "") -> str:
        return "" if v is None else f"{100 * v['mean']:{sign}.1f} [{100 * v['ci95'][0]:{sign}.1f}, {100 * v['ci95'][1]:{sign}.1f}]"

    first = result["recipes"][0]["label"]
    lines = [f"UA % per recipe over its (run, fold) scores ({result['protocol']} protocol), mean with a 95 % t-interval", "",
             f"| recipe | runs x folds | {' | '.join(ROWS.values())} | student - twin (paired) | embedding vs {first} (paired) |",
             "|---|---|---|---|---|---|---|"]
    for e in result["recipes"]:
        lines.append(f"| {e['label']} | {e['pairs']} | {' | '.join(cell(e[row]) for row in ROWS)} | "
                     f"{cell(e['student_minus_twin'], '+')} | {cell(e.get('embedding_vs_first'), '+')} |")
    return "\n".join(lines) + "\n"


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from crossmodal.utils.figures import save_and_send

    recipes = result["recipes"]
    x = np.arange(len(recipes))
    fig, ax = plt.subplots(figsize=(max(5, 1.6 * len(recipes)), 3.6))
    for offset, (row, title) in zip((-0.27, 0.0, 0.27), ROWS.items()):
        means = np.array([100 * e[row]["mean"] for e in recipes])
        bounds = np.array([[100 * b for b in e[row]["ci95"]] for e in recipes])
        ax.bar(x + offset, means, 0.26, yerr=np.abs(np.nan_to_num(bounds.T - means)), capsize=3, label=title)
    ax.set_xticks(x, [e["label"] for e in recipes])
    ax.set_ylabel(f"UA % ({result['protocol']} folds)")
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    save_and_send(fig, path.stem, path.parent, [])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("recipes", nargs="+", help="LABEL=RUN[,RUN...]: one recipe's evaluation runs, one per seed")
    parser.add_argument("--protocol", default="speakers", help="the fold_scores.json protocol to pair (default: speakers)")
    parser.add_argument("--out", type=Path, default=Path("."))
    parser.add_argument("--stem", default="paired")
    args = parser.parse_args(argv)
    recipes = [(label, [Path(run) for run in str(runs).split(",")]) for label, runs in named_folders(parser, args.recipes)]
    if len({len(runs) for _, runs in recipes}) > 1:
        parser.error("every recipe needs the same number of runs (one per seed, in the same seed order)")
    result = compare(recipes, args.protocol)
    write_outputs(args.out, args.stem, render(result), result, plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
