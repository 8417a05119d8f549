"""FaceTeacher: the face-expression teacher as a plain network with its preprocessing, and its model files.

    teacher = load_teacher()                       # crossmodal.models.loading; the shipped teacher_cpu.safetensors
    logits = teacher(teacher.preprocess(images))   # uint8 [N,H,W] grey or [N,H,W,3] RGB, any size

:func:`save_teacher` writes the model file (:mod:`crossmodal.models.modelfile`) that
:func:`crossmodal.models.loading.load_teacher` reads, as it reads a student's.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from crossmodal.emotions import EMOTIONS
from crossmodal.models.face import PreprocessSpec
from crossmodal.models.modelfile import make_header, plain, write_model_file

log = logging.getLogger(__name__)


DEFAULT_TEACHER = Path(__file__).resolve().parents[1] / "assets" / "teacher_cpu.safetensors"


class FaceTeacher(nn.Module):
    """A face-expression network plus the preprocessing it was trained with: ``preprocess(images)`` takes uint8
    (or 0..255 float) faces [N,H,W] grey, [N,H,W,3] RGB or [N,C,H,W], any size; ``forward(x)`` returns 8 logits
    in ``EMOTIONS`` order, averaged with the mirror image's when ``tta_flip``."""

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

    @property
    def precision(self) -> str:
        """``int8`` with an int8 form attached (:mod:`crossmodal.models.teacher_int8`), else ``fp32``."""
        return "int8" if "_int8" in self.__dict__ else "fp32"

    def use_int8(self, form: Any) -> None:
        """Run inference through ``form``, the int8 form of the weights the teacher holds now: it is dropped (and
        fp32 used) as soon as a weight or statistic changes (training, ``load_state_dict``)."""
        self.__dict__["_int8"], self.__dict__["_int8_key"] = form, self._weights()

    def _weights(self) -> tuple[tuple, list[torch.Tensor]]:
        """The backbone's tensors and their key (id, version, device, dtype): a form built from them describes
        them while the key stays the same (the tensors are kept with the key, so their ids stay theirs)."""
        tensors = [*self.backbone.parameters(), *self.backbone.buffers()]
        return tuple((id(t), t._version, t.device, t.dtype) for t in tensors), tensors

    def train(self, mode: bool = True) -> FaceTeacher:
        if mode:  # the weights will change: the int8 form no longer describes them
            self.__dict__.pop("_int8", None)
        return super().train(mode)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        net = self.backbone
        if not self.training and not torch.is_grad_enabled():  # inference: the same function, computed faster
            if "_int8" in self.__dict__ and self.__dict__["_int8_key"][0] != self._weights()[0]:
                log.warning("teacher %s: its weights changed since its int8 form was built; running fp32", self.name)
                self.__dict__.pop("_int8")
            if "_int8" in self.__dict__:
                return self.__dict__["_int8"](x, self.tta_flip)
            net = self.inference_backbone()
            if x.ndim == 4:
                x = x.contiguous(memory_format=torch.channels_last)
        logits = net(x)
        if self.tta_flip:
            logits = (logits + net(torch.flip(x, dims=[-1]))) / 2
        return logits

    def inference_backbone(self) -> nn.Module:
        """The fp32 backbone with batch norm folded into the conv / linear layer before it (``torch.fx``), weights
        in channels_last, no autograd: the same outputs up to float rounding, ~1.6x faster on CPU. ``forward`` uses
        it in eval mode without gradients; rebuilt when a weight or statistic changes (tensor versions). A backbone
        ``torch.fx`` cannot trace is used as it is."""
        key, tensors = self._weights()
        cached = self.__dict__.get("_inference")
        if cached is not None and cached[0] == key:
            return cached[1]
        with torch.inference_mode(False), torch.no_grad():
            net = _fold_batch_norm(self.backbone).to(memory_format=torch.channels_last)
            net.requires_grad_(False)
        self.__dict__["_inference"] = (key, net, tensors)  # not a submodule: not in state_dict, parameters() or .to()
        return net

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state.pop("_inference", None)  # rebuilt on first use
        state.pop("_int8_key", None)  # tensor ids: taken again when unpickled
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        if "_int8" in self.__dict__:
            self.__dict__["_int8_key"] = self._weights()


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


def head_names(net: nn.Module) -> list[str]:
    """Parameter-name prefixes of the classifier (randomly initialised, full lr)."""
    head = getattr(net, "get_classifier", lambda: None)()  # timm models name their classifier
    return [n for n, m in net.named_modules() if m is head and n] or ["head", "fc", "classifier", "last_linear"]


def save_teacher(teacher: FaceTeacher | Any, path: str | Path, *, half: bool = True, meta: dict | None = None,
                 tta_flip: bool | None = None, provenance: dict | None = None) -> Path:
    """Write a teacher model file (weights in fp16 when ``half``). ``meta``: measured figures (``"test/acc"``-style
    numeric keys go to ``provenance.metrics``, the rest to ``info``); ``provenance``: what it was trained on, the
    run (git commit and date are added)."""
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
