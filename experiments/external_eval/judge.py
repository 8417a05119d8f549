"""Judge a study's students on a second corpus (issue 23: "every recipe is judged on RAVDESS dev").

    python experiments/external_eval/judge.py "p=1"=SWEEP/agreement1 "p=0.5"=SWEEP/agreement0.5 ... \
        --source ../shared/data/ravdess_dev --out experiments/agreement/figures [--seeds 0] [--stem ravdess_dev]

Each LABEL=FOLDER names one recipe: every student.safetensors under FOLDER (the fold-<i>-seed-<s> runs
of a speaker-fold sweep; ``--seeds`` keeps those seeds only) is evaluated with
``python -m crossmodal.run experiment=eval_ravdess`` (no eGeMAPS/MFCC rows), its embedding probe against its random-init
twin, plus zero-shot. A student's evaluation goes to ``<out>/<stem>_runs/<label>/<run>/`` and is
skipped when its metrics.json is already there (the run is resumable; delete the folder to redo it).
eGeMAPS/MFCC features are not needed for these rows; their baseline rows come from one full
``eval_ravdess`` run, given with ``--baseline RUN`` (its metrics.json).

Per recipe, over its students (speaker-independent protocol, leave-one-speaker-out): the mean UA with a
95 % t-interval of zero-shot, of the probe on the student's embedding, of the probe on the random-init
twin's, and the paired difference student - twin. A recipe that wins on EmoDB but loses here is not
shipped: the tables of each study show both.

Writes <stem>.md, .json and .png into --out.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "cpu_transfer"))
from cv_summary import named_folders, paired_change, write_outputs  # noqa: E402

from crossmodal.eval.metrics import t_interval  # noqa: E402

ROWS = {"zero_shot": "zero-shot (7 shared classes)", "probe_embedding": "probe on student embedding",
        "random_init_embedding": "probe on random-init twin's embedding"}
PROTOCOL = "speakers"
# what a recipe "loses on RAVDESS dev" by: its zero-shot UA, and its embedding's margin over its random-init twin
COMPARED = {"zero_shot": lambda v: v["zero_shot"], "student_minus_twin": lambda v: v["probe_embedding"] - v["random_init_embedding"]}


def students(folder: Path, seeds: list[int] | None) -> list[Path]:
    found = sorted(folder.rglob("student.safetensors"))
    if seeds is not None:
        found = [path for path in found if any(path.parent.name.endswith(f"seed{s}") for s in seeds)]
    if not found:
        raise SystemExit(f"{folder}: no student.safetensors{f' of seeds {seeds}' if seeds is not None else ''}")
    return found


def evaluate(student: Path, source: Path, run_dir: Path, extra: list[str]) -> dict[str, float]:
    metrics = run_dir / "metrics.json"
    if not metrics.exists():
        command = [sys.executable, "-m", "crossmodal.run", "experiment=eval_ravdess", f"benchmark.source={source}",
                   f"ckpt_path={student}", "benchmark.baselines=[random_init,zero_shot]",
                   "benchmark.confusion_plots=false", "report=false", f"hydra.run.dir={run_dir}", *extra]
        print("$", " ".join(command), flush=True)
        env = {**os.environ, "WANDB_MODE": os.environ.get("WANDB_MODE", "disabled")}
        done = subprocess.run(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        if done.returncode or not metrics.exists():
            raise SystemExit(f"evaluation of {student} failed (exit {done.returncode}):\n{done.stdout[-3000:]}")
    values = json.loads(metrics.read_text())
    return {row: float(values[f"eval/{row}/{PROTOCOL}/ua_mean"]) for row in ROWS}


def judge(recipes: list[tuple[str, Path]], source: Path, out: Path, stem: str, seeds: list[int] | None,
          baseline: Path | None, extra: list[str]) -> dict[str, Any]:
    result: dict[str, Any] = {"source": str(source), "protocol": "leave-one-speaker-out", "recipes": []}
    for label, folder in recipes:
        runs = students(folder, seeds)
        per_run = {}
        for index, student in enumerate(runs, 1):
            print(f"[{label}] student {index}/{len(runs)}: {student.parent.name}", flush=True)
            folder_name = re.sub(r"[^A-Za-z0-9._-]", "_", label)  # the label may hold "=", which no Hydra override value can
            per_run[student.parent.name] = evaluate(student, source, out / f"{stem}_runs" / folder_name / student.parent.name, extra)
        entry: dict[str, Any] = {"label": label, "folder": str(folder), "runs": len(runs), "per_run": per_run}
        for row in ROWS:
            mean, low, high = t_interval([scores[row] for scores in per_run.values()])
            entry[row] = {"mean": mean, "low": low, "high": high}
        diff = [scores["probe_embedding"] - scores["random_init_embedding"] for scores in per_run.values()]
        mean, low, high = t_interval(diff)
        entry["student_minus_twin"] = {"mean": mean, "low": low, "high": high}
        if result["recipes"]:  # against the first recipe, paired over the students both have (same fold and seed)
            first = result["recipes"][0]["per_run"]
            entry["vs_first"] = {name: paired_change({run: fn(v) for run, v in per_run.items()}, {run: fn(v) for run, v in first.items()})
                                 for name, fn in COMPARED.items()}
        result["recipes"].append(entry)
    if baseline is not None:
        values = json.loads((baseline / "metrics.json").read_text())
        result["baselines"] = {name: float(values[f"eval/{name}/{PROTOCOL}/ua_mean"]) for name in ("egemaps", "mfcc", "chance")}
    return result


def render(result: dict[str, Any]) -> str:
    def cell(v: dict[str, float]) -> str:
        spread = f" [{100 * v['low']:.1f}, {100 * v['high']:.1f}]" if v["high"] > v["low"] else ""  # one run, or no spread
        return f"{100 * v['mean']:.1f}{spread}"

    def change(c: dict[str, Any] | None) -> str:
        return "" if c is None else f"{100 * c['mean']:+.1f} [{100 * c['ci95'][0]:+.1f}, {100 * c['ci95'][1]:+.1f}] ({c['pairs']})"

    lines = [f"RAVDESS dev ({result['source']}), {result['protocol']}: UA % per recipe, mean over its students "
             "with a 95 % t-interval", "",
             "| recipe | students | zero-shot | probe, student embedding | probe, random-init twin | student - twin (paired) "
             f"| vs {result['recipes'][0]['label']}, paired: zero-shot | vs {result['recipes'][0]['label']}, paired: student - twin |",
             "|---|---|---|---|---|---|---|---|"]
    for entry in result["recipes"]:
        changes = [change(c) for c in entry.get("vs_first", {}).values()] or ["", ""]
        lines.append(f"| {entry['label']} | {entry['runs']} | {cell(entry['zero_shot'])} | {cell(entry['probe_embedding'])} | "
                     f"{cell(entry['random_init_embedding'])} | {cell(entry['student_minus_twin'])} | {' | '.join(changes)} |")
    if "baselines" in result:
        b = result["baselines"]
        lines += ["", f"Same corpus and protocol: eGeMAPSv02 + LR {100 * b['egemaps']:.1f}, MFCC + LR {100 * b['mfcc']:.1f}, "
                      f"chance {100 * b['chance']:.1f} (8 classes); zero-shot chance is 14.3 (7 classes)."]
    return "\n".join(lines)


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    recipes = result["recipes"]
    x = np.arange(len(recipes))
    fig, ax = plt.subplots(figsize=(max(5, 1.6 * len(recipes)), 3.6))
    for offset, (row, title) in zip((-0.27, 0.0, 0.27), ROWS.items()):
        means = np.array([100 * e[row]["mean"] for e in recipes])
        low = np.array([100 * e[row]["low"] for e in recipes])
        high = np.array([100 * e[row]["high"] for e in recipes])
        yerr = np.nan_to_num(np.vstack([means - low, high - means]))
        ax.bar(x + offset, means, 0.26, yerr=yerr, capsize=3, label=title)
    for name, style in (("egemaps", "--"), ("chance", ":")):
        if name in result.get("baselines", {}):
            ax.axhline(100 * result["baselines"][name], color="k", linestyle=style, linewidth=1, label=f"{name} (8 classes)")
    ax.axhline(100 / 7, color="grey", linestyle=":", linewidth=1, label="zero-shot chance (7 classes)")
    ax.set_xticks(x, [e["label"] for e in recipes])
    ax.set_ylabel("UA % (leave-one-speaker-out)")
    ax.set_title("RAVDESS dev")
    ax.legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("recipes", nargs="+", help="LABEL=FOLDER: the students under FOLDER are one recipe")
    parser.add_argument("--source", type=Path, required=True, help="the RAVDESS dev folder (Actor_*/...wav)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--stem", default="ravdess_dev")
    parser.add_argument("--seeds", type=int, nargs="*", help="keep the runs of these seeds only")
    parser.add_argument("--baseline", type=Path, help="a full eval_ravdess run folder: its eGeMAPS, MFCC and chance rows")
    parser.add_argument("--override", action="append", default=[], help="extra override for every evaluation (repeatable)")
    args = parser.parse_args(argv)
    result = judge(named_folders(parser, args.recipes), args.source, args.out, args.stem, args.seeds, args.baseline, args.override)
    write_outputs(args.out, args.stem, render(result), result, plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
