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
from crossmodal.data.audio import load_audio, resample
from crossmodal.emotions import EMOTIONS
from crossmodal.inference import SilentAudioError, load_student, window_spans
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
    model = create_student(net, frontend_n_freq=frontend.n_freq, **net_kwargs)
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
    import crossmodal.inference as inference

    monkeypatch.delenv("CROSSMODAL_STUDENT", raising=False)
    monkeypatch.setattr(inference, "DEFAULT_STUDENT", tmp_path / "none.pt")
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
    from crossmodal.utils.run_context import RunContext

    cfg = OmegaConf.create({"ckpt_path": str(student_path), "strict": False,
                            "data": {"source": [str(rated_files["44100.wav"]), str(tmp_path / "missing.wav")]}})
    metrics = run(cfg, RunContext(cfg, tmp_path))
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
        assert "embedding" not in item and item["duration"] == pytest.approx(2.0, abs=0.1)
        np.testing.assert_allclose(list(item["probabilities"].values()), reference, atol=0.05)
