"""Speech students: shapes at several lengths, variable-length batches, the student model file."""
from __future__ import annotations

import pytest
import torch

from crossmodal.models.frontend import SpeechFrontend
from crossmodal.models.loading import load_student_modules
from crossmodal.models.speech import create_student, save_student
from crossmodal.registry import SPEECH_MODELS

STUDENTS = {"vggvox": (512, 1024), "resnet34_thin": (257, 256), "small_cnn": (64, 128)}


def test_registry_has_the_three_students():
    assert {"vggvox", "resnet34_thin", "small_cnn"} <= set(SPEECH_MODELS.names())


@pytest.mark.parametrize("name", sorted(STUDENTS))
def test_shapes_at_several_lengths(name):
    torch.manual_seed(0)
    n_freq, dim = STUDENTS[name]
    # narrower than the defaults to keep the test fast; the architecture (depth, strides, pooling) is the same
    kwargs = {"vggvox": {"fc6_channels": 256, "embed_dim": 64}, "resnet34_thin": {"base_channels": 8}}.get(name, {})
    dim = kwargs.get("embed_dim", dim)
    net = create_student(name, n_freq=n_freq, **kwargs).eval()
    with torch.no_grad():
        for frames in (20, 65, 150, 403):  # 0.2 s (shorter than vggvox's receptive field) to 4 s
            logits, embedding = net(torch.randn(2, 1, n_freq, frames), torch.tensor([frames, max(1, frames // 2)]))
            assert logits.shape == (2, 8) and embedding.shape == (2, dim)
            assert torch.isfinite(logits).all()
    net.train()
    logits, _ = net(torch.randn(3, 1, n_freq, 100))
    logits.sum().backward()
    assert all(p.grad is not None for p in net.parameters() if p.requires_grad)


def test_vggvox_is_the_paper_network():
    net = create_student("vggvox")
    assert net.fc6[0].kernel_size == (9, 1) and net.fc6[0].out_channels == 4096
    assert net.fc7[0].out_features == 1024 and net.fc8.out_features == 8
    assert net.features[0][0].out_channels == 96 and net.features[0][0].kernel_size == (7, 7)


def test_padding_does_not_change_a_clip_score():
    """A clip scores (almost) the same alone and padded in a batch: pooling skips the padding."""
    torch.manual_seed(0)
    frontend = SpeechFrontend(features="logmel").eval()
    net = create_student("small_cnn", n_freq=64).eval()
    wave = torch.randn(24000) * 0.1
    batch = torch.zeros(2, 64000)
    batch[0, :24000] = wave
    batch[1] = torch.randn(64000) * 0.1
    with torch.no_grad():
        together, _ = net(*frontend(batch, torch.tensor([24000, 64000])))
        alone, _ = net(*frontend(wave.unsqueeze(0)))
        unmasked, _ = net(frontend(batch)[0])
    assert (together[0] - alone[0]).abs().max() < 0.1 * alone[0].abs().max()
    assert (unmasked[0] - alone[0]).abs().max() > (together[0] - alone[0]).abs().max()


def test_student_file_round_trip(tmp_path):
    torch.manual_seed(0)
    frontend = SpeechFrontend(features="logmel", n_mels=64)
    net = create_student("small_cnn", n_freq=64).eval()
    path = save_student(tmp_path / "student.safetensors", "small_cnn", {"n_freq": 64}, frontend.frontend_config(), net.state_dict(),
                        extra={"ua": 0.5})
    loaded_frontend, loaded_net, info = load_student_modules(path)
    assert info["net_name"] == "small_cnn" and info["ua"] == 0.5 and info["emotions"][1] == "happiness"
    assert info["header"]["format"] == "crossmodal-model" and info["header"]["kind"] == "student"
    assert not loaded_net.training and not loaded_frontend.training
    wave = torch.randn(1, 30000) * 0.1
    with torch.no_grad():
        torch.testing.assert_close(loaded_net(*loaded_frontend(wave))[0], net(*frontend.eval()(wave))[0])


def test_student_file_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="no student file"):
        load_student_modules(tmp_path / "missing.safetensors")
    torch.save({"something": 1}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="other.pt is not a crossmodal model file"):
        load_student_modules(tmp_path / "other.pt")
