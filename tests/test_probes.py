"""The hostile-input probes of issue 25 as one table, every file made here at test time: noise, tones,
DC and silence at several rates, windows and hops out of bounds, a 10-minute file cut into too many
windows, random bytes as a model file, a model file naming an unknown network, a truncated video, a
wav header claiming 65,535 channels. Each gives a clear one-line error naming the file or the
setting (or a correct answer). Beside them: the speech detector against the silero-vad package's own
frame loop, and every real speech clip the repository ships is judged to be speech."""
from __future__ import annotations

import json
import struct
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from crossmodal.cli import main as cli_main
from crossmodal.io import vad
from crossmodal.io.audio import load_audio

ROOT = Path(__file__).resolve().parents[1]
DEMO_CLIP = ROOT / "crossmodal" / "assets" / "demo" / "emodb" / "wav" / "03a01Wa.flac"
STUDENT = ROOT / "crossmodal" / "assets" / "student_cpu.safetensors"
RATES = (8000, 16000, 22050, 44100)


def _noise(rate: int, seconds: float = 5.0) -> np.ndarray:
    return np.random.default_rng(0).uniform(-0.5, 0.5, int(rate * seconds)).astype(np.float32)


def _gauss(rate: int, seconds: float = 5.0) -> np.ndarray:
    return np.clip(np.random.default_rng(1).normal(0, 0.5, int(rate * seconds)), -1, 1).astype(np.float32)


def _sine(freq: float) -> Callable[[int], np.ndarray]:
    def make(rate: int, seconds: float = 5.0) -> np.ndarray:
        return (0.5 * np.sin(2 * np.pi * freq * np.arange(int(rate * seconds)) / rate)).astype(np.float32)

    return make


def _dc(rate: int, seconds: float = 5.0) -> np.ndarray:
    return np.full(int(rate * seconds), 0.5, np.float32)


def _silence(rate: int, seconds: float = 5.0) -> np.ndarray:
    return np.zeros(int(rate * seconds), np.float32)


# (name, signal, rates, what the error says besides the file's name)
SIGNALS = [
    ("uniform_noise", _noise, RATES, "no speech found in {path}: 0 % of frames voiced"),
    ("gaussian_noise", _gauss, RATES, "no speech found in {path}: 0 % of frames voiced"),
    ("sine_440", _sine(440), RATES, "no speech found in {path}: 0 % of frames voiced"),
    ("sine_1k", _sine(1000), (16000, 44100), "no speech found in {path}: 0 % of frames voiced"),
    ("dc_offset", _dc, RATES, "no speech-like energy"),  # measured before resampling: the resampler's edges do not count
    ("silence", _silence, RATES, "audio is silent"),
]
SIGNAL_CASES = [pytest.param(make, rate, expected, id=f"{name}-{rate}") for name, make, rates, expected in SIGNALS for rate in rates]


@pytest.mark.parametrize("make,rate,expected", SIGNAL_CASES)
def test_non_speech_is_refused_at_every_rate(make, rate, expected, tmp_path, capsys):
    path = tmp_path / f"probe_{rate}.wav"
    sf.write(path, make(rate), rate, subtype="FLOAT")
    assert cli_main(["predict", str(path), "--json", "--no-embedding"]) == 1
    out, err = capsys.readouterr()
    payload = json.loads(out)
    assert payload["files"] == [] and len(payload["errors"]) == 1
    message = payload["errors"][0]["error"]
    assert expected.format(path=path) in message and str(path) in message and "\n" not in message
    assert "1 of 1 files failed" in err
    if make is _dc:
        assert "DC offset of +0.5" in message


