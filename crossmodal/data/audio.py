"""Audio I/O: any file with sound in it -> float32 mono at the rate asked for; FLAC bytes for shards.

soundfile (libsndfile) reads wav/flac/ogg and friends; PyAV (ffmpeg inside the wheel) reads the
compressed formats libsndfile does not (mp3, m4a/aac, ...) and the audio track of video files.
Channels are averaged to mono and the signal is resampled with torchaudio's band-limited
resampler. Every failure names the file and says what is wrong with it.
"""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import soundfile as sf

# Extensions libsndfile reads directly; anything else goes through PyAV.
SOUNDFILE_EXTENSIONS = {".wav", ".flac", ".ogg", ".oga", ".aiff", ".aif", ".au", ".snd", ".w64", ".caf"}


class AudioError(RuntimeError):
    """An audio file could not be used. ``reason`` is a short tag for skip counts:
    ``missing``, ``unreadable_audio``, ``no_audio_stream`` or ``empty_audio``."""

    def __init__(self, message: str, reason: str = "unreadable_audio") -> None:
        super().__init__(message)
        self.reason = reason


def load_audio(path: str | Path, sample_rate: int = 16000) -> np.ndarray:
    """Read ``path`` as float32 mono at ``sample_rate`` (values in [-1, 1]).

    Raises :class:`AudioError` naming the file when it is missing, unreadable, has no audio
    stream or holds no samples.
    """
    path = Path(path)
    if not path.exists():
        raise AudioError(f"audio file not found: {path}", "missing")
    if path.suffix.lower() in SOUNDFILE_EXTENSIONS:
        try:
            wave, rate = _read_soundfile(path)
        except AudioError:
            raise
        except Exception:  # noqa: BLE001 - e.g. a .wav holding a codec libsndfile lacks: let ffmpeg try
            wave, rate = _read_pyav(path)
    else:
        wave, rate = _read_pyav(path)
    if wave.size == 0:
        raise AudioError(f"audio file is empty (no samples): {path}", "empty_audio")
    return resample(wave, rate, sample_rate)


def resample(wave: np.ndarray, from_rate: int, to_rate: int) -> np.ndarray:
    """Resample a mono float32 signal (no-op when the rates match)."""
    wave = np.ascontiguousarray(wave, dtype=np.float32)
    if from_rate == to_rate:
        return wave
    import torch
    import torchaudio.functional as AF

    out = AF.resample(torch.from_numpy(wave), int(from_rate), int(to_rate))
    return out.numpy().astype(np.float32, copy=False)


def _to_mono(data: np.ndarray) -> np.ndarray:
    """[frames] or [frames, channels] -> [frames] float32."""
    data = np.asarray(data, dtype=np.float32)
    if data.ndim == 2:
        data = data.mean(axis=1)
    return np.ascontiguousarray(data, dtype=np.float32)


def _read_soundfile(path: Path) -> tuple[np.ndarray, int]:
    try:
        data, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except sf.LibsndfileError as exn:
        raise RuntimeError(str(exn)) from exn
    return _to_mono(data), int(rate)


def _read_pyav(path: Path) -> tuple[np.ndarray, int]:
    import av

    try:
        container = av.open(str(path))
    except Exception as exn:  # noqa: BLE001 - PyAV raises many error types for bad files
        raise AudioError(f"cannot read audio from {path}: {exn}") from exn
    with container:
        if not container.streams.audio:
            raise AudioError(f"no audio stream in {path} (is it a silent video?)", "no_audio_stream")
        stream = container.streams.audio[0]
        rate = stream.codec_context.sample_rate or stream.rate
        if not rate:
            raise AudioError(f"audio stream of {path} has no sample rate")
        # Convert inside ffmpeg to planar float at the native rate and layout; channels are averaged
        # here (ffmpeg's own downmix adds channels at -3 dB, which can overflow [-1, 1]).
        converter = None
        chunks: list[np.ndarray] = []
        try:
            for frame in container.decode(stream):
                if converter is None:
                    converter = av.AudioResampler(format="fltp", layout=frame.layout.name, rate=rate)
                for out in converter.resample(frame):
                    chunks.append(out.to_ndarray().mean(axis=0))
            if converter is not None:
                for out in converter.resample(None):
                    chunks.append(out.to_ndarray().mean(axis=0))
        except Exception as exn:  # noqa: BLE001
            if not chunks:
                raise AudioError(f"cannot decode the audio of {path}: {exn}") from exn
            # A truncated file: keep what decoded (the caller decides whether it is long enough).
    if not chunks:
        raise AudioError(f"audio stream of {path} holds no samples", "empty_audio")
    return np.concatenate(chunks).astype(np.float32, copy=False), int(rate)


def encode_flac(wave: np.ndarray, sample_rate: int) -> bytes:
    """Encode a mono float signal as 16-bit FLAC bytes (values are clipped to [-1, 1])."""
    wave = np.asarray(wave, dtype=np.float32)
    if wave.ndim != 1:
        raise ValueError(f"encode_flac wants a mono 1-D signal, got shape {wave.shape}")
    if wave.size == 0:
        raise ValueError("encode_flac got an empty signal")
    buffer = io.BytesIO()
    sf.write(buffer, np.clip(wave, -1.0, 1.0), int(sample_rate), format="FLAC", subtype="PCM_16")
    return buffer.getvalue()


def decode_flac(data: bytes) -> tuple[np.ndarray, int]:
    """FLAC (or any libsndfile format) bytes -> (float32 mono signal, sample rate)."""
    try:
        wave, rate = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
    except Exception as exn:  # noqa: BLE001
        raise AudioError(f"cannot decode FLAC bytes ({len(data)} bytes): {exn}") from exn
    return _to_mono(wave), int(rate)
