"""The linear probe of the external benchmarks, and the folds it is scored on.

Probe: standardise the features (globally, or first per speaker: :func:`standardise`), then a
multinomial logistic regression whose inverse regularisation C is chosen by an inner cross-validation
on the training part only (grouped by speaker when the outer folds are, so C never sees a test speaker).
Folds: :func:`clip_folds`, the paper's (a speaker's clips land in both train and test: optimistic), and
:func:`speaker_folds`, speaker-independent.
"""
from __future__ import annotations

import warnings
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import balanced_accuracy_score
from sklearn.model_selection import GroupKFold, LeaveOneGroupOut, StratifiedGroupKFold, StratifiedKFold
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from crossmodal.eval.metrics import FoldScores

Fold = tuple[np.ndarray, np.ndarray]  # (train indices, test indices)
# no C = 100, 1000: ~47 % of the probe CPU, chosen only on 8-dim logits, scoring like 10 (experiments/perf/README.md)
DEFAULT_CS: tuple[float, ...] = (1e-3, 1e-2, 1e-1, 1.0, 10.0)
MAX_ITER = 5000


class FoldError(ValueError):
    """The data cannot be split as asked (too few speakers, a class smaller than the fold count)."""


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


def speaker_zscore(features: np.ndarray, speakers: Sequence, eps: float = 1e-8) -> np.ndarray:
    """Each speaker's rows z-scored with that speaker's own mean and std (a constant feature -> 0)."""
    features = np.asarray(features, dtype=np.float64)
    speakers = np.asarray(speakers)
    if len(speakers) != len(features):
        raise ValueError(f"per-speaker standardisation: {len(features)} feature rows but {len(speakers)} speakers")
    out = np.empty_like(features)
    for speaker in np.unique(speakers):
        rows = speakers == speaker
        mean, std = features[rows].mean(axis=0), features[rows].std(axis=0)
        out[rows] = (features[rows] - mean) / np.where(std > eps, std, 1.0)
    return out


def standardise(
    X_train: np.ndarray,
    X_test: np.ndarray,
    speakers_train: Sequence | None = None,
    speakers_test: Sequence | None = None,
    per_speaker: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Standardised (train, test) features. Global: z-scored with the training part's mean and std.
    Per speaker: each speaker's rows with that speaker's own statistics (test speakers included: no
    labels are used, a standard speech-emotion protocol; a speaker in both parts, as under clip-level
    folds, with the statistics of all its rows), then globally as above."""
    X_train, X_test = np.asarray(X_train, dtype=np.float64), np.asarray(X_test, dtype=np.float64)
    if per_speaker:
        if speakers_train is None or speakers_test is None:
            raise ValueError("per-speaker standardisation needs speakers_train and speakers_test")
        both = speaker_zscore(np.concatenate([X_train, X_test]), np.concatenate([np.asarray(speakers_train), np.asarray(speakers_test)]))
        X_train, X_test = both[: len(X_train)], both[len(X_train):]
    scaler = StandardScaler().fit(X_train)
    return scaler.transform(X_train), scaler.transform(X_test)


def fit_probe(
    features: np.ndarray,
    labels: np.ndarray,
    groups: np.ndarray | None = None,
    Cs: Sequence[float] = DEFAULT_CS,
    inner_folds: int = 3,
    seed: int = 0,
) -> tuple[Pipeline, float]:
    """Fit the probe with C chosen by inner CV on (features, labels); returns (fitted probe, C).

    Each inner split fits the Cs in ascending order, each from the previous C's solution; the refit at the
    chosen C (best mean balanced accuracy; ties: the first in ``Cs``) starts from the mean of the inner
    solutions at that C. The optimum is unique, so only lbfgs's iterations change (experiments/perf/README.md).
    """
    splitter = _inner_splitter(labels, groups, inner_folds, seed)
    with quiet_fits():
        if splitter is None or len(Cs) == 1:
            C = float(Cs[0]) if len(Cs) == 1 else 1.0
            return _probe(C, seed).fit(features, labels), C
        scores, starts = np.zeros(len(Cs)), [[] for _ in Cs]
        every_class = True  # in every inner training part: only then can the refit start from their solutions
        for train, test in splitter.split(features, labels, groups):
            every_class &= len(np.unique(labels[train])) == len(np.unique(labels))
            scaler = StandardScaler().fit(features[train])
            X_train, X_test = scaler.transform(features[train]), scaler.transform(features[test])
            model = LogisticRegression(max_iter=MAX_ITER, random_state=seed, warm_start=True)
            for i in np.argsort(Cs, kind="stable"):
                model.set_params(C=float(Cs[i])).fit(X_train, labels[train])
                scores[i] += balanced_accuracy_score(labels[test], model.predict(X_test))
                starts[i].append((model.coef_.copy(), model.intercept_.copy()))
        best = int(np.argmax(scores))
        probe = _probe(float(Cs[best]), seed)
        model = probe[-1]
        if every_class:
            model.set_params(warm_start=True)
            model.coef_, model.intercept_ = (np.mean(parts, axis=0) for parts in zip(*starts[best]))
        return probe.fit(features, labels), float(Cs[best])


@contextmanager
def quiet_fits() -> Iterator[None]:
    """Probe fits without sklearn's expected warnings (an unconverged C of the grid, a class missing from a split)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        warnings.filterwarnings("ignore", message=".*y_pred contains classes not in y_true.*")
        warnings.filterwarnings("ignore", message=".*least populated class.*")
        yield


def _probe(C: float, seed: int) -> Pipeline:
    """Standardisation + multinomial logistic regression (lbfgs)."""
    return make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=MAX_ITER, random_state=seed))


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


