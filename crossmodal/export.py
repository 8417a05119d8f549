"""Export a student, front-end included, as TorchScript or ONNX (``crossmodal export``): raw 16 kHz waveform
in, logits and embedding out.

Inputs: ``waveform`` float32 ``[batch, samples]`` at 16 kHz, mono, any length of at least
``min_samples`` (stored in the file's metadata; 0.67 s for vggvox). Outputs: ``logits [batch, 8]``
(FER+ order, crossmodal.emotions.EMOTIONS) and ``embedding [batch, D]``. Shorter clips must be
zero-padded by the caller (the PyTorch student pads its feature maps instead, so the two only
agree from ``min_samples`` on).

TorchScript is a trace of the PyTorch student; ONNX goes through :class:`OnnxFrontend`. Both files are
checked against the PyTorch model before the export reports success.
"""
from __future__ import annotations

import json
import logging
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from crossmodal.emotions import EMOTIONS
from crossmodal.inference import Student, load_student
from crossmodal.io.audio import SAMPLE_RATE
from crossmodal.models.frontend import normalize_per_bin
from crossmodal.models.modelfile import portable_paths
from crossmodal.utils.atomic import atomic_path

log = logging.getLogger(__name__)

FORMATS = ("torchscript", "onnx")
SUFFIX = {"torchscript": ".ts.pt", "onnx": ".onnx"}
ONNX_OPSET = 17  # the first opset with an STFT operator
TOLERANCE = 1e-3  # the largest |exported - PyTorch| on logits and embeddings an export may show


class ExportError(RuntimeError):
    """The export failed or the exported model disagrees with the PyTorch one."""


@dataclass
class ExportResult:
    path: Path
    format: str
    min_samples: int
    max_abs_diff: float  # exported vs PyTorch on the check signal

    def describe(self) -> str:
        return (
            f"wrote {self.format} student to {self.path} (input: waveform [batch, samples] float32 at {SAMPLE_RATE} Hz, "
            f">= {self.min_samples} samples; outputs: logits [batch, {len(EMOTIONS)}], embedding; "
            f"max |exported - PyTorch| = {self.max_abs_diff:.2e})"
        )


class OnnxFrontend(nn.Module):
    """SpeechFrontend's eval-mode computation (no dither, no SpecAugment) for whole, unpadded waveforms, in
    ONNX-exportable operators. When SpeechFrontend.forward changes, export_student's check (and
    tests/test_export.py) fails until this class follows."""

    def __init__(self, frontend: nn.Module) -> None:
        super().__init__()
        spectrogram = frontend.spectrogram
        self.n_fft = int(spectrogram.n_fft)
        self.hop_length = int(spectrogram.hop_length)
        self.onesided = bool(spectrogram.onesided)
        self.power = float(spectrogram.power)
        self.remove_dc = bool(frontend.remove_dc)
        self.preemphasis = float(frontend.preemphasis or 0.0)
        self.normalize = bool(frontend.normalize)
        self.eps = float(frontend.eps)
        self.win_length = int(frontend.win_length)
        # Like SpeechFrontend: pad (n_fft - win) // 2 on both sides so that frame k covers samples
        # [k*hop, k*hop + win) once torch.stft centres the window in its n_fft frame.
        self.side = (self.n_fft - self.win_length) // 2
        self.register_buffer("window", spectrogram.window.detach().clone())
        mel = getattr(frontend, "mel", None)
        self.register_buffer("mel_fb", mel.fb.detach().clone() if mel is not None else torch.zeros(0))

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        if self.remove_dc:
            wave = wave - wave.mean(dim=1, keepdim=True)
        if self.preemphasis:
            wave = torch.cat([wave[:, :1], wave[:, 1:] - self.preemphasis * wave[:, :-1]], dim=1)
        wave = nn.functional.pad(wave, (self.side, self.side))
        parts = torch.stft(wave, self.n_fft, self.hop_length, self.win_length, window=self.window, center=False,
                           onesided=self.onesided, return_complex=False)  # [B, F, T, 2]
        power = parts[..., 0] ** 2 + parts[..., 1] ** 2
        spec = torch.sqrt(power) if self.power == 1.0 else power
        if self.mel_fb.numel():
            spec = torch.log(torch.matmul(spec.transpose(1, 2), self.mel_fb).transpose(1, 2) + 1e-6)
        if self.normalize:
            spec = normalize_per_bin(spec, torch.ones_like(spec[:, :1, :]), self.eps)
        return spec.unsqueeze(1)  # [B, 1, F, T]


