"""Using a trained student: raw audio in, an emotion distribution and an embedding out.

    from crossmodal import load_student
    model = load_student()                        # the shipped default, or load_student("run/student.safetensors")
    out = model.predict(waveform, sample_rate)    # any rate, mono or multi-channel, any length
    out.probabilities                             # [8], FER+ order (crossmodal.emotions.EMOTIONS), sums to 1
    out.embedding                                 # [D], the student's penultimate layer
    model.predict_file("clip.mp4", window=4.0, hop=2.0)   # whole file + one row per window

What the student cannot judge is refused, naming the input: audio shorter than
:attr:`Student.min_seconds` (:class:`TooShortAudioError`) and audio with no speech-like energy, such
as digital silence or a constant DC offset (:class:`SilentAudioError`). Files longer than
``STREAM_ABOVE_SECONDS`` are read in blocks and never held whole; their whole-file prediction is
pooled over consecutive stretches of ``POOL_SECONDS`` (see :meth:`Student.predict_file`).

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
from crossmodal.io.audio import SAMPLE_RATE

DEFAULT_STUDENT = Path(__file__).resolve().parent / "assets" / "student_cpu.safetensors"
# RMS (after removing the mean, i.e. any DC offset) below which audio holds no speech-like energy:
# the rule the distillation data applies to its training segments (data.silence_rms = 1e-4; 16-bit
# audio's 1 LSB is 3e-5).
SILENCE_RMS = 1e-4
# The student never saw shorter audio: the distillation data drops segments under data.min_seconds.
MIN_SPEECH_SECONDS = 0.5
# Files up to this long are predicted in one pass (as ever); longer ones are streamed (bounded memory).
STREAM_ABOVE_SECONDS = 60.0
# A streamed file's whole-file prediction: the student on consecutive stretches of this length (the
# longest segments it trained on are ~20 s), logits and embeddings averaged, weighted by length.
POOL_SECONDS = 20.0
WINDOW_BATCH = 16  # windows predicted per forward pass (equal lengths: no padding)


class SilentAudioError(ValueError):
    """The audio holds no speech-like energy (silence, or a constant DC offset)."""


class TooShortAudioError(ValueError):
    """The audio is shorter than the student can judge (:attr:`Student.min_seconds`)."""


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

    @property
    def min_seconds(self) -> float:
        """The shortest audio this student judges: ``MIN_SPEECH_SECONDS`` (the shortest segment
        distillation trains on; ``info["min_seconds"]`` when the student file records its own), or
        longer when the network needs more input than that for one output step without padding
        (front-end window + (net.min_frames - 1) hops: 0.175 s for small_cnn, 0.665 s for VGGVox)."""
        return max(float(self.info.get("min_seconds", MIN_SPEECH_SECONDS)), self.network_min_samples / SAMPLE_RATE)

    @property
    def network_min_samples(self) -> int:
        frames = int(getattr(self.net, "min_frames", 1))
        win = int(getattr(self.frontend, "win_length", 0))
        hop = int(getattr(self.frontend, "hop_length", 0))
        return win + (frames - 1) * hop

    @torch.inference_mode()
    def predict(self, waveform: np.ndarray | torch.Tensor, sample_rate: int) -> Prediction:
        """Emotion distribution and embedding of one whole piece of audio (any rate and length).

        Audio shorter than :attr:`min_seconds` or without speech-like energy is refused
        (:class:`TooShortAudioError`, :class:`SilentAudioError`).
        """
        wave = prepare_waveform(waveform, sample_rate)
        check_signal(wave, "waveform", round(self.min_seconds * SAMPLE_RATE))
        return self._predict_batch(wave[None])[0]

    @torch.inference_mode()
    def predict_windows(self, waveform: np.ndarray | torch.Tensor, sample_rate: int, window: float = 4.0, hop: float = 2.0) -> list[WindowPrediction]:
        """One prediction per ``window`` seconds, every ``hop`` seconds; the last window ends at the end.

        Audio no longer than one window gives a single window covering it all.
        """
        check_seconds(window, "window")
        check_seconds(hop, "hop")
        wave = prepare_waveform(waveform, sample_rate)
        spans = window_spans(len(wave), round(window * SAMPLE_RATE), round(hop * SAMPLE_RATE))
        predictions: list[Prediction] = []
        for first in range(0, len(spans), WINDOW_BATCH):  # equal-length windows batch without padding
            chunk = spans[first : first + WINDOW_BATCH]
            predictions += self._predict_batch(np.stack([wave[start:end] for start, end in chunk]))
        return [WindowPrediction(start / SAMPLE_RATE, end / SAMPLE_RATE, p) for (start, end), p in zip(spans, predictions)]

    def predict_file(self, path: str | Path, window: float | None = None, hop: float | None = None) -> FilePrediction:
        """The whole file, plus per-window predictions when ``window`` is set and the file is longer.

        ``window=None`` (or 0) asks for the whole file only. A file whose header says it is at most
        ``STREAM_ABOVE_SECONDS`` long is read at once and predicted in one pass. A longer one (or one
        of unknown length) is streamed in blocks: its windows are cut from the stream exactly where
        :func:`window_spans` puts them, and its whole-file prediction pools the student's outputs
        over consecutive ``POOL_SECONDS`` stretches (the last one absorbs a remainder under half a
        stretch): logits and embedding are averaged weighted by stretch length, probabilities are
        the softmax of the pooled logits, and stretches without speech-like energy are left out.
        Memory then stays bounded whatever the file's length.
        """
        from crossmodal.io.audio import MAX_STREAM_SECONDS, load_audio, probe_audio

        if window is not None and window != 0:
            check_seconds(window, "window")
        if hop is not None:
            check_seconds(hop, "hop")
        window = window or None
        hop = hop or (window / 2 if window else None)
        info = probe_audio(path, MAX_STREAM_SECONDS)  # refuses absurd or truncated headers before any read
        if info.duration is None or info.duration > STREAM_ABOVE_SECONDS:
            return self._predict_stream(path, window, hop)
        wave = load_audio(path, SAMPLE_RATE)
        check_signal(wave, str(path), self.min_samples)
        duration = len(wave) / SAMPLE_RATE
        result = FilePrediction(str(path), duration, self._predict_batch(wave[None])[0])
        if window and duration > window:
            result.windows = self.predict_windows(wave, SAMPLE_RATE, window, hop)
        return result

    @property
    def min_samples(self) -> int:
        return round(self.min_seconds * SAMPLE_RATE)

    @torch.inference_mode()
    def _predict_stream(self, path: str | Path, window: float | None, hop: float | None) -> FilePrediction:
        """:meth:`predict_file` for long files: one pass over the file's blocks, nothing held whole."""
        from crossmodal.io.audio import MAX_STREAM_SECONDS, stream_audio

        where = str(path)
        stretches = StretchCutter(round(POOL_SECONDS * SAMPLE_RATE))
        cutter = WindowCutter(round(window * SAMPLE_RATE), round(hop * SAMPLE_RATE)) if window and hop else None
        pool = _Pool(self, where)
        windows: list[WindowPrediction] = []
        queued: list[tuple[int, int, np.ndarray]] = []

        def flush() -> None:
            predictions = self._predict_batch(np.stack([wave for _start, _end, wave in queued]))
            windows.extend(WindowPrediction(start / SAMPLE_RATE, end / SAMPLE_RATE, p) for (start, end, _w), p in zip(queued, predictions))
            queued.clear()

        total = 0
        for block in stream_audio(path, SAMPLE_RATE, max_seconds=MAX_STREAM_SECONDS):
            if not np.all(np.isfinite(block)):
                raise ValueError(f"{where}: audio contains NaN or infinite samples (near {total / SAMPLE_RATE:.1f} s)")
            total += len(block)
            for stretch in stretches.push(block):
                pool.add(stretch)
            for span in cutter.push(block) if cutter else ():
                queued.append(span)
                if len(queued) == WINDOW_BATCH:
                    flush()
        for stretch in stretches.finish():
            pool.add(stretch)
        queued.extend(cutter.finish() if cutter else ())
        if queued:
            flush()
        return FilePrediction(where, total / SAMPLE_RATE, pool.result(), windows)

    @torch.inference_mode()
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
    from crossmodal.io.audio import resample

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


