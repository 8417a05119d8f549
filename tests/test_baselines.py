"""The practitioner's baselines (crossmodal.eval.baselines): eGeMAPSv02 through opensmile and MFCC
functionals, on shipped EmoDB clips and on signals whose features are known, and the standardisation."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from crossmodal.eval.baselines import (
    EGEMAPS_DIM,
    MFCC_DIM,
    EgemapsExtractor,
    MfccExtractor,
    baseline_settings,
    egemaps_features,
    method_title,
    mfcc_features,
    standardise,
)
from crossmodal.io.audio import load_audio

DEMO_WAV = Path(__file__).resolve().parents[1] / "crossmodal" / "assets" / "demo" / "emodb" / "wav"


@pytest.fixture(scope="module")
def demo_waves() -> list[np.ndarray]:
    """Eight real EmoDB clips (two speakers, anger and sadness), decoded by crossmodal.io.audio."""
    paths = [p for p in sorted(DEMO_WAV.glob("*.flac")) if p.name[:2] in ("03", "10") and p.name[5] in "WT"][:8]
    assert len(paths) == 8
    return [load_audio(p, 16000) for p in paths]


def _harmonic_tone(f0: float, seconds: float = 1.5, rate: int = 16000) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    wave = sum(np.sin(2 * np.pi * k * f0 * t) / k for k in range(1, 6))
    return (0.3 * wave / np.abs(wave).max()).astype(np.float32)


def test_egemaps_on_real_clips_and_a_known_pitch(demo_waves):
    features = egemaps_features(demo_waves)
    assert features.shape == (8, EGEMAPS_DIM) and features.dtype == np.float64 and np.isfinite(features).all()
    names = EgemapsExtractor().feature_names
    assert len(names) == EGEMAPS_DIM and "F0semitoneFrom27.5Hz_sma3nz_amean" in names
    # Different clips give different features; the same clip the same ones.
    assert np.abs(features[0] - features[1]).max() > 0
    np.testing.assert_array_equal(egemaps_features(demo_waves[:1])[0], features[0])
    # openSMILE's F0 of a 200 Hz harmonic tone: 12 log2(200 / 27.5) = 34.4 semitones.
    tones = egemaps_features([_harmonic_tone(200.0), _harmonic_tone(300.0)])
    f0 = tones[:, names.index("F0semitoneFrom27.5Hz_sma3nz_amean")]
    assert f0 == pytest.approx([12 * np.log2(200 / 27.5), 12 * np.log2(300 / 27.5)], abs=0.5)


def test_mfcc_functionals(demo_waves):
    features = mfcc_features(demo_waves)
    assert features.shape == (8, MFCC_DIM) and np.isfinite(features).all()
    assert (features[:, 80:] >= 0).all()  # the std half
    # Twice the amplitude is +6.02 dB in every mel band: only c0's mean moves (by 6.02 * 64 / sqrt(64),
    # the orthonormal DCT), deltas and standard deviations stay.
    louder = mfcc_features([2 * demo_waves[0]])[0]
    shift = louder - features[0]
    assert shift[0] == pytest.approx(20 * np.log10(2) * 8, abs=0.5)
    np.testing.assert_allclose(shift[1:], 0, atol=0.05)


def test_bad_waveforms_are_named():
    with pytest.raises(ValueError, match="waveform 1: expected a mono waveform"):
        mfcc_features([np.zeros(1600, np.float32), np.zeros((2, 1600), np.float32)])
    with pytest.raises(ValueError, match="waveform 0: expected float samples"):
        mfcc_features([np.zeros(1600, np.int16)])
    with pytest.raises(ValueError, match="waveform 0: empty waveform"):
        egemaps_features([np.zeros(0, np.float32)])


def test_standardise_global_and_per_speaker():
    rng = np.random.default_rng(0)
    X_train = rng.normal(3.0, 2.0, size=(40, 5))
    X_test = rng.normal(3.0, 2.0, size=(10, 5))
    Z_train, Z_test = standardise(X_train, X_test)
    np.testing.assert_allclose(Z_train.mean(0), 0, atol=1e-12)
    np.testing.assert_allclose(Z_test, (X_test - X_train.mean(0)) / X_train.std(0))  # train statistics only
    # Per speaker: a speaker's offset and scale are gone, in the test speaker too.
    speakers_train = np.repeat(["a", "b"], 20)
    X_train[speakers_train == "b"] = X_train[speakers_train == "b"] * 5 + 100
    X_test = X_test * 3 - 50
    Z_train, Z_test = standardise(X_train, X_test, speakers_train, np.array(["c"] * 10), per_speaker=True)
    for rows in (Z_train[:20], Z_train[20:], Z_test):
        np.testing.assert_allclose(rows.mean(0), 0, atol=1e-9)
        np.testing.assert_allclose(rows.std(0), 1, atol=1e-9)
    with pytest.raises(ValueError, match="needs speakers_train and speakers_test"):
        standardise(X_train, X_test, per_speaker=True)
    assert method_title("egemaps") == "eGeMAPSv02 functionals (88) + LR, global norm"
    assert method_title("probe_embedding_spknorm") == "probe on student embedding, per-speaker norm"
    assert method_title("chance") == "chance (majority class)"


def test_settings_name_what_the_features_depend_on():
    """What a cached feature set is fingerprinted by: the settings and library versions, the same
    whether read from the class (cheap) or from a built extractor."""
    from importlib.metadata import version

    settings = baseline_settings(["egemaps", "mfcc"])
    assert settings["egemaps"] == EgemapsExtractor().settings and settings["mfcc"] == MfccExtractor().settings
    assert settings["egemaps"]["opensmile"] == version("opensmile") and settings["egemaps"]["feature_set"] == "eGeMAPSv02"
    assert settings["mfcc"]["n_mfcc"] == 40 and settings["mfcc"]["torchaudio"] == version("torchaudio").split("+")[0]
    assert MfccExtractor(n_mfcc=20).settings["n_mfcc"] == 20
