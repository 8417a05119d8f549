"""One source item -> its face tracks -> segment samples: frames from a video (centre crop, or
faces detected and tracked by :mod:`crossmodal.io.video`) or from a folder of face frames,
cut into equal segments of each track (:func:`segment_bounds`, :func:`track_segments`)."""
from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from crossmodal.io.audio import AudioError, load_audio
from crossmodal.io.video import (
    FaceConfig,
    FaceDetector,
    VideoError,
    center_crop,
    centred_face_crops,
    detect_face_crops,
    resize,
)
from crossmodal.pipeline.pairs.alignment import (
    align_audio_to_video,
    av_offset,
    frame_index_times,
    probe_video,
    sample_on_grid,
)
from crossmodal.pipeline.pairs.codec import make_pair_sample, segment_meta
from crossmodal.pipeline.pairs.config import PairSettings
from crossmodal.pipeline.pairs.discovery import IMAGE_EXTENSIONS, PairItem
from crossmodal.pipeline.shards import SkipLog

log = logging.getLogger(__name__)


@dataclass
class BuildStats:
    """Frame-level counts of one shard (skips of whole items go to the SkipLog)."""

    segments: int = 0
    frames: int = 0
    frames_sampled: int = 0
    frames_no_face: int = 0
    frames_corrupt: int = 0
    frames_unused: int = 0  # face frames outside any kept segment (short tails, too few frames)

    def add(self, counts: dict[str, int]) -> None:
        for key, value in counts.items():
            if hasattr(self, key):
                setattr(self, key, getattr(self, key) + int(value))


def segment_bounds(start: float, end: float, segment_seconds: float) -> list[tuple[float, float]]:
    """Cut [start, end) into the fewest equal pieces no longer than ``segment_seconds``."""
    span = end - start
    n = max(1, math.ceil(span / segment_seconds - 1e-9))
    length = span / n
    return [(start + i * length, start + (i + 1) * length) for i in range(n)]


def track_segments(
    item: PairItem,
    split: str,
    wave: np.ndarray,
    frames: list[np.ndarray],
    times: np.ndarray,
    tracks: Sequence[int],
    cfg: PairSettings,
    skips: SkipLog,
    stats: BuildStats,
) -> Iterator[dict[str, Any]]:
    """Cut the face tracks of one item into segments and yield their pair samples."""
    sr = cfg.sample_rate
    audio_end = len(wave) / sr
    frame_period = 1.0 / cfg.frame_rate
    tracks = np.asarray(tracks)
    segment_index = 0
    kept_any = False
    reasons: list[str] = []
    for track_id in sorted(set(tracks.tolist())):
        idx = np.flatnonzero(tracks == track_id)
        track_times = times[idx]
        start = float(track_times[0])
        end = min(float(track_times[-1]) + frame_period, audio_end)
        if end - start < cfg.min_segment_seconds:
            reasons.append(f"track {track_id}: {max(0.0, end - start):.2f} s of face and audio < min_segment_seconds={cfg.min_segment_seconds}")
            stats.frames_unused += len(idx)
            continue
        for seg_start, seg_end in segment_bounds(start, end, cfg.segment_seconds):
            inside = idx[(times[idx] >= seg_start - 1e-6) & (times[idx] < seg_end - 1e-6)]
            if len(inside) < cfg.min_frames:
                reasons.append(f"track {track_id} segment at {seg_start:.2f} s: {len(inside)} face frames < min_frames={cfg.min_frames}")
                stats.frames_unused += len(inside)
                continue
            a, b = int(round(seg_start * sr)), int(round(seg_end * sr))
            segment_wave = wave[a:b]
            meta = segment_meta(item.identity, item.video, item.utterance, int(track_id), segment_index, split, seg_start,
                                cfg.frame_rate, source=item.media)
            if item.audio:
                meta["audio_source"] = item.audio
            if item.frames_dir:
                meta["frames_source"] = item.frames_dir
            key = f"{item.key}_s{segment_index:03d}"
            segment_index += 1
            stats.segments += 1
            stats.frames += len(inside)
            kept_any = True
            yield make_pair_sample(
                key, segment_wave, sr, [frames[i] for i in inside], (times[inside] - seg_start).astype(np.float32), meta,
                jpeg_quality=cfg.jpeg_quality,
            )
    if not kept_any:
        skips.skip("too_short", item.media, "; ".join(reasons[:3]))


