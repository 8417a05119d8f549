"""Summarise the cross-validated CPU transfer (hparams_search=cpu_transfer_cv): one row per model,
the mean UA over the 6 emotions EmoDB shares with the teacher, with 95 % intervals.

    python -m crossmodal.run -m hparams_search=cpu_transfer_cv hydra.sweep.dir=SWEEP
    python experiments/cpu_transfer/cv_summary.py SWEEP [MORE_SWEEPS...] [--out DIR] [--bootstrap 2000]

Rows, all on the same speaker folds (read from each fold's splits.json) and seeds:
- distilled / supervised: each run's ``test/ua_unheard`` (metrics.json: the fold's 2 unheard speakers);
- eGeMAPS+LR, MFCC+LR: ``crossmodal.eval.baselines`` features, standardised on the fold's training
  part, logistic regression with C chosen by inner folds over the training speakers only
  (``cross_validate_probe``); trained on every speaker the fold's students used (7 train + 1
  validation), tested on the same 2 speakers;
- chance: the training part's majority class (UA = 1/6);
- per speaker (``*_spk``): each test speaker's student outputs or baseline features z-scored with
  that speaker's own statistics before the argmax / probe (no label used);
- ensemble of the seeds (``*_ens``): per fold, the softmax outputs of that fold's students of every
  seed averaged; one value per fold.

Intervals:
- ``t``: a t-interval over the runs (folds x seeds). Rows that do not depend on the seed (the
  baselines, chance) are counted once per fold. Seeds share test speakers, so this interval is too
  narrow for speaker variation: read the next one too;
- ``bootstrap (speakers)``: the out-of-fold predictions of every fold pooled (each of the 10
  speakers is tested once per seed), speakers resampled with replacement, UA of the pooled clips
  averaged over seeds; the 2.5-97.5 percentiles. The students' per-clip predictions come from each
  run's student.safetensors (the tested checkpoint); their per-fold UA is checked against
  metrics.json (``max |UA diff|`` in the output).
- the distilled/supervised ratio: the ratio of the mean UAs; t-interval over the paired
  (fold, seed) ratios; bootstrap of the ratio of the pooled UAs under the same speaker draws.

Writes ``cv_summary.md``, ``cv_summary.json`` and ``cv_summary.png`` (bars with both intervals)
into the (first) sweep folder or ``--out``, and keeps the baselines' features in the first sweep folder
(``cv_features_<name>.npy`` + the clip list, never in ``--out``) for the next summary of a growing sweep.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

ROWS = {
    "distilled": "distilled student (distill_cpu, no EmoDB label)",
    "supervised": "supervised student (supervised_cpu)",
    "egemaps": "eGeMAPSv02 + LR",
    "mfcc": "MFCC functionals + LR",
    "chance": "chance (majority class)",
    # per-speaker standardisation (the SER protocol): each test speaker's outputs/features z-scored
    # with that speaker's own statistics (transductive over the speaker's clips, no label used)
    "distilled_spk": "distilled student, outputs standardised per speaker",
    "supervised_spk": "supervised student, outputs standardised per speaker",
    "egemaps_spk": "eGeMAPSv02 + LR, features standardised per speaker",
    # the seeds of a fold as one model: their softmax outputs averaged (costs one training per seed)
    "distilled_ens": "distilled student, ensemble of the seeds",
    "supervised_ens": "supervised student, ensemble of the seeds",
}


# The baselines' C grid of the recorded figures (crossmodal/assets/recorded.json: egemaps_lr, mfcc_lr): MFCC + LR
# chose C = 100 and 1000 on two folds, so the evaluation's shorter default grid (1e-3 ... 10) would move it.
BASELINE_CS = (1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0, 1000.0)


@dataclass
class Run:
    path: Path
    kind: str  # distilled | supervised
    fold: int
    seed: int
    ua: float
    config: dict[str, Any]


def find_runs(sweeps: list[Path]) -> list[Run]:
    """Every finished job (metrics.json + config.yaml) of a speaker-fold sweep under ``sweeps``."""
    runs = []
    for sweep in sweeps:
        if not sweep.exists():
            raise SystemExit(f"{sweep}: no such sweep folder")
        for metrics_file in sorted(sweep.rglob("metrics.json")):
            job = metrics_file.parent
            config_file = job / "config.yaml"
            if not config_file.exists():
                raise SystemExit(f"{job}: metrics.json without config.yaml (not a crossmodal run folder)")
            config = yaml.safe_load(config_file.read_text())
            prepare = (config.get("data") or {}).get("prepare") or {}
            if prepare.get("speaker_folds") is None:
                raise SystemExit(f"{job}: data.prepare.speaker_folds is not set: not a run of hparams_search=cpu_transfer_cv")
            metrics = json.loads(metrics_file.read_text())
            if "test/ua_unheard" not in metrics:
                raise SystemExit(f"{metrics_file}: no test/ua_unheard (did the run finish its test stage?)")
            kind = "supervised" if config["data"].get("labels_only") else "distilled"
            runs.append(Run(job, kind, int(prepare["fold"]), int(config["seed"]), float(metrics["test/ua_unheard"]), config))
    if not runs:
        raise SystemExit(f"no finished runs (metrics.json) under {', '.join(map(str, sweeps))}")
    return runs


def fold_split(run: Run) -> tuple[dict[str, Any], str]:
    """The fold's splits.json (as the pseudo-pair build wrote it) and the speech corpus folder."""
    from crossmodal.io.splits import SPLIT_FILE
    from crossmodal.pipeline.distill_sets import recipe_config

    data = run.config["data"]
    recipe = dict(data["prepare"])
    for key in ("emodb", "ferplus"):
        if data.get(key) is not None:
            recipe.setdefault(key, data[key])
    config, _ = recipe_config(recipe, data.get("teacher"), data.get("data_dir", "data"))
    path = config.pairs_dir / SPLIT_FILE
    if not path.exists():  # the corpus was copied again since (its listing, mtimes included, names another set): the run's own log
        logged = re.findall(r"(/\S+/pairs/[\w.-]+-[0-9a-f]{8})", (run.path / "run.log").read_text(errors="replace"))
        path = next((Path(folder) / SPLIT_FILE for folder in logged if (Path(folder) / SPLIT_FILE).exists()), path)
    if not path.exists():
        raise SystemExit(f"{run.path}: the fold's split file {path} is missing (were the pseudo-pairs deleted?)")
    return json.loads(path.read_text()), str(config.source)


