"""Audio I/O on real files (GRID video audio, VoxCeleb1 and EmoDB wavs) and on files the test makes."""
from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest
import soundfile as sf

from crossmodal.io.audio import AudioError, decode_flac, encode_flac, load_audio, probe_audio, resample, stream_audio

DEMO_CLIP = Path(__file__).resolve().parents[1] / "crossmodal" / "assets" / "demo" / "emodb" / "wav" / "03a01Fa.flac"


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


@pytest.mark.parametrize("rate", [16000, 22050, 44100, 8000])
def test_stream_equals_whole_read_in_bounded_blocks(tmp_path: Path, rate: int) -> None:
    """Real speech at several rates, stereo: the streamed blocks join into load_audio's signal, and no
    block holds more than block_seconds plus the resampler's context."""
    speech, source_rate = sf.read(str(DEMO_CLIP), dtype="float32")
    wave = resample(np.tile(speech, 3), source_rate, rate)
    path = tmp_path / f"speech_{rate}.wav"
    sf.write(path, np.stack([wave, 0.5 * wave], axis=1), rate, subtype="FLOAT")
    block_seconds = 0.25
    blocks = list(stream_audio(path, 16000, block_seconds=block_seconds))
    whole = load_audio(path)
    assert len(blocks) > 10
    assert max(len(b) for b in blocks) <= block_seconds * 16000 + 2 * 2000  # context: a few ms at most
    np.testing.assert_allclose(np.concatenate(blocks), whole, atol=1e-5)


def test_stream_through_pyav(tmp_path: Path) -> None:
    _write_m4a(tmp_path / "a.m4a", _tone(48000, 3.0), 48000)
    blocks = list(stream_audio(tmp_path / "a.m4a", 16000, block_seconds=0.5))
    assert max(len(b) for b in blocks) <= 0.5 * 16000 + 2000
    np.testing.assert_allclose(np.concatenate(blocks), load_audio(tmp_path / "a.m4a"), atol=1e-5)


def test_truncated_files_are_named(tmp_path: Path) -> None:
    speech, rate = sf.read(str(DEMO_CLIP), dtype="float32")
    sf.write(tmp_path / "full.wav", speech, rate, subtype="PCM_16")
    data = (tmp_path / "full.wav").read_bytes()
    (tmp_path / "cut.wav").write_bytes(data[: len(data) * 3 // 4])
    for read in (load_audio, lambda p: list(stream_audio(p)), probe_audio):
        with pytest.raises(AudioError, match=r"cut.wav is truncated: its header promises \d+ bytes") as info:
            read(tmp_path / "cut.wav")
        assert info.value.reason == "truncated_audio"
    sf.write(tmp_path / "full.flac", speech, rate)
    data = (tmp_path / "full.flac").read_bytes()
    (tmp_path / "cut.flac").write_bytes(data[: len(data) // 2])
    for read in (load_audio, lambda p: list(stream_audio(p))):
        with pytest.raises(AudioError, match="cut.flac.*truncated") as info:
            read(tmp_path / "cut.flac")
        assert info.value.reason == "truncated_audio"
    # a streamed wav whose writer never filled in the data size is not called truncated
    streamed = bytearray(data := (tmp_path / "full.wav").read_bytes())
    at = bytes(streamed).index(b"data") + 4
    streamed[at : at + 4] = b"\xff\xff\xff\xff"
    (tmp_path / "streamed.wav").write_bytes(bytes(streamed))
    assert len(load_audio(tmp_path / "streamed.wav")) == len(speech)


def test_absurd_headers_are_refused_before_reading(tmp_path: Path, monkeypatch) -> None:
    import struct

    import crossmodal.io.audio as audio

    speech, rate = sf.read(str(DEMO_CLIP), dtype="float32")
    sf.write(tmp_path / "one_hz.wav", np.resize(speech, 44000), rate, subtype="PCM_16")
    data = bytearray((tmp_path / "one_hz.wav").read_bytes())
    struct.pack_into("<II", data, 24, 1, 2)  # 88 KB declaring 1 Hz: 12 h, 2.8 GB once resampled to 16 kHz
    (tmp_path / "one_hz.wav").write_bytes(bytes(data))
    monkeypatch.setattr(audio, "_read_soundfile", lambda *a: pytest.fail("read although the header is refused"))
    monkeypatch.setattr(audio, "_soundfile_blocks", lambda *a: pytest.fail("read although the header is refused"))
    for read in (load_audio, lambda p: list(stream_audio(p))):
        with pytest.raises(AudioError, match="one_hz.wav: header says 1 Hz") as info:
            read(tmp_path / "one_hz.wav")
        assert info.value.reason == "bad_header"
    # durations are capped: the whole-file reader and the stream each have their limit
    with pytest.raises(AudioError, match=r"03a01Fa.flac: header says 2 s .* over the 1 s"):
        load_audio(DEMO_CLIP, max_seconds=1.0)
    with pytest.raises(AudioError, match=r"over the 1 s .* --window 0"):
        next(stream_audio(DEMO_CLIP, max_seconds=1.0))
