"""The label-efficiency curve (hparams_search=label_efficiency): UA on the unheard speakers of the
5 EmoDB speaker folds when only k labelled clips per emotion of the training speakers are given.

    python -m crossmodal.run -m hparams_search=label_efficiency extras.distilled_sweep=DISTILLED hydra.sweep.dir=SWEEP
    python experiments/label_efficiency/summary.py SWEEP [MORE_SWEEPS...] [--out DIR] [--expected 10]

Rows, each per k and on the same (fold, seed) and the same k clips:
- fine-tuned distilled student: experiment=finetune_cpu from the fold's distilled student (runs);
- the same network from scratch: experiment=finetune_cpu model.init_from=null (runs);
- eGeMAPSv02 + LR: cv_summary's baseline features, the probe fitted on the k clips per emotion;
- probe on the frozen distilled embedding: the fold's distilled student (the fine-tuned run's
  init_from file) embeds every clip; the same probe on the k clips.
The k clips come from crossmodal.data.label_subset.choose_labelled with the run's seed, over the
fold's training speakers (splits.json), the choice the runs made: each run's label_subset.json is
checked against it. The probes choose C by inner folds over the k clips' speakers only.
Per row: the mean UA over (fold, seed) with a 95 % t-interval; the fine-tuned - scratch change is a
t-interval over the paired runs. A sweep still running is summarised from its finished runs:
the table says how many of the ``--expected`` runs per (k, init) it has.

The machinery (finding runs, the fold's split, the corpus, baseline features, the probe) is
experiments/cpu_transfer/cv_summary.py's and crossmodal.eval.probe's, imported.
Writes label_efficiency.md, label_efficiency.json and label_efficiency.png into --out.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "cpu_transfer"))
from cv_summary import Corpus, Run, baseline_features, find_runs, fold_split, load_corpus, write_outputs  # noqa: E402

from crossmodal.data.label_subset import choose_labelled, parse_labels_per_class  # noqa: E402
from crossmodal.eval.metrics import t_interval  # noqa: E402

ROWS = {
    "finetuned": "fine-tuned distilled student",
    "scratch": "same network from scratch",
    "egemaps": "eGeMAPSv02 + LR",
    "embedding": "probe on the frozen distilled embedding",
}


def k_label(k: int | None) -> str:
    return "all" if k is None else str(k)


def subset_indices(corpus: Corpus, train_speakers: list[str], k: int | None, seed: int) -> np.ndarray:
    """The clips choose_labelled picks for (k, seed) among the training speakers' clips."""
    clips = [(str(corpus.speakers[i]), Path(corpus.paths[i]).stem, corpus.classes[corpus.labels[i]])
             for i in range(len(corpus.paths)) if corpus.speakers[i] in train_speakers]
    chosen = {clip for members in choose_labelled(clips, k, seed).values() for clip in members}
    return np.array([i for i in range(len(corpus.paths)) if (str(corpus.speakers[i]), Path(corpus.paths[i]).stem) in chosen])


def probe_ua(features: np.ndarray, corpus: Corpus, train: np.ndarray, test: np.ndarray) -> float:
    from crossmodal.eval.probe import cross_validate_probe

    result = cross_validate_probe(features, corpus.labels, [(train, test)], corpus.classes, groups=corpus.speakers, seed=0)
    return float(result.scores.ua[0])


def embeddings(student_file: Path, corpus: Corpus) -> np.ndarray:
    from crossmodal.inference import load_student

    student = load_student(student_file)
    return np.array([np.asarray(student.predict(wave, 16000).embedding) for wave in corpus.waves], dtype=float)


