"""Using a trained student: raw audio in, an emotion distribution and an embedding out.

    from crossmodal import load_student
    model = load_student()                        # the shipped default, or load_student("run/student.pt")
    out = model.predict(waveform, sample_rate)    # any rate, mono or multi-channel, any length
    out.probabilities                             # [8], FER+ order (crossmodal.emotions.EMOTIONS), sums to 1
    out.embedding                                 # [D], the student's penultimate layer
    model.predict_file("clip.mp4", window=4.0, hop=2.0)   # whole file + one row per window

:class:`Student` is an ``nn.Module`` holding the front-end and the network, so ``student(wave)``
(raw 16 kHz waveforms ``[B, samples]``) gives ``(logits, embedding)``; that module is what
:mod:`crossmodal.export` writes as TorchScript or ONNX.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from crossmodal.emotions import EMOTIONS

SAMPLE_RATE = 16000
DEFAULT_STUDENT = Path(__file__).resolve().parent / "assets" / "student_cpu.pt"
# Peak amplitude below which a signal counts as silent (16-bit audio's 1 LSB is 3e-5).
SILENCE_PEAK = 1e-4


class SilentAudioError(ValueError):
    """The audio holds no signal (all zeros or below the silence threshold)."""


@dataclass
class Prediction:
    """The student's output for one piece of audio."""

    probabilities: np.ndarray  # [8] softmax over EMOTIONS
    logits: np.ndarray  # [8]
    embedding: np.ndarray  # [D]
    emotions: tuple[str, ...] = EMOTIONS

    @property
    def top(self) -> str:
        return self.emotions[int(np.argmax(self.probabilities))]

    def distribution(self) -> dict[str, float]:
        return {name: float(p) for name, p in zip(self.emotions, self.probabilities)}


@dataclass
class WindowPrediction:
    start: float  # seconds
    end: float
    prediction: Prediction


@dataclass
class FilePrediction:
    path: str
    duration: float  # seconds
    whole: Prediction
    windows: list[WindowPrediction] = field(default_factory=list)

    def as_dict(self, embeddings: bool = True) -> dict[str, Any]:
        def one(prediction: Prediction) -> dict[str, Any]:
            out: dict[str, Any] = {"top": prediction.top, "probabilities": prediction.distribution()}
            if embeddings:
                out["embedding"] = [round(float(v), 6) for v in prediction.embedding]
            return out

        return {
            "path": self.path,
            "duration": round(self.duration, 3),
            **one(self.whole),
            "windows": [{"start": round(w.start, 3), "end": round(w.end, 3), **one(w.prediction)} for w in self.windows],
        }


