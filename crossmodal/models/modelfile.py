"""Model files, the one format teachers and students are kept in (fields, and how a format change is made:
docs/conventions.md, "Model files"), and safe loading of what users hand us.

:func:`read_header` reads only the header; :func:`read_model_file` returns header and tensors in the current
version through ``MIGRATIONS``. Any other file a user hands us (``.ckpt``, ``.pth``) goes through
:func:`safe_torch_load`: weights_only with the allow-list ``CHECKPOINT_GLOBALS``, else refused unrun.
"""
from __future__ import annotations

import collections
import datetime as _dt
import enum
import hashlib
import json
import math
import os
import pathlib
import pickle
import subprocess
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any

import omegaconf
import torch
from omegaconf import base, nodes

from crossmodal.emotions import EMOTIONS
from crossmodal.utils.atomic import atomic_path

FORMAT = "crossmodal-model"
FORMAT_VERSION = 2
HEADER_KEY = "crossmodal"
KINDS = ("student", "teacher")
SUFFIX = ".safetensors"

# The pickled formats of version 1 (torch.save of a dict), one per kind.
LEGACY_STUDENT_FORMAT = "crossmodal-student"
LEGACY_TEACHER_FORMAT = "crossmodal-face-teacher"
LEGACY_TEACHER_PREFIX = "teacher.backbone."  # v1 teachers kept TeacherFER's names for the weights

# Front-end keys older student files may carry that SpeechFrontend no longer takes, with why dropping
# them keeps the outputs. Any other unknown key still fails when the front-end is built.
REMOVED_FRONTEND_KEYS = {
    "cpu_slice": "a CPU batch ran in slices of rows; rows are independent, so only speed changed",
}


class ModelFileError(ValueError):
    """A model file that cannot be read (names the file and what would fix it)."""


class UnsafeFileError(ModelFileError):
    """A pickle that would construct objects outside the allow-list: refused, nothing in it ran."""


def write_model_file(path: str | Path, header: dict[str, Any], tensors: dict[str, torch.Tensor]) -> Path:
    """Write ``tensors`` + ``header`` (completed with format, version, emotions) atomically; returns the path."""
    from safetensors.torch import save_file

    path = Path(path)
    header = make_header(**header) if "format" not in header else dict(header)
    header.update({k: portable_paths(header[k]) for k in ("provenance", "info") if k in header})  # no machine paths
    check_header(header, path)
    tensors = {str(k): v.detach().cpu().contiguous().clone() for k, v in tensors.items()}
    umask = os.umask(0o022)  # safetensors creates 0600 files; give them the usual mode (666 less the umask)
    os.umask(umask)
    with atomic_path(path, mode=0o666 & ~umask) as tmp:
        save_file(tensors, str(tmp), metadata={HEADER_KEY: json.dumps(plain(header), sort_keys=True), "format": "pt"})
    return path


