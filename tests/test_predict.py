"""predict: the Python API and the `crossmodal predict` command on real audio and video files at
several sample rates, windowed prediction, bad files, and loading a Lightning checkpoint."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from crossmodal.cli import main as cli_main
from crossmodal.emotions import EMOTIONS
from crossmodal.inference import SilentAudioError, load_student, window_spans
from crossmodal.io.audio import load_audio, resample
from crossmodal.models.frontend import SpeechFrontend
from crossmodal.models.speech import create_student, save_student

# The CPU student's front-end (conf/student/small_cnn.yaml) and the paper's (512-bin magnitude).
LOGMEL = {"features": "logmel", "n_mels": 64, "f_max": 8000.0, "dither": 1e-5, "freq_mask": 8, "time_mask": 20}
SPECTROGRAM: dict = {}


def tiny_student_file(path: Path, frontend_cfg: dict | None = None, net: str = "small_cnn", seed: int = 0, **net_kwargs) -> Path:
    """A randomly initialised student written with save_student (a stand-in for a trained one)."""
    frontend = SpeechFrontend(**(LOGMEL if frontend_cfg is None else frontend_cfg))
    if net == "small_cnn":
        net_kwargs = {"channels": [8, 16], "embed_dim": 16, **net_kwargs}
    torch.manual_seed(seed)
    model = create_student(net, n_freq=frontend.n_freq, **net_kwargs)
    # Non-trivial batch-norm statistics, so that eval-mode outputs depend on the weights everywhere.
    for module in model.modules():
        if isinstance(module, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
    return save_student(path, net, {"n_freq": frontend.n_freq, **net_kwargs}, frontend.frontend_config(), model.state_dict())


@pytest.fixture(scope="module")
def student_path(tmp_path_factory) -> Path:
    return tiny_student_file(tmp_path_factory.mktemp("student") / "tiny.pt")


@pytest.fixture(scope="module")
def rated_files(emodb_root, tmp_path_factory) -> dict[str, Path]:
    """One EmoDB utterance as wav and flac at 8, 16, 22.05 and 44.1 kHz (and stereo at 44.1 kHz)."""
    out = tmp_path_factory.mktemp("rates")
    wave, rate = sf.read(str(emodb_root / "wav" / "03a01Wa.wav"), dtype="float32")
    files = {}
    for target in (8000, 16000, 22050, 44100):
        resampled = resample(wave, rate, target)
        for ext in ("wav", "flac"):
            files[f"{target}.{ext}"] = out / f"03a01Wa_{target}.{ext}"
            sf.write(files[f"{target}.{ext}"], resampled, target)
    stereo = resample(wave, rate, 44100)
    files["stereo"] = out / "stereo_44100.wav"
    sf.write(files["stereo"], np.stack([stereo, 0.5 * stereo], axis=1), 44100)
    return files


def test_predict_api_on_files_at_every_rate(student_path, rated_files, grid_root):
    model = load_student(student_path)
    reference = model.predict_file(rated_files["16000.wav"])
    for name, path in rated_files.items():
        result = model.predict_file(path)
        probabilities = result.whole.probabilities
        assert probabilities.shape == (len(EMOTIONS),) and probabilities.sum() == pytest.approx(1.0, abs=1e-5), name
        assert result.whole.embedding.shape == (16,)
        assert result.duration == pytest.approx(reference.duration, abs=0.01), name
    # Lossless formats at the student's own rate give the same answer; 16-bit FLAC differs by quantisation only.
    flac = model.predict_file(rated_files["16000.flac"])
    np.testing.assert_allclose(flac.whole.logits, reference.whole.logits, atol=1e-3)
    # A GRID talking-face video (MPEG-1, MP2 stereo at 44.1 kHz): the audio track is decoded.
    video = model.predict_file(grid_root / "bbaf2n.mpg", window=1.0, hop=0.5)
    assert video.duration == pytest.approx(3.0, abs=0.1)
    assert video.whole.probabilities.sum() == pytest.approx(1.0, abs=1e-5)
    assert len(video.windows) == 5 and video.windows[-1].end == pytest.approx(video.duration, abs=1e-3)


def test_predict_takes_arrays_in_any_layout(student_path, emodb_root):
    model = load_student(student_path)
    wave, rate = sf.read(str(emodb_root / "wav" / "03a01Wa.wav"), dtype="float32")
    mono = model.predict(wave, rate)
    assert mono.top in EMOTIONS and sum(mono.distribution().values()) == pytest.approx(1.0, abs=1e-5)
    twice = np.stack([wave, wave])
    for layout in (twice, twice.T, torch.from_numpy(twice)):
        np.testing.assert_allclose(model.predict(layout, rate).logits, mono.logits, atol=1e-5)
    # The same audio already at 16 kHz gives the same answer as the file path.
    np.testing.assert_allclose(model.predict(load_audio(emodb_root / "wav" / "03a01Wa.wav"), 16000).logits, mono.logits, atol=1e-4)
    with pytest.raises(ValueError, match="sample_rate"):
        model.predict(wave, 0)


def test_windows_cover_the_file():
    assert window_spans(10, 20, 5) == [(0, 10)]
    assert window_spans(100, 40, 20) == [(0, 40), (20, 60), (40, 80), (60, 100)]
    assert window_spans(110, 40, 30) == [(0, 40), (30, 70), (60, 100), (70, 110)]


def test_cli_json_reports_bad_files_and_carries_on(student_path, rated_files, tmp_path, capsys):
    silent = tmp_path / "silent.wav"
    sf.write(silent, np.zeros(16000, dtype=np.float32), 16000)
    broken = tmp_path / "broken.wav"
    broken.write_bytes(b"RIFF this is not a wave file")
    paths = [str(rated_files["22050.wav"]), str(silent), str(broken), str(rated_files["8000.flac"])]
    code = cli_main(["predict", *paths, "--ckpt", str(student_path), "--json"])
    out, err = capsys.readouterr()
    assert code == 1
    payload = json.loads(out)
    assert [Path(f["path"]).name for f in payload["files"]] == ["03a01Wa_22050.wav", "03a01Wa_8000.flac"]
    for item in payload["files"]:
        assert list(item["probabilities"]) == list(EMOTIONS)
        assert sum(item["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)
        assert len(item["embedding"]) == 16
    errors = {Path(e["path"]).name: e["error"] for e in payload["errors"]}
    assert "silent" in errors["silent.wav"] and str(silent) in errors["silent.wav"]
    assert str(broken) in errors["broken.wav"]
    assert "2 of 4 files failed" in err and "silent.wav" in err


def test_cli_table_with_windows(student_path, grid_root, capsys):
    assert cli_main(["predict", str(grid_root / "bbaf2n.mpg"), "--ckpt", str(student_path), "--window", "1.5", "--hop", "1"]) == 0
    out = capsys.readouterr().out
    lines = out.strip().splitlines()
    assert "bbaf2n.mpg" in lines[0] and "neutral" in lines[1] and lines[2].strip().startswith("whole file")
    assert sum(" s " in line for line in lines[3:]) == 3  # windows 0-1.5, 1-2.5, 1.5-3


def test_missing_default_student_says_what_to_do(monkeypatch, tmp_path):
    import crossmodal.models.loading as loading

    monkeypatch.delenv("CROSSMODAL_STUDENT", raising=False)
    monkeypatch.setattr(loading, "DEFAULT_STUDENT", tmp_path / "none.pt")
    with pytest.raises(FileNotFoundError, match="--ckpt"):
        load_student()
    with pytest.raises(FileNotFoundError, match="not found"):
        load_student(tmp_path / "typo.pt")


def test_silent_audio_is_refused(student_path, tmp_path):
    silent = tmp_path / "quiet.flac"
    sf.write(silent, np.full(8000, 1e-6, dtype=np.float32), 8000)
    with pytest.raises(SilentAudioError, match="quiet.flac.*silent"):
        load_student(student_path).predict_file(silent)


def test_lightning_checkpoint_loads_like_the_student_file(tmp_path, emodb_root):
    from crossmodal.lit.student import StudentSpeech

    module = StudentSpeech(student={"name": "small_cnn", "kwargs": {"channels": [8, 16], "embed_dim": 16}}, frontend=LOGMEL).eval()
    torch.save({"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams), "pytorch-lightning_version": "2.6"}, tmp_path / "last.ckpt")
    model = load_student(tmp_path / "last.ckpt")
    wave = torch.from_numpy(load_audio(emodb_root / "wav" / "03a01Wa.wav"))[None]
    with torch.no_grad():
        expected = module(wave)
        got = model(wave)
    torch.testing.assert_close(got[0], expected[0])
    assert model.info["net_name"] == "small_cnn"


def test_predict_task_writes_the_run_folder(student_path, rated_files, tmp_path):
    from omegaconf import OmegaConf

    from crossmodal.tasks.predict import run
    from crossmodal.tasks.run_folder import RunFolder

    cfg = OmegaConf.create({"ckpt_path": str(student_path), "strict": False,
                            "data": {"source": [str(rated_files["44100.wav"]), str(tmp_path / "missing.wav")]}})
    metrics = run(cfg, RunFolder(cfg, tmp_path))
    assert metrics == {"predict/files": 1, "predict/failed": 1}
    payload = json.loads((tmp_path / "predictions.json").read_text())
    assert payload["errors"][0]["path"].endswith("missing.wav")
    assert "whole file" in (tmp_path / "predictions.md").read_text()
    assert (tmp_path / "tables" / "predict_files.md").exists()


def _encode(source: Path, target: Path, codec: str) -> Path:
    """Compressed audio written with PyAV (ffmpeg inside the wheel)."""
    import av

    wave, rate = sf.read(str(source), dtype="float32")
    with av.open(str(target), "w") as out:
        stream = out.add_stream(codec, rate=rate)
        stream.layout = "mono"
        frame = av.AudioFrame.from_ndarray(wave[None], format="flt", layout="mono")
        frame.sample_rate = rate
        for packet in list(stream.encode(frame)) + list(stream.encode()):
            out.mux(packet)
    return target


def test_predict_compressed_audio(student_path, emodb_root, tmp_path, capsys):
    source = emodb_root / "wav" / "03a01Wa.wav"
    files = [_encode(source, tmp_path / "clip.mp3", "libmp3lame"), _encode(source, tmp_path / "clip.m4a", "aac")]
    assert cli_main(["predict", str(tmp_path), "--ckpt", str(student_path), "--json", "--no-embedding"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert sorted(Path(f["path"]).name for f in payload["files"]) == sorted(f.name for f in files)
    reference = load_student(student_path).predict_file(source).whole.probabilities
    for item in payload["files"]:
        # AAC adds encoder priming and pads to 1024-sample frames: up to ~0.2 s at 16 kHz
        assert "embedding" not in item and item["duration"] == pytest.approx(2.0, abs=0.2)
        np.testing.assert_allclose(list(item["probabilities"].values()), reference, atol=0.05)


# ------------------------------------------------------------------ what predict refuses (issue 12, section 5)

DEMO_WAVS = sorted((Path(__file__).resolve().parents[1] / "crossmodal" / "assets" / "demo" / "emodb" / "wav").glob("*.flac"))


@pytest.fixture(scope="module")
def memory_student():
    """A student built here (small_cnn on log-mel, the CPU student's shape), not read from a file."""
    from crossmodal.inference import Student

    frontend = SpeechFrontend(**LOGMEL)
    torch.manual_seed(0)
    return Student(frontend, create_student("small_cnn", n_freq=frontend.n_freq, channels=[8, 16], embed_dim=16))


@pytest.fixture
def cli_student(memory_student, monkeypatch):
    """`crossmodal predict` with the in-memory student (whatever --ckpt says)."""
    import crossmodal.inference as inference

    monkeypatch.setattr(inference, "load_student", lambda *args, **kwargs: memory_student)
    return memory_student


def _speech(seconds: float | None = None, index: int = 0) -> np.ndarray:
    wave, rate = sf.read(str(DEMO_WAVS[index]), dtype="float32")
    assert rate == 16000
    return wave if seconds is None else wave[: round(seconds * rate)]


def _absurd_header_wav(path: Path) -> Path:
    """An 88 KB wav (44 000 real samples) whose header is patched to say 1 Hz: 12 h of audio, which
    resampled to 16 kHz would ask for 2.8 GB."""
    import struct

    sf.write(path, np.resize(_speech(), 44000), 16000, subtype="PCM_16")
    data = bytearray(path.read_bytes())
    struct.pack_into("<II", data, 24, 1, 2)  # sample rate 1 Hz, byte rate 2 B/s
    path.write_bytes(bytes(data))
    return path


def test_student_minimum_comes_from_training_and_the_network(memory_student):
    from crossmodal.inference import MIN_SPEECH_SECONDS, Student

    # small_cnn with 2 blocks needs 4 frames = 400 + 3 * 160 samples: less than training's 0.5 s floor
    assert memory_student.network_min_samples == 880 and memory_student.min_seconds == MIN_SPEECH_SECONDS
    vggvox = Student(SpeechFrontend(), create_student("vggvox", n_freq=512, fc6_channels=8, embed_dim=8))
    assert vggvox.min_seconds == pytest.approx((400 + 64 * 160) / 16000)  # 65 frames: 0.665 s


def test_cli_refuses_short_dc_and_one_sample_files_and_predicts_the_rest(cli_student, tmp_path, capsys):
    files = {
        "short.wav": _speech(0.3),  # 0.3 s of real speech: under the student's 0.5 s
        "dc.wav": np.full(32000, 0.5, np.float32),  # 2 s of a constant offset
        "one.wav": np.array([0.7], np.float32),
        "quiet_dc.flac": np.full(16000, 0.25, np.float32) + np.float32(1e-6) * np.sin(np.arange(16000)),
    }
    for name, wave in files.items():
        sf.write(tmp_path / name, wave, 16000)
    good = DEMO_WAVS[0]
    code = cli_main(["predict", str(tmp_path / "short.wav"), str(good), str(tmp_path / "dc.wav"), str(tmp_path / "one.wav"),
                     str(tmp_path / "quiet_dc.flac"), "--json", "--no-embedding"])
    out, err = capsys.readouterr()
    assert code == 1
    payload = json.loads(out)
    assert [f["path"] for f in payload["files"]] == [str(good)]
    errors = {Path(e["path"]).name: e["error"] for e in payload["errors"]}
    assert "too short" in errors["short.wav"] and "0.300 s" in errors["short.wav"] and "0.50 s" in errors["short.wav"]
    assert "too short" in errors["one.wav"] and "1 samples" in errors["one.wav"]
    assert "no speech-like energy" in errors["dc.wav"] and "DC offset of +0.5" in errors["dc.wav"]
    assert "no speech-like energy" in errors["quiet_dc.flac"]
    assert "4 of 5 files failed" in err and str(tmp_path / "dc.wav") in err


def test_predict_api_refuses_short_and_constant_arrays(memory_student):
    from crossmodal.inference import SilentAudioError, TooShortAudioError

    with pytest.raises(TooShortAudioError, match="waveform: too short"):
        memory_student.predict(_speech(0.2), 16000)
    with pytest.raises(SilentAudioError, match="DC offset"):
        memory_student.predict(np.full(16000, -0.3, np.float32), 16000)
    # exactly the minimum is judged
    assert memory_student.predict(_speech(0.5), 16000).probabilities.sum() == pytest.approx(1.0, abs=1e-5)


def test_truncated_and_absurd_headers_are_named_before_any_read(cli_student, tmp_path, capsys, monkeypatch):
    import crossmodal.io.audio as audio

    full = tmp_path / "full.wav"
    sf.write(full, _speech(), 16000, subtype="PCM_16")
    truncated = tmp_path / "truncated.wav"
    truncated.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    flac = tmp_path / "truncated.flac"
    sf.write(tmp_path / "whole.flac", _speech(), 16000)
    flac.write_bytes((tmp_path / "whole.flac").read_bytes()[:6000])
    absurd = _absurd_header_wav(tmp_path / "absurd.wav")
    assert 88000 < absurd.stat().st_size < 89000

    def no_read(*args, **kwargs):
        raise AssertionError("audio was read although the header is refused")

    monkeypatch.setattr(audio, "_read_soundfile", no_read)
    monkeypatch.setattr(audio, "_soundfile_blocks", no_read)
    code = cli_main(["predict", str(truncated), str(absurd), "--json"])
    monkeypatch.undo()
    assert code == 1
    errors = {Path(e["path"]).name: e["error"] for e in json.loads(capsys.readouterr().out)["errors"]}
    assert "truncated" in errors["truncated.wav"] and "50 %" in errors["truncated.wav"]
    assert "1 Hz" in errors["absurd.wav"] and str(absurd) in errors["absurd.wav"]
    for window in ("4", "0"):  # a truncated flac, read at once or streamed
        assert cli_main(["predict", str(flac), "--window", window]) == 1
        assert "truncated" in capsys.readouterr().err


@pytest.mark.parametrize("flag,value", [("--window", "nan"), ("--window", "-1"), ("--window", "inf"), ("--window", "abc"),
                                        ("--hop", "0"), ("--hop", "nan"), ("--hop", "-2")])
def test_bad_window_or_hop_is_rejected(cli_student, flag, value, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli_main(["predict", str(DEMO_WAVS[0]), flag, value])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert flag in err and "seconds" in err


def test_window_zero_is_the_whole_file_only(cli_student, capsys):
    assert cli_main(["predict", str(DEMO_WAVS[0]), "--window", "0", "--json", "--no-embedding"]) == 0
    item = json.loads(capsys.readouterr().out)["files"][0]
    assert item["windows"] == []
    expected = cli_student.predict(_speech(), 16000).probabilities
    np.testing.assert_allclose(list(item["probabilities"].values()), expected, atol=1e-6)


def test_long_files_are_streamed_and_pooled(memory_student, tmp_path, monkeypatch):
    """A long file (made short here by lowering the thresholds) is read in blocks: its windows are
    the in-memory ones, its whole-file answer the length-weighted mean of its stretches' logits."""
    import crossmodal.inference as inference

    wave = np.concatenate([_speech(index=i) for i in range(4)] + [np.full(48000, 0.1, np.float32)])  # + 3 s of DC
    path = tmp_path / "long.wav"
    sf.write(path, wave, 16000, subtype="FLOAT")
    in_memory = memory_student.predict_file(path, window=1.5, hop=1.0)
    monkeypatch.setattr(inference.student, "STREAM_ABOVE_SECONDS", 1.0)
    monkeypatch.setattr(inference.student, "POOL_SECONDS", 2.0)
    streamed = memory_student.predict_file(path, window=1.5, hop=1.0)
    assert streamed.duration == in_memory.duration
    assert [(w.start, w.end) for w in streamed.windows] == [(w.start, w.end) for w in in_memory.windows]
    for a, b in zip(streamed.windows, in_memory.windows):
        np.testing.assert_allclose(a.prediction.logits, b.prediction.logits, atol=1e-5)
    # the pooled whole: 2-s stretches, the remainder folded into the last one, constant stretches left out
    spans = [(s, s + 32000) for s in range(0, len(wave) - 32000 + 1, 32000)]
    if len(wave) - spans[-1][1] < 16000:
        spans[-1] = (spans[-1][0], len(wave))
    else:
        spans.append((spans[-1][1], len(wave)))
    judged = [(s, e) for s, e in spans if np.std(wave[s:e]) >= inference.SILENCE_RMS]
    assert len(judged) < len(spans)
    logits = sum((e - s) * memory_student.predict(wave[s:e], 16000).logits for s, e in judged) / sum(e - s for s, e in judged)
    np.testing.assert_allclose(streamed.whole.logits, logits, atol=1e-5)
    assert streamed.whole.probabilities.sum() == pytest.approx(1.0, abs=1e-6) and streamed.whole.embedding.shape == (16,)
    # whole file only, streamed: the same pooled answer, no windows
    only = memory_student.predict_file(path, window=None)
    assert only.windows == [] and np.allclose(only.whole.logits, streamed.whole.logits, atol=1e-6)
    # a long file of nothing but a DC offset is refused as a whole
    sf.write(tmp_path / "dc_long.wav", np.full(5 * 16000, 0.2, np.float32), 16000)
    with pytest.raises(SilentAudioError, match="dc_long.wav.*no speech-like energy in any of its 3 stretches"):
        memory_student.predict_file(tmp_path / "dc_long.wav", window=None)


def test_window_cutter_matches_window_spans_on_any_blocks():
    from crossmodal.inference import WindowCutter

    rng = np.random.default_rng(0)
    for total in (5, 40, 100, 110, 137):
        for window, hop in ((40, 20), (40, 30), (40, 50), (10, 10)):
            signal = np.arange(total, dtype=np.float32)
            cutter, cut, at = WindowCutter(window, hop), [], 0
            while at < total:
                size = int(rng.integers(1, 30))
                cut += cutter.push(signal[at : at + size])
                at += size
                assert len(cutter.buffer) <= window + 30
            cut += cutter.finish()
            assert [(s, e) for s, e, _ in cut] == (window_spans(total, window, hop) if total > window else [])
            assert all(np.array_equal(w, signal[s:e]) for s, e, w in cut)
