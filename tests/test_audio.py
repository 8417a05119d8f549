"""Audio I/O on real files (GRID video audio, VoxCeleb1 and EmoDB wavs) and on files the test makes."""
from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest
import soundfile as sf

from crossmodal.data.audio import AudioError, decode_flac, encode_flac, load_audio


def _tone(rate: int, seconds: float, freq: float = 440.0) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def _write_m4a(path: Path, wave: np.ndarray, rate: int) -> None:
    with av.open(str(path), "w", format="mp4") as out:
        stream = out.add_stream("aac", rate=rate, layout="stereo")
        stereo = np.stack([wave, wave]).astype(np.float32)
        frame = av.AudioFrame.from_ndarray(stereo, format="fltp", layout="stereo")
        frame.sample_rate = rate
        for packet in stream.encode(frame):
            out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)


def test_wav_any_rate_and_channels_to_16k_mono(tmp_path: Path) -> None:
    tone = _tone(44100, 1.0)
    sf.write(tmp_path / "stereo.wav", np.stack([tone, tone], axis=1), 44100)
    wave = load_audio(tmp_path / "stereo.wav")
    assert wave.dtype == np.float32 and wave.ndim == 1
    assert abs(len(wave) - 16000) <= 1
    # The tone survives resampling: its spectrum peaks at 440 Hz.
    spectrum = np.abs(np.fft.rfft(wave))
    assert abs(np.argmax(spectrum) * 16000 / len(wave) - 440) < 3


def test_m4a_through_pyav(tmp_path: Path) -> None:
    _write_m4a(tmp_path / "a.m4a", _tone(48000, 1.0), 48000)
    wave = load_audio(tmp_path / "a.m4a", sample_rate=8000)
    assert abs(len(wave) - 8000) < 2048  # aac adds priming samples
    assert 0.3 < np.abs(wave).max() <= 1.0


def test_real_files(grid_root: Path, voxceleb1_root: Path, emodb_root: Path) -> None:
    grid = load_audio(grid_root / "bbaf2n.mpg")  # MP2 stereo 44.1 kHz inside an MPEG-1 video
    assert 2.9 < len(grid) / 16000 < 3.1 and np.abs(grid).max() <= 1.01
    vox = load_audio(next((voxceleb1_root / "testfiles" / "ident").glob("*.wav")))
    assert len(vox) > 16000
    emo = load_audio(emodb_root / "wav" / "03a01Fa.wav")  # 22.05 kHz -> 16 kHz
    assert abs(len(emo) - round(sf.info(str(emodb_root / "wav" / "03a01Fa.wav")).duration * 16000)) <= 1


def test_flac_round_trip() -> None:
    wave = _tone(16000, 0.5)
    data = encode_flac(wave, 16000)
    back, rate = decode_flac(data)
    assert rate == 16000 and back.shape == wave.shape
    assert np.abs(back - wave).max() < 1e-4


def test_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(AudioError, match="not found"):
        load_audio(tmp_path / "missing.wav")
    (tmp_path / "junk.mp3").write_bytes(b"this is not audio at all" * 10)
    with pytest.raises(AudioError, match="junk.mp3"):
        load_audio(tmp_path / "junk.mp3")
    sf.write(tmp_path / "empty.wav", np.zeros(0, dtype=np.float32), 16000)
    with pytest.raises(AudioError, match="empty"):
        load_audio(tmp_path / "empty.wav")
    # A video without sound.
    with av.open(str(tmp_path / "silent.mp4"), "w") as out:
        stream = out.add_stream("mpeg4", rate=25)
        stream.width, stream.height, stream.pix_fmt = 64, 64, "yuv420p"
        for _ in range(5):
            frame = av.VideoFrame.from_ndarray(np.zeros((64, 64, 3), np.uint8), format="rgb24")
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    with pytest.raises(AudioError, match="no audio stream.*silent.mp4"):
        load_audio(tmp_path / "silent.mp4")