def make_header(
    kind: str,
    architecture: dict[str, Any],
    *,
    frontend: dict[str, Any] | None = None,
    preprocess: dict[str, Any] | None = None,
    tta_flip: bool = False,
    emotions: list[str] | tuple[str, ...] = EMOTIONS,
    provenance: dict[str, Any] | None = None,
    info: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A current-version header; provenance gets the git commit and date of writing when not given."""
    header: dict[str, Any] = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "kind": kind,
        "architecture": {"name": str(architecture["name"]), "kwargs": dict(architecture.get("kwargs") or {})},
        "emotions": list(emotions),
        "provenance": {"git_commit": git_commit(), "date": utc_now(), **dict(provenance or {})},
        "info": dict(info or {}),
    }
    if kind == "student":
        header["frontend"] = dict(frontend or {})
    elif kind == "teacher":
        header["preprocess"] = dict(preprocess or {})
        header["tta_flip"] = bool(tta_flip)
    return plain(header)


def check_header(header: dict[str, Any], path: Path | str) -> None:
    """Fail, naming the file and the field, on a header that is not a current model-file header."""
    problems = []
    if header.get("format") != FORMAT:
        problems.append(f"format is {header.get('format')!r}, not {FORMAT!r}")
    if header.get("format_version") != FORMAT_VERSION:
        problems.append(f"format_version is {header.get('format_version')!r}, not {FORMAT_VERSION}")
    if header.get("kind") not in KINDS:
        problems.append(f"kind is {header.get('kind')!r}, not one of {KINDS}")
    architecture = header.get("architecture")
    if not isinstance(architecture, dict) or not isinstance(architecture.get("name"), str):
        problems.append("architecture.name is missing")
    if header.get("kind") == "student" and not isinstance(header.get("frontend"), dict):
        problems.append("a student needs a frontend config")
    if header.get("kind") == "teacher" and not isinstance(header.get("preprocess"), dict):
        problems.append("a teacher needs a preprocess spec")
    if list(header.get("emotions") or []) != list(EMOTIONS):
        problems.append(f"emotions {header.get('emotions')} are not crossmodal's order {list(EMOTIONS)}")
    if problems:
        raise ModelFileError(f"{path}: not a valid crossmodal model file header: {'; '.join(problems)}")


def is_safetensors(path: str | Path) -> bool:
    """True when the file starts like a safetensors file (8-byte header length, then a JSON object)."""
    try:
        with open(path, "rb") as f:
            head = f.read(9)
    except OSError:
        return False
    size = int.from_bytes(head[:8], "little")
    return head[8:9] == b"{" and 0 < size < (Path(path).stat().st_size)


def read_header(path: str | Path) -> dict[str, Any]:
    """The JSON header of a model file, migrated to the current version, without loading any weight
    (a pickled v1 file has no separate header: it is loaded, weights_only)."""
    path = _existing(path)
    if is_safetensors(path):
        return migrate(_raw_header(path), None, path)[0]
    return read_model_file(path)[0]


def header_facts(header: dict[str, Any]) -> dict[str, Any]:
    """A header's ``info`` with its ``provenance`` filling the keys info lacks: where readers look up
    ``train_speakers``, ``metrics``, ``module``, ... whichever part a file's writer put them in."""
    facts = dict(header.get("info") or {})
    for key, value in (header.get("provenance") or {}).items():
        facts.setdefault(key, value)
    return facts


def read_model_file(path: str | Path, device: str | torch.device = "cpu") -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """(header, tensors) of a model file of any known version, migrated to the current version."""
    path = _existing(path)
    if is_safetensors(path):
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        header = _raw_header(path)
        try:
            tensors = load_file(str(path), device=str(device))
        except (SafetensorError, OSError) as exn:  # truncated / corrupt data: name the file
            raise ModelFileError(f"{path}: cannot read the weights of this safetensors file ({exn}); is it complete?") from exn
    else:
        payload = safe_torch_load(path, map_location=device)
        if not isinstance(payload, dict) or payload.get("format") not in (LEGACY_STUDENT_FORMAT, LEGACY_TEACHER_FORMAT):
            found = payload.get("format") if isinstance(payload, dict) else type(payload).__name__
            raise ModelFileError(f"{path} is not a crossmodal model file (found {found!r}); model files are .safetensors "
                                 f"written by save_student / save_teacher (or their older .pt files)")
        tensors = payload.get("state_dict")
        if not isinstance(tensors, dict) or not all(isinstance(v, torch.Tensor) for v in tensors.values()):
            raise ModelFileError(f"{path}: its state_dict is not a dict of tensors")
        header = {k: v for k, v in payload.items() if k != "state_dict"}
    header, tensors = migrate(header, tensors, path)
    check_header(header, path)
    return header, tensors


def _raw_header(path: Path) -> dict[str, Any]:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
    except (SafetensorError, OSError) as exn:
        raise ModelFileError(f"{path}: cannot read its safetensors header ({exn})") from exn
    if HEADER_KEY not in metadata:
        raise ModelFileError(f"{path} is a safetensors file without a crossmodal header (metadata key {HEADER_KEY!r}): "
                             "a bare state dict cannot say which network it is for; save it with save_student / save_teacher")
    try:
        header = json.loads(metadata[HEADER_KEY])
    except json.JSONDecodeError as exn:
        raise ModelFileError(f"{path}: its crossmodal header is not valid JSON ({exn})") from exn
    if not isinstance(header, dict):
        raise ModelFileError(f"{path}: its crossmodal header is not a JSON object")
    return header


def _existing(path: str | Path) -> Path:
    path = Path(path).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"model file {path} does not exist")
    return path


def upgrade_model_file(source: str | Path, target: str | Path, provenance: dict[str, Any] | None = None) -> Path:
    """Rewrite a model file of any version in the current format (same tensors, same dtypes); its provenance
    gains ``upgraded_from`` (the source's name, version and sha256) and ``provenance``."""
    source = _existing(source)
    old_version = _raw_header(source).get("format_version") if is_safetensors(source) else 1
    header, tensors = read_model_file(source)
    header = dict(header)
    header["provenance"] = {
        **dict(header.get("provenance") or {}),
        **dict(plain(provenance or {})),
        "upgraded_from": {"file": source.name, "format_version": old_version, "sha256": file_digest(source), "date": utc_now()},
    }
    return write_model_file(target, header, tensors)


