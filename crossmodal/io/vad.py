"""Is there speech in it? Silero VAD's frame probabilities, and the rule crossmodal applies to them.

    from crossmodal.io.vad import voiced_fraction, SpeechCheck
    voiced_fraction(wave, sample_rate)          # share of 32-ms frames judged voiced, 0..1
    SpeechCheck().problem(wave, sample_rate, "clip.wav")   # None, or "no speech found in clip.wav: 0 % of frames voiced"

The detector is Silero VAD (the ``silero-vad`` package, MIT): a speech probability for every 512
samples (32 ms) of 16 kHz audio, seeing 64 samples of the frame before. Its TorchScript model ships
inside the installed package (nothing is downloaded, no user file is read).

The rule (:class:`SpeechCheck`): a frame is voiced at probability >= 0.5 (Silero's default); audio
holds speech when at least 10 % of its frames are voiced. Why Silero and not webrtcvad, these
thresholds and the detector's cost: experiments/perf/README.md ("Which detector").
"""
from __future__ import annotations

import threading
import warnings
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from crossmodal.io.audio import SAMPLE_RATE, resample

FRAME_SAMPLES = 512  # Silero's frame at 16 kHz: 32 ms
CONTEXT_SAMPLES = 64  # the end of the previous frame each frame also sees
FRAME_SECONDS = FRAME_SAMPLES / SAMPLE_RATE
VOICED_THRESHOLD = 0.5  # Silero's default speech threshold
MIN_VOICED_FRACTION = 0.1  # audio with fewer voiced frames holds no speech to judge
BLOCK_FRAMES = 1024  # frames per batched encoder pass (about 33 s of audio, 2.4 MB of input)
PACKAGE = "silero-vad"


class NoSpeechError(ValueError):
    """The audio holds no speech: fewer than :attr:`SpeechCheck.min_fraction` of its frames are voiced."""

    reason = "no_speech"

    def __init__(self, message: str, fraction: float) -> None:
        super().__init__(message)
        self.fraction = fraction


def no_speech_message(where: str, fraction: float) -> str:
    value = 100 * fraction
    percent = f"{value:.0f}" if value == 0 or value >= 1 else f"{value:.1f}"
    return f"no speech found in {where}: {percent} % of frames voiced"


