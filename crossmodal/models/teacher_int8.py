"""The face teacher in int8 on the CPU (``teacher_precision``): ONNX Runtime static quantisation, built once.

    teacher = load_teacher(path, precision="auto")   # int8 on a CPU, fp32 on a GPU (crossmodal.models.loading)

The batch-norm-folded backbone, exported to ONNX and quantised as :data:`SCHEME` says (why this scheme, its
speed and its agreement with fp32: experiments/perf/README.md). Training and gradients always run fp32.

The int8 form is an ONNX file (loading it runs no code) whose metadata holds its fingerprint: the teacher file's
sha256, the calibration faces' sha256, :data:`SCHEME` and the onnxruntime version. It is used only when that is
the fingerprint these inputs give: ``crossmodal/assets/teacher_cpu.int8.onnx`` (the shipped teacher's), else
``$CROSSMODAL_CACHE_DIR`` (default ``~/.cache/crossmodal``) ``/teacher_int8/<teacher>-<digest12>.onnx``, built
on first use and written atomically; a file there of other inputs is built again, never used.
"""
from __future__ import annotations

import copy
import functools
import hashlib
import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from crossmodal.models.modelfile import file_digest
from crossmodal.utils.atomic import atomic_path

log = logging.getLogger(__name__)

ASSETS = Path(__file__).resolve().parents[1] / "assets"
SHIPPED_INT8 = ASSETS / "teacher_cpu.int8.onnx"
CALIBRATION = ASSETS / "demo" / "ferplus" / "FER2013Valid"  # every install has these faces
HELD_OUT = ASSETS / "demo" / "ferplus" / "FER2013Test"  # the build's agreement check
CACHE_ENV = "CROSSMODAL_CACHE_DIR"
PRECISIONS = ("auto", "int8", "fp32")
SCHEME = {"version": 1, "format": "QDQ", "activations": "QUInt8", "weights": "QInt8", "per_channel": True,
          "reduce_range": True, "calibration": "MinMax", "fp32_nodes": "first and last Conv/Gemm/MatMul", "opset": 17}
METADATA_KEY = "crossmodal_fingerprint"
MIN_AGREEMENT = 0.99  # a build agreeing less with fp32 on the held-out demo faces warns


class StaleInt8(ValueError):
    """An int8 file built from other inputs than the ones asked for."""


def resolve_precision(precision: str | None, device: str | torch.device = "cpu", key: str = "teacher_precision") -> str:
    """``int8`` or ``fp32`` for a setting (``auto``/None: int8 on a CPU, fp32 elsewhere) on ``device``."""
    precision = "auto" if precision is None else precision
    if precision not in PRECISIONS:
        raise ValueError(f"{key}={precision!r} is not a teacher precision: use auto (int8 on a CPU, fp32 on a GPU), "
                         "int8 (ONNX Runtime, CPU only) or fp32")
    on_cpu = torch.device(device).type == "cpu"
    if precision == "int8" and not on_cpu:
        raise ValueError(f"{key}=int8 runs on the CPU (ONNX Runtime), not on {device}: use {key}=fp32 or auto")
    return "int8" if precision == "auto" and on_cpu else "fp32" if precision == "auto" else precision


def load_faces(folder: Path) -> np.ndarray:
    """uint8 [N, 48, 48] grey faces: every PNG of ``folder``, in name order."""
    from PIL import Image

    return np.stack([np.asarray(Image.open(path).convert("L")) for path in sorted(folder.glob("*.png"))])


@functools.lru_cache(maxsize=1)
def _calibration() -> tuple[np.ndarray, str]:
    faces = load_faces(CALIBRATION)
    return faces, hashlib.sha256(faces.tobytes()).hexdigest()


def int8_fingerprint(teacher_path: str | Path) -> dict[str, Any]:
    """What the int8 form of the teacher file ``teacher_path`` is built from, with its ``digest``."""
    import onnxruntime

    body = {"teacher_sha256": file_digest(teacher_path), "calibration_sha256": _calibration()[1], "scheme": SCHEME,
            "onnxruntime": onnxruntime.__version__}
    return {**body, "digest": hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()}


class Int8Form:
    """The int8 teacher as ONNX Runtime runs it: ``form(x, flip)`` -> float32 logits, x preprocessed [N,C,H,W].
    Pickles as its file and fingerprint (the session is opened again, and the file checked again, on first use)."""

    def __init__(self, path: Path, fingerprint: dict[str, Any]) -> None:
        self.path, self.fingerprint = Path(path), fingerprint
        self.session = open_int8(self.path, fingerprint)

    def __getstate__(self) -> dict[str, Any]:
        return {"path": self.path, "fingerprint": self.fingerprint}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state, session=None)

    def __call__(self, x: torch.Tensor, flip: bool) -> torch.Tensor:
        if self.session is None:
            self.session = open_int8(self.path, self.fingerprint)
        batch = np.ascontiguousarray(x.detach().float().cpu().numpy())
        if flip:
            batch = np.concatenate([batch, batch[..., ::-1]])
        logits = self.session.run(None, {"x": batch})[0]
        if flip:
            logits = (logits[: len(x)] + logits[len(x):]) / 2
        return torch.from_numpy(logits).to(x.device)


