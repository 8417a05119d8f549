"""Training curve of a teacher run from its Lightning CSV log (metrics.csv).

    .venv/bin/python experiments/ferplus_teacher/plot_curves.py logs/teacher_cpu_run2/metrics.csv \
        experiments/ferplus_teacher/training_curve.png
"""
from __future__ import annotations

import csv
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def column(rows: list[dict[str, str]], name: str, x: str = "step") -> tuple[list[float], list[float]]:
    points = [(float(r[x]), float(r[name])) for r in rows if r.get(name) not in (None, "")]
    return [p[0] for p in points], [p[1] for p in points]


def main(metrics_csv: str, out_png: str) -> None:
    rows = list(csv.DictReader(open(metrics_csv)))
    steps_loss, loss = column(rows, "train/loss")
    steps_acc, train_acc = column(rows, "train/acc")
    minutes_steps, minutes = column(rows, "train/minutes")
    val_steps, val_acc = column(rows, "val/acc")
    lr_key = next((k for k in rows[0] if k.startswith("lr-")), None)
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(11, 4))
    ax_loss.plot(steps_loss, loss, lw=1, label="train loss (soft-target CE)")
    ax_loss.set_xlabel("step (batch of 128)")
    ax_loss.set_ylabel("loss")
    if lr_key:
        lr_steps, lr = column(rows, lr_key)
        twin = ax_loss.twinx()
        twin.plot(lr_steps, lr, color="grey", lw=1, ls="--", label="lr")
        twin.set_ylabel("learning rate")
        twin.legend(loc="center right")
    ax_loss.legend(loc="upper right")
    ax_acc.plot(steps_acc, train_acc, lw=0.8, alpha=0.5, label="train top-1 (augmented batches)")
    ax_acc.plot(val_steps, val_acc, "o-", label="FER+ val top-1 (flip TTA)")
    for step, acc in zip(val_steps, val_acc):
        ax_acc.annotate(f"{acc:.1%}", (step, acc), textcoords="offset points", xytext=(0, 6), ha="center", fontsize=7)
    ax_acc.set_xlabel("step")
    ax_acc.set_ylabel("accuracy vs majority label")
    ax_acc.set_ylim(0.3, 1.0)
    ax_acc.grid(alpha=0.3)
    ax_acc.legend(loc="lower right")
    if minutes:
        fig.suptitle(f"teacher_cpu on FER+ (2-core CPU): {minutes[-1]:.0f} min of training, {int(minutes_steps[-1])} steps")
    fig.tight_layout()
    Path(out_png).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=120)
    print(f"wrote {out_png}")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
