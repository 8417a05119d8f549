"""task=predict (and `crossmodal predict`): the student's emotion distribution for audio and video files.

    crossmodal predict clip.wav talk.mp4 [--ckpt student.safetensors] [--json] [--window 4 --hop 2] [--allow-non-speech]
    python -m crossmodal.run task=predict prep=predict prep.source=clip.wav [ckpt_path=student.safetensors]

:meth:`crossmodal.inference.Student.predict_file` does the work, file by file; a file that cannot be judged
is reported and skipped, the others are still predicted. What is refused and why: README.md ("External
benchmarks, prediction, export").
"""
from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig

from crossmodal.config.checks import ConfigError
from crossmodal.inference import FilePrediction, Student, check_seconds, load_student
from crossmodal.io.audio import AudioError
from crossmodal.io.corpora import AUDIO_EXTENSIONS, VIDEO_EXTENSIONS
from crossmodal.io.vad import DEFAULT_CHECK, FRAME_SECONDS, SpeechCheck, package_version

log = logging.getLogger(__name__)

DEFAULT_WINDOW = 4.0  # seconds: about the student's training window (4.024 s in the paper)
DEFAULT_HOP = 2.0


@dataclass
class PredictConfig:
    """The ``prep`` node of task=predict (conf/prep/predict.yaml): which files, which windows."""

    source: Any  # a file, a folder, or a list of them
    window: float | None = DEFAULT_WINDOW  # seconds per window for longer files (null or 0: the whole file only)
    hop: float | None = DEFAULT_HOP
    allow_non_speech: bool = False  # answer files without speech (flagged "speech": false) instead of refusing them


@dataclass
class PredictRun:
    results: list[FilePrediction] = field(default_factory=list)
    errors: list[tuple[str, str]] = field(default_factory=list)  # (path, message)


def expand_inputs(paths: Iterable[str | Path]) -> list[Path]:
    """Files as given; folders expand to the audio/video files inside them (sorted)."""
    files: list[Path] = []
    for raw in paths:
        path = Path(raw).expanduser()
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_EXTENSIONS | VIDEO_EXTENSIONS)
            if not found:
                log.warning("no audio or video files in folder %s", path)
            files += found
        else:
            files.append(path)
    return files


def predict_files(
    student: Student, paths: Sequence[str | Path], window: float | None = DEFAULT_WINDOW, hop: float | None = DEFAULT_HOP, *,
    allow_non_speech: bool = False, speech: SpeechCheck | None = DEFAULT_CHECK, names: tuple[str, str] = ("--window", "--hop"),
) -> PredictRun:
    """Predict every file; a failure is recorded with its reason and the loop carries on.

    Window and hop are checked once, before any file (a ValueError naming ``names``). A file without
    speech is a failure ("no speech found in FILE: N % of frames voiced") unless ``allow_non_speech``;
    ``speech=None`` skips the detector."""
    student.check_windows(window, hop, names)
    run = PredictRun()
    for path in expand_inputs(paths):
        try:
            run.results.append(student.predict_file(path, window=window, hop=hop, speech=speech, allow_non_speech=allow_non_speech, names=names))
        except (AudioError, ValueError, OSError) as exn:  # a bad file (unreadable, silent, no speech, ...): report it, go on
            message = str(exn) if str(path) in str(exn) else f"{path}: {exn}"
            run.errors.append((str(path), message))
    return run


def format_table(result: FilePrediction, emotions: Sequence[str]) -> str:
    """A fixed-width table: the whole file, then one row per window; the voiced share of each when
    speech was checked, and "no speech" where the detector found none."""
    checked = result.voiced_fraction is not None
    head = f"{'':>15}" + "".join(f"{name[:9]:>10}" for name in emotions) + "   top" + ("        voiced" if checked else "")

    def line(label: str, prediction, fraction: float | None, speech: bool | None, judged: bool = True) -> str:
        cells = "".join(f"{p:>10.3f}" for p in prediction.probabilities) + f"   {prediction.top:<10}" if judged else f"{'(no speech: not judged)':>{10 * len(emotions)}}   {'':<10}"
        voiced = "" if fraction is None else f"{100 * fraction:5.0f} %" + ("  no speech" if speech is False else "")
        return (f"{label:>15}" + cells + voiced).rstrip()

    title = f"{result.path}  ({result.duration:.2f} s" + (", no speech found: answered as asked" if result.speech is False else "") + ")"
    rows = [title, head, line("whole file", result.whole, result.voiced_fraction, result.speech)]
    for window in result.windows:
        rows.append(line(f"{window.start:6.2f}-{window.end:6.2f} s", window.prediction, window.voiced_fraction, window.speech, result.judged(window)))
    return "\n".join(rows)


def as_json(run: PredictRun, student: Student, embeddings: bool = True, speech: SpeechCheck | None = DEFAULT_CHECK) -> str:
    payload: dict[str, Any] = {
        "student": student.info.get("path", ""),
        "emotions": list(student.emotions),
        "speech_check": None if speech is None else {
            "detector": f"silero-vad {package_version()}", "frame_seconds": FRAME_SECONDS,
            "voiced_threshold": speech.threshold, "min_voiced_fraction": speech.min_fraction,
        },
        "files": [result.as_dict(embeddings=embeddings) for result in run.results],
        "errors": [{"path": path, "error": message} for path, message in run.errors],
    }
    return json.dumps(payload, indent=1)


def run(cfg: DictConfig, ctx) -> dict[str, Any]:
    node = cfg.get("prep") or cfg.get("data")  # a `data` node: how callers of this function spelt it before
    if not node or not node.get("source") or (node.get("_target_") or "PredictConfig").rpartition(".")[2] != "PredictConfig":
        raise ConfigError("task=predict needs files: prep=predict prep.source=path/to/clip.wav (a file, a folder, or a list [a.wav,b.mp4])")
    sources = list(node.source) if isinstance(node.source, (list, tuple, ListConfig)) else [node.source]
    window = node.get("window", DEFAULT_WINDOW)
    hop = node.get("hop", DEFAULT_HOP)
    try:  # also checked at composition (crossmodal.config.checks); here for direct callers
        window = None if window in (None, 0) else check_seconds(window, "prep.window")
        hop = None if hop is None else check_seconds(hop, "prep.hop")
    except ValueError as exn:
        raise ConfigError(f"{exn} (prep.window=0 or null: the whole file only)") from None
    student = load_student(cfg.get("ckpt_path"))
    try:
        student.check_windows(window, hop, ("prep.window", "prep.hop"))
    except ValueError as exn:
        raise ConfigError(str(exn)) from None
    allow = bool(node.get("allow_non_speech", False))
    result = predict_files(student, sources, window=window, hop=hop, allow_non_speech=allow, names=("prep.window", "prep.hop"))
    out = Path(ctx.run_dir)
    (out / "predictions.json").write_text(as_json(result, student))
    (out / "predictions.md").write_text("\n\n".join(f"```\n{format_table(r, student.emotions)}\n```" for r in result.results) + "\n")
    ctx.log_table(
        "predict/files",
        ["path", "duration_s", "top", *student.emotions],
        [[r.path, round(r.duration, 2), r.whole.top, *(round(float(p), 4) for p in r.whole.probabilities)] for r in result.results],
    )
    for _path, message in result.errors:
        log.error("%s", message)
    log.info("predicted %d files (%d failed); %s", len(result.results), len(result.errors), out / "predictions.md")
    if result.errors and cfg.get("strict", False):
        raise RuntimeError(f"{len(result.errors)} files failed (strict=true); first: {result.errors[0][1]}")
    return {"predict/files": len(result.results), "predict/failed": len(result.errors)}
