"""export: TorchScript and ONNX files (front-end included) give the PyTorch student's outputs on real clips."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from test_predict import LOGMEL, SPECTROGRAM, tiny_student_file

from crossmodal.cli import main as cli_main
from crossmodal.export import ExportError, export_student, exported_metadata, load_exported
from crossmodal.inference import load_student
from crossmodal.io.audio import load_audio

CLIPS = ("03a01Wa.wav", "03a02Ta.wav", "08b09Fd.wav", "16b10Wb.wav")


@pytest.fixture(scope="module")
def clips(emodb_root) -> list[np.ndarray]:
    return [load_audio(emodb_root / "wav" / name) for name in CLIPS]


def _check(path: Path, student_path: Path, clips: list[np.ndarray], atol: float) -> None:
    student = load_student(student_path)
    run = load_exported(path)
    batch = np.stack([clip[:16000] for clip in clips])  # a batch of equal-length crops
    for wave in [*(clip[None] for clip in clips), batch]:
        with torch.no_grad():
            logits, embedding = student(torch.from_numpy(wave))
        got_logits, got_embedding = run(wave)
        np.testing.assert_allclose(got_logits, logits.numpy(), atol=atol, rtol=1e-4)
        np.testing.assert_allclose(got_embedding, embedding.numpy(), atol=atol, rtol=1e-4)


@pytest.mark.parametrize("fmt", ["torchscript", "onnx"])
@pytest.mark.parametrize("frontend", ["logmel", "spectrogram"])
def test_export_matches_pytorch_on_real_clips(fmt, frontend, clips, tmp_path):
    student_path = tiny_student_file(tmp_path / "tiny.pt", LOGMEL if frontend == "logmel" else SPECTROGRAM)
    result = export_student(student_path, fmt, tmp_path / f"tiny{'.onnx' if fmt == 'onnx' else '.ts.pt'}", check_waves=clips[:1])
    assert result.path.exists() and result.max_abs_diff < 1e-3
    _check(result.path, student_path, clips, atol=1e-4)
    meta = exported_metadata(result.path)
    assert meta["crossmodal.sample_rate"] == "16000" and meta["crossmodal.net_name"] == "small_cnn"
    assert int(meta["crossmodal.min_samples"]) == result.min_samples
    assert not Path(meta["crossmodal.source"]).is_absolute()  # the student file, named without a machine path


def test_vggvox_exports_to_onnx(clips, tmp_path):
    student_path = tiny_student_file(tmp_path / "vgg.pt", SPECTROGRAM, net="vggvox", fc6_channels=64, embed_dim=32)
    result = export_student(student_path, "onnx", tmp_path / "vgg.onnx")
    _check(result.path, student_path, clips[:2], atol=1e-4)


def test_cli_export_and_bad_format(clips, tmp_path, capsys):
    student_path = tiny_student_file(tmp_path / "tiny.pt")
    out = tmp_path / "out" / "student.onnx"
    assert cli_main(["export", "--ckpt", str(student_path), "--format", "onnx", "--out", str(out)]) == 0
    assert "wrote onnx student" in capsys.readouterr().out
    _check(out, student_path, clips[:1], atol=1e-4)
    with pytest.raises(ExportError, match="unknown export format 'tflite'"):
        export_student(student_path, "tflite", tmp_path / "x")
    assert cli_main(["export", "--ckpt", str(tmp_path / "nope.pt"), "--format", "torchscript"]) == 2
    assert "not found" in capsys.readouterr().err