def summarise(sweeps: list[Path], cache: Path, expected: int = 10) -> dict[str, Any]:
    runs = find_runs(sweeps)
    classes = tuple(runs[0].config["model"]["label_classes"])
    splits: dict[int, dict[str, Any]] = {}
    for run in runs:
        if run.fold not in splits:
            splits[run.fold], source = fold_split(run)
    corpus = load_corpus(source, classes)
    values: dict[str, dict[str, dict[tuple[int, int], float]]] = {}
    checked = 0

    def key_of(run: Run) -> tuple[str, str]:
        model = run.config["model"]
        k = parse_labels_per_class(run.config["data"].get("labels_per_class"))
        return k_label(k), ("finetuned" if model.get("init_from") else "scratch")

    try:
        egemaps = baseline_features("egemaps", corpus, cache)
    except ImportError:
        egemaps = None
    embedded: dict[str, np.ndarray] = {}
    for run in runs:
        k_name, row = key_of(run)
        values.setdefault(k_name, {name: {} for name in ROWS})[row][(run.fold, run.seed)] = run.ua
        k = parse_labels_per_class(run.config["data"].get("labels_per_class"))
        split = splits[run.fold]
        # the training speakers: splits.json's train less the validation speaker (its clips are the heard split)
        trained = sorted(set(split["train"]) - set(split.get("validation", [])))
        train = subset_indices(corpus, trained, k, run.seed)
        recorded = run.path / "label_subset.json"
        if recorded.exists():  # the run chose the same clips
            clips = {c for members in json.loads(recorded.read_text())["clips"].values() for c in members}
            ours = {f"{corpus.speakers[i]}/{Path(corpus.paths[i]).stem}" for i in train}
            if clips != ours:
                raise SystemExit(f"{recorded}: the run's clips differ from choose_labelled's over the fold's training speakers")
            checked += 1
        test = np.flatnonzero(np.isin(corpus.speakers, split["unheard"]))
        cell = values[k_name]
        if egemaps is not None and (run.fold, run.seed) not in cell["egemaps"]:
            cell["egemaps"][(run.fold, run.seed)] = probe_ua(egemaps, corpus, train, test)
        init = run.config["model"].get("init_from")
        if init and (run.fold, run.seed) not in cell["embedding"]:
            if init not in embedded:
                embedded[init] = embeddings(Path(init), corpus)
            cell["embedding"][(run.fold, run.seed)] = probe_ua(embedded[init], corpus, train, test)
    table = []
    order = sorted(values, key=lambda name: float("inf") if name == "all" else int(name))
    for k_name in order:
        cell = values[k_name]
        entry: dict[str, Any] = {"k": k_name}
        for row in ROWS:
            if cell[row]:
                mean, low, high = t_interval(list(cell[row].values()))
                entry[row] = {"runs": len(cell[row]), "mean": mean, "t_low": low, "t_high": high,
                              "per_run": {f"fold{f}-seed{s}": v for (f, s), v in sorted(cell[row].items())}}
        shared = sorted(set(cell["finetuned"]) & set(cell["scratch"]))
        if shared:
            diff, low, high = t_interval([cell["finetuned"][p] - cell["scratch"][p] for p in shared])
            entry["finetuned_minus_scratch"] = {"mean": diff, "t_low": low, "t_high": high, "pairs": len(shared)}
        table.append(entry)
    complete = len(table) == 5 and all(e.get(r, {}).get("runs", 0) >= expected for e in table for r in ("finetuned", "scratch"))
    return {"classes": list(classes), "folds": sorted(splits), "table": table, "expected_runs": expected, "complete": complete,
            "subset_checked_runs": checked, "chance": 1 / len(classes), "runs": [str(r.path) for r in runs]}


def render(result: dict[str, Any]) -> str:
    status = "complete" if result["complete"] else "PARTIAL"
    lines = [f"Label efficiency ({status}): UA over {len(result['classes'])} emotions on each fold's unheard speakers, "
             f"k labelled clips per emotion of the training speakers; runs per cell of {result['expected_runs']} expected.", "",
             "| k | " + " | ".join(ROWS.values()) + " | fine-tuned - scratch (paired) |",
             "|---|" + "---|" * (len(ROWS) + 1)]
    for entry in result["table"]:
        cells = []
        for row in ROWS:
            r = entry.get(row)
            cells.append(f"**{r['mean']:.3f}** [{r['t_low']:.3f}, {r['t_high']:.3f}] ({r['runs']})" if r else "")
        d = entry.get("finetuned_minus_scratch")
        delta = f"{d['mean']:+.3f} [{d['t_low']:+.3f}, {d['t_high']:+.3f}] ({d['pairs']} pairs)" if d else ""
        lines.append(f"| {entry['k']} | " + " | ".join(cells) + f" | {delta} |")
    lines += ["", f"Chance: {result['chance']:.3f}. Each run's label_subset.json matched choose_labelled "
              f"({result['subset_checked_runs']} runs checked)."]
    return "\n".join(lines)


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from crossmodal.utils.figures import save_and_send

    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    ks = [entry["k"] for entry in result["table"]]
    x = np.arange(len(ks))
    for offset, (row, title) in zip((-0.09, -0.03, 0.03, 0.09), ROWS.items()):
        points = [(i, entry[row]) for i, entry in enumerate(result["table"]) if row in entry]
        if points:
            xs = np.array([i for i, _ in points]) + offset
            mean = np.array([r["mean"] for _, r in points])
            err = np.array([[r["mean"] - r["t_low"] for _, r in points], [r["t_high"] - r["mean"] for _, r in points]])
            ax.errorbar(xs, mean, yerr=err, fmt="o-", capsize=3, label=title)
    ax.axhline(result["chance"], color="#7f7f7f", linestyle="--", label=f"chance {result['chance']:.3f}")
    ax.set_xticks(x, ks)
    ax.set_xlabel("labelled clips per emotion (k)")
    ax.set_ylabel(f"UA on unheard speakers ({len(result['classes'])} emotions)")
    ax.set_ylim(0, 1)
    ax.set_title("Label efficiency, EmoDB speaker folds" + ("" if result["complete"] else " - PARTIAL"), fontsize=10)
    ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    save_and_send(fig, path.stem, path.parent, loggers=[])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sweeps", nargs="+", type=Path, help="sweep folders of hparams_search=label_efficiency")
    parser.add_argument("--out", type=Path, help="where to write label_efficiency.{md,json,png} (default: the first sweep)")
    parser.add_argument("--expected", type=int, default=10, help="runs per (k, init) in the full study (5 folds x 2 seeds)")
    args = parser.parse_args(argv)
    out = args.out or args.sweeps[0]
    result = summarise(args.sweeps, cache=args.sweeps[0], expected=args.expected)
    write_outputs(out, "label_efficiency", render(result), result, plot)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
