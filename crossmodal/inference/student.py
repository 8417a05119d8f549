"""The :class:`Student` wrapper (front-end + network as one ``nn.Module``) and what it predicts."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from crossmodal.emotions import EMOTIONS
from crossmodal.inference.waveform import (
    MAX_WINDOWS,
    MIN_SPEECH_SECONDS,
    SILENCE_RMS,
    SilentAudioError,
    StretchCutter,
    TooShortAudioError,
    WindowCutter,
    check_signal,
    check_window_count,
    check_windows,
    mono_waveform,
    window_spans,
)
from crossmodal.io.audio import MAX_STREAM_SECONDS, SAMPLE_RATE, probe_audio, read_audio, resample, stream_audio
from crossmodal.io.vad import (
    DEFAULT_CHECK,
    NoSpeechError,
    SpeechCheck,
    VoiceActivity,
    frame_probabilities,
    no_speech_message,
)
from crossmodal.models.loading import load_student_modules
from crossmodal.utils.progress import progress

# Files up to this long are predicted in one pass (as ever); longer ones are streamed (bounded memory).
STREAM_ABOVE_SECONDS = 60.0
# A streamed file's whole-file prediction: the student on consecutive stretches of this length (the
# longest segments it trained on are ~20 s), logits and embeddings averaged, weighted by length.
POOL_SECONDS = 20.0
WINDOW_BATCH = 16  # windows predicted per forward pass (equal lengths: no padding)


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
    voiced_fraction: float | None = None  # share of the window's 32-ms frames the detector calls voiced (None: not checked)
    speech: bool | None = None  # voiced_fraction reaches the speech check's minimum (None: not checked)


@dataclass
class FilePrediction:
    path: str
    duration: float  # seconds
    whole: Prediction
    windows: list[WindowPrediction] = field(default_factory=list)
    voiced_fraction: float | None = None  # over the whole file (None: speech not checked)
    speech: bool | None = None
    non_speech_scored: bool = False  # allow_non_speech: windows (and a file) without speech keep their scores

    def judged(self, window: WindowPrediction) -> bool:
        """Whether ``window``'s scores are reported: it holds speech, was not checked, or non-speech is allowed."""
        return window.speech is not False or self.non_speech_scored

    def as_dict(self, embeddings: bool = True) -> dict[str, Any]:
        def one(prediction: Prediction | None) -> dict[str, Any]:
            out: dict[str, Any] = {
                "top": prediction.top if prediction else None,
                "probabilities": prediction.distribution() if prediction else None,
            }
            if embeddings:
                out["embedding"] = [round(float(v), 6) for v in prediction.embedding] if prediction else None
            return out

        def speech(item: FilePrediction | WindowPrediction) -> dict[str, Any]:
            fraction = None if item.voiced_fraction is None else round(item.voiced_fraction, 4)
            return {"voiced_fraction": fraction, "speech": item.speech}

        return {
            "path": self.path,
            "duration": round(self.duration, 3),
            **speech(self),
            **one(self.whole),
            "windows": [
                {"start": round(w.start, 3), "end": round(w.end, 3), **speech(w), **one(w.prediction if self.judged(w) else None)}
                for w in self.windows
            ],
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

        Refused: audio shorter than :attr:`min_seconds` (:class:`TooShortAudioError`) or without
        speech-like energy before resampling (:class:`SilentAudioError`). Speech is not checked here:
        ``crossmodal.io.vad.SpeechCheck().problem(waveform, sample_rate, name)`` does it for arrays.
        """
        native, rate = mono_waveform(waveform, sample_rate)
        wave = resample(native, rate, SAMPLE_RATE)
        check_signal(wave, "waveform", self.min_samples, native=native)
        return self._predict_batch(wave[None])[0]

    def check_windows(self, window: float | None, hop: float | None, names: tuple[str, str] = ("window", "hop")) -> None:
        """:func:`~crossmodal.inference.waveform.check_windows` with this student's minimum."""
        check_windows(window, hop, self.min_seconds, names)

    @torch.inference_mode()
    def predict_windows(self, waveform: np.ndarray | torch.Tensor, sample_rate: int, window: float = 4.0, hop: float = 2.0) -> list[WindowPrediction]:
        """One prediction per ``window`` seconds, every ``hop`` seconds; the last window ends at the end
        (one window for audio no longer than that). A window shorter than :attr:`min_seconds`, a hop
        under ``MIN_HOP_SECONDS`` or more than ``MAX_WINDOWS`` windows are refused before any work."""
        self.check_windows(window, hop)
        wave = resample(*mono_waveform(waveform, sample_rate), SAMPLE_RATE)
        check_window_count("waveform", len(wave) / SAMPLE_RATE, window, hop)
        spans = window_spans(len(wave), round(window * SAMPLE_RATE), round(hop * SAMPLE_RATE))
        predictions: list[Prediction] = []
        for first in range(0, len(spans), WINDOW_BATCH):  # equal-length windows batch without padding
            chunk = spans[first : first + WINDOW_BATCH]
            predictions += self._predict_batch(np.stack([wave[start:end] for start, end in chunk]))
        return [WindowPrediction(start / SAMPLE_RATE, end / SAMPLE_RATE, p) for (start, end), p in zip(spans, predictions)]

    def predict_file(
        self, path: str | Path, window: float | None = None, hop: float | None = None, *,
        speech: SpeechCheck | None = DEFAULT_CHECK, allow_non_speech: bool = False, names: tuple[str, str] = ("window", "hop"),
    ) -> FilePrediction:
        """The whole file, plus per-window predictions when ``window`` (None or 0: none) is set and the
        file is longer. Windows are refused as in :meth:`predict_windows`, counted from the header's
        duration, before anything is decoded.

        ``speech`` (None: unchecked) measures the voiced share of the file and of each window
        (:mod:`crossmodal.io.vad`): a file without speech raises :class:`NoSpeechError` unless
        ``allow_non_speech`` (then ``speech=False``); windows without speech are flagged, and
        :meth:`FilePrediction.as_dict` reports their scores only under ``allow_non_speech``.

        A file over ``STREAM_ABOVE_SECONDS`` (or of unknown length) is streamed in bounded memory: the same
        windows, and a whole-file answer pooled over ``POOL_SECONDS`` stretches (:class:`_Pool`).
        """
        window = window or None
        self.check_windows(window, hop, names)
        hop = hop or (window / 2 if window else None)
        where = str(path)
        info = probe_audio(path, MAX_STREAM_SECONDS)  # refuses absurd or truncated headers before any read
        if window and info.duration is not None:
            check_window_count(where, info.duration, window, hop, names)
        if info.duration is None or info.duration > STREAM_ABOVE_SECONDS:
            return self._predict_stream(path, window, hop, speech, allow_non_speech, info.duration, names)
        native, rate = read_audio(path)
        wave = resample(native, rate, SAMPLE_RATE)
        check_signal(wave, where, self.min_samples, native=native)
        duration = len(wave) / SAMPLE_RATE
        probabilities = fraction = None
        if speech is not None:  # before the student runs: a refusal costs no more than the detector
            probabilities = frame_probabilities(wave, SAMPLE_RATE)
            fraction = _judge_speech(where, speech, probabilities, allow_non_speech)
        result = FilePrediction(where, duration, self._predict_batch(wave[None])[0], non_speech_scored=allow_non_speech)
        if fraction is not None:
            result.voiced_fraction, result.speech = fraction, speech.is_speech(fraction)
        if window and duration > window:
            result.windows = self.predict_windows(wave, SAMPLE_RATE, window, hop)
            if speech is not None:
                _judge_windows(result.windows, speech, probabilities)
        return result

    @property
    def min_samples(self) -> int:
        return round(self.min_seconds * SAMPLE_RATE)

    @torch.inference_mode()
    def _predict_stream(
        self, path: str | Path, window: float | None, hop: float | None, speech: SpeechCheck | None,
        allow_non_speech: bool, header_seconds: float | None, names: tuple[str, str] = ("window", "hop"),
    ) -> FilePrediction:
        """:meth:`predict_file` for long files: one pass over the file's blocks, nothing held whole
        but the detector's frame probabilities (4 bytes per 32 ms: 11 MB for 24 hours)."""
        from crossmodal.io.audio import BLOCK_SECONDS

        where = str(path)
        stretches = StretchCutter(round(POOL_SECONDS * SAMPLE_RATE))
        cutter = WindowCutter(round(window * SAMPLE_RATE), round(hop * SAMPLE_RATE)) if window and hop else None
        pool = _Pool(self, where)
        detector = VoiceActivity() if speech is not None else None
        voiced: list[np.ndarray] = []
        windows: list[WindowPrediction] = []
        queued: list[tuple[int, int, np.ndarray]] = []

        def flush() -> None:
            predictions = self._predict_batch(np.stack([wave for _start, _end, wave in queued]))
            windows.extend(WindowPrediction(start / SAMPLE_RATE, end / SAMPLE_RATE, p) for (start, end, _w), p in zip(queued, predictions))
            queued.clear()

        total = 0
        blocks = stream_audio(path, SAMPLE_RATE, max_seconds=MAX_STREAM_SECONDS)
        expected = None if header_seconds is None else math.ceil(header_seconds / BLOCK_SECONDS)
        for block in progress(blocks, desc=f"predict {Path(path).name}", unit="block", total=expected):
            if not np.all(np.isfinite(block)):
                raise ValueError(f"{where}: audio contains NaN or infinite samples (near {total / SAMPLE_RATE:.1f} s)")
            total += len(block)
            if detector is not None:
                voiced.append(detector.push(block))
            for stretch in stretches.push(block):
                pool.add(stretch)
            for span in cutter.push(block) if cutter else ():
                queued.append(span)
                if len(windows) + len(queued) > MAX_WINDOWS:  # a file of unknown length: counted as it goes
                    check_window_count(where, total / SAMPLE_RATE, window, hop, names)
                if len(queued) == WINDOW_BATCH:
                    flush()
        for stretch in stretches.finish():
            pool.add(stretch)
        queued.extend(cutter.finish() if cutter else ())
        if queued:
            flush()
        if detector is None or speech is None:
            return FilePrediction(where, total / SAMPLE_RATE, pool.result(), windows)
        voiced.append(detector.finish())
        probabilities = np.concatenate(voiced)
        whole = pool.result(speech.window_fractions(probabilities, pool.spans), speech.min_fraction)  # silence: refused first
        fraction = _judge_speech(where, speech, probabilities, allow_non_speech)
        _judge_windows(windows, speech, probabilities)
        return FilePrediction(where, total / SAMPLE_RATE, whole, windows, fraction, speech.is_speech(fraction), allow_non_speech)

    @torch.inference_mode()
    def _predict_batch(self, waves: np.ndarray) -> list[Prediction]:
        device = next(self.parameters()).device
        logits, embedding = self(torch.from_numpy(np.ascontiguousarray(waves, dtype=np.float32)).to(device))
        probabilities = torch.softmax(logits.float(), dim=-1).cpu().numpy()
        logits, embedding = logits.float().cpu().numpy(), embedding.float().cpu().numpy()
        return [Prediction(probabilities[i], logits[i], embedding[i], self.emotions) for i in range(len(waves))]


class _Pool:
    """A streamed file's whole-file prediction: the length-weighted mean of its stretches' logits
    and embeddings (softmax of the mean logits); stretches the student cannot judge (silent, too
    short) are left out, and so are stretches without speech when some stretch has speech."""

    def __init__(self, student: Student, where: str) -> None:
        self.student, self.where = student, where
        self.spans: list[tuple[int, int]] = []  # every stretch, in samples
        self.predictions: list[Prediction | None] = []  # None: refused (silent or too short)
        self.refused: list[ValueError] = []
        self.position = 0

    def add(self, stretch: np.ndarray) -> None:
        self.spans.append((self.position, self.position + len(stretch)))
        self.position += len(stretch)
        try:
            check_signal(stretch, self.where, self.student.min_samples)
        except (SilentAudioError, TooShortAudioError) as exn:
            self.refused.append(exn)
            self.predictions.append(None)
            return
        self.predictions.append(self.student._predict_batch(stretch[None])[0])

    def result(self, fractions: list[float] | None = None, min_fraction: float = 0.0) -> Prediction:
        judged = [(span, p) for span, p in zip(self.spans, self.predictions) if p is not None]
        if fractions is not None:
            spoken = [(span, p) for (span, p), f in zip(zip(self.spans, self.predictions), fractions) if p is not None and f >= min_fraction]
            judged = spoken or judged
        if not judged:
            if len(self.spans) == 1 and self.refused:
                raise self.refused[0]
            raise SilentAudioError(
                f"{self.where}: audio is silent: no speech-like energy in any of its {len(self.spans)} stretches of "
                f"{POOL_SECONDS:.0f} s (RMS around the mean below {SILENCE_RMS:g} everywhere)"
            )
        weights = np.asarray([end - start for (start, end), _p in judged], np.float64)
        logits = (np.stack([p.logits for _s, p in judged]).T @ weights / weights.sum()).astype(np.float32)
        embedding = (np.stack([p.embedding for _s, p in judged]).T @ weights / weights.sum()).astype(np.float32)
        shifted = np.exp(logits - logits.max())
        return Prediction(shifted / shifted.sum(), logits, embedding, self.student.emotions)


def _judge_speech(where: str, check: SpeechCheck, probabilities: np.ndarray, allow_non_speech: bool) -> float:
    """The file's voiced fraction; NoSpeechError naming ``where`` when it holds no speech, unless allowed."""
    fraction = check.fraction(probabilities)
    if not check.is_speech(fraction) and not allow_non_speech:
        raise NoSpeechError(no_speech_message(where, fraction), fraction)
    return fraction


def _judge_windows(windows: list[WindowPrediction], check: SpeechCheck, probabilities: np.ndarray) -> None:
    spans = [(round(w.start * SAMPLE_RATE), round(w.end * SAMPLE_RATE)) for w in windows]
    for window, fraction in zip(windows, check.window_fractions(probabilities, spans)):
        window.voiced_fraction, window.speech = fraction, check.is_speech(fraction)


def load_student(path: str | Path | None = None, device: str | torch.device = "cpu") -> Student:
    """A :class:`Student` (eval mode) from a student model file or a Lightning checkpoint of a speech module,
    read by :func:`crossmodal.models.loading.load_student_modules` (nothing in the file runs).

    ``path=None`` loads the default: ``$CROSSMODAL_STUDENT``, else the shipped ``crossmodal/assets/student_cpu.safetensors``.
    """
    frontend, net, info = load_student_modules(path, device)
    return Student(frontend, net, info).to(device).eval()