@dataclass
class Corpus:
    paths: list[str]
    speakers: np.ndarray
    labels: np.ndarray  # index into classes
    waves: list[np.ndarray]
    classes: tuple[str, ...]


def load_corpus(source: str, classes: tuple[str, ...]) -> Corpus:
    from crossmodal.io.audio import load_audio
    from crossmodal.io.corpora import read_corpus

    clips = [c for c in read_corpus("emodb", source, strict=False) if c.emotion in classes]
    clips.sort(key=lambda c: str(c.path))
    return Corpus([str(c.path) for c in clips], np.array([c.speaker for c in clips]),
                  np.array([classes.index(c.emotion) for c in clips]), [load_audio(c.path, 16000) for c in clips], classes)


def student_logits(run: Run, corpus: Corpus, test: np.ndarray) -> np.ndarray:
    """The run's student (student.safetensors) on the test clips: ``[clips, classes]`` logits of the study's classes."""
    from crossmodal.emotions import EMOTIONS
    from crossmodal.inference import load_student

    path = run.path / "student.safetensors"
    if not path.exists():
        raise SystemExit(f"{run.path}: no student.safetensors (the test stage writes it)")
    student = load_student(path)
    columns = [EMOTIONS.index(name) for name in corpus.classes]
    return np.array([np.asarray(student.predict(corpus.waves[i], 16000).logits)[columns] for i in test], dtype=float)


def ua_from_confusion(confusion: np.ndarray) -> np.ndarray:
    """UA (mean recall over the classes present) of ``[..., C, C]`` confusion counts (rows = truth)."""
    support = confusion.sum(-1)
    recall = np.divide(np.diagonal(confusion, axis1=-2, axis2=-1), support, out=np.zeros(support.shape), where=support > 0)
    return recall.sum(-1) / np.maximum((support > 0).sum(-1), 1)


def speaker_confusions(predictions: np.ndarray, corpus: Corpus, speakers: list[str]) -> np.ndarray:
    """``[S, C, C]`` confusion counts per speaker of one seed's pooled out-of-fold predictions (-1 = untested)."""
    n = len(corpus.classes)
    out = np.zeros((len(speakers), n, n))
    for index, speaker in enumerate(speakers):
        rows = (corpus.speakers == speaker) & (predictions >= 0)
        np.add.at(out[index], (corpus.labels[rows], predictions[rows]), 1)
    return out


