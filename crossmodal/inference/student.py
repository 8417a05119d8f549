"""The :class:`Student` wrapper (front-end + network as one ``nn.Module``) and what it predicts:
:class:`Prediction` per piece of audio, :class:`WindowPrediction` per window, :class:`FilePrediction`
per file (whole-file answer pooled over stretches when the file is streamed)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from crossmodal.emotions import EMOTIONS
from crossmodal.inference.waveform import (
    MIN_SPEECH_SECONDS,
    SILENCE_RMS,
    SilentAudioError,
    StretchCutter,
    TooShortAudioError,
    WindowCutter,
    check_seconds,
    check_signal,
    prepare_waveform,
    window_spans,
)
from crossmodal.io.audio import SAMPLE_RATE

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
