"""Figures people would rather look at than read. Each function returns a matplotlib Figure;
``crossmodal.utils.figures.log_figure`` saves it as PNG and sends it to the active loggers."""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from crossmodal.emotions import EMOTION_COLORS  # noqa: E402


def confusion_matrix_figure(matrix: np.ndarray, class_names: Sequence[str], title: str = ""):
    """A row-normalised confusion matrix (rows = true class), with the values written in."""
    matrix = np.asarray(matrix, dtype=float)
    totals = matrix.sum(axis=1, keepdims=True)
    matrix = np.divide(matrix, totals, out=np.zeros_like(matrix), where=totals > 0)
    n = len(class_names)
    fig, ax = plt.subplots(figsize=(1.0 + 0.75 * n, 0.8 + 0.7 * n))
    image = ax.imshow(matrix, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(n), class_names, rotation=45, ha="right")
    ax.set_yticks(range(n), class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for i in range(n):
        for j in range(n):
            ax.text(j, i, f"{matrix[i, j]:.2f}", ha="center", va="center", color="white" if matrix[i, j] > 0.5 else "black",
                    fontsize=8)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    ax.set_title(title)
    fig.tight_layout()
    return fig


def roc_figure(curves: Mapping[str, tuple[np.ndarray, np.ndarray, float]], title: str = ""):
    """ROC curves: ``{label: (false_positive_rate, true_positive_rate, auc)}``; emotions in their fixed colours."""
    fig, ax = plt.subplots(figsize=(5.5, 5))
    for label, (fpr, tpr, auc) in curves.items():
        ax.plot(fpr, tpr, label=f"{label} ({auc:.3f})", color=EMOTION_COLORS.get(label))
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title(title)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    return fig


def bar_figure(values: Mapping[str, float], title: str = "", ylabel: str = ""):
    """A bar chart of named values (e.g. counts per emotion, each emotion in its fixed colour)."""
    fig, ax = plt.subplots(figsize=(max(4, 0.8 * len(values) + 1.5), 3.8))
    names, heights = list(values), [float(v) for v in values.values()]
    bars = ax.bar(names, heights, color=[EMOTION_COLORS.get(name, "tab:blue") for name in names])
    for bar, height in zip(bars, heights):
        label = f"{height:.0f}" if float(height).is_integer() else f"{height:.3g}"
        ax.annotate(label, (bar.get_x() + bar.get_width() / 2, height), ha="center", va="bottom", fontsize=8)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.tick_params(axis="x", rotation=45)
    fig.tight_layout()
    return fig


def distribution_bars(ax, teacher: Sequence[float], student: Sequence[float], emotions: Sequence[str], labels: bool = True) -> None:
    """Teacher (faces) vs student (voice) emotion distributions as paired bars on ``ax`` (0 to 1);
    ``labels``: the emotion names under the bars."""
    x = np.arange(len(teacher))
    ax.bar(x - 0.2, teacher, width=0.4, label="teacher (faces)", color="C0")
    ax.bar(x + 0.2, student, width=0.4, label="student (voice)", color="C1")
    ax.set_xticks(x, list(emotions) if labels else [""] * len(x), rotation=45, ha="right", parse_math=False)
    ax.set_ylim(0, 1)


def distribution_figure(teacher: Sequence[float], student: Sequence[float], emotions: Sequence[str]):
    """One clip's teacher vs student distributions (the report's gallery cards)."""
    fig, ax = plt.subplots(figsize=(4.7, 1.7))
    distribution_bars(ax, teacher, student, emotions)
    plt.setp(ax.get_xticklabels(), rotation=0, ha="center")  # full names, side by side
    ax.set_yticks([0, 0.5, 1])
    ax.tick_params(labelsize=7)
    ax.spines[["top", "right"]].set_visible(False)
    ax.legend(fontsize=7, frameon=False, ncols=2, loc="lower left", bbox_to_anchor=(0, 1))
    fig.subplots_adjust(left=0.07, right=0.99, bottom=0.15, top=0.84)  # fixed margins: no layout pass
    return fig


def curves_figure(series: Mapping[str, tuple[Sequence[float], Sequence[float]]], title: str = "", xlabel: str = "step", ylabel: str = ""):
    """Line plot of named (x, y) series, e.g. training and validation curves."""
    fig, ax = plt.subplots(figsize=(6, 4))
    for label, (x, y) in series.items():
        ax.plot(x, y, label=label, marker="o" if len(x) < 30 else None, markersize=3)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def close(fig) -> None:
    plt.close(fig)
