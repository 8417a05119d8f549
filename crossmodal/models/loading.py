"""Loading a model: the one reader of teacher and student files, symmetric for both kinds.

    teacher = load_teacher(path)                        # a FaceTeacher in eval mode
    frontend, net, info = load_student_modules(path)    # (crossmodal.inference.load_student wraps them in a Student)

``path``: a model file of any format version, a Lightning checkpoint of crossmodal's own modules, a MatConvNet
port (teachers), or None: the shipped file. Nothing in a file runs (safetensors, or
:func:`crossmodal.models.modelfile.safe_torch_load`).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from crossmodal.emotions import EMOTIONS
from crossmodal.models.face import PreprocessSpec, create_face_backbone, guess_matconvnet_arch, load_matconvnet_ferplus
from crossmodal.models.frontend import build_frontend
from crossmodal.models.modelfile import (
    LEGACY_STUDENT_FORMAT,
    LEGACY_TEACHER_FORMAT,
    ModelFileError,
    file_digest,
    header_facts,
    header_version,
    is_safetensors,
    plain,
    read_model_file,
    safe_torch_load,
    unknown_architecture,
)
from crossmodal.models.speech import create_student
from crossmodal.models.teacher import DEFAULT_TEACHER, FaceTeacher
from crossmodal.models.teacher_int8 import int8_form, resolve_precision
from crossmodal.registry import SPEECH_MODELS

DEFAULT_STUDENT = Path(__file__).resolve().parents[1] / "assets" / "student_cpu.safetensors"
STUDENT_ENV = "CROSSMODAL_STUDENT"  # overrides the shipped default student

# What crossmodal's LightningModules keep in a checkpoint (their save_hyperparameters and attribute names).
STUDENT_PREFIX = "net."  # SpeechModuleBase.net
TEACHER_PREFIX = "teacher.backbone."  # TeacherFER.teacher.backbone
DEFAULT_STUDENT_NETWORK = {"name": "vggvox"}  # SpeechModuleBase's student=None


def teacher_file(path: str | Path | None = None) -> Path:
    """The teacher's file: ``path``, or the shipped default teacher for None."""
    return Path(path).expanduser() if path else DEFAULT_TEACHER


def teacher_name(path: str | Path | None = None) -> str:
    """A readable teacher name for folder names and shard metadata: the file's stem (``teacher_cpu`` for the default)."""
    return teacher_file(path).stem


def teacher_digest(path: str | Path | None = None) -> str:
    """sha256 of the teacher file's bytes: what distillation fingerprints, manifests (``teacher_sha256``)
    and a student's provenance record as the teacher's identity."""
    path = teacher_file(path)
    if not path.is_file():
        raise FileNotFoundError(f"no teacher file at {path}: give teacher_ckpt=<a teacher file> (None: the shipped one)")
    return file_digest(path)


def student_file(path: str | Path | None = None) -> Path:
    """The student's file: ``path``, else ``$CROSSMODAL_STUDENT``, else the shipped default."""
    if path:
        return Path(path).expanduser()
    path = Path(os.environ.get(STUDENT_ENV) or DEFAULT_STUDENT)
    if not path.exists():
        raise FileNotFoundError(f"no default student at {path}: this install ships none yet. Pass a student file or "
                                f"checkpoint (--ckpt PATH / ckpt_path=PATH), or set {STUDENT_ENV}")
    return path


def read_checkpoint(path: Path, kind: str, device: str | torch.device = "cpu") -> tuple[str, Any]:
    """What ``path`` holds: ``("model_file", None)``, ``("lightning", payload)`` or ``("other", payload)``.
    Missing files and files that would run code are refused, naming the file."""
    if not path.exists():
        raise FileNotFoundError(f"no {kind} file at {path}: not found; give a {kind} .safetensors file or a Lightning .ckpt")
    if is_safetensors(path):
        return "model_file", None
    payload = safe_torch_load(path, map_location=device)
    if isinstance(payload, dict) and payload.get("format") in (LEGACY_STUDENT_FORMAT, LEGACY_TEACHER_FORMAT):
        return "model_file", None
    if isinstance(payload, dict) and isinstance(payload.get("state_dict"), dict) and "hyper_parameters" in payload:
        return "lightning", payload
    return "other", payload


def _model_file(path: Path, kind: str, device: str | torch.device) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    header, state = read_model_file(path, device=device)
    if header["kind"] != kind:
        raise ModelFileError(f"{path} is a {header['kind']} model file, not a {kind}; give a {kind} file")
    return header, state


def _not_a(path: Path, kind: str, extra: str = "") -> ModelFileError:
    return ModelFileError(f"{path} is not a crossmodal model file of a {kind} (a .safetensors from save_{kind}, or its "
                          f"older .pt) nor a Lightning checkpoint of one{extra}")


def _weights(payload: dict[str, Any], prefix: str, path: Path, module: str) -> dict[str, torch.Tensor]:
    state = {k[len(prefix):]: v for k, v in payload["state_dict"].items() if k.startswith(prefix)}
    if not state:
        raise ModelFileError(f"{path} is a Lightning checkpoint without {module} weights (no '{prefix}*' keys)")
    return state


def _hyper_parameters(payload: dict[str, Any]) -> dict[str, Any]:
    return plain(dict(payload.get("hyper_parameters") or {}))


