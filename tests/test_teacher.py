"""Face backbones, the MatConvNet port loader, TeacherFER training and the teacher inference API."""
from __future__ import annotations

import json
import os
import pickle
import re
import subprocess
import sys
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch

from crossmodal.data.ferplus import FerPlusDataModule
from crossmodal.io.ferplus import load_ferplus_image, read_ferplus
from crossmodal.lit.teacher import PAPER_OPTIMIZER, TeacherFER
from crossmodal.models import teacher_int8
from crossmodal.models.face import (
    MATCONVNET_PREPROCESS,
    PreprocessSpec,
    create_face_backbone,
    load_matconvnet_ferplus,
    matconvnet_backbone,
)
from crossmodal.models.loading import load_teacher
from crossmodal.models.teacher import DEFAULT_TEACHER, FaceTeacher, save_teacher
from crossmodal.pipeline.ferplus import prepare_ferplus

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = Path(__file__).parent / "data" / "ferplus_sample"
CPU_PREPROCESS = {"channels": 1, "resize": 48, "input_size": 44, "mean": [128.0], "std": [64.0]}
README = ROOT / "experiments" / "ferplus_teacher" / "README.md"


@pytest.fixture(scope="module")
def sample_shards(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("teacher_shards") / "cntk"
    prepare_ferplus(SAMPLE, out, samples_per_shard=25)
    return out


def sample_faces(split: str = "test") -> tuple[torch.Tensor, torch.Tensor]:
    items = read_ferplus(SAMPLE, splits=(split,))
    images = torch.from_numpy(np.stack([load_ferplus_image(i) for i in items]))
    return images, torch.tensor([i.majority for i in items])


# ----------------------------------------------------------------------------------------- backbones


@pytest.mark.parametrize("name,kwargs,size", [
    ("vgg_small", {"input_size": 44}, 44),
    ("resnet18_small", {}, 48),
    ("vgg13_ferplus", {"input_size": 64}, 64),
    ("resnet18", {}, 64),  # any timm model by name, random init (nothing downloaded)
])
def test_backbones_give_8_logits(name, kwargs, size):
    net = create_face_backbone(name, in_chans=1, drop_rate=0.3, **kwargs).eval()
    assert net(torch.randn(2, 1, size, size)).shape == (2, 8)


def test_unknown_backbone_and_missing_weights(tmp_path):
    with pytest.raises(KeyError, match="unknown face backbone 'resnet5O'"):
        create_face_backbone("resnet5O")
    with pytest.raises(FileNotFoundError, match="model.pretrained"):
        create_face_backbone("resnet18_small", pretrained=str(tmp_path / "none.pth"))


def test_pretrained_file_skips_new_head(tmp_path):
    source = create_face_backbone("resnet18_small", num_classes=1000)
    torch.save(source.state_dict(), tmp_path / "w.pth")
    net = create_face_backbone("resnet18_small", pretrained=str(tmp_path / "w.pth"))
    assert torch.equal(net.stem[0].weight, source.stem[0].weight)
    assert net.head[-1].out_features == 8


def test_preprocess_any_input():
    spec = PreprocessSpec.from_config({"channels": 3, "resize": 64, "input_size": 56, "mean": [100.0, 110.0, 120.0], "std": [1.0]})
    grey = torch.full((2, 48, 48), 120, dtype=torch.uint8)
    out = spec(grey)
    assert out.shape == (2, 3, 56, 56)
    assert torch.allclose(out[:, 0], torch.full_like(out[:, 0], 20.0)) and torch.allclose(out[:, 2], torch.zeros_like(out[:, 2]))
    rgb = torch.zeros(1, 100, 90, 3, dtype=torch.uint8)
    rgb[..., 1] = 200  # pure green -> luma 117.4
    assert torch.allclose(spec(rgb)[0, 0], torch.full((56, 56), 0.587 * 200 - 100), atol=1e-3)
    with pytest.raises(ValueError, match="unknown preprocess key"):
        PreprocessSpec.from_config({"size": 48})


# ----------------------------------------------------------------------------------------- MatConvNet ports


def _matconvnet_names(timm_state: dict[str, torch.Tensor], arch: str) -> dict[str, torch.Tensor]:
    """Rename a timm state dict to the MatConvNet port's layer names (written out independently of the loader)."""
    stage_of = {"layer1": 2, "layer2": 3, "layer3": 4, "layer4": 5}
    part_of = {"1": "1x1_reduce", "2": "3x3", "3": "1x1_increase"}
    out = {}
    for key, value in timm_state.items():
        if key.endswith("num_batches_tracked"):
            continue
        module, param = key.rsplit(".", 1)
        if module in ("conv1", "layer0.conv1"):
            name = "conv1_7x7_s2"
        elif module in ("bn1", "layer0.bn1"):
            name = "conv1_7x7_s2_bn"
        elif module in ("fc", "last_linear"):
            name, value = "classifier", value.reshape(*value.shape, 1, 1) if param == "weight" else value
        else:
            m = re.fullmatch(r"(layer\d)\.(\d+)\.(.+)", module)
            prefix = f"conv{stage_of[m[1]]}_{int(m[2]) + 1}"
            rest = m[3]
            if rest.startswith("downsample"):
                name = f"{prefix}_1x1_proj" + ("_bn" if rest.endswith("1") else "")
            elif rest.startswith("se_module"):
                name = f"{prefix}_1x1_{'down' if rest.endswith('fc1') else 'up'}"
            else:
                name = f"{prefix}_{part_of[rest[-1]]}" + ("_bn" if rest.startswith("bn") else "")
        out[f"{name}.{param}"] = value
    return out


@pytest.mark.parametrize("arch", ["resnet50", pytest.param("senet50", marks=pytest.mark.slow)])
def test_matconvnet_loader_matches_direct_weights(arch):
    torch.manual_seed(0)
    reference = matconvnet_backbone(arch).eval()
    with torch.no_grad():  # non-trivial BN statistics, so a swapped BN would show
        for module in reference.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.1, 0.1)
                module.running_var.uniform_(0.5, 1.5)
    state = _matconvnet_names(reference.state_dict(), arch)
    assert "conv2_1_1x1_reduce_bn.running_var" in state and "classifier.weight" in state
    assert state["classifier.weight"].shape == (8, 2048, 1, 1)
    loaded, spec = load_matconvnet_ferplus(state)
    assert spec == MATCONVNET_PREPROCESS and spec.input_size == 224 and spec.std == [1.0]
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(loaded(x), reference(x))
    with pytest.raises(ValueError, match="no place in timm"):
        load_matconvnet_ferplus({**state, "conv9_9_3x3.weight": torch.zeros(1)}, arch)


