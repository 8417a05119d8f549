"""task=demo: the whole method end to end on the shipped data, then a summary a newcomer can read.

Pseudo-pairs of the shipped EmoDB clips and FER+ faces, the shipped CPU teacher's logits, a small
student distilled from them and tested on unheard speakers (each step reuses what an earlier run left
in ${paths.data_dir}); the summary sets its UA and AUCs beside chance, the supervised student and the
recipe's cross-validated UA. The figures README.md shows, how far a run may move and the tests that check
both: experiments/demo/README.md (``crossmodal/assets/recorded.json``, entry ``demo``).
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from crossmodal.emotions import EMOTIONS
from crossmodal.models.card import format_cv
from crossmodal.tasks import train
from crossmodal.tasks.run_folder import RunFolder
from crossmodal.utils.atomic import write_text
from crossmodal.utils.figures import markdown_table

log = logging.getLogger(__name__)
RECORDED = Path(__file__).resolve().parents[1] / "assets" / "recorded.json"

NEXT_STEPS = """\
Next:
  python -m crossmodal.run experiment=teacher_cpu data.source=/data/ferplus      # train the FER+ teacher
  python -m crossmodal.run experiment=extract_logits prep.source=/data/voxceleb2 teacher_ckpt=T   # your talking-face videos
  python -m crossmodal.run experiment=distill_senet teacher_ckpt=T trainer.gpus=8                  # the paper's run on GPUs
  python -m crossmodal.run -m experiment=distill_cpu hparams_search=distill_cpu_grid   # a sweep
  python -m crossmodal.run experiment=eval_emodb benchmark.source=/data/emodb ckpt_path=RUN/student.safetensors
  crossmodal predict my_clip.wav"""

# The demo's figures that are recorded (metrics.json keys) and the tolerance group of each: UA, WA,
# the mean AUCs, and the AUC of one emotion (a few clips each, so it moves most).
DEMO_FIGURES = {"test/ua_unheard": "ua", "test/wa_unheard": "wa"}
DEMO_FIGURES.update({f"test/auc_{split}/{name}": "auc_mean" if name.startswith("mean") else "auc"
                     for split in ("heard", "unheard") for name in (*EMOTIONS, "mean", "mean_paper")})


def recorded_figures() -> dict[str, Any]:
    return json.loads(RECORDED.read_text()) if RECORDED.exists() else {}


def compare_with_recorded(metrics: dict[str, Any], recorded: dict[str, Any]) -> list[tuple[str, float, float, float]]:
    """(key, this run, recorded, tolerance) for every recorded demo figure; a figure the run lacks is
    ``nan``. ``recorded`` is recorded.json as a whole; no ``demo`` entry gives []."""
    demo = recorded.get("demo") or {}
    tolerance = demo.get("tolerance", {})
    rows = []
    for key, value in (demo.get("figures") or {}).items():
        if key not in DEMO_FIGURES:
            raise ValueError(f"{RECORDED}: demo.figures has {key!r}, which the demo does not print; "
                             f"recorded figures are {sorted(DEMO_FIGURES)}")
        got = metrics.get(key)
        rows.append((key, float("nan") if got is None else float(got), float(value), float(tolerance[DEMO_FIGURES[key]])))
    return rows


def summary_rows(metrics: dict[str, Any], recorded: dict[str, Any], classes: list[str]) -> tuple[list[list[Any]], list[list[Any]]]:
    """(AUC rows per emotion, UA rows) from a distillation run's test metrics."""
    rows = [[name, metrics.get(f"test/auc_heard/{name}"), metrics.get(f"test/auc_unheard/{name}")]
            for name in (*EMOTIONS, "mean", "mean_paper")]
    auc_rows = [row for row in rows if row[1] is not None or row[2] is not None]
    supervised = (recorded.get("supervised_cpu") or {}).get("cv")  # the cross-validated figure, not one run
    ua_rows = [
        ["chance", 1.0 / len(classes), "uniform guess over the scored emotions"],
        ["distilled student (this run)", metrics.get("test/ua_unheard"), "never saw an audio label"],
        ["supervised student", (supervised or {}).get("ua_mean"), f"cross-validated, experiment=supervised_cpu: {format_cv(supervised)}"],
    ]
    return auc_rows, ua_rows


