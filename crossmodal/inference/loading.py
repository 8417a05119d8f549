"""Loading a student: a student model file (any format version) or a Lightning checkpoint of the
distillation, read without running anything in it; ``load_student()`` alone gives the shipped one."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from crossmodal.emotions import EMOTIONS
from crossmodal.inference.student import Student

DEFAULT_STUDENT = Path(__file__).resolve().parent.parent / "assets" / "student_cpu.safetensors"


def load_student(path: str | Path | None = None, device: str | torch.device = "cpu") -> Student:
    """A :class:`Student` from a student model file or a Lightning checkpoint of the distillation.

    ``path=None`` loads the project's shipped default (``crossmodal/assets/student_cpu.safetensors``, or
    ``$CROSSMODAL_STUDENT``).
    """
    if path is None:
        path = os.environ.get("CROSSMODAL_STUDENT") or DEFAULT_STUDENT
        if not Path(path).exists():
            raise FileNotFoundError(
                f"no default student at {path}: this install ships none yet. "
                "Pass a student file or checkpoint (--ckpt PATH / ckpt_path=PATH), or set CROSSMODAL_STUDENT"
            )
    path = Path(path).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"student checkpoint not found: {path}")
    frontend, net, info = load_student_modules(path, device)
    return Student(frontend, net, info).to(device).eval()


def load_student_modules(path: str | Path, device: str | torch.device = "cpu") -> tuple[nn.Module, nn.Module, dict[str, Any]]:
    """(frontend, net, info) from a student model file (any format version) or a Lightning .ckpt whose
    hyper-parameters name the network. Nothing in the file runs: safetensors, or
    ``torch.load(weights_only=True)`` with crossmodal's allow-list (refused otherwise, naming the file)."""
    from crossmodal.models.modelfile import LEGACY_STUDENT_FORMAT, is_safetensors, safe_torch_load
    from crossmodal.models.speech import load_student_file

    path = Path(path)
    if is_safetensors(path):
        return load_student_file(path, map_location=device)
    payload = safe_torch_load(path, map_location=device)
    if isinstance(payload, dict) and payload.get("format") == LEGACY_STUDENT_FORMAT:
        return load_student_file(path, map_location=device)
    if isinstance(payload, dict) and "state_dict" in payload:
        return _from_lightning(path, payload)
    raise ValueError(f"{path} is neither a crossmodal student file nor a Lightning checkpoint of a student")


def _from_lightning(path: Path, payload: dict[str, Any]) -> tuple[nn.Module, nn.Module, dict[str, Any]]:
    """Rebuild the student of a DistillationModule / StudentSpeech checkpoint from its hyper-parameters."""
    from crossmodal.models.frontend import build_frontend
    from crossmodal.models.modelfile import plain
    from crossmodal.models.speech import create_student
    from crossmodal.registry import SPEECH_MODELS

    hparams = plain(payload.get("hyper_parameters") or {})
    net_name, net_kwargs = _find_network(hparams, set(SPEECH_MODELS.names()))
    if net_name is None:
        raise ValueError(
            f"{path}: cannot tell which speech network this checkpoint trained (no registered name among its "
            f"hyper-parameters; registered: {', '.join(SPEECH_MODELS.names())})"
        )
    frontend_cfg = _find_key(hparams, ("frontend", "frontend_cfg", "frontend_config")) or {}
    frontend = build_frontend(frontend_cfg).eval()
    net = create_student(net_name, frontend_n_freq=getattr(frontend, "n_freq", None), **net_kwargs)
    state = payload["state_dict"]
    net.load_state_dict(_strip_prefix(state, set(net.state_dict()), path))
    net.eval()
    info = {"net_name": net_name, "net_kwargs": net_kwargs, "frontend": frontend_cfg, "emotions": list(EMOTIONS), "path": str(path), "source": "lightning"}
    return frontend, net, info


def _find_key(tree: Any, names: tuple[str, ...]) -> Any:
    if isinstance(tree, dict):
        for name in names:
            if isinstance(tree.get(name), dict):
                return tree[name]
        for child in tree.values():
            found = _find_key(child, names)
            if found is not None:
                return found
    return None


def _find_network(tree: Any, registered: set[str]) -> tuple[str | None, dict[str, Any]]:
    """The first ``{name|net|net_name|arch|backbone: <registered name>}`` in the hyper-parameters, and
    the keyword arguments stored beside it (``net_kwargs``/``kwargs``, or the sibling keys)."""
    if not isinstance(tree, dict):
        return None, {}
    for key in ("net_name", "net", "name", "arch", "backbone", "student"):
        value = tree.get(key)
        if isinstance(value, str) and value in registered:
            # Only explicit keyword arguments are trusted: sibling keys are usually optimiser settings.
            kwargs = tree.get("net_kwargs") or tree.get("kwargs")
            return value, dict(kwargs) if isinstance(kwargs, dict) else {}
    for child in tree.values():
        name, kwargs = _find_network(child, registered)
        if name is not None:
            return name, kwargs
    return None, {}


def _strip_prefix(state: dict[str, torch.Tensor], wanted: set[str], path: Path) -> dict[str, torch.Tensor]:
    """The sub-dict of ``state`` whose keys, minus a common prefix (``student.net.``...), are the net's."""
    prefixes: dict[str, int] = {}
    for key in state:
        for target in wanted:
            if key.endswith(target) and (len(key) == len(target) or key[-len(target) - 1] == "."):
                prefix = key[: len(key) - len(target)]
                prefixes[prefix] = prefixes.get(prefix, 0) + 1
    for prefix, _count in sorted(prefixes.items(), key=lambda kv: (-kv[1], len(kv[0]))):
        sub = {key[len(prefix) :]: value for key, value in state.items() if key.startswith(prefix)}
        if wanted <= set(sub):
            return {key: sub[key] for key in wanted}
    raise ValueError(f"{path}: its state_dict does not hold the weights of the network named in its hyper-parameters")