def header_version(header: dict[str, Any]) -> int:
    if header.get("format") in (LEGACY_STUDENT_FORMAT, LEGACY_TEACHER_FORMAT):
        return int(header.get("version", 1))
    return int(header.get("format_version", 0))


def _v1_to_v2(header: dict[str, Any], tensors: dict[str, torch.Tensor] | None) -> tuple[dict[str, Any], dict[str, torch.Tensor] | None]:
    """The pickled v1 dicts (save_student / save_teacher up to 16ba529) -> the v2 header and tensor names."""
    if header.get("format") == LEGACY_STUDENT_FORMAT:
        frontend = {k: v for k, v in dict(header.get("frontend") or {}).items() if k not in REMOVED_FRONTEND_KEYS}
        info = dict(header.get("info") or {})
        provenance = {"migrated_from": f"{LEGACY_STUDENT_FORMAT} v1"}
        for key in ("data", "teacher", "teacher_digest", "metrics", "checkpoint", "run"):
            if key in info:
                provenance[key] = info.pop(key)
        new = {
            "format": FORMAT, "format_version": 2, "kind": "student",
            "architecture": {"name": header["net_name"], "kwargs": dict(header.get("net_kwargs") or {})},
            "frontend": frontend, "emotions": list(header.get("emotions") or EMOTIONS),
            "provenance": provenance, "info": info,
        }
        return new, tensors
    if header.get("format") == LEGACY_TEACHER_FORMAT:
        meta = dict(header.get("meta") or {})
        metrics = {k: v for k, v in meta.items() if isinstance(v, (int, float)) and "/" in k}
        new = {
            "format": FORMAT, "format_version": 2, "kind": "teacher",
            "architecture": {"name": header["backbone"], "kwargs": dict(header.get("backbone_kwargs") or {})},
            "preprocess": dict(header.get("preprocess") or {}), "tta_flip": bool(header.get("tta_flip", False)),
            "emotions": list(header.get("emotions") or EMOTIONS),
            "provenance": {"migrated_from": f"{LEGACY_TEACHER_FORMAT} v1", "metrics": metrics,
                           "lightning_version": header.get("pytorch-lightning_version")},
            "info": {k: v for k, v in meta.items() if k not in metrics},
        }
        if tensors is not None:
            tensors = {k[len(LEGACY_TEACHER_PREFIX):] if k.startswith(LEGACY_TEACHER_PREFIX) else k: v for k, v in tensors.items()}
        return new, tensors
    raise ModelFileError(f"version 1 file of unknown format {header.get('format')!r}")


# version -> the function that takes a header (+ tensors, None when only the header is read) of that
# version to the next. Add an entry (and a fixture in tests/data/modelfiles/) for every format change.
MIGRATIONS: dict[int, Callable[[dict[str, Any], dict[str, torch.Tensor] | None], tuple[dict[str, Any], dict[str, torch.Tensor] | None]]] = {
    1: _v1_to_v2,
}


def migrate(header: dict[str, Any], tensors: dict[str, torch.Tensor] | None, path: Path | str = "<memory>"):
    """Apply the migrations from the header's version up to FORMAT_VERSION."""
    version = header_version(header)
    if version > FORMAT_VERSION:
        raise ModelFileError(f"{path} is model-file format version {version}; this crossmodal reads up to "
                             f"{FORMAT_VERSION}: upgrade crossmodal")
    while version < FORMAT_VERSION:
        if version not in MIGRATIONS:
            raise ModelFileError(f"{path}: no migration from model-file format version {version}")
        header, tensors = MIGRATIONS[version](dict(header), tensors)
        version = header_version(header)
    return header, tensors


# What our own Lightning checkpoints pickle besides tensors and plain containers: the saved hyper-parameters
# (OmegaConf containers when a caller passed a DictConfig, whose metadata names builtin types) and
# callbacks' state (Path objects).
CHECKPOINT_GLOBALS = [
    collections.OrderedDict, collections.defaultdict, collections.Counter, pathlib.PosixPath, pathlib.WindowsPath,
    pathlib.PurePosixPath, pathlib.PureWindowsPath, enum.Enum, typing.Any, set, frozenset, slice, complex,
    dict, list, tuple, int, float, str, bool, bytes, type(None),  # OmegaConf metadata names these types
    omegaconf.DictConfig, omegaconf.ListConfig, base.ContainerMetadata, base.Metadata, nodes.AnyNode,
    nodes.BooleanNode, nodes.BytesNode, nodes.EnumNode, nodes.FloatNode, nodes.IntegerNode, nodes.PathNode,
    nodes.StringNode,
]