def load_teacher(path: str | Path | None = None, device: str | torch.device = "cpu", precision: str | None = "fp32") -> FaceTeacher:
    """A FaceTeacher in eval mode from a teacher model file (any format version), a TeacherFER ``.ckpt``
    or a MatConvNet-port ``.pth``; ``path=None``: the shipped ``crossmodal/assets/teacher_cpu.safetensors``.
    ``precision``: fp32, int8 or auto (int8 on a CPU; :mod:`crossmodal.models.teacher_int8`)."""
    precision = resolve_precision(precision, device)
    path = teacher_file(path)
    if path == DEFAULT_TEACHER and not path.exists():
        raise FileNotFoundError(f"no teacher file at {path}: the shipped default teacher is missing; reinstall crossmodal or give a path")
    what, payload = read_checkpoint(path, "teacher", device)
    if what == "model_file":
        header, state = _model_file(path, "teacher", "cpu")
        name, kwargs = header["architecture"]["name"], dict(header["architecture"]["kwargs"])
        net = create_face_backbone(name, **kwargs)
        own = net.state_dict()
        missing = [k for k in own if k not in state and not k.endswith("num_batches_tracked")]
        if missing:
            raise ModelFileError(f"{path}: teacher file lacks {len(missing)} tensors of {name} (first: {missing[:3]})")
        unexpected = [k for k in state if k not in own]
        if unexpected:
            raise ModelFileError(f"{path}: teacher file has {len(unexpected)} tensors {name} does not "
                                 f"(first: {unexpected[:3]})")
        net.load_state_dict({k: v.to(own[k].dtype) for k, v in state.items()}, strict=False)
        teacher = FaceTeacher(net, PreprocessSpec.from_config(header["preprocess"]), name=name, kwargs=kwargs,
                              tta_flip=bool(header.get("tta_flip", False)))
        teacher.header = header
        teacher.meta = {**dict(header.get("info") or {}), **dict(header.get("provenance", {}).get("metrics") or {})}
    elif what == "lightning":  # TeacherFER's: backbone, backbone_kwargs, preprocess, drop_rate, tta_flip
        hp = _hyper_parameters(payload)
        if not isinstance(hp.get("backbone"), str):
            raise _not_a(path, "teacher", " (its hyper-parameters name no 'backbone': not a TeacherFER checkpoint)")
        spec = PreprocessSpec.from_config(hp.get("preprocess"))
        kwargs = dict(hp.get("backbone_kwargs") or {})
        kwargs.setdefault("in_chans", spec.channels)
        kwargs["drop_rate"] = hp.get("drop_rate", 0.5)
        net = create_face_backbone(hp["backbone"], **kwargs)
        net.load_state_dict(_weights(payload, TEACHER_PREFIX, path, "TeacherFER"))
        teacher = FaceTeacher(net, spec, name=hp["backbone"], kwargs=kwargs, tta_flip=bool(hp.get("tta_flip", False)))
    elif isinstance(payload, dict) and any(k.startswith("conv1_7x7_s2") for k in payload):
        net, spec = load_matconvnet_ferplus(payload)
        teacher = FaceTeacher(net, spec, name=f"matconvnet_{guess_matconvnet_arch(payload)}", kwargs={"in_chans": 3})
    else:
        raise _not_a(path, "teacher", ", or a resnet50/senet50_ferplus_dag MatConvNet port")
    teacher = teacher.to(device).eval()
    if precision == "int8":
        teacher.use_int8(int8_form(teacher, path))
    return teacher


def load_student_modules(path: str | Path | None = None, device: str | torch.device = "cpu") -> tuple[nn.Module, nn.Module, dict[str, Any]]:
    """``(frontend, net, info)``, both in eval mode, from a student model file (any format version) or a
    Lightning checkpoint of a speech module; ``path=None``: the default student (:func:`student_file`).

    ``info`` holds ``net_name``, ``net_kwargs``, ``frontend`` (config), ``emotions``, ``path``, ``source``
    (``model_file`` | ``lightning``) and, for model files, ``version`` (the format version read),
    ``provenance``, ``header`` and the writer's ``info`` entries.
    """
    path = student_file(path)
    what, payload = read_checkpoint(path, "student", device)
    if what == "lightning":
        hp = _hyper_parameters(payload)
        network = hp.get("student") or DEFAULT_STUDENT_NETWORK
        if not isinstance(network, dict) or not isinstance(network.get("name"), str):
            raise _not_a(path, "student", f" (its hyper-parameter 'student' is {network!r}, not {{name, kwargs}})")
        frontend_cfg = dict(hp.get("frontend") or {})
        name, kwargs = network["name"], dict(network.get("kwargs") or {})
        state, facts = _weights(payload, STUDENT_PREFIX, path, "speech-student"), {"source": "lightning"}
    elif what == "model_file":
        header, state = _model_file(path, "student", device)
        frontend_cfg, name, kwargs = header["frontend"], header["architecture"]["name"], dict(header["architecture"]["kwargs"])
        facts = {**header_facts(header), "source": "model_file", "version": header_version(header),
                 "provenance": header.get("provenance", {}), "header": header}
    else:
        raise _not_a(path, "student")
    try:
        frontend = build_frontend(frontend_cfg).eval()
    except TypeError as exn:
        raise ModelFileError(f"{path}: {exn}") from exn
    if name not in SPEECH_MODELS:
        raise unknown_architecture(path, "speech network", name, SPEECH_MODELS.names())
    if what == "lightning":
        kwargs = {"n_freq": frontend.n_freq, **kwargs}  # as SpeechModuleBase built it
    net = create_student(name, **kwargs)
    try:
        net.load_state_dict(state)
    except RuntimeError as exn:
        raise ModelFileError(f"{path}: its weights do not fit {name}({kwargs}): {exn}") from exn
    info = {**facts, "net_name": name, "net_kwargs": kwargs, "frontend": frontend_cfg, "path": str(path),
            "emotions": list(facts.get("header", {}).get("emotions") or EMOTIONS)}
    return frontend, net.eval(), info
