"""A face-and-voice timeline of a talking-face video: what the teacher sees on the face and what the
student hears in the voice, window by window, and where the two disagree.

    crossmodal timeline talk.mp4 [--out DIR] [--teacher FILE] [--ckpt FILE] [--window 4 --hop 2]
    timeline = video_timeline("talk.mp4", load_student(), load_teacher(precision="auto"))

What each window holds, the outputs and why memory stays bounded: experiments/timeline/README.md. The
windows are ``crossmodal predict``'s (:meth:`Student.predict_file`), in video time (the audio's ``av_offset``
added); a window without a face frame or without speech (:mod:`crossmodal.io.vad`) says so (``face: false`` /
``speech: false``) and has no teacher / student distribution. A truncated or damaged audio track is refused.
"""
from __future__ import annotations

import csv
import io
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from crossmodal import paper
from crossmodal.data.distill import REDUCTIONS, aggregate_logits, frames_in_window
from crossmodal.emotions import EMOTIONS
from crossmodal.inference.student import Student, WindowPrediction
from crossmodal.inference.timeline_result import Timeline, TimelineWindow
from crossmodal.inference.waveform import check_seconds
from crossmodal.io.audio import AudioError
from crossmodal.io.vad import DEFAULT_CHECK, package_version
from crossmodal.io.video import (
    FaceConfig,
    FaceDetector,
    FaceTracker,
    VideoError,
    crop_face,
    sample_frames,
    to_grey,
    video_duration,
)
from crossmodal.pipeline.extract import teacher_logits
from crossmodal.pipeline.pairs.alignment import av_offset, probe_video
from crossmodal.pipeline.pairs.discovery import VIDEO_EXTENSIONS
from crossmodal.utils import atomic
from crossmodal.utils.progress import progress

log = logging.getLogger(__name__)

TEACHER_BATCH = 32  # face crops per teacher forward pass
DEFAULT_THUMBNAILS = 10
SUMMARY_COLUMNS = ("video", "duration", "windows", "windows_with_face", "windows_with_speech", "voiced_fraction",
                   "frames_sampled", "frames_with_face", "teacher_top", "student_top", "top_match_rate", "mean_soft_ce",
                   "mean_kl", "error")


class WindowAggregator:
    """Frames in time order -> one teacher target per window, holding only the frames of open windows.

    ``spans`` are (start, end) seconds sorted by start (they may overlap). ``add(time, logits)``
    takes one sampled frame (``logits=None``: no face in it) and returns the windows it closes:
    ``(index, target or None, face_frames, sampled_frames)``, the target being
    :func:`aggregate_logits` over the window's face frames. ``finish()`` closes the rest.
    """

    def __init__(self, spans: Sequence[tuple[float, float]], reduce: str = "max", num_classes: int = len(EMOTIONS)) -> None:
        if reduce not in REDUCTIONS:
            raise ValueError(f"reduce={reduce!r} is not one of {REDUCTIONS}")
        self.spans = list(spans)
        self.reduce = reduce
        self.num_classes = num_classes
        self.next = 0  # the first window not yet closed
        self.times: list[float] = []
        self.logits: list[np.ndarray] = []  # NaN rows for frames without a face
        self.peak = 0  # the most frames ever held (a bound the tests check)

    @property
    def held(self) -> int:
        return len(self.times)

    def add(self, time: float, logits: np.ndarray | None) -> list[tuple[int, np.ndarray | None, int, int]]:
        closed = self._close(lambda end: end <= time)
        if self.next < len(self.spans):
            self.times.append(float(time))
            self.logits.append(np.full(self.num_classes, np.nan, np.float32) if logits is None else np.asarray(logits, np.float32))
            self.peak = max(self.peak, self.held)
        return closed

    def finish(self) -> list[tuple[int, np.ndarray | None, int, int]]:
        return self._close(lambda end: True)

    def _close(self, done) -> list[tuple[int, np.ndarray | None, int, int]]:
        out = []
        while self.next < len(self.spans) and done(self.spans[self.next][1]):
            start, end = self.spans[self.next]
            times = np.asarray(self.times, np.float64)
            logits = np.stack(self.logits) if self.logits else np.zeros((0, self.num_classes), np.float32)
            face = ~np.isnan(logits).any(axis=1) if len(logits) else np.zeros(0, bool)
            target = aggregate_logits(logits[face], times[face], start, end, self.reduce)
            inside = frames_in_window(times, start, end)
            out.append((self.next, target, int((inside & face).sum()), int(inside.sum())))
            self.next += 1
            self._drop()
        return out

    def _drop(self) -> None:
        """Forget the frames before the first open window (every later window starts later or equal)."""
        if self.next >= len(self.spans):
            self.times, self.logits = [], []
            return
        keep_from = self.spans[self.next][0]
        first = next((i for i, t in enumerate(self.times) if t >= keep_from), len(self.times))
        del self.times[:first], self.logits[:first]