@pytest.mark.slow
def test_matconvnet_file_through_load_teacher(tmp_path):
    reference = matconvnet_backbone("resnet50").eval()
    torch.save(_matconvnet_names(reference.state_dict(), "resnet50"), tmp_path / "resnet50_ferplus_dag.pth")
    teacher = load_teacher(tmp_path / "resnet50_ferplus_dag.pth")
    assert teacher.input_size == 224
    faces = torch.randint(0, 255, (2, 48, 48), dtype=torch.uint8)
    x = teacher.preprocess(faces)
    assert x.shape == (2, 3, 224, 224)
    assert torch.allclose(x[:, 0] - x[:, 2], torch.full_like(x[:, 0], 91.4953 - 131.0912), atol=1e-3)  # paper means
    with torch.no_grad():
        assert torch.equal(teacher(x), reference(x))


# ----------------------------------------------------------------------------------------- training


def test_teacher_cpu_overfits_a_few_batches(sample_shards, tmp_path):
    L.seed_everything(0)
    dm = FerPlusDataModule(shard_dir=str(sample_shards), batch_size=16, num_workers=0, shuffle_buffer=0,
                           preprocess=CPU_PREPROCESS, augment={"enabled": False}, batches_per_epoch=3)
    model = TeacherFER(backbone="vgg_small", backbone_kwargs={"widths": [16, 32, 64, 64], "depths": [1, 1, 1, 1], "input_size": 44},
                       preprocess=CPU_PREPROCESS, drop_rate=0.0, optimizer={"_target_": "torch.optim.AdamW", "_partial_": True, "lr": 3e-3, "weight_decay": 0.0})
    dm.setup()
    batch = next(iter(dm.train_dataloader()))
    x = dm.transform(batch["image"], train=False)
    model.train()
    optimizer = model.configure_optimizers()
    losses = []
    for _ in range(25):
        loss = model.loss(model(x), batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]
    with torch.no_grad():  # batch statistics (train mode, no dropout): the batch is memorised
        assert (model(x).argmax(-1) == batch["label"]).float().mean() > 0.9