def check_signal(wave: np.ndarray, where: str, min_samples: int = 0) -> None:
    """Fail on 16 kHz audio the student cannot judge, naming it: non-finite samples, fewer than
    ``min_samples`` (:class:`TooShortAudioError`), or no speech-like energy: an RMS around the mean
    (so a constant DC offset counts as silence) below ``SILENCE_RMS`` (:class:`SilentAudioError`)."""
    seconds = len(wave) / SAMPLE_RATE
    if len(wave) < max(min_samples, 1):
        raise TooShortAudioError(
            f"{where}: too short to judge: {seconds:.3f} s of audio ({len(wave)} samples at {SAMPLE_RATE} Hz), "
            f"the student needs at least {min_samples / SAMPLE_RATE:.2f} s (it never trained on shorter speech)"
        )
    if not np.all(np.isfinite(wave)):
        raise ValueError(f"{where}: audio contains NaN or infinite samples")
    mean = float(np.mean(wave, dtype=np.float64))
    rms = float(np.sqrt(np.mean(np.square(wave - mean, dtype=np.float64))))
    if rms < SILENCE_RMS:
        level = f", only a constant DC offset of {mean:+.3g}" if abs(mean) >= SILENCE_RMS else ""
        raise SilentAudioError(
            f"{where}: audio is silent: no speech-like energy (RMS {rms:.2g} around its mean over {seconds:.2f} s, "
            f"below {SILENCE_RMS:g}{level})"
        )


