"""Audio I/O: any file with sound in it -> float32 mono at the rate asked for; FLAC bytes for shards.

soundfile (libsndfile) reads wav/flac/ogg and friends; PyAV (ffmpeg inside the wheel) reads the
compressed formats libsndfile does not (mp3, m4a/aac, ...) and the audio track of video files.
Channels are averaged to mono and the signal is resampled with torchaudio's band-limited
resampler. Every failure names the file and says what is wrong with it.
"""
from __future__ import annotations

import io
import itertools
import math
import struct
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

# Extensions libsndfile reads directly; anything else goes through PyAV.
SOUNDFILE_EXTENSIONS = {".wav", ".flac", ".ogg", ".oga", ".aiff", ".aif", ".au", ".snd", ".w64", ".caf"}

# Header sanity: below 4 kHz there is no speech band left to judge (the telephone band needs 8 kHz);
# more channels than any microphone array writes, or longer than the caps, is a broken or hostile header.
SAMPLE_RATE = 16000  # every model in crossmodal hears 16 kHz mono
MIN_SAMPLE_RATE = 4000
MAX_SAMPLE_RATE = 768_000
MAX_CHANNELS = 64
MAX_LOAD_SECONDS = 2 * 3600.0  # load_audio holds the whole file: 2 h at 16 kHz is 460 MB of float32
MAX_STREAM_SECONDS = 24 * 3600.0  # stream_audio holds one block at a time
BLOCK_SECONDS = 10.0  # stream_audio's native block length
# torchaudio.functional.resample's defaults (the stream resampler needs its kernel reach)
_LOWPASS_WIDTH, _ROLLOFF = 6, 0.99


class AudioError(RuntimeError):
    """An audio file could not be used. ``reason`` is a short tag for skip counts:
    ``missing``, ``unreadable_audio``, ``no_audio_stream``, ``empty_audio``, ``truncated_audio``
    or ``bad_header``."""

    def __init__(self, message: str, reason: str = "unreadable_audio") -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class AudioInfo:
    """What a file's header says, checked: ``frames`` is exact for soundfile formats, estimated
    (or None) for PyAV ones."""

    path: Path
    sample_rate: int
    channels: int
    frames: int | None
    reader: str  # "soundfile" | "pyav"

    @property
    def duration(self) -> float | None:
        return None if self.frames is None else self.frames / self.sample_rate


def probe_audio(path: str | Path, max_seconds: float = MAX_LOAD_SECONDS) -> AudioInfo:
    """Read and check the header of ``path`` without decoding any audio. :class:`AudioError` naming the
    file when it is missing or unreadable, when its sample rate, channel count or duration is implausible
    (``bad_header``), or when it is a wav whose header promises more data than the file holds (``truncated_audio``)."""
    path = Path(path)
    if not path.exists():
        raise AudioError(f"audio file not found: {path}", "missing")
    info = None
    _check_riff_format(path)
    if path.suffix.lower() in SOUNDFILE_EXTENSIONS:
        try:
            header = sf.info(str(path))
        except sf.SoundFileError:  # e.g. a .wav holding a codec libsndfile lacks: let ffmpeg try
            header = None
        if header is not None:
            info = AudioInfo(path, int(header.samplerate), int(header.channels), int(header.frames), "soundfile")
            _check_riff_length(path)
    if info is None:
        info = _probe_pyav(path)
    _check_header(info, max_seconds)
    return info


def load_audio(path: str | Path, sample_rate: int = SAMPLE_RATE, max_seconds: float = MAX_LOAD_SECONDS) -> np.ndarray:
    """Read ``path`` as float32 mono at ``sample_rate`` (values in [-1, 1]). Raises :class:`AudioError`
    naming the file when it is missing, unreadable, truncated, has an implausible header (:func:`probe_audio`;
    longer than ``max_seconds`` included: stream long files), has no audio stream or holds no samples."""
    wave, rate = read_audio(path, max_seconds)
    return resample(wave, rate, sample_rate)