def test_teacher_fit_and_test_with_lightning(sample_shards, tmp_path):
    """Two short epochs through Lightning: metrics on val and test, confusion PNGs, checkpoint -> load_teacher."""
    dm = FerPlusDataModule(shard_dir=str(sample_shards), batch_size=16, eval_batch_size=16, num_workers=0,
                           shuffle_buffer=16, preprocess=CPU_PREPROCESS, batches_per_epoch=2)
    model = TeacherFER(backbone="vgg_small", backbone_kwargs={"widths": [8, 16, 16, 16], "depths": [1, 1, 1, 1], "input_size": 44},
                       preprocess=CPU_PREPROCESS, optimizer={**PAPER_OPTIMIZER, "lr": 0.05}, tta_flip=True,
                       scheduler={"_target_": "crossmodal.utils.optim.cosine", "_partial_": True, "warmup_epochs": 1})
    trainer = L.Trainer(accelerator="cpu", max_epochs=2, default_root_dir=str(tmp_path), logger=False,
                        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0)
    trainer.fit(model, datamodule=dm)
    assert {"val/acc", "val/ua", "val/recall/happiness"} <= set(trainer.callback_metrics)
    result = trainer.test(model, datamodule=dm, verbose=False)[0]
    assert 0.0 <= result["test/acc"] <= 1.0
    assert (tmp_path / "plots" / "val_confusion.png").exists() and (tmp_path / "plots" / "test_confusion.png").exists()
    ckpt = tmp_path / "teacher.ckpt"
    trainer.save_checkpoint(ckpt)
    saved = torch.load(ckpt, map_location="cpu", weights_only=True)
    assert len(saved["rng_states"]) == 1 and "torch" in saved["rng_states"][0]  # a resumed run draws on from here
    teacher = load_teacher(ckpt)
    assert teacher.tta_flip  # the checkpoint was evaluated with flip averaging; its teacher keeps it
    teacher.tta_flip = False
    images, _ = sample_faces()
    model.eval()
    with torch.no_grad():
        expected = model(dm.transform(images, train=False))
        assert torch.allclose(teacher(teacher.preprocess(images)), expected, atol=1e-5)


# ----------------------------------------------------------------------------------------- inference API


def test_slim_file_round_trip(tmp_path):
    net = create_face_backbone("vgg_small", in_chans=1, input_size=44).eval()
    teacher = FaceTeacher(net, PreprocessSpec.from_config(CPU_PREPROCESS), name="vgg_small", kwargs={"in_chans": 1, "input_size": 44})
    path = save_teacher(teacher, tmp_path / "t.safetensors", meta={"note": "test", "test/acc": 0.5}, provenance={"data": "sample"})
    loaded = load_teacher(path)
    assert not loaded.training and loaded.input_size == 44 and loaded.meta == {"note": "test", "test/acc": 0.5}
    assert loaded.header["provenance"]["data"] == "sample" and loaded.header["provenance"]["metrics"] == {"test/acc": 0.5}
    assert loaded.backbone.features[0][0].weight.dtype == torch.float32  # fp16 in the file, fp32 to compute
    images, _ = sample_faces()
    with torch.no_grad():
        assert torch.allclose(loaded(loaded.preprocess(images)), teacher(teacher.preprocess(images)), atol=2e-2)  # fp16 weights
    (tmp_path / "bad.pt").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="bad.pt"):
        load_teacher(tmp_path / "bad.pt")
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        load_teacher(tmp_path / "missing.pt")