class _Traced(nn.Module):
    """``waveform -> (logits, embedding)`` with one tensor in, for tracing."""

    def __init__(self, student: Student, onnx_frontend: bool) -> None:
        super().__init__()
        self.student = student
        self.frontend = OnnxFrontend(student.frontend) if onnx_frontend else None

    def forward(self, waveform: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.frontend is None:
            return self.student(waveform)
        return self.student.net(self.frontend(waveform))


def metadata(student: Student, fmt: str) -> dict[str, str]:
    info = student.info
    return {
        "crossmodal.format": fmt,
        "crossmodal.sample_rate": str(SAMPLE_RATE),
        "crossmodal.min_samples": str(student.network_min_samples),
        "crossmodal.emotions": json.dumps(list(student.emotions)),
        "crossmodal.net_name": str(info.get("net_name", "")),
        "crossmodal.net_kwargs": json.dumps(info.get("net_kwargs", {})),
        "crossmodal.frontend": json.dumps(info.get("frontend", {})),
        "crossmodal.source": portable_paths(str(info.get("path", ""))),  # the student file, no machine path
    }


def check_signal(seconds: float = 3.0, batch: int = 2, seed: int = 0) -> torch.Tensor:
    """A deterministic speech-like test input: harmonic chirps with an envelope, plus a little noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    waves = []
    for i in range(batch):
        f0 = 110 + 40 * i + 30 * np.sin(2 * np.pi * 0.7 * t)
        phase = 2 * np.pi * np.cumsum(f0) / SAMPLE_RATE
        wave = sum(np.sin(k * phase) / k for k in range(1, 8)) * (0.5 + 0.5 * np.sin(2 * np.pi * 3 * t) ** 2)
        waves.append(0.2 * wave + 0.01 * rng.standard_normal(len(t)))
    return torch.tensor(np.stack(waves), dtype=torch.float32)


def export_student(
    student: Student | str | Path | None,
    fmt: str,
    out: str | Path | None = None,
    check_waves: list[np.ndarray] | None = None,
) -> ExportResult:
    """Write ``student`` (a Student, a student file / checkpoint path, or None for the default) as
    ``fmt``, then check the file against the PyTorch model on ``check_waves`` (16 kHz) or a synthetic
    signal; raise :class:`ExportError` if they disagree."""
    if fmt not in FORMATS:
        raise ExportError(f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}")
    if not isinstance(student, Student):
        source = student
        student = load_student(student)
        default_name = Path(source).name.split(".")[0] if source else "student"
    else:
        default_name = Path(student.info.get("path", "student")).name.split(".")[0]
    student = student.cpu().eval()
    out = Path(out) if out else Path(default_name + SUFFIX[fmt])
    out.parent.mkdir(parents=True, exist_ok=True)
    example = check_signal(3.0, batch=1)
    wrapper = _Traced(student, onnx_frontend=(fmt == "onnx")).eval()
    with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
        warnings.simplefilter("ignore")  # tracer warnings about shape-dependent Python branches
        if fmt == "torchscript":
            traced = torch.jit.trace(wrapper, (example,), check_trace=False)
            extra = {"crossmodal.json": json.dumps(metadata(student, fmt))}
            with atomic_path(out) as tmp:
                torch.jit.save(traced, str(tmp), _extra_files=extra)
        else:
            _export_onnx(wrapper, example, out, metadata(student, fmt))
    student.eval()  # the exporters may flip the train flag back on the wrapper's children
    waves = [torch.from_numpy(np.asarray(w, dtype=np.float32))[None] for w in check_waves] if check_waves else [check_signal(3.0, 2)]
    run = load_exported(out)
    diff = 0.0
    with torch.no_grad():
        for wave in waves:
            expected = student(wave)
            got = run(wave.numpy())
            for a, b in zip(expected, got):
                diff = max(diff, float(np.max(np.abs(a.numpy() - b))))
    if not diff <= TOLERANCE:
        raise ExportError(f"exported {fmt} model at {out} disagrees with the PyTorch student: max |difference| {diff:.3g} > {TOLERANCE}")
    return ExportResult(out, fmt, student.network_min_samples, diff)


def _export_onnx(wrapper: nn.Module, example: torch.Tensor, out: Path, meta: dict[str, str]) -> None:
    try:
        import onnx
    except ImportError as exn:
        raise ExportError("ONNX export needs the `onnx` package: pip install 'crossmodal[export]'") from exn
    with atomic_path(out) as tmp:
        try:
            # The TorchScript-based exporter (dynamo=False): the dynamo one needs onnxscript, which the
            # `export` extra does not install, and this graph (STFT + convs) exports fine without it.
            torch.onnx.export(wrapper, (example,), str(tmp), dynamo=False, input_names=["waveform"],
                              output_names=["logits", "embedding"], opset_version=ONNX_OPSET,
                              dynamic_axes={"waveform": {0: "batch", 1: "samples"}, "logits": {0: "batch"},
                                            "embedding": {0: "batch"}})
        except RuntimeError as exn:  # torch.onnx's OnnxExporterError and the tracer's errors
            raise ExportError(f"ONNX export failed: {exn}. Export to TorchScript instead (--format torchscript), "
                              "or report the failing operator") from exn
        model = onnx.load(str(tmp))
        for key, value in meta.items():
            entry = model.metadata_props.add()
            entry.key, entry.value = key, value
        onnx.save(model, str(tmp))


def load_exported(path: str | Path) -> Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """A function ``waveform [B, samples] float32 at 16 kHz -> (logits, embedding)`` running an exported file."""
    path = Path(path)
    if path.suffix == ".onnx":
        try:
            import onnxruntime as ort
        except ImportError as exn:
            raise ExportError("running an ONNX student needs onnxruntime: pip install 'crossmodal[export]'") from exn
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])

        def run_onnx(wave: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            logits, embedding = session.run(["logits", "embedding"], {"waveform": np.ascontiguousarray(wave, dtype=np.float32)})
            return logits, embedding

        return run_onnx
    module = torch.jit.load(str(path), map_location="cpu").eval()

    def run_torchscript(wave: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        with torch.no_grad():
            logits, embedding = module(torch.from_numpy(np.ascontiguousarray(wave, dtype=np.float32)))
        return logits.numpy(), embedding.numpy()

    return run_torchscript


def exported_metadata(path: str | Path) -> dict[str, Any]:
    """The crossmodal.* metadata stored in an exported file."""
    path = Path(path)
    if path.suffix == ".onnx":
        import onnx

        return {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    extra = {"crossmodal.json": ""}
    torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
    return json.loads(extra["crossmodal.json"])