def check_seconds(value: Any, name: str) -> float:
    """A window or hop length: a finite number of seconds above zero, or a ValueError naming it."""
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number of seconds, got {value!r}") from None
    if not np.isfinite(seconds) or seconds <= 0:
        raise ValueError(f"{name} must be a finite number of seconds above 0, got {value!r}")
    return seconds


class StretchCutter:
    """Consecutive stretches of ``size`` samples from a stream of blocks; the remainder at the end
    is appended to the last stretch when under half a stretch, else is a stretch of its own."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.parts: list[np.ndarray] = []
        self.held = 0
        self.full: np.ndarray | None = None  # held back until we know whether a short remainder follows

    def push(self, block: np.ndarray) -> list[np.ndarray]:
        out: list[np.ndarray] = []
        self.parts.append(block)
        self.held += len(block)
        while self.held >= self.size:
            buffer = np.concatenate(self.parts)
            if self.full is not None:
                out.append(self.full)
            self.full = buffer[: self.size].copy()
            self.parts, self.held = [buffer[self.size :].copy()], len(buffer) - self.size
        return out

    def finish(self) -> list[np.ndarray]:
        rest = np.concatenate(self.parts) if self.held else np.zeros(0, np.float32)
        if self.full is None:
            return [rest] if len(rest) else []
        if len(rest) < self.size // 2:
            return [np.concatenate([self.full, rest])]
        return [self.full, rest]


class WindowCutter:
    """The windows of :func:`window_spans` (``(start, end, samples)``) cut from a stream of blocks
    without knowing its length in advance; holds about one window plus one block."""

    def __init__(self, window: int, hop: int) -> None:
        self.window, self.hop = window, hop
        self.buffer = np.zeros(0, np.float32)
        self.buffer_start = 0  # stream position of buffer[0]
        self.total = 0
        self.next_start = 0
        self.last_end = 0

    def push(self, block: np.ndarray) -> list[tuple[int, int, np.ndarray]]:
        self.buffer = np.concatenate([self.buffer, block])
        self.total += len(block)
        out = []
        while self.next_start + self.window <= self.total and self.total > self.window:  # one window only: none
            at = self.next_start - self.buffer_start
            out.append((self.next_start, self.next_start + self.window, self.buffer[at : at + self.window].copy()))
            self.last_end = self.next_start + self.window
            self.next_start += self.hop
        keep = max(self.buffer_start, min(self.next_start, self.total - self.window))
        self.buffer = self.buffer[keep - self.buffer_start :].copy()
        self.buffer_start = keep
        return out

    def finish(self) -> list[tuple[int, int, np.ndarray]]:
        """The last window, ending at the end, when the stepped ones stop short of it (none when the
        whole stream fits in one window: then the whole-file prediction says it all)."""
        if self.total <= self.window or self.last_end >= self.total:
            return []
        at = self.total - self.window - self.buffer_start
        return [(self.total - self.window, self.total, self.buffer[at : at + self.window].copy())]


class _Pool:
    """A streamed file's whole-file prediction: the length-weighted mean of its stretches' logits
    and embeddings (softmax of the mean logits); stretches the student cannot judge are left out."""

    def __init__(self, student: Student, where: str) -> None:
        self.student, self.where = student, where
        self.weight = 0
        self.logits: np.ndarray | None = None
        self.embedding: np.ndarray | None = None
        self.refused: list[ValueError] = []
        self.count = 0

    def add(self, stretch: np.ndarray) -> None:
        self.count += 1
        try:
            check_signal(stretch, self.where, self.student.min_samples)
        except (SilentAudioError, TooShortAudioError) as exn:
            self.refused.append(exn)
            return
        prediction = self.student._predict_batch(stretch[None])[0]
        weight = len(stretch)
        self.logits = prediction.logits * weight if self.logits is None else self.logits + prediction.logits * weight
        self.embedding = prediction.embedding * weight if self.embedding is None else self.embedding + prediction.embedding * weight
        self.weight += weight

    def result(self) -> Prediction:
        if self.logits is None or self.embedding is None:
            if self.count == 1 and self.refused:
                raise self.refused[0]
            raise SilentAudioError(
                f"{self.where}: audio is silent: no speech-like energy in any of its {self.count} stretches of "
                f"{POOL_SECONDS:.0f} s (RMS around the mean below {SILENCE_RMS:g} everywhere)"
            )
        logits = (self.logits / self.weight).astype(np.float32)
        embedding = (self.embedding / self.weight).astype(np.float32)
        shifted = np.exp(logits - logits.max())
        return Prediction(shifted / shifted.sum(), logits, embedding, self.student.emotions)


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
    """A :class:`Student` from a student model file or a Lightning checkpoint of the distillation.

    ``path=None`` loads the project's shipped default (``crossmodal/assets/student_cpu.safetensors``, or
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
    """(frontend, net, info) from a student model file (any format version) or a Lightning .ckpt whose
    hyper-parameters name the network. Nothing in the file runs: safetensors, or
    ``torch.load(weights_only=True)`` with crossmodal's allow-list (refused otherwise, naming the file)."""
    from crossmodal.models.modelfile import LEGACY_STUDENT_FORMAT, is_safetensors, safe_torch_load
    from crossmodal.models.speech import load_student_file

    path = Path(path)
    if is_safetensors(path):
        return load_student_file(path, map_location=device)
    payload = safe_torch_load(path, map_location=device)
    if isinstance(payload, dict) and payload.get("format") == LEGACY_STUDENT_FORMAT:
        return load_student_file(path, map_location=device)
    if isinstance(payload, dict) and "state_dict" in payload:
        return _from_lightning(path, payload)
    raise ValueError(f"{path} is neither a crossmodal student file nor a Lightning checkpoint of a student")


def _from_lightning(path: Path, payload: dict[str, Any]) -> tuple[nn.Module, nn.Module, dict[str, Any]]:
    """Rebuild the student of a DistillationModule / StudentSpeech checkpoint from its hyper-parameters."""
    from crossmodal.models.frontend import build_frontend
    from crossmodal.models.modelfile import plain
    from crossmodal.models.speech import create_student
    from crossmodal.registry import SPEECH_MODELS

    hparams = plain(payload.get("hyper_parameters") or {})
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