def test_non_speech_is_answered_with_a_flag_when_allowed(tmp_path, capsys):
    path = tmp_path / "noise.wav"
    sf.write(path, _noise(16000, 9.0), 16000)
    assert cli_main(["predict", str(path), "--json", "--no-embedding", "--allow-non-speech"]) == 0
    item = json.loads(capsys.readouterr().out)["files"][0]
    assert item["speech"] is False and item["voiced_fraction"] == 0.0
    assert sum(item["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)
    assert item["windows"] and all(w["speech"] is False and w["probabilities"] is not None for w in item["windows"])
    # the table says it too
    assert cli_main(["predict", str(path), "--allow-non-speech"]) == 0
    assert "no speech found: answered as asked" in capsys.readouterr().out


def test_speech_with_a_silent_stretch_flags_only_that_window(tmp_path, capsys):
    """Real speech, then 5 s of silence at -80 dB: the file is judged, its last windows are marked."""
    speech = load_audio(DEMO_CLIP)
    quiet = np.random.default_rng(0).normal(0, 1e-4, 5 * 16000).astype(np.float32)
    path = tmp_path / "speech_then_quiet.wav"
    sf.write(path, np.concatenate([speech, quiet]), 16000, subtype="FLOAT")
    assert cli_main(["predict", str(path), "--json", "--no-embedding", "--window", "2", "--hop", "1"]) == 0
    item = json.loads(capsys.readouterr().out)["files"][0]
    assert item["speech"] is True and 0.1 < item["voiced_fraction"] < 0.5
    windows = item["windows"]
    assert windows[0]["speech"] is True and windows[0]["probabilities"] is not None
    assert windows[-1]["speech"] is False and windows[-1]["voiced_fraction"] == 0.0
    assert windows[-1]["probabilities"] is None and windows[-1]["top"] is None  # not judged unless allowed


# ------------------------------------------------------------------ windows and hops


@pytest.mark.parametrize("args,expected", [
    (["--window", "0.01", "--hop", "0.5"], "--window 0.01 s is shorter than the 0.50 s this student needs"),
    (["--window", "0.3"], "--window 0.3 s is shorter than the 0.50 s"),
    (["--hop", "1e-9"], "--hop 1e-09 s is under the finest hop of 0.01 s"),
    (["--hop", "0.005"], "--hop 0.005 s is under the finest hop of 0.01 s"),
], ids=["window_10ms", "window_300ms", "hop_1e-9", "hop_5ms"])
def test_windows_and_hops_out_of_bounds_are_refused_before_any_file(args, expected, capsys):
    assert cli_main(["predict", str(DEMO_CLIP), *args]) == 2
    err = capsys.readouterr().err
    assert expected in err and err.count("\n") == 1 and "Traceback" not in err


def test_too_many_windows_are_refused_before_any_read(tmp_path, capsys, monkeypatch):
    """--hop 0.001 on a 10-minute file would be 600,000 windows: refused from the header alone."""
    import crossmodal.io.audio as audio

    path = tmp_path / "ten_minutes.wav"
    sf.write(path, np.zeros(600 * 16000, np.int16), 16000, subtype="PCM_16")

    def no_read(*args, **kwargs):
        raise AssertionError("audio was read although the window count is refused")

    monkeypatch.setattr(audio, "_read_soundfile", no_read)
    monkeypatch.setattr(audio, "_soundfile_blocks", no_read)
    assert cli_main(["predict", str(path), "--hop", "0.01", "--json"]) == 1
    error = json.loads(capsys.readouterr().out)["errors"][0]["error"]
    assert str(path) in error and "59,601 windows, over the limit of 10,000" in error and "--hop 0.06 or more" in error


# ------------------------------------------------------------------ files that are not what they say


def _random_safetensors(tmp_path: Path) -> Path:
    path = tmp_path / "random.safetensors"
    path.write_bytes(np.random.default_rng(0).integers(1, 256, 4000, dtype=np.uint8).tobytes())  # never a pickle's 0x80 first
    return path


def _unknown_network(tmp_path: Path) -> Path:
    """The shipped student with its header naming a network crossmodal does not have."""
    data = STUDENT.read_bytes()
    size = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8 : 8 + size])
    card = json.loads(header["__metadata__"]["crossmodal"])
    card["architecture"]["name"] = "no_such_net"
    header["__metadata__"]["crossmodal"] = json.dumps(card)
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    path = tmp_path / "unknown_network.safetensors"
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + data[8 + size :])
    return path


@pytest.mark.parametrize("make,expected", [
    (_random_safetensors, "is not a valid safetensors file"),
    (_unknown_network, "its header names the speech network 'no_such_net', which this version of crossmodal does not have"),
], ids=["random_bytes", "unknown_network"])
def test_bad_model_files_get_one_clear_line(make, expected, tmp_path, capsys):
    path = make(tmp_path)
    assert cli_main(["predict", str(DEMO_CLIP), "--ckpt", str(path)]) == 2
    err = capsys.readouterr().err
    assert expected in err and str(path) in err and "pickle" not in err and "Traceback" not in err


def _wav_65535_channels(tmp_path: Path) -> Path:
    path = tmp_path / "channels.wav"
    sf.write(path, load_audio(DEMO_CLIP), 16000, subtype="PCM_16")
    data = bytearray(path.read_bytes())
    struct.pack_into("<H", data, 22, 65535)
    path.write_bytes(bytes(data))
    return path


