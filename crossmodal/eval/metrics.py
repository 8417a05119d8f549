"""Scores of the probe / evaluate path (numpy in, sklearn inside): UA, WA, confusion matrices, and
their mean +- std over cross-validation folds. ``ua`` and ``wa`` are defined as the LightningModules'
torchmetrics objects define them (:mod:`crossmodal.eval.classification`).
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sklearn.metrics import accuracy_score, balanced_accuracy_score, confusion_matrix, recall_score


def _check(y_true: np.ndarray, y_pred: np.ndarray, name: str) -> tuple[np.ndarray, np.ndarray]:
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    if y_true.size == 0:
        raise ValueError(f"{name} of an empty set")
    return y_true, y_pred


def t_interval(values, confidence: float = 0.95) -> tuple[float, float, float]:
    """(mean, low, high): the t-interval of the mean of ``values`` (runs: folds x seeds); a single
    value or identical values give a zero-width interval."""
    from scipy import stats

    values = np.asarray(values, dtype=float)
    mean = float(values.mean())
    if len(values) < 2 or float(values.std()) == 0.0:
        return mean, mean, mean
    low, high = stats.t.interval(confidence, len(values) - 1, loc=mean, scale=stats.sem(values))
    return mean, float(low), float(high)


def ua_score(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """UA: mean per-class recall over the classes that occur in ``y_true``."""
    y_true, y_pred = _check(y_true, y_pred, "ua_score")
    with warnings.catch_warnings():  # a predicted class without clips is left out of the mean, as it should
        warnings.filterwarnings("ignore", message=".*y_pred contains classes not in y_true.*")
        return float(balanced_accuracy_score(y_true, y_pred))


def wa_score(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """WA: fraction of items predicted correctly."""
    y_true, y_pred = _check(y_true, y_pred, "wa_score")
    return float(accuracy_score(y_true, y_pred))


def confusion_counts(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> np.ndarray:
    """``[num_classes, num_classes]`` counts; rows = true class, columns = predicted class."""
    return confusion_matrix(np.asarray(y_true, dtype=int), np.asarray(y_pred, dtype=int), labels=np.arange(num_classes)).astype(np.int64)


@dataclass
class FoldScores:
    """Per-fold UA/WA, plus every fold's test predictions (out-of-fold) for the confusion matrix
    and per-class recall over all folds."""

    class_names: tuple[str, ...]
    ua: list[float] = field(default_factory=list)
    wa: list[float] = field(default_factory=list)
    truth: list[np.ndarray] = field(default_factory=list, repr=False)
    predicted: list[np.ndarray] = field(default_factory=list, repr=False)

    def add(self, y_true: np.ndarray, y_pred: np.ndarray) -> None:
        y_true, y_pred = np.asarray(y_true, dtype=int), np.asarray(y_pred, dtype=int)
        self.ua.append(ua_score(y_true, y_pred))
        self.wa.append(wa_score(y_true, y_pred))
        self.truth.append(y_true)
        self.predicted.append(y_pred)

    @property
    def folds(self) -> int:
        return len(self.ua)

    @property
    def confusion(self) -> np.ndarray | None:
        """Confusion counts of all folds' test parts (None before the first fold)."""
        if not self.truth:
            return None
        return confusion_counts(np.concatenate(self.truth), np.concatenate(self.predicted), len(self.class_names))

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
        """Recall of each class over all folds' test predictions (classes with clips only)."""
        if not self.truth:
            raise ValueError("per_class_recall before any fold was added")
        truth, predicted = np.concatenate(self.truth), np.concatenate(self.predicted)
        present = np.unique(truth)
        recalls = recall_score(truth, predicted, labels=present, average=None, zero_division=0)
        return {self.class_names[label]: float(value) for label, value in zip(present, recalls)}


def format_mean_std(mean: float, std: float) -> str:
    return f"{100 * mean:.1f} ± {100 * std:.1f}"


@dataclass
class ScoreRow:
    """One row of an evaluation table: a method under a protocol, its fold scores."""

    method: str
    protocol: str
    scores: FoldScores
    note: str = ""


@dataclass
class ScoreReport:
    """An evaluation table: the rows, what they were computed on, and the notes that go with them."""

    corpus: str
    class_names: tuple[str, ...]
    clips: int
    speakers: int
    rows: list[ScoreRow] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    failures: list[tuple[str, str]] = field(default_factory=list)
    student: str = ""
    class_counts: dict[str, int] = field(default_factory=dict)

    def metrics(self) -> dict[str, Any]:
        """Flat ``eval/<method>/<protocol>/<ua|wa>_<mean|std>`` values for metrics.json."""
        out: dict[str, Any] = {
            "eval/clips": self.clips,
            "eval/speakers": self.speakers,
            "eval/classes": len(self.class_names),
            "eval/skipped": len(self.failures),
        }
        for row in self.rows:
            for key, value in row.scores.summary().items():
                out[f"eval/{row.method}/{row.protocol}/{key}"] = value
        return out