def open_int8(path: Path, fingerprint: dict[str, Any]):
    """An ONNX Runtime session of the int8 file ``path`` (intra-op threads: torch's), refused with
    :class:`StaleInt8` unless its recorded fingerprint is ``fingerprint``."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = torch.get_num_threads(), 1
    try:
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exn:  # noqa: BLE001 - onnxruntime's errors for an unreadable file have no common base
        raise StaleInt8(f"{path} is not a readable ONNX file ({type(exn).__name__}: {exn})") from exn
    stored = json.loads(session.get_modelmeta().custom_metadata_map.get(METADATA_KEY) or "{}")
    if stored.get("digest") != fingerprint["digest"]:
        differ = sorted(k for k in fingerprint if k != "digest" and stored.get(k) != fingerprint[k]) or ["its fingerprint"]
        raise StaleInt8(f"{path} is the int8 form of other inputs than this teacher's (differs in {', '.join(differ)})")
    return session


def int8_form(teacher: Any, teacher_path: str | Path) -> Int8Form:
    """The int8 form of ``teacher`` (a FaceTeacher loaded from ``teacher_path``): the shipped file or the cached
    one when their fingerprint matches, else built into the cache now."""
    fingerprint = int8_fingerprint(teacher_path)
    cache = Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "crossmodal").expanduser()
    cached = cache / "teacher_int8" / f"{Path(teacher_path).stem}-{fingerprint['digest'][:12]}.onnx"
    for path in (SHIPPED_INT8, cached):
        if path.is_file():
            try:
                return Int8Form(path, fingerprint)
            except StaleInt8 as exn:
                if path == cached:
                    log.warning("%s; building it again", exn)
    build_int8(teacher, cached, fingerprint)
    return Int8Form(cached, fingerprint)


def build_int8(teacher: Any, out: Path, fingerprint: dict[str, Any]) -> Path:
    """Quantise ``teacher`` as :data:`SCHEME` says into ``out`` (atomically), its fingerprint in the metadata; logs
    its argmax agreement with fp32 on the held-out demo faces (a warning under :data:`MIN_AGREEMENT`)."""
    import onnx
    from onnxruntime import quantization as ortq

    log.info("building the int8 form of teacher %s (once; ~20 s) into %s", teacher.name, out)
    net = copy.deepcopy(teacher.inference_backbone()).to(memory_format=torch.contiguous_format)
    with torch.no_grad():
        calib = teacher.spec(torch.from_numpy(_calibration()[0])).numpy()
    calib = np.concatenate([calib, calib[..., ::-1]]).astype(np.float32)

    class Reader(ortq.CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter([{"x": np.ascontiguousarray(calib[i : i + 64])} for i in range(0, len(calib), 64)])

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.batches, None)

    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent) as work:
        fp32, int8 = Path(work) / "fp32.onnx", Path(work) / "int8.onnx"
        torch.onnx.export(net, (torch.from_numpy(calib[:2]),), str(fp32), dynamo=False, input_names=["x"],
                          output_names=["logits"], dynamic_axes={"x": {0: "batch"}, "logits": {0: "batch"}},
                          opset_version=SCHEME["opset"])
        compute = [node.name for node in onnx.load(str(fp32)).graph.node if node.op_type in ("Conv", "Gemm", "MatMul")]
        ortq.quantize_static(str(fp32), str(int8), Reader(), quant_format=ortq.QuantFormat.QDQ, per_channel=True,
                             reduce_range=True, activation_type=ortq.QuantType.QUInt8, weight_type=ortq.QuantType.QInt8,
                             calibrate_method=ortq.CalibrationMethod.MinMax, nodes_to_exclude=[compute[0], compute[-1]])
        model = onnx.load(str(int8))
        onnx.helper.set_model_props(model, {METADATA_KEY: json.dumps(fingerprint, sort_keys=True)})
        with atomic_path(out) as tmp:
            onnx.save(model, str(tmp))
    held_out = teacher.spec(torch.from_numpy(load_faces(HELD_OUT)))
    with torch.no_grad():
        agreement = float((Int8Form(out, fingerprint)(held_out, teacher.tta_flip).argmax(1)
                           == teacher.eval()(held_out).argmax(1)).float().mean())
    (log.warning if agreement < MIN_AGREEMENT else log.info)(
        "int8 teacher %s: argmax agreement with fp32 %.2f%% on the %d held-out demo faces%s", out.name, 100 * agreement,
        len(held_out), "; if that is too low for you, use teacher_precision=fp32" if agreement < MIN_AGREEMENT else "")
    return out