class Student(nn.Module):
    """Front-end + network: raw 16 kHz waveforms ``[B, samples]`` -> ``(logits [B, 8], embedding [B, D])``."""

    sample_rate = SAMPLE_RATE

    def __init__(self, frontend: nn.Module, net: nn.Module, info: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.frontend = frontend
        self.net = net
        self.info = dict(info or {})
        self.emotions = tuple(self.info.get("emotions", EMOTIONS))
        self.eval()

    def forward(self, wave: torch.Tensor, lengths: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        features, frames = self.frontend(wave, lengths)
        return self.net(features, frames)

    # ------------------------------------------------------------------ numpy in, numpy out

    @torch.inference_mode()
    def predict(self, waveform: np.ndarray | torch.Tensor, sample_rate: int) -> Prediction:
        """Emotion distribution and embedding of one whole piece of audio (any rate and length)."""
        wave = prepare_waveform(waveform, sample_rate)
        return self._predict_batch(wave[None])[0]

    @torch.inference_mode()
    def predict_windows(self, waveform: np.ndarray | torch.Tensor, sample_rate: int, window: float = 4.0, hop: float = 2.0) -> list[WindowPrediction]:
        """One prediction per ``window`` seconds, every ``hop`` seconds; the last window ends at the end.

        Audio no longer than one window gives a single window covering it all.
        """
        if window <= 0 or hop <= 0:
            raise ValueError(f"window ({window}) and hop ({hop}) must be positive seconds")
        wave = prepare_waveform(waveform, sample_rate)
        spans = window_spans(len(wave), round(window * SAMPLE_RATE), round(hop * SAMPLE_RATE))
        predictions: list[Prediction] = []
        for first in range(0, len(spans), 16):  # equal-length windows batch without padding
            chunk = spans[first : first + 16]
            predictions += self._predict_batch(np.stack([wave[start:end] for start, end in chunk]))
        return [WindowPrediction(start / SAMPLE_RATE, end / SAMPLE_RATE, p) for (start, end), p in zip(spans, predictions)]

    def predict_file(self, path: str | Path, window: float | None = None, hop: float | None = None) -> FilePrediction:
        """The whole file, plus per-window predictions when ``window`` is set and the file is longer."""
        from crossmodal.data.audio import load_audio

        wave = load_audio(path, SAMPLE_RATE)
        check_signal(wave, str(path))
        duration = len(wave) / SAMPLE_RATE
        result = FilePrediction(str(path), duration, self.predict(wave, SAMPLE_RATE))
        if window and duration > window:
            result.windows = self.predict_windows(wave, SAMPLE_RATE, window, hop or window / 2)
        return result

    def _predict_batch(self, waves: np.ndarray) -> list[Prediction]:
        device = next(self.parameters()).device
        logits, embedding = self(torch.from_numpy(np.ascontiguousarray(waves, dtype=np.float32)).to(device))
        probabilities = torch.softmax(logits.float(), dim=-1).cpu().numpy()
        logits, embedding = logits.float().cpu().numpy(), embedding.float().cpu().numpy()
        return [Prediction(probabilities[i], logits[i], embedding[i], self.emotions) for i in range(len(waves))]


# ----------------------------------------------------------------------------- helpers


def prepare_waveform(waveform: np.ndarray | torch.Tensor, sample_rate: int) -> np.ndarray:
    """Any waveform -> float32 mono at 16 kHz. 2-D input is [channels, samples] or [samples, channels]
    (the short axis is taken as channels)."""
    from crossmodal.data.audio import resample

    if isinstance(waveform, torch.Tensor):
        waveform = waveform.detach().cpu().numpy()
    wave = np.asarray(waveform, dtype=np.float32)
    if wave.ndim == 2:
        wave = wave.mean(axis=0 if wave.shape[0] <= wave.shape[1] else 1)
    if wave.ndim != 1:
        raise ValueError(f"expected a waveform [samples] or [channels, samples], got shape {wave.shape}")
    if wave.size == 0:
        raise ValueError("empty waveform")
    if not sample_rate or sample_rate <= 0:
        raise ValueError(f"sample_rate must be a positive number of Hz, got {sample_rate}")
    return resample(wave, int(sample_rate), SAMPLE_RATE)


def check_signal(wave: np.ndarray, where: str) -> None:
    """Fail on audio that holds no usable signal, naming it."""
    if not np.all(np.isfinite(wave)):
        raise ValueError(f"{where}: audio contains NaN or infinite samples")
    peak = float(np.max(np.abs(wave))) if wave.size else 0.0
    if peak < SILENCE_PEAK:
        raise SilentAudioError(f"{where}: audio is silent (peak amplitude {peak:.2g} over {len(wave) / SAMPLE_RATE:.2f} s)")


def window_spans(samples: int, window: int, hop: int) -> list[tuple[int, int]]:
    """(start, end) sample spans of ``window`` every ``hop``; the last one ends at ``samples``."""
    if samples <= window:
        return [(0, samples)]
    starts = list(range(0, samples - window + 1, hop))
    if starts[-1] + window < samples:
        starts.append(samples - window)
    return [(start, start + window) for start in starts]


# ----------------------------------------------------------------------------- loading


def load_student(path: str | Path | None = None, device: str | torch.device = "cpu") -> Student:
    """A :class:`Student` from a slim student file or a Lightning checkpoint of the distillation.

    ``path=None`` loads the project's shipped default (``crossmodal/assets/student_cpu.pt``, or
    ``$CROSSMODAL_STUDENT``).
    """
    if path is None:
        path = os.environ.get("CROSSMODAL_STUDENT") or DEFAULT_STUDENT
        if not Path(path).exists():
            raise FileNotFoundError(
                f"no default student at {path}: this install ships none yet. "
                "Pass a student file or checkpoint (--ckpt PATH / ckpt_path=PATH), or set CROSSMODAL_STUDENT"
            )
    path = Path(path).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"student checkpoint not found: {path}")
    frontend, net, info = load_student_modules(path, device)
    return Student(frontend, net, info).to(device).eval()


def load_student_modules(path: str | Path, device: str | torch.device = "cpu") -> tuple[nn.Module, nn.Module, dict[str, Any]]:
    """(frontend, net, info) from a student file or a Lightning .ckpt whose hyper-parameters name the network."""
    from crossmodal.models.speech import STUDENT_FORMAT, load_student_file

    path = Path(path)
    try:
        payload = torch.load(path, map_location=device, weights_only=False)
    except Exception as exn:  # noqa: BLE001 - pickle/zip errors of all kinds
        raise ValueError(f"cannot read {path} as a PyTorch checkpoint: {exn}") from exn
    if isinstance(payload, dict) and payload.get("format") == STUDENT_FORMAT:
        return load_student_file(path, map_location=device)
    if isinstance(payload, dict) and "state_dict" in payload:
        return _from_lightning(path, payload)
    raise ValueError(f"{path} is neither a crossmodal student file nor a Lightning checkpoint of a student")


def _from_lightning(path: Path, payload: dict[str, Any]) -> tuple[nn.Module, nn.Module, dict[str, Any]]:
    """Rebuild the student of a DistillationModule / StudentSpeech checkpoint from its hyper-parameters."""
    from crossmodal.models.frontend import build_frontend
    from crossmodal.models.speech import create_student
    from crossmodal.registry import SPEECH_MODELS

    hparams = _plain(payload.get("hyper_parameters") or {})
    net_name, net_kwargs = _find_network(hparams, set(SPEECH_MODELS.names()))
    if net_name is None:
        raise ValueError(
            f"{path}: cannot tell which speech network this checkpoint trained (no registered name among its "
            f"hyper-parameters; registered: {', '.join(SPEECH_MODELS.names())})"
        )
    frontend_cfg = _find_key(hparams, ("frontend", "frontend_cfg", "frontend_config")) or {}
    frontend = build_frontend(frontend_cfg).eval()
    net = create_student(net_name, frontend_n_freq=getattr(frontend, "n_freq", None), **net_kwargs)
    state = payload["state_dict"]
    net.load_state_dict(_strip_prefix(state, set(net.state_dict()), path))
    net.eval()
    info = {"net_name": net_name, "net_kwargs": net_kwargs, "frontend": frontend_cfg, "emotions": list(EMOTIONS), "path": str(path), "source": "lightning"}
    return frontend, net, info


def _plain(value: Any) -> Any:
    try:
        from omegaconf import DictConfig, ListConfig, OmegaConf

        if isinstance(value, (DictConfig, ListConfig)):
            return OmegaConf.to_container(value, resolve=True)
    except ImportError:  # pragma: no cover
        pass
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def _find_key(tree: Any, names: tuple[str, ...]) -> Any:
    if isinstance(tree, dict):
        for name in names:
            if isinstance(tree.get(name), dict):
                return tree[name]
        for child in tree.values():
            found = _find_key(child, names)
            if found is not None:
                return found
    return None


def _find_network(tree: Any, registered: set[str]) -> tuple[str | None, dict[str, Any]]:
    """The first ``{name|net|net_name|arch|backbone: <registered name>}`` in the hyper-parameters, and
    the keyword arguments stored beside it (``net_kwargs``/``kwargs``, or the sibling keys)."""
    if not isinstance(tree, dict):
        return None, {}
    for key in ("net_name", "net", "name", "arch", "backbone", "student"):
        value = tree.get(key)
        if isinstance(value, str) and value in registered:
            # Only explicit keyword arguments are trusted: sibling keys are usually optimiser settings.
            kwargs = tree.get("net_kwargs") or tree.get("kwargs")
            return value, dict(kwargs) if isinstance(kwargs, dict) else {}
    for child in tree.values():
        name, kwargs = _find_network(child, registered)
        if name is not None:
            return name, kwargs
    return None, {}


def _strip_prefix(state: dict[str, torch.Tensor], wanted: set[str], path: Path) -> dict[str, torch.Tensor]:
    """The sub-dict of ``state`` whose keys, minus a common prefix (``student.net.``...), are the net's."""
    prefixes: dict[str, int] = {}
    for key in state:
        for target in wanted:
            if key.endswith(target) and (len(key) == len(target) or key[-len(target) - 1] == "."):
                prefix = key[: len(key) - len(target)]
                prefixes[prefix] = prefixes.get(prefix, 0) + 1
    for prefix, _count in sorted(prefixes.items(), key=lambda kv: (-kv[1], len(kv[0]))):
        sub = {key[len(prefix) :]: value for key, value in state.items() if key.startswith(prefix)}
        if wanted <= set(sub):
            return {key: sub[key] for key in wanted}
    raise ValueError(f"{path}: its state_dict does not hold the weights of the network named in its hyper-parameters")
