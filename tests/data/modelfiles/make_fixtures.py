"""Write one tiny model file of every format version, and the outputs they must give forever.

    .venv/bin/python tests/data/modelfiles/make_fixtures.py        # (re)writes this folder

Files (tiny networks, random weights with non-trivial batch-norm statistics, a few KB each):

    student_v1.pt            pickled dict as save_student wrote it up to 16ba529 (format crossmodal-student, version 1)
    student_v1_cpu_slice.pt  the same with the front-end key cpu_slice (47266f9..16ba529; the shipped student had it)
    teacher_v1.pt            pickled slim dict as save_teacher wrote it (format crossmodal-face-teacher, version 1, fp16)
    student_v2.safetensors   the model-file format (crossmodal-model, format_version 2), as save_student writes it now
    teacher_v2.safetensors   the same for save_teacher
    expected.json            each file's outputs on the fixed inputs below

The three students hold the same weights, and so do the two teachers: every version must give the
same outputs. Inputs: the first 1.2 s of the shipped EmoDB clip 03a01Fa.flac (student); the first
8 shipped FER+ test faces, in name order (teacher).

The v1 writers are copied here verbatim (they are gone from the package): these files are what
users have on disk. When the format changes, add the new version's files; never rewrite old ones.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[2]
DEMO = ROOT / "crossmodal" / "assets" / "demo"
CLIP = DEMO / "emodb" / "wav" / "03a01Fa.flac"
CLIP_SECONDS = 1.2
N_FACES = 8

STUDENT_NET = ("small_cnn", {"n_freq": 32, "channels": [4, 8, 8, 8], "first_stride": 2, "embed_dim": 8, "dropout": 0.3})
STUDENT_FRONTEND = {"sample_rate": 16000, "features": "logmel", "n_fft": 512, "win_ms": 25.0, "hop_ms": 10.0,
                    "preemphasis": 0.97, "dither": 1e-05, "remove_dc": True, "onesided": False, "normalize": True,
                    "n_mels": 32, "f_min": 20.0, "f_max": 8000.0, "freq_mask": 4, "time_mask": 10, "n_freq_masks": 2,
                    "n_time_masks": 2, "eps": 1e-05}
TEACHER_NET = ("vgg_small", {"widths": [4, 8, 8, 8], "depths": [1, 1, 1, 1], "hidden": 16, "input_size": 44,
                             "in_chans": 1, "drop_rate": 0.4})
TEACHER_PREPROCESS = {"channels": 1, "resize": 48, "input_size": 44, "mean": [128.0], "std": [64.0]}
EMOTIONS_V1 = ["neutral", "happiness", "surprise", "sadness", "anger", "disgust", "fear", "contempt"]


def student_input() -> torch.Tensor:
    import soundfile as sf

    wave, rate = sf.read(CLIP, dtype="float32")
    assert rate == 16000, rate
    return torch.from_numpy(wave[: int(CLIP_SECONDS * rate)])[None]


def teacher_input() -> torch.Tensor:
    from PIL import Image

    faces = sorted((DEMO / "ferplus" / "FER2013Test").glob("*.png"))[:N_FACES]
    return torch.from_numpy(np.stack([np.array(Image.open(f).convert("L")) for f in faces]))


def _randomise_batch_norm(net: torch.nn.Module) -> None:
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
                module.running_mean.uniform_(-0.2, 0.2)
                module.running_var.uniform_(0.5, 1.5)
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.2, 0.2)


# -- the v1 writers, as they were (crossmodal/models/speech.py and crossmodal/lit/teacher.py at 16ba529)

def save_student_v1(path: Path, net_name, net_kwargs, frontend_cfg, state_dict, extra=None) -> None:
    payload = {
        "format": "crossmodal-student",
        "version": 1,
        "net_name": net_name,
        "net_kwargs": dict(net_kwargs),
        "frontend": dict(frontend_cfg),
        "emotions": list(EMOTIONS_V1),
        "state_dict": {k: v.detach().cpu().clone() for k, v in state_dict.items()},
        "info": dict(extra or {}),
    }
    torch.save(payload, path)


def save_teacher_v1(path: Path, name, kwargs, preprocess, backbone_state, tta_flip, meta) -> None:
    state = {"teacher.backbone." + k: (v.half() if v.is_floating_point() else v).contiguous().clone() for k, v in backbone_state.items()}
    payload = {
        "format": "crossmodal-face-teacher",
        "version": 1,
        "backbone": name,
        "backbone_kwargs": kwargs,
        "preprocess": preprocess,
        "tta_flip": tta_flip,
        "emotions": list(EMOTIONS_V1),
        "state_dict": state,
        "meta": dict(meta),
        "pytorch-lightning_version": "2.6.6",
    }
    torch.save(payload, path)


def main() -> None:
    sys.path.insert(0, str(ROOT))
    from crossmodal.models.face import PreprocessSpec, create_face_backbone
    from crossmodal.models.loading import load_student_modules, load_teacher
    from crossmodal.models.speech import create_student, save_student
    from crossmodal.models.teacher import FaceTeacher, save_teacher

    torch.manual_seed(12)
    name, kwargs = STUDENT_NET
    net = create_student(name, **kwargs)
    _randomise_batch_norm(net)
    extra = {"module": "DistillationModule", "label_classes": EMOTIONS_V1[:2], "data": "fixture", "teacher": "teacher_v1",
             "train_speakers": {"emodb": ["03"]}, "metrics": {"test/ua_unheard": 0.5}}
    save_student_v1(HERE / "student_v1.pt", name, kwargs, STUDENT_FRONTEND, net.state_dict(), extra)
    save_student_v1(HERE / "student_v1_cpu_slice.pt", name, kwargs, {**STUDENT_FRONTEND, "cpu_slice": 8}, net.state_dict(), extra)
    save_student(HERE / "student_v2.safetensors", name, kwargs, STUDENT_FRONTEND, net.state_dict(),
                 extra={"label_classes": EMOTIONS_V1[:2], "train_speakers": {"emodb": ["03"]}},
                 provenance={"module": "DistillationModule", "data": "fixture", "teacher_digest": "sha1:" + "0" * 40,
                             "metrics": {"test/ua_unheard": 0.5}, "git_commit": None, "date": "2026-12-01T00:00:00Z"})

    torch.manual_seed(13)
    tname, tkwargs = TEACHER_NET
    backbone = create_face_backbone(tname, **tkwargs)
    _randomise_batch_norm(backbone)
    save_teacher_v1(HERE / "teacher_v1.pt", tname, tkwargs, TEACHER_PREPROCESS, backbone.state_dict(), True,
                    {"test/acc": 0.5, "evaluated": "fixture"})
    teacher = FaceTeacher(backbone.eval(), PreprocessSpec.from_config(TEACHER_PREPROCESS), name=tname, kwargs=tkwargs, tta_flip=True)
    save_teacher(teacher, HERE / "teacher_v2.safetensors", meta={"test/acc": 0.5, "evaluated": "fixture"},
                 provenance={"data": "fixture", "git_commit": None, "date": "2026-12-01T00:00:00Z"})

    # The expected outputs come from the v1 files read the way they were always meant to be read.
    expected: dict[str, dict[str, list]] = {}
    wave = student_input()
    frontend, loaded, _ = load_student_modules(HERE / "student_v1.pt")
    with torch.no_grad():
        logits, embedding = loaded(*frontend(wave))
    expected["student"] = {"logits": logits[0].tolist(), "embedding": embedding[0].tolist()}
    faces = teacher_input()
    teacher = load_teacher(HERE / "teacher_v1.pt")
    with torch.no_grad():
        expected["teacher"] = {"logits": teacher(teacher.preprocess(faces)).tolist()}
    expected["inputs"] = {"student": f"{CLIP.relative_to(ROOT)}[:{CLIP_SECONDS} s]",
                          "teacher": f"first {N_FACES} of crossmodal/assets/demo/ferplus/FER2013Test/*.png"}
    (HERE / "expected.json").write_text(json.dumps(expected, indent=1) + "\n")
    for path in sorted(HERE.iterdir()):
        if path.suffix in (".pt", ".safetensors"):
            print(f"{path.name}: {path.stat().st_size} bytes")


if __name__ == "__main__":
    main()