@dataclass(frozen=True)
class SpeechCheck:
    """When audio counts as speech: ``min_fraction`` of its frames at or above ``threshold``."""

    threshold: float = VOICED_THRESHOLD
    min_fraction: float = MIN_VOICED_FRACTION

    def fraction(self, probabilities: np.ndarray) -> float:
        """Share of frames judged voiced (0.0 for no frame)."""
        probabilities = np.asarray(probabilities)
        return float(np.mean(probabilities >= self.threshold)) if probabilities.size else 0.0

    def is_speech(self, fraction: float) -> bool:
        return fraction >= self.min_fraction

    def window_fractions(self, probabilities: np.ndarray, spans: Iterable[tuple[int, int]]) -> list[float]:
        """The voiced fraction of each (start, end) span in samples at 16 kHz: the frames whose
        centre lies inside it (the frame nearest its centre when it holds no frame centre)."""
        voiced = np.asarray(probabilities) >= self.threshold
        out = []
        for start, end in spans:
            first = max(0, -(-(start - FRAME_SAMPLES // 2) // FRAME_SAMPLES))
            last = min(len(voiced), -(-(end - FRAME_SAMPLES // 2) // FRAME_SAMPLES))
            if last <= first:  # shorter than a frame: the frame nearest its centre
                first = min(max(0, ((start + end) // 2) // FRAME_SAMPLES), max(len(voiced) - 1, 0))
                last = first + 1
            out.append(float(voiced[first:last].mean()) if last > first and len(voiced) else 0.0)
        return out

    def problem(self, wave: np.ndarray, sample_rate: int, where: str) -> str | None:
        """None when ``wave`` holds speech, else the one-line reason naming ``where``."""
        fraction = self.fraction(frame_probabilities(wave, sample_rate))
        return None if self.is_speech(fraction) else no_speech_message(where, fraction)


DEFAULT_CHECK = SpeechCheck()


def voiced_fraction(wave: np.ndarray, sample_rate: int, check: SpeechCheck = DEFAULT_CHECK) -> float:
    """Share of the 32-ms frames of ``wave`` (any rate, mono) that the detector judges voiced."""
    return check.fraction(frame_probabilities(wave, sample_rate))


def frame_probabilities(wave: np.ndarray, sample_rate: int) -> np.ndarray:
    """Silero's speech probability for each 512-sample frame of ``wave`` brought to 16 kHz (the last
    frame zero-padded, as the package does): ``ceil(samples / 512)`` values in [0, 1]."""
    wave = np.asarray(wave, dtype=np.float32)
    if wave.ndim != 1:
        raise ValueError(f"expected a mono waveform [samples], got shape {wave.shape}")
    if int(sample_rate) != SAMPLE_RATE:
        wave = resample(wave, int(sample_rate), SAMPLE_RATE)
    stream = VoiceActivity()
    return np.concatenate([stream.push(wave), stream.finish()])


class VoiceActivity:
    """Frame probabilities of a 16 kHz stream fed in blocks of any size; holds under one frame of
    samples plus the LSTM state between blocks. ``push`` returns the frames completed so far,
    ``finish`` the last, zero-padded one (if any samples are left)."""

    def __init__(self) -> None:
        self.detector = detector()
        self.pending = np.zeros(0, np.float32)
        self.context = np.zeros(CONTEXT_SAMPLES, np.float32)
        self.state: tuple[torch.Tensor, torch.Tensor] | None = None

    def push(self, block: np.ndarray) -> np.ndarray:
        samples = np.concatenate([self.pending, np.asarray(block, dtype=np.float32)])
        whole = len(samples) // FRAME_SAMPLES * FRAME_SAMPLES
        self.pending = samples[whole:].copy()
        return self._frames(samples[:whole])

    def finish(self) -> np.ndarray:
        if not len(self.pending):
            return np.zeros(0, np.float32)
        last = np.pad(self.pending, (0, FRAME_SAMPLES - len(self.pending)))  # zero-padded, as the package does
        self.pending = np.zeros(0, np.float32)
        return self._frames(last)

    def _frames(self, samples: np.ndarray) -> np.ndarray:
        out = []
        for first in range(0, len(samples), BLOCK_FRAMES * FRAME_SAMPLES):
            frames = samples[first : first + BLOCK_FRAMES * FRAME_SAMPLES].reshape(-1, FRAME_SAMPLES)
            contexts = np.empty((len(frames), CONTEXT_SAMPLES), np.float32)
            contexts[0] = self.context
            contexts[1:] = frames[:-1, -CONTEXT_SAMPLES:]
            self.context = frames[-1, -CONTEXT_SAMPLES:].copy()
            probabilities, self.state = self.detector(np.concatenate([contexts, frames], axis=1), self.state)
            out.append(probabilities)
        return np.concatenate(out) if out else np.zeros(0, np.float32)


class SileroVAD(nn.Module):
    """The package's 16 kHz model (its probabilities within 1e-5, tests/test_probes.py) with the frame-wise part
    run on all frames of a block at once and the recurrent part as one ``nn.LSTM``: ``(frames [n, 64 + 512],
    state)`` -> ``(probabilities [n], state)``, ``state`` being the LSTM's (h, c) after the last frame."""

    def __init__(self, scripted: torch.jit.ScriptModule) -> None:
        super().__init__()
        core = scripted._model  # the 16 kHz model (scripted._model_8k is the 8 kHz one)
        if int(core.context_size_samples) != CONTEXT_SAMPLES:
            raise RuntimeError(f"{PACKAGE}: unexpected model (context {core.context_size_samples} samples, {CONTEXT_SAMPLES} expected)")
        self.core = core
        cell = core.decoder.rnn
        self.lstm = nn.LSTM(cell.weight_ih.shape[1], cell.weight_hh.shape[1], batch_first=True)
        with torch.no_grad():
            for ours, theirs in (("weight_ih_l0", cell.weight_ih), ("weight_hh_l0", cell.weight_hh),
                                 ("bias_ih_l0", cell.bias_ih), ("bias_hh_l0", cell.bias_hh)):
                getattr(self.lstm, ours).copy_(theirs)
        self.head = core.decoder.decoder  # ReLU, 1x1 convolution, sigmoid (dropout: off in eval)
        self.eval()
        self.lock = threading.Lock()  # the TorchScript executor setting below is process-wide

    @torch.inference_mode()
    def forward(self, frames: np.ndarray, state: tuple[torch.Tensor, torch.Tensor] | None = None):
        batch = torch.from_numpy(np.ascontiguousarray(frames, dtype=np.float32))
        # Without the optimising executor: it would re-specialise the graph for every new frame count.
        with self.lock, torch.jit.optimized_execution(False), one_thread():
            features = self.core.encoder(self.core.run_extractors(batch))  # [n, 128, 1]
            hidden, (h, c) = self.lstm(features[:, :, 0][None], state)
            probabilities = self.head(hidden[0][:, :, None])[:, 0, 0]
        return probabilities.float().numpy(), (h, c)


@contextmanager
def one_thread() -> Iterator[None]:
    """Torch's intra-op threads set to 1 for the block (and restored): the detector's steps are too small
    to split: on two threads, waiting on each other at every step, it ran 27-42 times slower on a loaded machine
    (experiments/perf/README.md, "Threads")."""
    threads = torch.get_num_threads()
    if threads == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


_DETECTOR: SileroVAD | None = None
_LOAD_LOCK = threading.Lock()


def detector() -> SileroVAD:
    """The loaded detector (once per process), from the package's own loader."""
    global _DETECTOR
    with _LOAD_LOCK:
        if _DETECTOR is None:
            threads = torch.get_num_threads()
            try:
                import silero_vad  # its import calls torch.set_num_threads(1): undone below

                with warnings.catch_warnings():  # torch 2.11 deprecates torch.jit.load, which the package's loader uses
                    warnings.filterwarnings("ignore", message=".*torch.jit.load.*is deprecated", category=DeprecationWarning)
                    scripted = silero_vad.load_silero_vad()  # the TorchScript model inside the wheel, read offline
            except ImportError as exn:
                raise ImportError(
                    f"the speech detector needs the {PACKAGE} package (a dependency of crossmodal): "
                    f"pip install -c constraints.txt {PACKAGE}"
                ) from exn
            finally:
                if torch.get_num_threads() != threads:
                    torch.set_num_threads(threads)
            _DETECTOR = SileroVAD(scripted)
        return _DETECTOR


def package_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(PACKAGE)
    except PackageNotFoundError:
        return "not installed"