def recorded_line(metrics: dict[str, Any], recorded: dict[str, Any]) -> str:
    """One line: this run's UA and mean unheard AUC against the figures recorded for this code."""
    demo = recorded.get("demo") or {}
    if not demo.get("figures"):
        return "recorded figures for this code: none (crossmodal/assets/recorded.json has no demo entry)"
    compared = {key: (got, want, tol) for key, got, want, tol in compare_with_recorded(metrics, recorded)}
    parts = []
    for key, label in (("test/ua_unheard", "UA"), ("test/auc_unheard/mean", "AUC unheard mean")):
        if key in compared:
            got, want, tol = compared[key]
            verdict = "within" if abs(got - want) <= tol + 1e-9 else "OUTSIDE"
            parts.append(f"{label} {_fmt(got)} vs {_fmt(want)} +/- {_fmt(tol)} ({verdict})")
    return f"this run vs the figures recorded for this code (crossmodal/assets/recorded.json): {'; '.join(parts)}"


def cv_line(metrics: dict[str, Any], recorded: dict[str, Any]) -> str:
    """One line: this run's held-out UA beside the distilled recipe's cross-validated UA (mean, 95 % interval)."""
    cv = (recorded.get("student_cpu") or {}).get("cv")
    return (f"held-out UA, this run vs the recipe cross-validated (distill_cpu over EmoDB speaker folds, "
            f"crossmodal/assets/recorded.json): {_fmt(metrics.get('test/ua_unheard'))} vs {format_cv(cv)}")


def summary_text(metrics: dict[str, Any], recorded: dict[str, Any], classes: list[str], run_dir: Path | str) -> str:
    """The summary the demo prints (and writes to summary.md) for a run's metrics."""
    auc_rows, ua_rows = summary_rows(metrics, recorded, classes)
    teacher = recorded.get("teacher_cpu", {})
    lines = [
        "",
        "crossmodal demo: summary",
        f"teacher (shipped, FER+ test accuracy, majority label): {_fmt(teacher.get('ferplus_test_acc'))} (recorded: {teacher.get('source', 'n/a')})",
        "",
        "student vs the teacher's dominant emotion, ROC AUC per emotion (test):",
        markdown_table(["emotion", "heard speakers", "unheard speakers"], auc_rows),
        "",
        f"held-out (unheard) speakers, unweighted average recall over {', '.join(classes)}:",
        markdown_table(["model", "UA", "note"], ua_rows),
        cv_line(metrics, recorded),
        recorded_line(metrics, recorded),
        "",
        f"run folder: {run_dir}  (metrics.json, plots/, checkpoints/, student.safetensors)",
        f"report: {Path(run_dir) / 'report.html'}  (one page with every figure, the sample gallery and the config; open it in a browser)",
        NEXT_STEPS,
    ]
    return "\n".join(lines)


def run(cfg: DictConfig, ctx: RunFolder) -> dict[str, Any]:
    train.run(cfg, ctx)
    recorded = recorded_figures()
    classes = list(cfg.model.get("label_classes") or EMOTIONS)
    auc_rows, ua_rows = summary_rows(ctx.metrics, recorded, classes)
    text = summary_text(ctx.metrics, recorded, classes, ctx.run_dir)
    print(text, flush=True)
    write_text(ctx.run_dir / "summary.md", text + "\n")
    ctx.log_table("demo/auc", ["emotion", "heard", "unheard"], auc_rows)
    ctx.log_table("demo/ua", ["model", "UA", "note"], ua_rows)
    teacher = recorded.get("teacher_cpu", {})
    return {"demo/teacher_ferplus_test_acc": teacher.get("ferplus_test_acc"), "demo/chance_ua": ua_rows[0][1],
            "demo/supervised_ua_recorded": ua_rows[2][1]}


def _fmt(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else "n/a"