def test_shipped_teacher_on_real_faces():
    """The default teacher: a few MB, any face size and colour, and right on most of the shipped real sample."""
    assert DEFAULT_TEACHER.stat().st_size < 8e6
    teacher = load_teacher()
    assert not teacher.training and teacher.input_size == 44
    images, labels = sample_faces("test")
    with torch.no_grad():
        logits = teacher(teacher.preprocess(images))
        big_rgb = torch.nn.functional.interpolate(images[:, None].float(), size=112, mode="bilinear").round().clamp(0, 255)
        logits_rgb = teacher(teacher.preprocess(big_rgb[:, 0, :, :, None].expand(-1, -1, -1, 3).to(torch.uint8)))
    assert logits.shape == (len(labels), 8)
    accuracy = (logits.argmax(-1) == labels).float().mean().item()
    assert accuracy >= 0.6, f"shipped teacher right on only {accuracy:.0%} of the sample's test faces"
    assert (logits_rgb.argmax(-1) == logits.argmax(-1)).float().mean() >= 0.8  # same faces, upsampled RGB


def _demo_faces(limit: int = 192) -> torch.Tensor:
    paths = sorted((ROOT / "crossmodal" / "assets" / "demo" / "ferplus" / "FER2013Test").glob("*.png"))[:limit]
    from PIL import Image

    return torch.from_numpy(np.stack([np.asarray(Image.open(p).convert("L")) for p in paths]))


def test_inference_form_matches_reference_forward():
    """Extraction, teacher_eval and the timeline run the teacher in eval mode without gradients, through its
    inference form (batch norm folded, channels_last): the same logits as the plain network, same argmax."""
    teacher = load_teacher()
    x = teacher.preprocess(_demo_faces())
    with torch.enable_grad():  # gradients on: the plain backbone (the reference)
        reference = teacher(x).detach()
    with torch.inference_mode():
        fast = teacher(x)
    assert teacher.inference_backbone() is teacher.inference_backbone()  # built once
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in teacher.inference_backbone().modules())
    assert (fast - reference).abs().max().item() <= 1e-4
    assert torch.equal(fast.argmax(-1), reference.argmax(-1))
    assert sorted(teacher.state_dict()) == sorted(load_teacher().state_dict())  # the form is not part of the weights


def test_inference_form_follows_weight_changes():
    """Training then validating: the inference form is rebuilt when a weight or BN statistic changes."""
    torch.manual_seed(0)
    net = create_face_backbone("vgg_small", in_chans=1, widths=[8, 8], depths=[1, 1], hidden=16, input_size=16)
    teacher = FaceTeacher(net, PreprocessSpec(resize=16, input_size=16), tta_flip=True)
    x = torch.randn(4, 1, 16, 16)
    teacher.train()
    teacher(x).sum().backward()  # train mode: the backbone, BN statistics move
    teacher.eval()
    with torch.no_grad():
        first = teacher(x)
        with torch.enable_grad():
            assert torch.allclose(first, teacher(x).detach(), atol=1e-5)
        net.head[-1].bias.add_(1.0)
        assert torch.allclose(teacher(x), first + 1.0, atol=1e-5)


# ----------------------------------------------------------------------------------------- int8 (teacher_precision)