def read_audio(path: str | Path, max_seconds: float = MAX_LOAD_SECONDS) -> tuple[np.ndarray, int]:
    """``(float32 mono signal, sample rate)`` of ``path`` at the file's own rate: :func:`load_audio`
    before resampling (checks that must not see the resampler's edge transients, such as the
    silence test, run on this). Raises :class:`AudioError` as :func:`load_audio` does."""
    info = probe_audio(path, max_seconds)
    path = info.path
    if info.reader == "soundfile":
        try:
            wave, rate = _read_soundfile(path)
        except sf.SoundFileError:  # e.g. a flac that loses sync part-way: let ffmpeg try
            wave, rate = _read_pyav(path)
        _check_complete(info, len(wave))
    else:
        wave, rate = _read_pyav(path)
    if wave.size == 0:
        raise AudioError(f"audio file is empty (no samples): {path}", "empty_audio")
    return wave, rate


def stream_audio(
    path: str | Path, sample_rate: int = SAMPLE_RATE, block_seconds: float = BLOCK_SECONDS, max_seconds: float = MAX_STREAM_SECONDS
) -> Iterator[np.ndarray]:
    """``path`` as consecutive float32 mono blocks at ``sample_rate`` of about ``block_seconds`` (plus the
    resampler's context), never holding the whole file; concatenated, they equal :func:`load_audio`'s signal
    up to float rounding. A file that ends before its header says is reported truncated at its end."""
    info = probe_audio(path, max_seconds)
    if info.reader == "soundfile":
        native = _soundfile_blocks(info, block_seconds)
    else:
        native = (chunk for chunk, _rate in _pyav_decode(info.path))
    rate = info.sample_rate
    yielded = False
    for block in resample_stream(native, rate, sample_rate, max(1, round(block_seconds * rate))):
        if block.size:
            yielded = True
            yield block
    if not yielded:
        raise AudioError(f"audio file is empty (no samples): {info.path}", "empty_audio")