def baseline_features(name: str, corpus: Corpus, cache: Path | None) -> np.ndarray:
    """``crossmodal.eval.baselines.<name>_features`` of every clip, reused from ``cache`` (a .npy and
    the clip list it was computed from) when the clip list is the same."""
    from crossmodal.eval import baselines
    from crossmodal.utils.atomic import atomic_path, write_json

    if cache is not None:
        values, listing = cache / f"cv_features_{name}.npy", cache / f"cv_features_{name}.json"
        if values.exists() and listing.exists() and json.loads(listing.read_text()) == corpus.paths:
            return np.load(values, allow_pickle=False)
    features = getattr(baselines, f"{name}_features")(corpus.waves)
    if cache is not None:
        with atomic_path(values) as tmp:
            with open(tmp, "wb") as f:
                np.save(f, features, allow_pickle=False)
        write_json(listing, corpus.paths)
    return features


def summarise(sweeps: list[Path], bootstrap: int = 2000, seed: int = 0, cache: Path | None = None) -> dict[str, Any]:
    from scipy.special import softmax

    from crossmodal.eval.metrics import t_interval, ua_score
    from crossmodal.eval.probe import cross_validate_probe, speaker_zscore

    runs = find_runs(sweeps)
    classes = tuple(runs[0].config["model"]["label_classes"])
    splits: dict[int, dict[str, Any]] = {}
    sources = set()
    for run in runs:
        if run.fold not in splits:
            splits[run.fold], source = fold_split(run)
            sources.add(source)
    if len(sources) != 1:
        raise SystemExit(f"the runs read different speech corpora ({sorted(sources)}): summarise one study at a time")
    groups = {json.dumps(s.get("folds", {}).get("groups")) for s in splits.values()}
    if len(groups) != 1:
        raise SystemExit("the runs' splits.json record different speaker groups: summarise one study at a time")
    corpus = load_corpus(sources.pop(), classes)
    folds = sorted(splits)
    seeds = sorted({run.seed for run in runs})
    test_of = {f: np.flatnonzero(np.isin(corpus.speakers, splits[f]["unheard"])) for f in folds}
    train_of = {f: np.flatnonzero(~np.isin(corpus.speakers, splits[f]["unheard"])) for f in folds}
    speakers = sorted({s for f in folds for s in splits[f]["unheard"]})

    # per row: per-run UA values, and per seed the pooled out-of-fold predictions over all clips
    values: dict[str, dict[tuple[int, int], float]] = {name: {} for name in ROWS}
    pooled: dict[str, dict[int, np.ndarray]] = {name: {} for name in ROWS}
    notes: dict[str, str] = {}
    check = 0.0

    def record(row: str, fold: int, seed: int, predicted: np.ndarray, ua: float | None = None) -> float:
        """A run's (seed -1: a fold's) predictions on its test clips: its UA, and the row's pooled predictions."""
        test = test_of[fold]
        score = ua_score(corpus.labels[test], predicted)
        values[row][(fold, seed)] = score if ua is None else ua
        pooled[row].setdefault(max(seed, 0), np.full(len(corpus.labels), -1))[test] = predicted
        return score

    fold_probs: dict[tuple[str, int], list[np.ndarray]] = {}
    for run in runs:
        test = test_of[run.fold]
        logits = student_logits(run, corpus, test)
        check = max(check, abs(record(run.kind, run.fold, run.seed, logits.argmax(1), ua=run.ua) - run.ua))
        record(f"{run.kind}_spk", run.fold, run.seed, speaker_zscore(logits, corpus.speakers[test]).argmax(1))
        fold_probs.setdefault((run.kind, run.fold), []).append(softmax(logits, axis=1))
    for (kind, fold), probs in sorted(fold_probs.items()):
        if len(probs) > 1:  # the fold's seeds as one model
            record(f"{kind}_ens", fold, -1, np.mean(probs, axis=0).argmax(1))
    fold_list = [(train_of[f], test_of[f]) for f in folds]
    for row, name, per_speaker_norm in (("egemaps", "egemaps", False), ("mfcc", "mfcc", False), ("egemaps_spk", "egemaps", True)):
        try:
            features = baseline_features(name, corpus, cache)
        except ImportError as exn:
            notes[row] = f"not computed: {exn}"
            continue
        result = cross_validate_probe(features, corpus.labels, fold_list, classes, groups=corpus.speakers, seed=0,
                                      per_speaker=per_speaker_norm, Cs=BASELINE_CS)
        notes[row] = "C per fold (inner folds over the training speakers): " + ", ".join(f"{c:g}" for c in result.chosen_C)
        for f, ua in zip(folds, result.scores.ua):
            values[row][(f, -1)] = ua
        pooled[row] = {s: result.predictions for s in seeds}
    chance = np.full(len(corpus.labels), -1)
    for f in folds:
        majority = np.bincount(corpus.labels[train_of[f]], minlength=len(classes)).argmax()
        chance[test_of[f]] = majority
        values["chance"][(f, -1)] = ua_score(corpus.labels[test_of[f]], chance[test_of[f]])
    pooled["chance"] = {s: chance for s in seeds}

    rng = np.random.default_rng(seed)
    draws = rng.multinomial(len(speakers), np.full(len(speakers), 1 / len(speakers)), size=bootstrap).astype(float)  # [B, S]
    replicate: dict[str, np.ndarray] = {}
    rows: dict[str, dict[str, Any]] = {}
    for name, title in ROWS.items():
        if not values[name]:
            rows[name] = {"title": title, "runs": 0, "note": notes.get(name, "no runs in the sweep")}
            continue
        confusions = [speaker_confusions(pooled[name][s], corpus, speakers) for s in sorted(pooled[name])]
        replicate[name] = np.mean([ua_from_confusion(np.einsum("bs,sij->bij", draws, c)) for c in confusions], axis=0)
        point = float(np.mean([ua_from_confusion(c.sum(0)) for c in confusions]))
        mean, lo, hi = t_interval(list(values[name].values()))
        rows[name] = {
            "title": title, "runs": len(values[name]), "mean": mean, "t_low": lo, "t_high": hi, "pooled": point,
            "boot_low": float(np.percentile(replicate[name], 2.5)), "boot_high": float(np.percentile(replicate[name], 97.5)),
            "per_run": {f"fold{f}" + (f"-seed{s}" if s >= 0 else ""): v for (f, s), v in sorted(values[name].items())},
            "note": notes.get(name, ""),
        }
    ratio = None
    # a (fold, seed) where the supervised student scores 0 (a degenerate short run) has no ratio
    pairs = [p for p in sorted(set(values["distilled"]) & set(values["supervised"])) if values["supervised"][p] > 0]
    if pairs:
        per_pair = [values["distilled"][p] / values["supervised"][p] for p in pairs]
        _, lo, hi = t_interval(per_pair)
        with np.errstate(divide="ignore", invalid="ignore"):  # a draw where supervised scores 0 has no ratio
            boot = np.where(replicate["supervised"] > 0, replicate["distilled"] / replicate["supervised"], np.nan)
        ratio = {"ratio_of_means": rows["distilled"]["mean"] / rows["supervised"]["mean"], "mean_of_ratios": float(np.mean(per_pair)),
                 "t_low": lo, "t_high": hi, "pooled": rows["distilled"]["pooled"] / rows["supervised"]["pooled"],
                 "boot_low": float(np.nanpercentile(boot, 2.5)), "boot_high": float(np.nanpercentile(boot, 97.5)), "pairs": len(pairs)}
    return {
        "classes": list(classes), "folds": folds, "seeds": seeds, "speakers": speakers,
        "groups": json.loads(groups.pop()), "validation": {f: splits[f].get("validation", []) for f in folds},
        "clips": int(len(corpus.labels)), "bootstrap": bootstrap, "rows": rows, "ratio": ratio,
        "student_check_max_abs_ua_diff": check, "runs": [str(r.path) for r in runs],
    }