@pytest.fixture
def int8_cache(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv(teacher_int8.CACHE_ENV, str(tmp_path / "cache"))
    return tmp_path / "cache"


def _no_build(monkeypatch) -> None:
    def refuse(*args, **kwargs):
        raise AssertionError("the shipped teacher's int8 form was built instead of the shipped file being used")

    monkeypatch.setattr(teacher_int8, "build_int8", refuse)


def test_int8_teacher_agrees_with_fp32_on_the_demo_faces(int8_cache, monkeypatch):
    """precision=auto on a CPU: the shipped int8 file (fingerprint checked, nothing built), the same argmax as fp32
    on >= 99 % of the demo faces; gradients, training mode and pickling keep their meaning."""
    _no_build(monkeypatch)
    fp32, int8 = load_teacher(), load_teacher(precision="auto")
    assert (fp32.precision, int8.precision) == ("fp32", "int8")
    assert int8.__dict__["_int8"].path == teacher_int8.SHIPPED_INT8
    x = fp32.preprocess(_demo_faces(limit=None))
    with torch.inference_mode():
        reference, fast = fp32(x), int8(x)
    assert (fast.argmax(-1) == reference.argmax(-1)).float().mean() >= 0.99 and (fast - reference).abs().max() < 1.0
    clone = pickle.loads(pickle.dumps(int8))
    with torch.inference_mode():
        assert torch.equal(clone(x[:32]), fast[:32]) and clone.precision == "int8"  # the file again, checked again
    with torch.no_grad():  # new weights in eval mode (as load_state_dict gives): the int8 form no longer describes them
        next(clone.backbone.parameters()).mul_(0.5)
    with torch.inference_mode():
        clone(x[:4])
    assert clone.precision == "fp32"
    with torch.enable_grad():  # gradients: fp32, the network itself
        assert torch.allclose(int8(x[:32]).detach(), reference[:32], atol=1e-4)
    int8.train()  # training changes the weights: the int8 form is dropped
    assert int8.precision == "fp32"


def test_int8_file_of_other_inputs_is_refused(tmp_path):
    fingerprint = teacher_int8.int8_fingerprint(DEFAULT_TEACHER)
    teacher_int8.open_int8(teacher_int8.SHIPPED_INT8, fingerprint)
    other = {**fingerprint, "onnxruntime": "0.1", "digest": "0" * 64}
    with pytest.raises(teacher_int8.StaleInt8, match="differs in onnxruntime"):
        teacher_int8.open_int8(teacher_int8.SHIPPED_INT8, other)
    (tmp_path / "bad.onnx").write_bytes(b"not onnx")
    with pytest.raises(teacher_int8.StaleInt8, match="bad.onnx is not a readable ONNX file"):
        teacher_int8.open_int8(tmp_path / "bad.onnx", fingerprint)


def test_other_teacher_builds_its_int8_form_once_and_rebuilds_a_foreign_file(int8_cache, tmp_path, monkeypatch, caplog):
    torch.manual_seed(0)
    kwargs = {"in_chans": 1, "widths": [8, 8], "depths": [1, 1], "hidden": 16, "input_size": 44}
    net = create_face_backbone("vgg_small", **kwargs).eval()
    path = save_teacher(FaceTeacher(net, PreprocessSpec.from_config(CPU_PREPROCESS), name="vgg_small", kwargs=kwargs,
                                    tta_flip=True), tmp_path / "tiny.safetensors")
    first = load_teacher(path, precision="int8")
    cached = first.__dict__["_int8"].path
    digest = teacher_int8.int8_fingerprint(path)["digest"]
    assert cached == int8_cache / "teacher_int8" / f"tiny-{digest[:12]}.onnx" and cached.is_file()
    built = []
    build = teacher_int8.build_int8
    monkeypatch.setattr(teacher_int8, "build_int8", lambda *args: built.append(args[1]) or build(*args))
    load_teacher(path, precision="int8")
    assert built == []  # reused
    cached.write_bytes(teacher_int8.SHIPPED_INT8.read_bytes())  # another teacher's int8 form under its name
    again, x = load_teacher(path, precision="int8"), first.preprocess(_demo_faces(limit=32))
    with torch.inference_mode():
        assert torch.equal(again(x), first(x))
    assert built == [cached] and "other inputs than this teacher's (differs in teacher_sha256)" in caplog.text


def test_bad_teacher_precision_is_refused_naming_the_key():
    with pytest.raises(ValueError, match=r"teacher_precision='bf16' is not a teacher precision: use auto .* int8 .* fp32"):
        load_teacher(precision="bf16")
    with pytest.raises(ValueError, match="teacher_precision=int8 runs on the CPU"):
        teacher_int8.resolve_precision("int8", "cuda")
    assert teacher_int8.resolve_precision("auto", "cuda") == "fp32" and teacher_int8.resolve_precision(None) == "int8"
    with pytest.raises(ValueError, match="model.teacher_precision='half'"):
        TeacherFER(teacher_precision="half")
    with pytest.raises(ValueError, match="model.init_from"):
        TeacherFER(teacher_precision="int8")


def test_teacher_eval_runs_int8_on_cpu(sample_shards, tmp_path, monkeypatch):
    """experiment=teacher_eval's module (init_from_default, flip averaging): int8 on the CPU by default, fp32 when asked."""
    _no_build(monkeypatch)
    calls = []
    run = teacher_int8.Int8Form.__call__
    monkeypatch.setattr(teacher_int8.Int8Form, "__call__", lambda self, *a: calls.append(len(a[0])) or run(self, *a))
    accuracy = {}
    for precision in ("fp32", "auto"):
        dm = FerPlusDataModule(shard_dir=str(sample_shards), eval_batch_size=64, num_workers=0, preprocess=CPU_PREPROCESS)
        model = TeacherFER(init_from_default=True, tta_flip=True, teacher_precision=precision, preprocess=CPU_PREPROCESS)
        trainer = L.Trainer(accelerator="cpu", default_root_dir=str(tmp_path), logger=False, enable_progress_bar=False,
                            enable_model_summary=False)
        accuracy[precision] = trainer.test(model, datamodule=dm, verbose=False)[0]["test/acc"]
        assert bool(calls) == (precision == "auto")
    assert accuracy["auto"] == pytest.approx(accuracy["fp32"], abs=0.05) and accuracy["fp32"] >= 0.6


def _recorded_test_accuracy() -> float:
    from crossmodal.models.modelfile import read_header

    return float(read_header(DEFAULT_TEACHER)["provenance"]["metrics"]["test/acc"])


@pytest.mark.slow  # a fresh interpreter with torch + Lightning + Hydra: ~15 s idle, a minute on a busy machine
def test_teacher_eval_entry_point_on_sample(tmp_path):
    """experiment=teacher_eval on the shipped sample: metrics.json with test/acc and the confusion PNG."""
    run_dir = tmp_path / "run"
    env = {**os.environ, "WANDB_MODE": "disabled", "CROSSMODAL_NO_PROGRESS": "1"}
    proc = subprocess.run([sys.executable, "-m", "crossmodal.run", "experiment=teacher_eval", f"data.source={SAMPLE}",
                           f"paths.data_dir={tmp_path / 'data'}", f"hydra.run.dir={run_dir}", "logger=csv"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert 0.5 <= metrics["test/acc"] <= 1.0
    assert (run_dir / "plots" / "test_confusion.png").exists()


@pytest.mark.slow
def test_shipped_teacher_recorded_accuracy_on_ferplus_test(ferplus_full_root, tmp_path):
    """The shipped teacher reaches its recorded FER+ test accuracy (cntk cleaning, majority label, flip TTA)."""
    run_dir = tmp_path / "run"
    env = {**os.environ, "WANDB_MODE": "disabled", "CROSSMODAL_NO_PROGRESS": "1"}
    proc = subprocess.run([sys.executable, "-m", "crossmodal.run", "experiment=teacher_eval", f"data.source={ferplus_full_root}",
                           f"paths.data_dir={tmp_path / 'data'}", f"hydra.run.dir={run_dir}", "logger=csv"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["test/acc"] == pytest.approx(_recorded_test_accuracy(), abs=0.002)
    assert f"{100 * _recorded_test_accuracy():.1f}" in README.read_text()


def test_pretrained_from_cache_never_downloads(tmp_path, monkeypatch):
    import huggingface_hub.constants as hf_constants

    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "torch"))
    with pytest.raises(FileNotFoundError, match="torch hub cache"):  # legacy_seresnet50: a URL-only weight file
        create_face_backbone("legacy_seresnet50", pretrained="cache")
    with pytest.raises(FileNotFoundError, match="never downloads"):  # resnet18: a Hugging Face hub weight file
        create_face_backbone("resnet18", pretrained="cache")
