"""The linear probe of the external benchmarks, and the folds it is scored on.

Probe: standardise the features, then a multinomial logistic regression whose inverse
regularisation C is chosen by an inner cross-validation on the training part only (grouped by
speaker when the outer folds are, so C never sees a test speaker either).

Folds:
- ``clip_folds``: the paper's protocol, stratified k-fold over clips (a speaker's clips land in
  both train and test: optimistic).
- ``speaker_folds``: speaker-independent, leave-one-speaker-out or k folds by speaker.
"""
from __future__ import annotations

import warnings
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV, GroupKFold, LeaveOneGroupOut, StratifiedGroupKFold, StratifiedKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from crossmodal.eval.metrics import FoldScores

Fold = tuple[np.ndarray, np.ndarray]  # (train indices, test indices)
DEFAULT_CS: tuple[float, ...] = (1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0, 1000.0)


class FoldError(ValueError):
    """The data cannot be split as asked (too few speakers, a class smaller than the fold count)."""


# ----------------------------------------------------------------------------- folds


def clip_folds(labels: Sequence, n_folds: int = 10, seed: int = 0, where: str = "") -> list[Fold]:
    """Stratified ``n_folds``-fold cross-validation over clips (the paper's protocol)."""
    labels = np.asarray(labels)
    counts = Counter(labels.tolist())
    small = {label: n for label, n in counts.items() if n < n_folds}
    if small:
        listed = ", ".join(f"{label!r} ({n} clips)" for label, n in sorted(small.items(), key=lambda kv: str(kv[0])))
        raise FoldError(
            f"{where}: fewer clips than the {n_folds} folds of the clip-level protocol in class {listed}; "
            "lower data.folds or leave the class out with data.classes"
        )
    splitter = StratifiedKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    return [(train, test) for train, test in splitter.split(np.zeros(len(labels)), labels)]


def speaker_folds(speakers: Sequence, labels: Sequence, n_folds: int | str = "loso", seed: int = 0, where: str = "") -> list[Fold]:
    """Speaker-independent folds: no speaker is ever in both the train and the test part.

    ``n_folds="loso"``: leave one speaker out; an int: that many folds of whole speakers, balanced
    for class counts (StratifiedGroupKFold).
    """
    speakers, labels = np.asarray(speakers), np.asarray(labels)
    unique = np.unique(speakers)
    if len(unique) < 2:
        only = unique[0] if len(unique) else "none"
        raise FoldError(f"{where}: only one speaker ({only}); no speaker-independent folds are possible with a single-speaker corpus")
    if n_folds == "loso":
        splitter = LeaveOneGroupOut()
        splits = splitter.split(np.zeros(len(labels)), labels, groups=speakers)
    else:
        n_folds = int(n_folds)
        if n_folds < 2:
            raise FoldError(f"{where}: data.speaker_folds={n_folds}; need at least 2 folds (or 'loso')")
        if n_folds > len(unique):
            raise FoldError(f"{where}: data.speaker_folds={n_folds} but only {len(unique)} speakers; use 'loso' or at most {len(unique)}")
        splitter = StratifiedGroupKFold(n_splits=n_folds, shuffle=True, random_state=seed)
        splits = splitter.split(np.zeros(len(labels)), labels, groups=speakers)
    return [(train, test) for train, test in splits]


def auto_speaker_folds(num_speakers: int, max_loso: int = 24, k: int = 10) -> int | str:
    """Leave-one-speaker-out for corpora of up to ``max_loso`` speakers, else ``k`` folds by speaker."""
    return "loso" if num_speakers <= max_loso else min(k, num_speakers)


# ----------------------------------------------------------------------------- probe


def make_probe(C: float = 1.0, seed: int = 0, max_iter: int = 5000):
    """Standardisation + multinomial logistic regression (lbfgs)."""
    return make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=max_iter, random_state=seed))


def fit_probe(
    features: np.ndarray,
    labels: np.ndarray,
    groups: np.ndarray | None = None,
    Cs: Sequence[float] = DEFAULT_CS,
    inner_folds: int = 3,
    seed: int = 0,
):
    """Fit the probe with C chosen by inner CV on (features, labels); returns (fitted probe, C)."""
    splitter = _inner_splitter(labels, groups, inner_folds, seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        warnings.filterwarnings("ignore", message=".*y_pred contains classes not in y_true.*")
        warnings.filterwarnings("ignore", message=".*least populated class.*")
        if splitter is None or len(Cs) == 1:
            C = float(Cs[0]) if len(Cs) == 1 else 1.0
            return make_probe(C, seed).fit(features, labels), C
        search = GridSearchCV(make_probe(seed=seed), {"logisticregression__C": list(Cs)}, cv=splitter, scoring="balanced_accuracy", n_jobs=1)
        search.fit(features, labels, groups=groups)
    return search.best_estimator_, float(search.best_params_["logisticregression__C"])


def _inner_splitter(labels: np.ndarray, groups: np.ndarray | None, inner_folds: int, seed: int):
    """Grouped inner folds when the outer folds are by speaker; None when no inner split is possible."""
    if groups is not None:
        n_groups = len(np.unique(groups))
        return GroupKFold(n_splits=min(inner_folds, n_groups)) if n_groups >= 2 else None
    smallest = min(Counter(np.asarray(labels).tolist()).values())
    n_splits = min(inner_folds, smallest)
    return StratifiedKFold(n_splits=n_splits, shuffle=True, random_state=seed) if n_splits >= 2 else None


@dataclass
class ProbeResult:
    scores: FoldScores
    chosen_C: list[float] = field(default_factory=list)
    predictions: np.ndarray | None = None  # out-of-fold prediction per clip (-1 where never tested)


def cross_validate_probe(
    features: np.ndarray,
    labels: np.ndarray,
    folds: Sequence[Fold],
    class_names: Sequence[str],
    groups: np.ndarray | None = None,
    Cs: Sequence[float] = DEFAULT_CS,
    inner_folds: int = 3,
    seed: int = 0,
) -> ProbeResult:
    """Fit the probe on each fold's train part and score it on the test part.

    ``labels`` are integer indices into ``class_names``; ``groups`` (speakers) makes the inner
    C search speaker-independent too.
    """
    features = np.asarray(features, dtype=np.float64)
    labels = np.asarray(labels, dtype=int)
    result = ProbeResult(FoldScores(tuple(class_names)), predictions=np.full(len(labels), -1, dtype=int))
    for train, test in folds:
        probe, C = fit_probe(features[train], labels[train], None if groups is None else np.asarray(groups)[train], Cs, inner_folds, seed)
        predicted = probe.predict(features[test])
        result.scores.add(labels[test], predicted)
        result.chosen_C.append(C)
        result.predictions[test] = predicted
    return result


def majority_baseline(labels: np.ndarray, folds: Sequence[Fold], class_names: Sequence[str]) -> FoldScores:
    """Chance: predict the training part's most frequent class for every test clip (UA = 1/K)."""
    labels = np.asarray(labels, dtype=int)
    scores = FoldScores(tuple(class_names))
    for train, test in folds:
        majority = np.bincount(labels[train], minlength=len(class_names)).argmax()
        scores.add(labels[test], np.full(len(test), majority))
    return scores