def render(summary: dict[str, Any]) -> str:
    def interval(row, a, b):
        return f"[{row[a]:.3f}, {row[b]:.3f}]"

    lines = [
        f"Speaker-fold cross-validation: {len(summary['folds'])} folds x {len(summary['seeds'])} seeds "
        f"(seeds {', '.join(map(str, summary['seeds']))}), {summary['clips']} clips of {len(summary['speakers'])} speakers, "
        f"UA over {len(summary['classes'])} emotions ({', '.join(summary['classes'])}).",
        "",
        "| model | runs | mean UA | 95 % t-interval | pooled UA | 95 % bootstrap (speakers) |",
        "|---|---|---|---|---|---|",
    ]
    for row in summary["rows"].values():
        if not row["runs"]:
            lines.append(f"| {row['title']} | 0 | | | | {row['note']} |")
            continue
        lines.append(f"| {row['title']} | {row['runs']} | **{row['mean']:.3f}** | {interval(row, 't_low', 't_high')} | "
                     f"{row['pooled']:.3f} | {interval(row, 'boot_low', 'boot_high')} |")
    ratio = summary["ratio"]
    if ratio:
        lines.append(f"| distilled / supervised | {ratio['pairs']} pairs | **{ratio['ratio_of_means']:.3f}** | "
                     f"{interval(ratio, 't_low', 't_high')} (mean of paired ratios {ratio['mean_of_ratios']:.3f}) | "
                     f"{ratio['pooled']:.3f} | {interval(ratio, 'boot_low', 'boot_high')} |")
    lines += ["", "Folds (unheard speakers; validation speaker): " + "; ".join(
        f"{f}: {'+'.join(g)} ({', '.join(summary['validation'][f])})" for f, g in zip(summary["folds"], [summary["groups"][f] for f in summary["folds"]]))]
    lines.append(f"Students' per-clip predictions from student.safetensors agree with metrics.json to "
                 f"max |UA diff| = {summary['student_check_max_abs_ua_diff']:.4f} per run.")
    for row in summary["rows"].values():
        if row["runs"] and row["note"]:
            lines.append(f"{row['title']}: {row['note']}.")
    return "\n".join(lines)


