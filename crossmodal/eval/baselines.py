"""The baselines a speech-emotion practitioner reaches for instead of a distilled student.

- eGeMAPSv02 functionals (Eyben et al. 2016, 88 features) computed by openSMILE through the
  ``opensmile`` package, on a 16 kHz numpy signal (``Smile.process_signal``: the audio is decoded by
  crossmodal.io.audio, never by opensmile's own file reader).
- MFCC functionals: 40 MFCCs and their deltas, mean and standard deviation over time (160 features;
  torchaudio's MFCC and compute_deltas).
- Both go into the same probe as the student's outputs (:mod:`crossmodal.eval.probe`) on the same folds.
- Zero-shot: the student's own argmax over the emotions a corpus shares with FER+.

Public API (the cross-validation study calls these): :func:`egemaps_features`, :func:`mfcc_features`,
:func:`standardise`, :func:`cross_validate_probe`; per-clip extractors for streaming use:
:class:`EgemapsExtractor`, :class:`MfccExtractor` (``BASELINE_EXTRACTORS`` by name).
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from crossmodal.emotions import EMOTIONS, emotion_index
from crossmodal.eval.metrics import FoldScores
from crossmodal.eval.probe import Fold
from crossmodal.eval.probe import cross_validate_probe as cross_validate_probe  # re-exported: the public API above
from crossmodal.eval.probe import standardise as standardise

EGEMAPS_DIM = 88
MFCC_COEFFS = 40
MFCC_DIM = 4 * MFCC_COEFFS  # (MFCC, delta) x (mean, std)
BASELINE_TITLES = {
    "egemaps": "eGeMAPSv02 functionals (88) + LR",
    "mfcc": "40 MFCC + deltas, mean/std (160) + LR",
}


def _check_wave(wave: np.ndarray, where: str) -> np.ndarray:
    wave = np.asarray(wave)
    if wave.ndim != 1:
        raise ValueError(f"{where}: expected a mono waveform (1-D array), got shape {wave.shape}; decode with crossmodal.io.audio.load_audio")
    if wave.size == 0:
        raise ValueError(f"{where}: empty waveform")
    if not np.issubdtype(wave.dtype, np.floating):
        raise ValueError(f"{where}: expected float samples in [-1, 1], got {wave.dtype}; decode with crossmodal.io.audio.load_audio")
    if not np.all(np.isfinite(wave)):
        raise ValueError(f"{where}: waveform has NaN or infinite samples")
    return np.ascontiguousarray(wave, dtype=np.float32)


class EgemapsExtractor:
    """eGeMAPSv02 functionals of one waveform -> ``[88]`` (openSMILE's own feature order)."""

    dim = EGEMAPS_DIM

    def __init__(self) -> None:
        try:
            import opensmile
        except ImportError as exn:  # a dependency of crossmodal: only a broken install lacks it
            raise ImportError(
                "the eGeMAPS baseline needs the `opensmile` package (a crossmodal dependency): "
                "pip install -c constraints.txt -e . (or drop `egemaps` from benchmark.baselines)"
            ) from exn
        self.smile = opensmile.Smile(feature_set=opensmile.FeatureSet.eGeMAPSv02, feature_level=opensmile.FeatureLevel.Functionals)
        self.settings = self.describe()
        self.feature_names = tuple(self.smile.feature_names)
        if len(self.feature_names) != EGEMAPS_DIM:
            raise RuntimeError(f"opensmile's eGeMAPSv02 functionals have {len(self.feature_names)} features, expected {EGEMAPS_DIM}; check the opensmile version pinned in constraints.txt")

    @staticmethod
    def describe() -> dict[str, Any]:
        """What these features depend on (for the fingerprint of a cached feature set)."""
        return {"feature_set": "eGeMAPSv02", "level": "Functionals", "dim": EGEMAPS_DIM, "opensmile": _version("opensmile")}

    def __call__(self, wave: np.ndarray, sample_rate: int = 16000, where: str = "waveform") -> np.ndarray:
        wave = _check_wave(wave, where)
        values = self.smile.process_signal(wave, sample_rate).to_numpy(dtype=np.float64)
        if values.shape != (1, EGEMAPS_DIM):
            raise RuntimeError(f"{where}: opensmile returned features of shape {values.shape}, expected (1, {EGEMAPS_DIM})")
        return values[0]


class MfccExtractor:
    """40 MFCCs (25 ms windows, 10 ms hop, 64 mel bands) + deltas, mean and std over time -> ``[160]``:
    ``[mfcc mean (40), delta mean (40), mfcc std (40), delta std (40)]``."""

    dim = MFCC_DIM

    def __init__(self, n_mfcc: int = MFCC_COEFFS) -> None:
        self.n_mfcc = n_mfcc
        self._transforms: dict[int, torch.nn.Module] = {}
        self.settings = self.describe(n_mfcc)

    @staticmethod
    def describe(n_mfcc: int = MFCC_COEFFS) -> dict[str, Any]:
        """What these features depend on (for the fingerprint of a cached feature set)."""
        return {"n_mfcc": n_mfcc, "win_s": 0.025, "hop_s": 0.010, "n_mels": 64, "deltas": "compute_deltas", "stats": ["mean", "std"],
                "torch": torch.__version__.split("+")[0], "torchaudio": _version("torchaudio")}

    def _transform(self, sample_rate: int) -> torch.nn.Module:
        if sample_rate not in self._transforms:
            import torchaudio

            win = round(0.025 * sample_rate)
            self._transforms[sample_rate] = torchaudio.transforms.MFCC(
                sample_rate=sample_rate,
                n_mfcc=self.n_mfcc,
                melkwargs={"n_fft": max(512, 1 << (win - 1).bit_length()), "win_length": win, "hop_length": round(0.010 * sample_rate), "n_mels": 64},
            )
        return self._transforms[sample_rate]

    def __call__(self, wave: np.ndarray, sample_rate: int = 16000, where: str = "waveform") -> np.ndarray:
        import torchaudio.functional as F

        wave = _check_wave(wave, where)
        with torch.inference_mode():
            mfcc = self._transform(sample_rate)(torch.from_numpy(wave)).double()  # [n_mfcc, frames]
            both = torch.cat([mfcc, F.compute_deltas(mfcc)])
            return torch.cat([both.mean(dim=1), both.std(dim=1, correction=0)]).numpy()


BASELINE_EXTRACTORS = {"egemaps": EgemapsExtractor, "mfcc": MfccExtractor}


def baseline_settings(names: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Each named baseline's settings and library versions, without building its extractor (cheap)."""
    return {name: BASELINE_EXTRACTORS[name].describe() for name in names}


def _version(package: str) -> str:
    from importlib.metadata import version

    return version(package).split("+")[0]

METHOD_TITLES = {
    "probe_logits": "probe on student logits (paper)",
    "probe_embedding": "probe on student embedding",
    "random_init_logits": "probe on random-init student logits",
    "random_init_embedding": "probe on random-init student embedding",
    **BASELINE_TITLES,
    "chance": "chance (majority class)",
    "zero_shot": "zero-shot (student argmax, shared classes)",
}
SPEAKER_NORM = "_spknorm"  # method-name suffix of the probes on per-speaker standardised features


def method_title(method: str) -> str:
    """The row label; every probe row says how its features were standardised."""
    if method in ("chance", "zero_shot"):
        return METHOD_TITLES[method]
    if method == "zero_shot" + SPEAKER_NORM:
        return METHOD_TITLES["zero_shot"] + ", logits per-speaker norm"
    base = method.removesuffix(SPEAKER_NORM)
    return f"{METHOD_TITLES.get(base, base)}, {'per-speaker' if method.endswith(SPEAKER_NORM) else 'global'} norm"


def _stack(extractor, waves: Sequence[np.ndarray], sample_rate: int) -> np.ndarray:
    rows = [extractor(wave, sample_rate, where=f"waveform {i}") for i, wave in enumerate(waves)]
    return np.stack(rows) if rows else np.zeros((0, extractor.dim))


def egemaps_features(waves: Sequence[np.ndarray], sample_rate: int = 16000) -> np.ndarray:
    """eGeMAPSv02 functionals of each waveform: ``[N, 88]`` float64."""
    return _stack(EgemapsExtractor(), waves, sample_rate)


def mfcc_features(waves: Sequence[np.ndarray], sample_rate: int = 16000) -> np.ndarray:
    """MFCC functionals of each waveform: ``[N, 160]`` float64."""
    return _stack(MfccExtractor(), waves, sample_rate)


def zero_shot_scores(targets: Sequence[str | None], logits: np.ndarray, folds: Sequence[Fold]) -> tuple[FoldScores, str] | None:
    """The student's own argmax over the FER+ emotions the clips' classes map to (``targets``: each
    clip's FER+ emotion, None for a class without one, left out), scored per fold so that its
    mean +- std compares with the probes'. None when fewer than two emotions are shared."""
    shared = [e for e in EMOTIONS if e in {t for t in targets if t is not None}]
    if len(shared) < 2:
        return None
    columns = [emotion_index(e) for e in shared]
    predicted = np.asarray(logits)[:, columns].argmax(axis=1)
    truth = np.array([shared.index(t) if t is not None else -1 for t in targets])
    scores = FoldScores(tuple(shared))
    for _, test in folds:
        test = test[truth[test] >= 0]
        if len(test):
            scores.add(truth[test], predicted[test])
    unmapped = sum(t is None for t in targets)
    note = f"{len(shared)} shared classes" + (f"; {unmapped} clips of unmapped classes left out" if unmapped else "")
    return scores, note