def resample_stream(chunks: Iterable[np.ndarray], from_rate: int, to_rate: int, block: int) -> Iterator[np.ndarray]:
    """Resample a stream of mono chunks block by block, as :func:`resample` would the whole signal.

    Input is re-cut into blocks of ``block`` samples (rounded to the rate ratio's period); each is
    resampled with ``context`` real samples on both sides (zeros at the file's start, as torchaudio
    pads), so every output sample sees the same input as in a whole-signal resample (equal rates:
    re-cut only). Output blocks hold at most ``(block + 2 * context) * to_rate / from_rate`` samples.
    """
    from_rate, to_rate = int(from_rate), int(to_rate)
    gcd = math.gcd(from_rate, to_rate)
    o, n = from_rate // gcd, to_rate // gcd
    width = math.ceil(_LOWPASS_WIDTH * o / (min(o, n) * _ROLLOFF))
    context = o * (math.ceil(width / o) + 2)  # the kernel reaches width before and width + o after
    block = o * max(math.ceil(block / o), context // o)  # whole periods, and at least the context
    left = np.zeros(context, dtype=np.float32)
    pending: list[np.ndarray] = []
    held = 0
    for chunk in chunks:
        pending.append(np.asarray(chunk, dtype=np.float32))
        held += len(chunk)
        if held < block + context:
            continue
        buffer = np.concatenate(pending)
        start = 0
        while len(buffer) - start >= block + context:
            piece = np.concatenate([left, buffer[start : start + block + context]])
            yield resample(piece, from_rate, to_rate)[context * n // o : (context + block) * n // o]
            left = buffer[start + block - context : start + block]
            start += block
        pending, held = [buffer[start:]], len(buffer) - start
    if held:
        rest = np.concatenate(pending)
        yield resample(np.concatenate([left, rest]), from_rate, to_rate)[context * n // o :]


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
    data = np.asarray(data, dtype=np.float32)
    if data.ndim == 2:
        data = data.mean(axis=1)
    return np.ascontiguousarray(data, dtype=np.float32)


def _read_soundfile(path: Path) -> tuple[np.ndarray, int]:
    data, rate = sf.read(str(path), dtype="float32", always_2d=True)
    return _to_mono(data), int(rate)


def _soundfile_blocks(info: AudioInfo, block_seconds: float) -> Iterator[np.ndarray]:
    """Native-rate mono blocks through libsndfile; a file that ends early is reported as truncated."""
    blocksize = max(1, round(block_seconds * info.sample_rate))
    frames = 0
    try:
        with sf.SoundFile(str(info.path)) as handle:
            for data in handle.blocks(blocksize=blocksize, dtype="float32", always_2d=True):
                frames += len(data)
                yield _to_mono(data)
    except sf.LibsndfileError as exn:
        raise AudioError(
            f"cannot decode {info.path} after {frames / info.sample_rate:.2f} s of the {info.duration:.2f} s its header "
            f"promises (truncated or corrupt?): {exn}", "truncated_audio"
        ) from exn
    _check_complete(info, frames)


def _check_complete(info: AudioInfo, frames: int) -> None:
    if info.frames is not None and frames < info.frames:
        raise AudioError(
            f"{info.path} is truncated: its header promises {info.frames} frames ({info.duration:.2f} s) but only "
            f"{frames} ({frames / info.sample_rate:.2f} s) could be read (an incomplete download or copy?)", "truncated_audio"
        )


def _check_header(info: AudioInfo, max_seconds: float) -> None:
    """Refuse a header no real recording has, before anything is allocated from it."""
    where = f"{info.path}: header says"
    if not MIN_SAMPLE_RATE <= info.sample_rate <= MAX_SAMPLE_RATE:
        raise AudioError(
            f"{where} {info.sample_rate} Hz; a usable recording is sampled at {MIN_SAMPLE_RATE}-{MAX_SAMPLE_RATE} Hz "
            "(a damaged or mislabelled header?)", "bad_header"
        )
    if not 1 <= info.channels <= MAX_CHANNELS:
        raise AudioError(f"{where} {info.channels} channels (1-{MAX_CHANNELS} expected; a damaged header?)", "bad_header")
    if info.duration is not None and info.duration > max_seconds:
        raise AudioError(
            f"{where} {info.duration:.0f} s ({info.frames} frames at {info.sample_rate} Hz), over the {max_seconds:.0f} s "
            "this reader accepts; cut the file, or predict it streamed (crossmodal predict --window 0)", "bad_header"
        )


def _riff_chunks(path: Path) -> Iterator[tuple[bytes, int, int]]:
    """(name, length, offset of the chunk's data) of each chunk of a RIFF/WAVE file; nothing for other files."""
    with path.open("rb") as handle:
        head = handle.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            return
        offset = 12
        for _ in range(256):  # a wav has a handful of chunks; stop on garbage
            handle.seek(offset)
            chunk = handle.read(8)
            if len(chunk) < 8:
                return
            name, length = chunk[:4], struct.unpack("<I", chunk[4:])[0]
            yield name, length, offset + 8
            offset += 8 + length + (length & 1)


def _check_riff_format(path: Path) -> None:
    """A wav's ``fmt `` chunk, checked as :func:`_check_header` checks any header, before libsndfile or
    ffmpeg try it (they answer a 65,535-channel header with 'Too many channels' and 'avcodec_open2 ...
    returned 22')."""
    for name, length, at in _riff_chunks(path):
        if name != b"fmt ":
            continue
        if length < 16:
            raise AudioError(f"{path}: its wav header's format chunk is {length} bytes, under the 16 every wav has (a damaged header?)", "bad_header")
        with path.open("rb") as handle:
            handle.seek(at)
            channels, rate = struct.unpack("<HI", handle.read(8)[2:8])
        _check_header(AudioInfo(path, int(rate), int(channels), None, "soundfile"), math.inf)
        return


def _check_riff_length(path: Path) -> None:
    """A RIFF/WAVE file whose data chunk claims more bytes than follow it is truncated (libsndfile
    quietly shortens such files, so its frame count cannot tell)."""
    size = path.stat().st_size
    for name, length, at in _riff_chunks(path):
        if name == b"data":
            if length in (0, 0xFFFFFFFF):  # a streamed wav whose writer never filled in the size
                return
            held = size - at
            if length > held:
                raise AudioError(
                    f"{path} is truncated: its header promises {length} bytes of audio but the file holds {max(held, 0)} "
                    f"({100 * max(held, 0) / length:.0f} %; an incomplete download or copy?)", "truncated_audio"
                )
            return


@contextmanager
def _open_audio_stream(path: Path) -> Iterator[tuple[Any, Any, int]]:
    """(container, first audio stream, its sample rate) of a PyAV-readable file, or an AudioError naming it."""
    import av

    try:
        container = av.open(str(path))
    except av.FFmpegError as exn:  # PyAV's errors for a file ffmpeg cannot open (OSError / ValueError subclasses too)
        raise AudioError(f"cannot read audio from {path}: {exn}") from exn
    with container:
        if not container.streams.audio:
            raise AudioError(f"no audio stream in {path} (is it a silent video?)", "no_audio_stream")
        stream = container.streams.audio[0]
        rate = stream.codec_context.sample_rate or stream.rate
        if not rate:
            raise AudioError(f"audio stream of {path} has no sample rate")
        yield container, stream, int(rate)


def _probe_pyav(path: Path) -> AudioInfo:
    with _open_audio_stream(path) as (container, stream, rate):
        channels = stream.codec_context.channels or 1
        seconds = None
        if stream.duration and stream.time_base:
            seconds = float(stream.duration * stream.time_base)
        elif container.duration:
            seconds = container.duration / 1e6  # av.time_base
    frames = None if seconds is None else round(seconds * rate)
    return AudioInfo(path, int(rate), int(channels), frames, "pyav")


def _read_pyav(path: Path) -> tuple[np.ndarray, int]:
    chunks = list(_pyav_decode(path))
    if not chunks:
        raise AudioError(f"audio stream of {path} holds no samples", "empty_audio")
    return np.concatenate([chunk for chunk, _rate in chunks]).astype(np.float32, copy=False), int(chunks[-1][1])


def _pyav_decode(path: Path) -> Iterator[tuple[np.ndarray, int]]:
    """(mono float32 chunk at the native rate, rate) for each decoded frame of the first audio stream."""
    import av

    with _open_audio_stream(path) as (container, stream, rate), decoder_damage() as damage:
        # Convert inside ffmpeg to planar float at the native rate and layout; channels are averaged
        # here (ffmpeg's own downmix adds channels at -3 dB, which can overflow [-1, 1]).
        converter = None
        seconds = 0.0
        try:
            for frame in itertools.chain(container.decode(stream), [None]):  # None: flush the converter
                if converter is None and frame is not None:
                    converter = av.AudioResampler(format="fltp", layout=frame.layout.name, rate=rate)
                for out in converter.resample(frame) if converter is not None else ():
                    seconds += out.samples / rate
                    yield out.to_ndarray().mean(axis=0).astype(np.float32, copy=False), int(rate)
        except av.FFmpegError as exn:
            if not seconds:
                raise AudioError(f"cannot decode the audio of {path}: {exn}") from exn
            raise AudioError(
                f"{path} is damaged or truncated: decoding stopped after {seconds:.2f} s ({exn}; an incomplete download or copy?)",
                "truncated_audio",
            ) from exn
        if damage():
            raise AudioError(
                f"{path} is damaged or truncated: ffmpeg reported '{damage()[0]}' while decoding its audio "
                f"({seconds:.2f} s decoded; an incomplete download or copy?)", "truncated_audio",
            )


# What ffmpeg's demuxers and decoders log about a file cut short or damaged (not about a benign quirk,
# such as a duration estimated from the bit rate): the only trace an MPEG program stream cut to a third
# leaves, since its container has no length field to compare with.
DAMAGE_WORDS = ("corrupt", "truncat", "damaged", "invalid data", "incomplete", "partial file", "error while decoding")


@contextmanager
def decoder_damage() -> Iterator[Callable[[], list[str]]]:
    """Within the block, a function giving ffmpeg's log lines of this thread so far (warnings and
    errors) that say a file is damaged or truncated (:data:`DAMAGE_WORDS`). PyAV keeps ffmpeg's log
    switched off by default; it is switched on to WARNING for the block and restored after."""
    import av.logging

    previous, skip = av.logging.get_level(), av.logging.get_skip_repeated()
    av.logging.set_level(av.logging.WARNING)
    av.logging.set_skip_repeated(False)  # else a message equal to the last one logged, by any earlier file, is held back
    try:
        with av.logging.Capture() as logs:

            def damage() -> list[str]:
                lines = (text.strip().splitlines()[0] for level, _name, text in logs
                         if level <= av.logging.WARNING and text.strip())
                return [line for line in lines if any(word in line.lower() for word in DAMAGE_WORDS)]

            yield damage
    finally:
        av.logging.set_level(previous)
        av.logging.set_skip_repeated(skip)


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
    except sf.SoundFileError as exn:
        raise AudioError(f"cannot decode FLAC bytes ({len(data)} bytes): {exn}") from exn
    return _to_mono(wave), int(rate)
