"""FaceTeacher: the face-expression teacher as a plain network with its preprocessing, and its model files.

    teacher = load_teacher()                       # the shipped crossmodal/assets/teacher_cpu.safetensors
    logits = teacher(teacher.preprocess(images))   # uint8 [N,H,W] grey or [N,H,W,3] RGB, any size

A teacher is saved as a model file (:mod:`crossmodal.models.modelfile`: safetensors weights + a
JSON header with the backbone, preprocessing, flip averaging, emotion order and provenance).
``load_teacher`` also reads older teacher files (the pickled v1 ``.pt``), a TeacherFER Lightning
``.ckpt`` and the authors' MatConvNet-port ``resnet50_ferplus_dag.pth`` / ``senet50_ferplus_dag.pth``,
all with ``torch.load(weights_only=True)``: a file that would run code is refused.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from crossmodal.emotions import EMOTIONS
from crossmodal.models.face import (
    PreprocessSpec,
    create_face_backbone,
    guess_matconvnet_arch,
    load_matconvnet_ferplus,
)
from crossmodal.models.modelfile import (
    LEGACY_TEACHER_FORMAT,
    ModelFileError,
    is_safetensors,
    make_header,
    plain,
    read_model_file,
    safe_torch_load,
    write_model_file,
)

log = logging.getLogger(__name__)


DEFAULT_TEACHER = Path(__file__).resolve().parents[1] / "assets" / "teacher_cpu.safetensors"
SLIM_FORMAT = LEGACY_TEACHER_FORMAT  # the pickled v1 teacher file (read through a migration)
PREFIX = "teacher.backbone."  # TeacherFER's name for the network's weights


class FaceTeacher(nn.Module):
    """A face-expression network plus the preprocessing it was trained with. Eval mode by default.

    ``preprocess(images)`` takes uint8 (or 0..255 float) faces [N,H,W] grey, [N,H,W,3] RGB or
    [N,C,H,W], any size, and returns the network input; ``forward(x)`` returns 8 logits in
    ``EMOTIONS`` order. ``tta_flip`` averages the logits of the image and its mirror.
    """

    def __init__(self, backbone: nn.Module, preprocess: PreprocessSpec, *, name: str = "", kwargs: dict | None = None,
                 tta_flip: bool = False) -> None:
        super().__init__()
        self.backbone = backbone
        self.spec = preprocess
        self.name = name
        self.kwargs = dict(kwargs or {})
        self.tta_flip = tta_flip
        self.emotions = EMOTIONS

    @property
    def input_size(self) -> int:
        return self.spec.input_size

    @torch.no_grad()
    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        device = next(self.backbone.parameters()).device
        return self.spec(torch.as_tensor(images).to(device), random_crop=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        net = self.backbone
        if not self.training and not torch.is_grad_enabled():  # inference: the same function, computed faster
            net = self.inference_backbone()
            if x.ndim == 4:
                x = x.contiguous(memory_format=torch.channels_last)
        logits = net(x)
        if self.tta_flip:
            logits = (logits + net(torch.flip(x, dims=[-1]))) / 2
        return logits

    def inference_backbone(self) -> nn.Module:
        """The backbone in its inference-ready form: batch norm folded into the convolutions and linear layers
        before it (``torch.fx``), weights in channels_last, no autograd. The same outputs up to float rounding
        (max |Δlogit| ~5e-6 on FER+ test for the shipped teacher) at ~1.6x the speed on CPU (experiments/perf,
        "Teacher on CPU"). ``forward`` uses it in eval mode without gradients (extraction, ``teacher_eval``, the
        timeline); training and gradients go through ``backbone``. Rebuilt when a weight or statistic changes
        (tensor versions), so validation during training sees the current weights. A backbone that ``torch.fx``
        cannot trace is used as it is (channels_last only)."""
        tensors = [*self.backbone.parameters(), *self.backbone.buffers()]
        key = tuple((id(t), t._version, t.device, t.dtype) for t in tensors)
        cached = self.__dict__.get("_inference")
        if cached is not None and cached[0] == key:
            return cached[1]
        with torch.inference_mode(False), torch.no_grad():
            net = _fold_batch_norm(self.backbone).to(memory_format=torch.channels_last)
            net.requires_grad_(False)
        # Not a submodule (not in state_dict, parameters() or .to()); the tensors are held so their ids stay theirs.
        self.__dict__["_inference"] = (key, net, tensors)
        return net

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state.pop("_inference", None)  # rebuilt on first use
        return state


def _fold_batch_norm(backbone: nn.Module) -> nn.Module:
    """An eval-mode copy of ``backbone`` with each BatchNorm that follows a conv / linear layer folded into it."""
    from torch.fx.experimental.optimization import fuse

    was_training = backbone.training
    backbone.eval()
    try:
        return fuse(backbone).eval()
    except Exception as exn:  # noqa: BLE001 - a backbone torch.fx cannot trace still runs, unfolded
        log.info("teacher %s: batch norm not folded (torch.fx: %s); inference uses the backbone as it is",
                 type(backbone).__name__, str(exn).splitlines()[0] if str(exn) else type(exn).__name__)
        import copy

        return copy.deepcopy(backbone).eval()
    finally:
        backbone.train(was_training)


# ----------------------------------------------------------------------------------------- training


def head_names(net: nn.Module) -> list[str]:
    """Parameter-name prefixes of the classifier (randomly initialised, full lr)."""
    getter = getattr(net, "get_classifier", None)
    if getter is not None:
        head = getter()
        return [n for n, m in net.named_modules() if m is head and n] or ["fc", "head", "classifier", "last_linear"]
    return ["head", "fc", "classifier", "last_linear"]


# ----------------------------------------------------------------------------------------- teacher files


def save_teacher(teacher: FaceTeacher | Any, path: str | Path, *, half: bool = True, meta: dict | None = None,
                 tta_flip: bool | None = None, provenance: dict | None = None) -> Path:
    """Write a teacher model file: backbone name + kwargs, preprocessing, flip averaging, (fp16) weights.

    ``meta``: measured figures (``"test/acc"``-style numeric keys go to ``provenance.metrics``, the
    rest to ``info``); ``provenance``: what it was trained on, the run (git commit and date are added).
    """
    if not isinstance(teacher, FaceTeacher):  # a TeacherFER LightningModule
        teacher = teacher.teacher
    meta = plain(dict(meta or {}))
    metrics = {k: v for k, v in meta.items() if "/" in k and isinstance(v, (int, float)) and not isinstance(v, bool)}
    provenance = {**plain(dict(provenance or {})), **({"metrics": metrics} if metrics else {})}
    header = make_header(
        "teacher",
        {"name": teacher.name, "kwargs": plain(teacher.kwargs)},
        preprocess=teacher.spec.as_dict(),
        tta_flip=teacher.tta_flip if tta_flip is None else tta_flip,
        provenance=provenance,
        info={k: v for k, v in meta.items() if k not in metrics},
    )
    state = {k: (v.half() if half and v.is_floating_point() else v) for k, v in teacher.backbone.state_dict().items()}
    return write_model_file(path, header, state)


def load_teacher(path: str | Path | None = None, device: str | torch.device = "cpu") -> FaceTeacher:
    """A FaceTeacher in eval mode from a teacher model file (any format version), a TeacherFER ``.ckpt``
    or a MatConvNet-port ``.pth``. Nothing in the file runs (safetensors, or weights-only loading).

    ``path=None`` loads the project's default teacher, ``crossmodal/assets/teacher_cpu.safetensors``.
    """
    path = Path(path).expanduser() if path is not None else DEFAULT_TEACHER
    if not path.exists():
        hint = " (the shipped default teacher is missing: reinstall crossmodal or give a path)" if path == DEFAULT_TEACHER else ""
        raise FileNotFoundError(f"teacher file {path} does not exist{hint}")
    if is_safetensors(path):
        teacher = _from_model_file(path)
    else:
        try:
            payload = safe_torch_load(path)
        except ModelFileError:
            raise
        except Exception as exn:  # noqa: BLE001 - name the file whatever went wrong
            raise ValueError(f"cannot read teacher file {path}: {exn}") from exn
        if isinstance(payload, dict) and payload.get("format") == SLIM_FORMAT:
            teacher = _from_model_file(path)
        elif isinstance(payload, dict) and "state_dict" in payload and "hyper_parameters" in payload:
            teacher = _from_lightning(payload, path)
        elif isinstance(payload, dict) and any(k.startswith("conv1_7x7_s2") for k in payload):
            net, spec = load_matconvnet_ferplus(payload)
            teacher = FaceTeacher(net, spec, name=f"matconvnet_{guess_matconvnet_arch(payload)}", kwargs={"in_chans": 3})
        else:
            raise ValueError(f"{path} is not a crossmodal teacher (a model file from save_teacher), a TeacherFER Lightning "
                             "checkpoint, or a resnet50/senet50_ferplus_dag MatConvNet port")
    return teacher.to(device).eval()


def _from_model_file(path: Path) -> FaceTeacher:
    header, state = read_model_file(path)
    if header["kind"] != "teacher":
        raise ModelFileError(f"{path} is a {header['kind']} model file, not a teacher; give a teacher file")
    name, kwargs = header["architecture"]["name"], dict(header["architecture"]["kwargs"])
    net = create_face_backbone(name, **kwargs)
    own = net.state_dict()
    missing = [k for k in own if k not in state and not k.endswith("num_batches_tracked")]
    if missing:
        raise ValueError(f"{path}: teacher file lacks {len(missing)} tensors of {name} (first: {missing[:3]})")
    unexpected = [k for k in state if k not in own]
    if unexpected:
        raise ValueError(f"{path}: teacher file has {len(unexpected)} tensors {name} does not (first: {unexpected[:3]})")
    net.load_state_dict({k: v.to(own[k].dtype) for k, v in state.items()}, strict=False)
    spec = PreprocessSpec.from_config(header["preprocess"])
    teacher = FaceTeacher(net, spec, name=name, kwargs=kwargs, tta_flip=bool(header.get("tta_flip", False)))
    teacher.header = header
    teacher.meta = {**dict(header.get("info") or {}), **dict(header.get("provenance", {}).get("metrics") or {})}
    return teacher


def _from_lightning(payload: dict[str, Any], path: Path) -> FaceTeacher:
    hp = dict(payload["hyper_parameters"])
    spec = PreprocessSpec.from_config(hp.get("preprocess"))
    kwargs = dict(hp.get("backbone_kwargs") or {})
    kwargs.setdefault("in_chans", spec.channels)
    kwargs["drop_rate"] = hp.get("drop_rate", 0.5)
    net = create_face_backbone(hp["backbone"], **kwargs)
    state = {k[len(PREFIX):]: v for k, v in payload["state_dict"].items() if k.startswith(PREFIX)}
    if not state:
        raise ValueError(f"{path} is a Lightning checkpoint without TeacherFER weights (no '{PREFIX}*' keys)")
    net.load_state_dict(state)
    return FaceTeacher(net, spec, name=hp["backbone"], kwargs=kwargs, tta_flip=bool(hp.get("tta_flip", False)))
