"""Scores for emotion classification: unweighted average recall (UA), weighted accuracy (WA),
confusion matrices, and their mean +- std over cross-validation folds.

UA is the mean of the per-class recalls over the classes present in the ground truth (the
speech-emotion literature's "unweighted accuracy"; sklearn's balanced accuracy). WA is the plain
fraction of clips classified correctly (each clip weighs the same, so big classes weigh more).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np


def confusion_counts(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> np.ndarray:
    """``[num_classes, num_classes]`` counts; rows = true class, columns = predicted class."""
    y_true, y_pred = np.asarray(y_true, dtype=int), np.asarray(y_pred, dtype=int)
    matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(matrix, (y_true, y_pred), 1)
    return matrix


def unweighted_average_recall(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Mean per-class recall over the classes that occur in ``y_true``."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    if y_true.size == 0:
        raise ValueError("unweighted_average_recall of an empty set")
    recalls = [float(np.mean(y_pred[y_true == label] == label)) for label in np.unique(y_true)]
    return float(np.mean(recalls))


def weighted_accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Fraction of items predicted correctly."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    if y_true.size == 0:
        raise ValueError("weighted_accuracy of an empty set")
    return float(np.mean(y_true == y_pred))


def row_normalise(matrix: np.ndarray) -> np.ndarray:
    matrix = np.asarray(matrix, dtype=float)
    totals = matrix.sum(axis=1, keepdims=True)
    return np.divide(matrix, totals, out=np.zeros_like(matrix), where=totals > 0)


@dataclass
class FoldScores:
    """Per-fold UA/WA plus the confusion counts summed over the folds' test parts."""

    class_names: tuple[str, ...]
    ua: list[float] = field(default_factory=list)
    wa: list[float] = field(default_factory=list)
    confusion: np.ndarray | None = None
    fold_sizes: list[int] = field(default_factory=list)

    def add(self, y_true: np.ndarray, y_pred: np.ndarray) -> None:
        self.ua.append(unweighted_average_recall(y_true, y_pred))
        self.wa.append(weighted_accuracy(y_true, y_pred))
        self.fold_sizes.append(int(len(y_true)))
        counts = confusion_counts(y_true, y_pred, len(self.class_names))
        self.confusion = counts if self.confusion is None else self.confusion + counts

    @property
    def folds(self) -> int:
        return len(self.ua)

    def summary(self) -> dict[str, float]:
        """``ua_mean, ua_std, wa_mean, wa_std, folds`` (population std over folds, as the paper's +-)."""
        return {
            "ua_mean": float(np.mean(self.ua)),
            "ua_std": float(np.std(self.ua)),
            "wa_mean": float(np.mean(self.wa)),
            "wa_std": float(np.std(self.wa)),
            "folds": float(self.folds),
        }

    def per_class_recall(self) -> dict[str, float]:
        """Recall of each class over all folds' test predictions (from the summed confusion)."""
        assert self.confusion is not None
        totals = self.confusion.sum(axis=1)
        return {name: float(self.confusion[i, i] / totals[i]) for i, name in enumerate(self.class_names) if totals[i] > 0}


def format_mean_std(mean: float, std: float, percent: bool = True) -> str:
    scale = 100.0 if percent else 1.0
    return f"{mean * scale:.1f} ± {std * scale:.1f}"


def markdown_table(columns: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)