class ThumbnailPicker:
    """At most ``count`` face crops, the one nearest each of ``count`` evenly spaced times."""

    def __init__(self, duration: float, count: int) -> None:
        self.targets = (np.arange(count) + 0.5) * (duration / max(count, 1)) if count > 0 else np.zeros(0)
        self.best: dict[int, tuple[float, float, np.ndarray]] = {}  # slot -> (distance, time, crop)

    def offer(self, time: float, crop: np.ndarray) -> None:
        if not len(self.targets):
            return
        slot = int(np.argmin(np.abs(self.targets - time)))
        distance = abs(float(self.targets[slot]) - time)
        if slot not in self.best or distance < self.best[slot][0]:
            self.best[slot] = (distance, float(time), crop.copy())

    def thumbnails(self) -> list[tuple[float, np.ndarray]]:
        return [(time, crop) for _d, time, crop in (self.best[k] for k in sorted(self.best))]


def video_timeline(
    path: str | Path,
    student: Student,
    teacher: torch.nn.Module,
    *,
    window: float = 4.0,
    hop: float = 2.0,
    reduce: str = "max",
    temperature: float = paper.TEMPERATURE,
    face_config: FaceConfig | None = None,
    detector: FaceDetector | None = None,
    thumbnails: int = DEFAULT_THUMBNAILS,
    teacher_path: str | Path | None = None,
) -> Timeline:
    """The face-and-voice timeline of one video (see the module's docstring)."""
    window, hop = check_seconds(window, "window"), check_seconds(hop, "hop")
    student.check_windows(window, hop)
    if reduce not in REDUCTIONS:
        raise ValueError(f"reduce={reduce!r} is not one of {REDUCTIONS}")
    if not temperature > 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"video not found: {path}")
    problem = probe_video(str(path), needs_audio=True)
    if problem:
        raise ValueError(f"{path}: {problem[1]} ({problem[0]}); the timeline needs a video with its audio track")
    cfg = face_config or FaceConfig()
    offset = av_offset(str(path))
    # cut as `crossmodal predict` cuts them; a file or window without speech is kept and flagged, not refused
    audio = student.predict_file(path, window=window, hop=hop, allow_non_speech=True)
    # no longer than one window: the whole file is the one window
    voice = audio.windows or [WindowPrediction(0.0, audio.duration, audio.whole, audio.voiced_fraction, audio.speech)]
    windows = [
        TimelineWindow(v.start + offset, v.end + offset, np.asarray(v.prediction.logits, np.float32),
                       speech=v.speech is not False, voiced_fraction=v.voiced_fraction)
        for v in voice
    ]
    spans = [(w.start, w.end) for w in windows]
    duration = max(video_duration(path), spans[-1][1])

    aggregator = WindowAggregator(spans, reduce, len(student.emotions))
    picker = ThumbnailPicker(duration, thumbnails)
    tracker = FaceTracker(cfg, detector)
    counts = {"sampled": 0, "face": 0}
    pending: list[tuple[float, np.ndarray | None]] = []

    def settle(closed: Iterable[tuple[int, np.ndarray | None, int, int]]) -> None:
        for index, target, face_frames, sampled in closed:
            windows[index].teacher_logits = target
            windows[index].face_frames, windows[index].sampled_frames = face_frames, sampled

    def flush() -> None:
        faces = [crop for _t, crop in pending if crop is not None]
        logits = iter(teacher_logits(teacher, np.stack([to_grey(c) if cfg.grey else c for c in faces]), TEACHER_BATCH)
                      if faces else [])
        for time, crop in pending:
            settle(aggregator.add(time, next(logits) if crop is not None else None))
        pending.clear()

    frames = sample_frames(path, cfg.frame_rate, grey=False)  # colour for the thumbnails; the teacher gets grey crops
    total = int(duration * cfg.frame_rate) + 1
    for time, image in progress(frames, desc=f"timeline {path.name}", unit="frame", total=total):
        counts["sampled"] += 1
        found = tracker.update(image)
        crop = None
        if found is not None:
            counts["face"] += 1
            crop = crop_face(image, found[1], cfg.margin, cfg.crop_size)
            picker.offer(time, crop)
        pending.append((time, crop))
        if len(pending) >= TEACHER_BATCH:
            flush()
    flush()
    settle(aggregator.finish())
    settings = {
        "window": window, "hop": hop, "reduce": reduce, "temperature": temperature, "frame_rate": cfg.frame_rate,
        "crop_size": cfg.crop_size, "margin": cfg.margin, "grey": cfg.grey, "av_offset": round(offset, 6),
        "audio_seconds": round(audio.duration, 3),
        "voiced_fraction": None if audio.voiced_fraction is None else round(audio.voiced_fraction, 4),
        "speech_check": {"detector": f"silero-vad {package_version()}", "voiced_threshold": DEFAULT_CHECK.threshold,
                         "min_voiced_fraction": DEFAULT_CHECK.min_fraction},
        "student": str(student.info.get("path", "")), "teacher": str(teacher_path or ""),
        "teacher_precision": getattr(teacher, "precision", "fp32"),
    }
    return Timeline(str(path), duration, windows, settings, tuple(student.emotions), picker.thumbnails(), counts["sampled"], counts["face"])


