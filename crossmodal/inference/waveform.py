"""Audio the student is handed: brought to mono (:func:`mono_waveform`, then resampled), refused when it
cannot be judged (:func:`check_signal`: too short, non-finite, silent), and cut into windows
(:func:`window_spans`) or, from a stream of blocks, into windows and pooling stretches
(:class:`WindowCutter`, :class:`StretchCutter`)."""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from crossmodal.io.audio import SAMPLE_RATE

# RMS (after removing the mean, i.e. any DC offset) below which audio holds no speech-like energy:
# the rule the distillation data applies to its training segments (data.silence_rms = 1e-4; 16-bit
# audio's 1 LSB is 3e-5).
SILENCE_RMS = 1e-4
# The student never saw shorter audio: the distillation data drops segments under data.min_seconds.
MIN_SPEECH_SECONDS = 0.5
# The finest hop between windows: one frame of the students' front-ends (10 ms); a finer hop moves a
# window by less than one spectrogram column.
MIN_HOP_SECONDS = 0.01
# The most windows one file is cut into: checked before any work (at 4-s windows every 2 s, 5.5 hours).
MAX_WINDOWS = 10_000


class SilentAudioError(ValueError):
    """The audio holds no speech-like energy (silence, or a constant DC offset)."""


class TooShortAudioError(ValueError):
    """The audio is shorter than the student can judge (:attr:`Student.min_seconds`)."""


def mono_waveform(waveform: np.ndarray | torch.Tensor, sample_rate: int) -> tuple[np.ndarray, int]:
    """Any waveform -> ``(float32 mono, sample rate)``, checked. 2-D input is [channels, samples] or
    [samples, channels] (the short axis is taken as channels)."""
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
    return wave, int(sample_rate)


def check_signal(wave: np.ndarray, where: str, min_samples: int = 0, native: np.ndarray | None = None) -> None:
    """Fail on 16 kHz audio the student cannot judge, naming it: non-finite samples, fewer than
    ``min_samples`` (:class:`TooShortAudioError`), or no speech-like energy: an RMS around the mean
    (so a constant DC offset counts as silence) below ``SILENCE_RMS`` (:class:`SilentAudioError`).

    ``native``: the same audio before it was resampled to 16 kHz. The energy test is then made on it:
    resampling a constant offset leaves ringing at both ends (the resampler pads with zeros) whose RMS
    passes the test, so a DC offset at 22.05 or 44.1 kHz would otherwise count as sound."""
    seconds = len(wave) / SAMPLE_RATE
    if len(wave) < max(min_samples, 1):
        raise TooShortAudioError(
            f"{where}: too short to judge: {seconds:.3f} s of audio ({len(wave)} samples at {SAMPLE_RATE} Hz), "
            f"the student needs at least {min_samples / SAMPLE_RATE:.2f} s (it never trained on shorter speech)"
        )
    if not np.all(np.isfinite(wave)) or (native is not None and not np.all(np.isfinite(native))):
        raise ValueError(f"{where}: audio contains NaN or infinite samples")
    energy = wave if native is None else np.asarray(native, dtype=np.float32)
    mean = float(np.mean(energy, dtype=np.float64))
    rms = float(np.sqrt(np.mean(np.square(energy - mean, dtype=np.float64))))
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


def check_windows(window: float | None, hop: float | None, min_seconds: float, names: tuple[str, str] = ("window", "hop")) -> None:
    """Fail, naming the setting, on windows the student cannot judge: a window shorter than
    ``min_seconds`` (the student's minimum) or a hop under :data:`MIN_HOP_SECONDS`. ``window`` None
    or 0: the whole file only (the hop is then unused)."""
    if not window:
        return
    window = check_seconds(window, names[0])
    if window < min_seconds - 1e-9:
        raise ValueError(
            f"{names[0]} {window:g} s is shorter than the {min_seconds:.2f} s this student needs to judge audio (it never "
            f"trained on shorter speech): give {names[0]} {min_seconds:g} or more, or 0 for the whole file only"
        )
    if hop is not None and check_seconds(hop, names[1]) < MIN_HOP_SECONDS:
        raise ValueError(
            f"{names[1]} {hop:g} s is under the finest hop of {MIN_HOP_SECONDS:g} s (one frame of the student's "
            f"front-end): give {names[1]} {MIN_HOP_SECONDS:g} or more"
        )


def check_window_count(where: str, seconds: float, window: float, hop: float, names: tuple[str, str] = ("window", "hop")) -> int:
    """The number of windows ``seconds`` of audio is cut into, or a ValueError naming ``where`` when
    it is over :data:`MAX_WINDOWS` (checked before any work)."""
    samples, size, step = (round(value * SAMPLE_RATE) for value in (seconds, window, hop))
    stepped = max(0, (samples - size) // step) + 1  # len(window_spans(samples, size, step)), without listing them
    count = stepped + int(samples > size and (stepped - 1) * step + size < samples)
    if count > MAX_WINDOWS:
        least = max(MIN_HOP_SECONDS, (seconds - window) / (MAX_WINDOWS - 2))
        raise ValueError(
            f"{where}: {window:g}-s windows every {hop:g} s over {seconds:.0f} s of audio make {count:,} windows, over the "
            f"limit of {MAX_WINDOWS:,} a file: give {names[1]} {math.ceil(least * 100) / 100:g} or more, or {names[0]} 0 for the whole file only"
        )
    return count


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


def window_spans(samples: int, window: int, hop: int) -> list[tuple[int, int]]:
    """(start, end) sample spans of ``window`` every ``hop``; the last one ends at ``samples``."""
    if samples <= window:
        return [(0, samples)]
    starts = list(range(0, samples - window + 1, hop))
    if starts[-1] + window < samples:
        starts.append(samples - window)
    return [(start, start + window) for start in starts]