def plot(summary: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from crossmodal.utils.figures import save_and_send

    rows = [r for r in summary["rows"].values() if r["runs"]]
    x = np.arange(len(rows))
    fig, ax = plt.subplots(figsize=(1.6 * len(rows) + 2, 4))
    means = [r["mean"] for r in rows]
    ax.bar(x, means, color="tab:blue", alpha=0.8, label="mean UA (folds x seeds)")
    ax.errorbar(x - 0.12, means, yerr=[[r["mean"] - r["t_low"] for r in rows], [r["t_high"] - r["mean"] for r in rows]],
                fmt="none", ecolor="black", capsize=4, label="95 % t-interval")
    pooled = [r["pooled"] for r in rows]
    ax.errorbar(x + 0.12, pooled, yerr=[[r["pooled"] - r["boot_low"] for r in rows], [r["boot_high"] - r["pooled"] for r in rows]],
                fmt="o", color="tab:red", capsize=4, markersize=3, label="pooled UA, 95 % bootstrap over speakers")
    ax.set_xticks(x, [r["title"].split(" (")[0] for r in rows], rotation=20, ha="right", fontsize=8)
    ax.set_ylabel(f"UA ({len(summary['classes'])} emotions)")
    ax.set_ylim(0, 1)
    ax.set_title(f"CPU transfer, {len(summary['folds'])} speaker folds x {len(summary['seeds'])} seeds")
    ax.legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    save_and_send(fig, path.stem, path.parent, [])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sweeps", nargs="+", type=Path, help="sweep folders of hparams_search=cpu_transfer_cv")
    parser.add_argument("--out", type=Path, help="where to write cv_summary.{md,json,png} (default: the first sweep folder)")
    parser.add_argument("--bootstrap", type=int, default=2000, help="bootstrap draws over speakers")
    args = parser.parse_args(argv)
    out = args.out or args.sweeps[0]
    summary = summarise(args.sweeps, bootstrap=args.bootstrap, cache=args.sweeps[0])
    write_outputs(out, "cv_summary", render(summary), summary, plot)
    return 0


def paired_change(values: dict[Any, float], reference: dict[Any, float]) -> dict[str, Any] | None:
    """Mean change against the reference over the keys both have (paired runs), with its 95 % t-interval."""
    from crossmodal.eval.metrics import t_interval

    shared = sorted(set(values) & set(reference))
    if not shared:
        return None
    mean, low, high = t_interval([values[key] - reference[key] for key in shared])
    return {"mean": mean, "ci95": [low, high], "pairs": len(shared)}


def named_folders(parser: argparse.ArgumentParser, items: list[str]) -> list[tuple[str, Path]]:
    """``NAME=FOLDER`` arguments (the last ``=`` splits, so a name may hold one) as (name, folder) pairs."""
    named = []
    for item in items:
        name, sep, folder = item.rpartition("=")
        if not sep or not name or not folder:
            parser.error(f"{item!r}: write NAME=FOLDER")
        named.append((name, Path(folder)))
    return named


def write_outputs(out: Path, stem: str, table: str, result: dict, plot: Callable[[dict, Path], Any]) -> None:
    """A study summary's three files, <stem>.md (also printed), .json and .png, written atomically into ``out``."""
    from crossmodal.utils.atomic import write_json, write_text

    print(table)
    out.mkdir(parents=True, exist_ok=True)
    write_text(out / f"{stem}.md", table + "\n")
    write_json(out / f"{stem}.json", result)
    plot(result, out / f"{stem}.png")
    print(f"wrote {out / stem}.md, .json, .png")


if __name__ == "__main__":
    sys.exit(main())