def checkpoint_globals() -> torch.serialization.safe_globals:
    """``torch.load(weights_only=True)`` inside this block also accepts the globals of our own checkpoints."""
    return torch.serialization.safe_globals(CHECKPOINT_GLOBALS)


def safe_torch_load(path: str | Path, map_location: str | torch.device | None = "cpu", mmap: bool | None = None) -> Any:
    """``torch.load(path, weights_only=True)`` with :data:`CHECKPOINT_GLOBALS`; refuses anything else, naming the file."""
    path = Path(path)
    try:
        with checkpoint_globals():
            return torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as exn:
        with path.open("rb") as handle:
            head = handle.read(16)
        if not (head[:4] == b"PK\x03\x04" or head[:1] == b"\x80"):  # torch.save: a zip, or a legacy pickle's opcode
            size = int.from_bytes(head[:8], "little") if len(head) >= 8 else 0
            if path.suffix.lower() == ".safetensors":
                raise ModelFileError(f"{path} is not a valid safetensors file: its first 8 bytes give a header of "
                                     f"{size:,} bytes in a file of {path.stat().st_size:,} bytes, and no JSON header "
                                     "follows (damaged, incomplete, or not a model file?)") from None
            raise ModelFileError(f"{path} is not a model file: it is neither safetensors nor a PyTorch checkpoint (it "
                                 f"starts with bytes {head[:8].hex(' ')}); give a student .safetensors file or a "
                                 "Lightning .ckpt") from None
        raise UnsafeFileError(
            f"refused to load {path}: it is a pickle that would construct Python objects outside crossmodal's "
            f"allow-list ({_first_line(exn)}). Nothing in it was run. crossmodal reads model files (.safetensors), "
            "Lightning checkpoints of its own modules and plain state dicts only; if you trust the file, convert it "
            "to a state dict or a model file yourself"
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError) as exn:
        raise ModelFileError(f"cannot read {path} as a PyTorch file: {_first_line(exn)}") from exn


def unknown_architecture(path: Path | str, kind: str, name: str, registered: list[str]) -> ModelFileError:
    """The error for a model file whose header names a network this version of crossmodal does not have."""
    return ModelFileError(
        f"{path}: its header names the {kind} {name!r}, which this version of crossmodal does not have "
        f"(it has: {', '.join(registered)}). Was the file written by a newer crossmodal or a fork? Upgrade "
        "crossmodal, or give a file of one of these networks"
    )


def _first_line(exn: BaseException) -> str:
    text = str(exn).strip()
    for line in text.splitlines():
        if "Unsupported global" in line or "unsupported" in line.lower():
            return line.strip()
    return text.splitlines()[0] if text else type(exn).__name__


def file_digest(path: str | Path, length: int | None = None) -> str:
    """sha256 hex digest of a file's bytes (the first ``length`` characters when given)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    text = digest.hexdigest()
    return text[:length] if length else text


def portable_paths(value: Any) -> Any:
    """``value`` (a header's provenance or info) with every absolute path made machine-free: relative
    to the crossmodal checkout, or to the working folder, when inside it; else only its last part.
    A shipped model file records where it came from without naming the machine that trained it."""
    if isinstance(value, dict):
        return {k: portable_paths(v) for k, v in value.items()}
    if isinstance(value, list):
        return [portable_paths(v) for v in value]
    if not isinstance(value, str) or not os.path.isabs(value) or "\n" in value:
        return value
    path = Path(os.path.normpath(value))
    for root in (Path(__file__).resolve().parents[2], Path.cwd().resolve()):
        if path.is_relative_to(root) and path != root:
            return path.relative_to(root).as_posix()
    return path.name or "."


def git_commit() -> str | None:
    """The commit of the crossmodal checkout this code runs from (None outside a git checkout)."""
    root = Path(__file__).resolve().parents[2]
    if not (root / ".git").exists():
        return None
    try:
        out = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def utc_now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def plain(value: Any) -> Any:
    """OmegaConf containers / tuples / paths / one-element tensors and numpy scalars -> plain JSON
    values (NaN -> None; anything else unknown -> its str)."""
    if omegaconf.OmegaConf.is_config(value):
        value = omegaconf.OmegaConf.to_container(value, resolve=True)
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if (isinstance(value, torch.Tensor) and value.numel() == 1) or (hasattr(value, "item") and getattr(value, "ndim", None) == 0):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)