def _truncated_grid(tmp_path: Path) -> Path:
    """A GRID talking-face clip (MPEG-1 program stream) cut to a third: its container has no length
    field, so only ffmpeg's own report of the torn packet tells it is incomplete."""
    data = (ROOT / "tests" / "data" / "grid" / "bbaf2n.mpg").read_bytes()
    path = tmp_path / "bbaf2n_third.mpg"
    path.write_bytes(data[: len(data) // 3])
    return path


@pytest.mark.parametrize("make,expected", [
    (_wav_65535_channels, "header says 65535 channels (1-64 expected"),
    (_truncated_grid, "is damaged or truncated: ffmpeg reported 'Packet corrupt"),
], ids=["wav_65535_channels", "truncated_video"])
def test_broken_media_files_are_named(make, expected, tmp_path, capsys):
    path = make(tmp_path)
    assert cli_main(["predict", str(path), "--json"]) == 1
    error = json.loads(capsys.readouterr().out)["errors"][0]["error"]
    assert expected in error and str(path) in error and "avcodec" not in error


def test_truncated_video_fails_its_timeline(tmp_path, monkeypatch, capsys):
    pytest.importorskip("cv2", reason="face detection needs the faces extra (opencv-python-headless)")
    path = _truncated_grid(tmp_path)
    monkeypatch.chdir(tmp_path)
    assert cli_main(["timeline", str(path), "--no-plot"]) == 1
    err = capsys.readouterr().err
    assert f"{path} is damaged or truncated" in err and "1 of 1 videos failed" in err
    assert not list(tmp_path.glob("*.timeline.json"))


# ------------------------------------------------------------------ the detector itself


def test_detector_equals_the_packages_own_frame_loop():
    """Our batched frames give the package's probabilities (its audio_forward: one frame at a time)."""
    import warnings

    import torch

    threads = torch.get_num_threads()
    import silero_vad

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        reference = silero_vad.load_silero_vad()
    torch.set_num_threads(threads)
    waves = [load_audio(DEMO_CLIP), load_audio(ROOT / "tests" / "data" / "grid" / "swiz3n.mpg"), _noise(16000, 2.3)]
    for wave in waves:
        reference.reset_states()
        with vad.one_thread():  # its 32-ms steps on two threads crawl on a loaded machine (see crossmodal.io.vad)
            expected = reference.audio_forward(torch.from_numpy(wave)[None], 16000)[0].numpy()
        got = vad.frame_probabilities(wave, 16000)
        assert got.shape == expected.shape == (-(-len(wave) // vad.FRAME_SAMPLES),)
        np.testing.assert_allclose(got, expected, atol=1e-5)
        # streamed in blocks of any size: the same frames
        stream, parts, at, rng = vad.VoiceActivity(), [], 0, np.random.default_rng(0)
        while at < len(wave):
            size = int(rng.integers(1, 5000))
            parts.append(stream.push(wave[at : at + size]))
            at += size
        np.testing.assert_allclose(np.concatenate(parts + [stream.finish()]), got, atol=1e-6)


def test_window_fractions_count_the_frames_inside():
    check = vad.SpeechCheck()
    probabilities = np.array([0.9, 0.9, 0.1, 0.1, 0.9, 0.1, 0.1, 0.1])  # 8 frames of 512 samples
    assert check.fraction(probabilities) == pytest.approx(3 / 8)
    assert check.window_fractions(probabilities, [(0, 1024), (1024, 2048), (0, 4096), (2048, 3072), (2100, 2200)]) == [1.0, 0.0, 3 / 8, 0.5, 1.0]
    assert check.is_speech(0.1) and not check.is_speech(0.09)
    assert vad.no_speech_message("x.wav", 0.004) == "no speech found in x.wav: 0.4 % of frames voiced"


def test_every_shipped_speech_clip_is_speech():
    """No real speech clip in the repository (the 454 demo EmoDB clips, tests/data's EmoDB, GRID and
    VoxCeleb1 files) is refused by the speech check; the least-voiced is far above the minimum."""
    clips = sorted((ROOT / "crossmodal" / "assets" / "demo" / "emodb" / "wav").glob("*.flac"))
    clips += sorted(p for p in (ROOT / "tests" / "data").rglob("*") if p.suffix in {".flac", ".wav", ".mpg"})
    assert len(clips) == 454 + 15
    fractions = {clip.name: vad.voiced_fraction(load_audio(clip), 16000) for clip in clips}
    refused = {name: f for name, f in fractions.items() if f < vad.MIN_VOICED_FRACTION}
    assert not refused
    assert min(fractions.values()) > 0.35  # bbaf2n.mpg, a GRID clip with about a second of silence at each end


@pytest.mark.slow
@pytest.mark.parametrize("fixture,pattern,count", [
    ("emodb_full_root", "wav/*.wav", 535), ("grid_full_root", "*.mpg", 11), ("voxceleb1_full_root", "testfiles/*/*.wav", 3),
])
def test_no_clip_of_the_shared_corpora_is_refused(fixture, pattern, count, request):
    """Every EmoDB (22.05 kHz there), GRID and VoxCeleb1 clip in ../shared/data holds speech by the check
    (least voiced, measured: 43 %, 38 % and 86 % of frames)."""
    clips = sorted(request.getfixturevalue(fixture).glob(pattern))
    assert len(clips) == count
    fractions = {clip.name: vad.voiced_fraction(load_audio(clip), 16000) for clip in clips}
    assert not {name: f for name, f in fractions.items() if f < vad.MIN_VOICED_FRACTION}


@pytest.fixture(scope="module")
def voxceleb1_full_root() -> Path:
    import os

    root = Path(os.environ.get("CROSSMODAL_SHARED_DATA", ROOT.parent / "shared" / "data")) / "voxceleb1"
    if not root.exists():
        pytest.skip(f"needs the 3 VoxCeleb1 utterances at {root} (../shared/data beside the clone, or set CROSSMODAL_SHARED_DATA)")
    return root