def expand_videos(paths: Iterable[str | Path]) -> list[tuple[Path, str]]:
    """(video, output name) for each file given and each video inside each folder given (sorted)."""
    found: list[tuple[Path, str]] = []
    for raw in paths:
        path = Path(raw).expanduser()
        if path.is_dir():
            videos = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in VIDEO_EXTENSIONS)
            if not videos:
                raise FileNotFoundError(f"no video files ({', '.join(VIDEO_EXTENSIONS)}) in folder {path}")
            found += [(v, "__".join(v.relative_to(path).with_suffix("").parts)) for v in videos]
        else:
            found.append((path, path.stem))
    return found


def write_timeline(timeline: Timeline, out_dir: str | Path, name: str, plot: bool = True) -> dict[str, Path]:
    """``<name>.timeline.json``, ``.csv`` and (``plot``) ``.png`` in ``out_dir``, each written atomically."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    files = {"json": out_dir / f"{name}.timeline.json", "csv": out_dir / f"{name}.timeline.csv"}
    atomic.write_json(files["json"], timeline.as_dict(), sort_keys=False)
    atomic.write_text(files["csv"], _csv(timeline.rows()))
    if plot:  # matplotlib only when a picture is wanted
        from crossmodal.inference.timeline_plot import save_timeline_png

        files["png"] = save_timeline_png(timeline, out_dir / f"{name}.timeline.png")
    return files


def _csv(rows: list[dict[str, Any]]) -> str:
    buffer = io.StringIO()
    if rows:
        writer = csv.DictWriter(buffer, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows({k: ("" if v is None else v) for k, v in row.items()} for row in rows)
    return buffer.getvalue()


@dataclass
class TimelineRun:
    outputs: list[dict[str, Path]] = field(default_factory=list)
    summary: list[dict[str, Any]] = field(default_factory=list)
    errors: list[tuple[str, str]] = field(default_factory=list)
    summary_files: dict[str, Path] = field(default_factory=dict)


def run_timelines(
    paths: Sequence[str | Path], student: Student, teacher: torch.nn.Module, out: str | Path | None = None, *,
    plot: bool = True, **options: Any,
) -> TimelineRun:
    """Timelines of every video given (files, or folders of videos); a failure is recorded and the rest go on.

    Outputs go to ``out`` (default: the current folder, as ``crossmodal predict`` and other tools write;
    never into the user's data folder unasked). When a folder is given, or several videos,
    ``summary.csv`` and ``summary.json`` (one row per video) are written too.
    """
    run = TimelineRun()
    detector = options.pop("detector", None) or FaceDetector(options.get("face_config") or FaceConfig())
    videos = expand_videos(paths)
    target = Path(out) if out is not None else Path.cwd()
    for video, name in videos:
        try:
            timeline = video_timeline(video, student, teacher, detector=detector, **options)
            run.outputs.append(write_timeline(timeline, target, name, plot=plot))
            run.summary.append(timeline.summary())
        except (AudioError, VideoError, ValueError, OSError) as exn:  # a bad video: report it, go on with the rest
            message = str(exn) if str(video) in str(exn) else f"{video}: {exn}"
            log.debug("timeline failed", exc_info=True)
            run.errors.append((str(video), message))
            run.summary.append({"video": str(video), "error": message})
    if len(videos) > 1 or any(Path(p).expanduser().is_dir() for p in paths):
        target.mkdir(parents=True, exist_ok=True)
        full = [{column: row.get(column) for column in SUMMARY_COLUMNS} for row in run.summary]
        run.summary_files = {"json": target / "summary.json", "csv": target / "summary.csv"}
        atomic.write_json(run.summary_files["json"], {"videos": full}, sort_keys=False)
        atomic.write_text(run.summary_files["csv"], _csv(full))
    return run
