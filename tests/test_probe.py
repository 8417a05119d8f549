"""The probe and its folds: a planted signal is recovered, noise scores chance, speakers never leak."""
from __future__ import annotations

import numpy as np
import pytest

from crossmodal.eval.metrics import FoldScores, ua_score, wa_score
from crossmodal.eval.probe import (
    FoldError,
    ProbeJob,
    auto_speaker_folds,
    clip_folds,
    cross_validate_probe,
    majority_baseline,
    run_probes,
    speaker_folds,
)

CLASSES = ("anger", "happiness", "sadness", "neutral")


def _corpus(seed: int, signal: float, per_class: int = 40, speakers: int = 8, dims: int = 8):
    """Features with class means ``signal`` apart in a few dimensions, plus a speaker offset."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(len(CLASSES)), per_class)
    speaker = np.tile(np.arange(speakers), len(labels) // speakers + 1)[: len(labels)]
    features = rng.normal(size=(len(labels), dims))
    features[np.arange(len(labels)), labels] += signal
    features += rng.normal(scale=0.5, size=(speakers, dims))[speaker]
    return features, labels, np.array([f"spk{s}" for s in speaker])


def test_metrics_by_hand():
    y_true = np.array([0, 0, 0, 0, 1, 1, 2])
    y_pred = np.array([0, 0, 0, 1, 1, 0, 2])
    assert wa_score(y_true, y_pred) == pytest.approx(5 / 7)
    assert ua_score(y_true, y_pred) == pytest.approx((3 / 4 + 1 / 2 + 1) / 3)
    # a predicted class without clips (3) is not averaged in: UA is over the classes in the truth
    assert ua_score(y_true, np.array([0, 0, 0, 3, 1, 0, 2])) == pytest.approx((3 / 4 + 1 / 2 + 1) / 3)
    scores = FoldScores(("a", "b", "c"))
    scores.add(y_true, y_pred)
    assert scores.confusion.tolist() == [[3, 1, 0], [1, 1, 0], [0, 0, 1]]
    assert scores.per_class_recall() == pytest.approx({"a": 0.75, "b": 0.5, "c": 1.0})


def test_probe_recovers_a_planted_signal():
    features, labels, speakers = _corpus(seed=0, signal=3.0)
    for folds, groups in ((clip_folds(labels, 10, seed=0), None), (speaker_folds(speakers, labels, "loso"), speakers)):
        result = cross_validate_probe(features, labels, folds, CLASSES, groups=groups, Cs=(0.01, 1.0, 100.0))
        summary = result.scores.summary()
        assert summary["ua_mean"] > 0.85 and summary["wa_mean"] > 0.85, summary
        assert (result.predictions >= 0).all()  # every clip is tested exactly once
        assert result.scores.confusion.sum() == len(labels)


def test_probe_scores_chance_on_noise():
    features, labels, speakers = _corpus(seed=1, signal=0.0)
    result = cross_validate_probe(features, labels, speaker_folds(speakers, labels, 4), CLASSES, groups=speakers, Cs=(0.01, 1.0))
    ua = result.scores.summary()["ua_mean"]
    assert abs(ua - 1 / len(CLASSES)) < 0.1, ua
    chance = majority_baseline(labels, clip_folds(labels, 10), CLASSES).summary()
    assert chance["ua_mean"] == pytest.approx(0.25)


def test_speaker_folds_never_share_a_speaker():
    _, labels, speakers = _corpus(seed=2, signal=1.0, speakers=8)
    for n_folds in ("loso", 3, 8):
        folds = speaker_folds(speakers, labels, n_folds, seed=3)
        assert len(folds) == (8 if n_folds == "loso" else n_folds)
        tested = np.concatenate([test for _, test in folds])
        assert sorted(tested.tolist()) == list(range(len(labels)))  # a partition of the clips
        for train, test in folds:
            assert not set(speakers[train]) & set(speakers[test])
    assert auto_speaker_folds(10) == "loso" and auto_speaker_folds(91) == 10


def test_fold_errors_say_what_and_where():
    labels = np.array([0] * 20 + [1] * 4)
    with pytest.raises(FoldError, match=r"emodb: fewer clips than the 10 folds of the clip-level protocol in class 1 \(4 clips\)"):
        clip_folds(labels, 10, where="emodb")
    with pytest.raises(FoldError, match="only one speaker \\(03\\).*single-speaker"):
        speaker_folds(["03"] * 24, labels, "loso", where="emodb")
    with pytest.raises(FoldError, match="only 2 speakers"):
        speaker_folds(["a"] * 12 + ["b"] * 12, labels, 5, where="emodb")


def test_per_speaker_standardisation_removes_speaker_offsets():
    """Big per-speaker offsets and scales hide the classes from a globally standardised probe;
    z-scoring each speaker with its own statistics (no labels used) recovers them."""
    rng = np.random.default_rng(4)
    features, labels, speakers = _corpus(seed=4, signal=2.0, per_class=24, speakers=6)
    index = np.unique(speakers, return_inverse=True)[1]
    features = features * rng.uniform(0.5, 3.0, size=(6, 8))[index] + rng.normal(scale=8.0, size=(6, 8))[index]
    folds = speaker_folds(speakers, labels, "loso")
    common = {"groups": speakers, "Cs": (1.0,)}
    global_ua = cross_validate_probe(features, labels, folds, CLASSES, **common).scores.summary()["ua_mean"]
    per_speaker = cross_validate_probe(features, labels, folds, CLASSES, per_speaker=True, **common)
    assert per_speaker.scores.summary()["ua_mean"] > max(0.6, global_ua + 0.2), (per_speaker.scores.summary(), global_ua)
    with pytest.raises(ValueError, match="needs the clips' speakers"):
        cross_validate_probe(features, labels, clip_folds(labels, 4), CLASSES, per_speaker=True)


def test_probes_in_worker_processes_equal_the_sequential_ones():
    """run_probes fits every fold of every job in 2 processes: the same predictions and C as
    cross_validate_probe in this one, and the progress hook sees every fold."""
    jobs = {}
    for seed, per_speaker in ((0, False), (1, True)):
        features, labels, speakers = _corpus(seed, signal=1.5, per_class=20)
        jobs[("speakers", seed)] = ProbeJob(features, labels, speaker_folds(speakers, labels, "loso"), CLASSES, groups=speakers,
                                            Cs=[0.1, 1.0, 10.0], speakers=speakers, per_speaker=per_speaker)
        jobs[("clips", seed)] = ProbeJob(features, labels, clip_folds(labels, 4), CLASSES, Cs=[0.1, 1.0, 10.0], speakers=speakers, per_speaker=per_speaker)
    seen = []

    def watch(fitted, total):
        seen.append(total)
        for item in fitted:
            seen.append(item)
            yield item

    parallel = run_probes(jobs, workers=2, watch=watch)
    assert seen[0] == 2 * (8 + 4) and len(seen) == 1 + seen[0]
    for key, job in jobs.items():
        alone = cross_validate_probe(job.features, job.labels, job.folds, CLASSES, groups=job.groups, Cs=job.Cs,
                                     speakers=job.speakers, per_speaker=job.per_speaker)
        np.testing.assert_array_equal(parallel[key].predictions, alone.predictions)
        assert parallel[key].chosen_C == alone.chosen_C
        assert parallel[key].scores.summary() == alone.scores.summary()


def test_probe_on_one_clip_per_class_refits_from_zero():
    """k = 1 labelled clip per emotion (the label-efficiency curve): every inner part lacks some classes, so the
    refit cannot start from their solutions and starts from zero (it raised a shape error once)."""
    from crossmodal.eval.probe import fit_probe

    rng = np.random.default_rng(0)
    labels = np.arange(6)
    probe, C = fit_probe(rng.normal(size=(6, 20)) + labels[:, None], labels, groups=np.arange(6), inner_folds=3)
    assert list(probe.classes_) == list(range(6)) and C > 0