def cross_validate_probe(features: np.ndarray, labels: np.ndarray, folds: Sequence[Fold], class_names: Sequence[str],
                         **options: Any) -> ProbeResult:
    """Fit the probe on each fold's train part and score it on the test part; ``options``: :class:`ProbeJob`'s."""
    return run_probes({"probe": ProbeJob(features, labels, folds, class_names, **options)})["probe"]


@dataclass
class ProbeJob:
    """One probe cross-validation. ``labels`` are integer indices into ``class_names``; ``groups``
    (speakers) makes the inner C search speaker-independent too. ``per_speaker=True`` z-scores each
    speaker's features with its own statistics first (``speakers``, or ``groups`` when not given): a
    transform of each speaker alone, so doing it once before the folds equals doing it in every fold."""

    features: np.ndarray
    labels: np.ndarray
    folds: Sequence[Fold]
    class_names: Sequence[str]
    groups: np.ndarray | None = None
    Cs: Sequence[float] = DEFAULT_CS
    inner_folds: int = 3
    seed: int = 0
    speakers: Sequence | None = None
    per_speaker: bool = False

    def prepared(self) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        features = np.asarray(self.features, dtype=np.float64)
        if self.per_speaker:
            speakers = self.groups if self.speakers is None else self.speakers
            if speakers is None:
                raise ValueError("cross_validate_probe(per_speaker=True) needs the clips' speakers (speakers=...)")
            features = speaker_zscore(features, speakers)
        return features, np.asarray(self.labels, dtype=int), None if self.groups is None else np.asarray(self.groups)


def run_probes(
    jobs: dict[Any, ProbeJob], workers: int = 1, watch: Callable[[Iterable[Any], int], Iterable[Any]] | None = None
) -> dict[Any, ProbeResult]:
    """:func:`cross_validate_probe` of every job, their folds fitted in ``workers`` processes (each
    fit single-threaded and seeded as alone, so the results equal the sequential ones). ``watch``
    wraps the stream of fitted folds (with their count), e.g. in a progress bar."""
    from joblib import Parallel, delayed

    prepared = {key: job.prepared() for key, job in jobs.items()}
    tasks = [(key, fold) for key, job in jobs.items() for fold in job.folds]

    def calls() -> Iterator[Any]:
        for key, (train, test) in tasks:
            job, (X, y, g) = jobs[key], prepared[key]
            yield delayed(_fit_fold)(X[train], y[train], None if g is None else g[train], X[test], job.Cs, job.inner_folds, job.seed)

    options = {"n_jobs": workers, "return_as": "generator"} | ({"backend": "loky", "inner_max_num_threads": 1} if workers > 1 else {})
    fitted = Parallel(**options)(calls())
    if watch is not None:
        fitted = watch(fitted, len(tasks))
    results = {key: ProbeResult(FoldScores(tuple(job.class_names)), predictions=np.full(len(job.labels), -1, dtype=int)) for key, job in jobs.items()}
    for (key, (_, test)), (predicted, C) in zip(tasks, fitted):
        result, labels = results[key], prepared[key][1]
        result.scores.add(labels[test], predicted)
        result.chosen_C.append(C)
        result.predictions[test] = predicted
    return results


def _fit_fold(X_train: np.ndarray, y_train: np.ndarray, groups: np.ndarray | None, X_test: np.ndarray,
              Cs: Sequence[float], inner_folds: int, seed: int) -> tuple[np.ndarray, float]:
    # Single-threaded BLAS: these problems are tiny, and threads that wait for a busy core make each
    # lbfgs step ~10x slower on a shared 2-core machine (measured: 0.20 s -> 0.03 s per fit).
    with threadpool_limits(limits=1):
        probe, C = fit_probe(X_train, y_train, groups, Cs, inner_folds, seed)
        return probe.predict(X_test), C


def majority_baseline(labels: np.ndarray, folds: Sequence[Fold], class_names: Sequence[str]) -> FoldScores:
    """Chance: predict the training part's most frequent class for every test clip (UA = 1/K)."""
    labels = np.asarray(labels, dtype=int)
    scores = FoldScores(tuple(class_names))
    for train, test in folds:
        majority = np.bincount(labels[train], minlength=len(class_names)).argmax()
        scores.add(labels[test], np.full(len(test), majority))
    return scores