_DETECTORS: dict[tuple, FaceDetector] = {}


def _detector(cfg: FaceConfig) -> FaceDetector:
    key = (cfg.cascade, cfg.min_face, cfg.detect_width)
    if key not in _DETECTORS:
        _DETECTORS[key] = FaceDetector(cfg)
    return _DETECTORS[key]


def _load_audio_or_skip(path: str, cfg: PairSettings, skips: SkipLog) -> np.ndarray | None:
    try:
        return load_audio(path, cfg.sample_rate)
    except AudioError as exn:
        skips.skip(exn.reason, path, str(exn))
        return None


def item_samples(item: PairItem, split: str, cfg: PairSettings, skips: SkipLog, stats: BuildStats) -> Iterator[dict[str, Any]]:
    """All pair samples of one source item (skips reported through ``skips``)."""
    if item.kind == "orphan_frames":
        skips.skip("frames_without_audio", item.media, "a face-frame folder with no matching wav")
        return
    face_cfg = FaceConfig(frame_rate=cfg.frame_rate, crop_size=cfg.crop_size, margin=cfg.margin, grey=cfg.grey)
    if item.kind == "frames":
        yield from _frames_item_samples(item, split, cfg, skips, stats)
        return
    problem = probe_video(item.media, needs_audio=item.audio is None)
    if problem:
        skips.skip(problem[0], item.media, problem[1])
        return
    wave = _load_audio_or_skip(item.audio or item.media, cfg, skips)
    if wave is None:
        return
    try:
        if item.audio is None:
            wave = align_audio_to_video(wave, av_offset(item.media), cfg.sample_rate)
        if item.kind == "centred_video":
            crops = centred_face_crops(item.media, face_cfg, cfg.center_crop)
        else:
            crops = detect_face_crops(item.media, face_cfg, _detector(face_cfg))
    except VideoError as exn:
        skips.skip(exn.reason, item.media, str(exn))
        return
    stats.frames_sampled += crops.sampled
    stats.frames_no_face += crops.no_face
    if not crops.frames:
        skips.skip("no_face", item.media, f"no face in {crops.sampled} sampled frames")
        return
    yield from track_segments(item, split, wave, crops.frames, np.asarray(crops.times), crops.tracks, cfg, skips, stats)


def _frames_item_samples(item: PairItem, split: str, cfg: PairSettings, skips: SkipLog, stats: BuildStats) -> Iterator[dict[str, Any]]:
    from PIL import Image, UnidentifiedImageError

    folder = Path(item.frames_dir or "")
    if not folder.is_dir():
        skips.skip("audio_without_frames", item.media, f"no face-frame folder {folder}")
        return
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)
    if not files:
        skips.skip("no_face", str(folder), "the face-frame folder holds no images")
        return
    all_times = frame_index_times(files, cfg.frames_fps)
    order = np.argsort(all_times, kind="stable")
    files = [files[i] for i in order]
    all_times = all_times[order]
    wave = _load_audio_or_skip(item.media, cfg, skips)
    if wave is None:
        return
    frames, times = [], []
    for i in sample_on_grid(all_times, cfg.frame_rate, cfg.frames_fps):
        stats.frames_sampled += 1
        try:
            with Image.open(files[i]) as pil:
                image = np.asarray(pil.convert("L" if cfg.grey else "RGB"))
        except (UnidentifiedImageError, OSError, ValueError) as exn:
            stats.frames_corrupt += 1
            log.warning("corrupt face frame %s: %s", files[i], exn)
            continue
        frames.append(resize(center_crop(image, cfg.center_crop), cfg.crop_size))
        times.append(all_times[i])
    if not frames:
        skips.skip("corrupt_image", str(folder), "no readable face frame")
        return
    yield from track_segments(item, split, wave, frames, np.asarray(times), [0] * len(frames), cfg, skips, stats)
