"""Talking-face pair shards: one sample = one speech segment of one face track.

    python -m crossmodal.run task=prepare data=pairs data.source=/data/voxceleb2/dev/mp4

Sources (``data.layout``; ``auto`` tells them apart):
- ``voxceleb2``: ``<source>/<id>/<youtube_id>/<n>.mp4``, face-centred videos with their own audio
  track (a ``<n>.m4a`` beside the mp4 is preferred for the audio when present). No detection: a
  centre crop of ``center_crop`` of each frame (the paper's 1/1.6 of the released face box).
- ``voxceleb1``: ``<source>/wav/<id>/<youtube_id>/<n>.wav`` with the released face frames in
  ``<frames_root>/<id>/<youtube_id>/<n>/*.jpg``; a frame file's number is its frame index at
  ``frames_fps`` (25), so its time is (index - first index) / frames_fps: the first frame is taken
  to start with the wav, as the released utterances are cut to their face tracks. Centre crop
  as above.
- ``videos``: any folder of talking-face videos. Faces are found and tracked with OpenCV (see
  :mod:`crossmodal.io.video`). Identity = the first folder under ``source`` (``<id>/...``), or
  the file name for videos lying directly in ``source``.

Every segment is cut from one face track: a track is split into equal pieces no longer than
``segment_seconds``; a track shorter than ``min_segment_seconds`` is skipped (``too_short``).
Audio is 16 kHz mono FLAC; frames are JPEG face crops (``crop_size`` square, grey unless
``grey=false``), stored as fields ``f000.jpg``, ``f001.jpg``, ... with ``times.npy`` (float32
seconds from the segment start) and ``json`` (identity, video, utterance, track, segment, split,
start and duration in seconds, sample_rate, frame_rate, synthetic, source paths).

Shards are named by split (``train-``, ``heard-``, ``unheard-``, see :mod:`crossmodal.io.splits`);
the split is saved as ``splits.json`` beside them and named in ``manifest.json``. Bad input (no
audio stream, no video stream, unreadable or corrupt files, no face, a frame folder without its
wav, a clip shorter than one segment) is counted by reason with example paths, or raises with
``strict=true``. Re-running reuses finished shards; a killed run resumes.
"""
from __future__ import annotations

import dataclasses
import io
import json
import logging
import math
import re
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from crossmodal.io.audio import AudioError, encode_flac, load_audio
from crossmodal.io.splits import SPLIT_FILE, IdentitySplit, load_split_file, make_split, save_split
from crossmodal.io.video import (
    DEFAULT_FRAME_RATE,
    FaceConfig,
    FaceDetector,
    VideoError,
    center_crop,
    centred_face_crops,
    detect_face_crops,
    resize,
    to_grey,
)
from crossmodal.pipeline.cache import check_skips, claim, note_unfingerprinted
from crossmodal.pipeline.fingerprint import input_fingerprint, shard_folder
from crossmodal.pipeline.lock import folder_lock
from crossmodal.pipeline.shards import (
    Manifest,
    ShardJob,
    SkipLog,
    dist_info,
    load_manifest,
    shard_done,
    write_manifest,
    write_shard_set,
)

log = logging.getLogger(__name__)

LAYOUTS = ("auto", "voxceleb2", "voxceleb1", "videos")
VIDEO_EXTENSIONS = (".mp4", ".mpg", ".mpeg", ".avi", ".mov", ".mkv", ".webm", ".m4v")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")
# Settings that change the content of the shards: part of the set's fingerprint (and folder name).
CONTENT_SETTINGS = (
    "layout", "frame_rate", "frames_fps", "segment_seconds", "min_segment_seconds", "min_frames",
    "crop_size", "margin", "center_crop", "grey", "jpeg_quality", "sample_rate", "videos_per_shard",
    "seed", "unheard_fraction", "heard_fraction",
)


@dataclass
class PairsConfig:
    """Talking-face pair data: how to build pair shards, and how ``task=extract`` turns them into
    distillation shards. ``conf/data/pairs.yaml`` instantiates this (its keys are these fields)."""

    source: str | None = None  # folder of raw talking-face data (see the module doc)
    layout: str = "auto"  # auto | voxceleb2 | voxceleb1 | videos
    frames_root: str | None = None  # voxceleb1: folder of <id>/<youtube_id>/<n>/*.jpg face frames
    pairs: str | None = None  # an existing pair shard set to use instead of building one from source
    data_dir: str = "data"  # shards go to <data_dir>/pairs/<name>-<fp8> and <data_dir>/distill/<name>-<teacher>-<fp8>
    name: str | None = None  # default: the source folder's name
    split_file: str | None = None  # a user's split file; default: made from seed + fractions
    seed: int = 0
    unheard_fraction: float = 0.2
    heard_fraction: float = 0.05
    frame_rate: float = DEFAULT_FRAME_RATE  # face frames per second (25 fps / 6)
    frames_fps: float = 25.0  # voxceleb1: frame rate of the released face-frame numbering
    segment_seconds: float = 10.0
    min_segment_seconds: float = 1.0
    min_frames: int = 2
    crop_size: int = 112
    margin: float = 0.2  # videos: detected box widened by this fraction per side
    center_crop: float = 0.625  # voxceleb1/2: centre crop of the face-centred frame (1/1.6)
    grey: bool = True
    jpeg_quality: int = 90
    sample_rate: int = 16000
    videos_per_shard: int = 64
    num_workers: int = 0  # loader worker processes for decoding (prepare and extract)
    strict: bool = False
    # extraction (task=extract)
    distill_dir: str | None = None  # default: <data_dir>/distill/<name>-<teacher>-<fingerprint of pairs + teacher file>
    batch_size: int = 256  # face frames per teacher forward pass
    logits_dtype: str = "float16"  # float16 | float32

    def __post_init__(self) -> None:
        if self.layout not in LAYOUTS:
            raise ValueError(f"data.layout={self.layout!r}: expected one of {', '.join(LAYOUTS)}")
        if self.logits_dtype not in ("float16", "float32"):
            raise ValueError(f"data.logits_dtype={self.logits_dtype!r}: expected float16 or float32")
        if self.frame_rate <= 0 or self.segment_seconds <= 0 or self.min_segment_seconds > self.segment_seconds:
            raise ValueError(
                f"data.frame_rate={self.frame_rate}, data.segment_seconds={self.segment_seconds}, "
                f"data.min_segment_seconds={self.min_segment_seconds}: need positive values with min <= segment length"
            )

    @classmethod
    def from_cfg(cls, cfg: Any) -> PairsConfig:
        """From a PairsConfig, a dict or an OmegaConf node (``_target_`` is ignored, unknown keys are errors)."""
        if isinstance(cfg, cls):
            return cfg
        try:
            from omegaconf import DictConfig, OmegaConf

            if isinstance(cfg, DictConfig):
                cfg = OmegaConf.to_container(cfg, resolve=True)
        except ImportError:  # pragma: no cover
            pass
        values = {k: v for k, v in dict(cfg).items() if not str(k).startswith("_")}
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown pair-data key data.{unknown[0]}; valid keys: {', '.join(sorted(known))}")
        return cls(**values)

    @property
    def pairs_dir(self) -> Path:
        """``data.pairs`` when set, else ``<data_dir>/pairs/<name>-<fingerprint8>``."""
        return Path(self.pairs) if self.pairs else self.folder_for(self.fingerprint())

    def folder_for(self, fingerprint: dict[str, Any]) -> Path:
        return Path(self.pairs) if self.pairs else shard_folder(self.data_dir, "pairs", self.dataset_name, fingerprint)

    def fingerprint(self) -> dict[str, Any]:
        """The source listing (videos, face frames, split file) and the settings that change the shards."""
        return input_fingerprint(
            "pairs",
            sources={"source": self.source, "frames_root": self.frames_root, "split_file": self.split_file},
            settings={k: getattr(self, k) for k in CONTENT_SETTINGS},
        )

    @property
    def dataset_name(self) -> str:
        if self.name:
            return self.name
        if not self.source:
            raise ValueError("data.source is not set: point it at a folder of talking-face data (or set data.pairs)")
        return _slug(Path(self.source).resolve().name) or "pairs"

    def face_config(self) -> FaceConfig:
        return FaceConfig(frame_rate=self.frame_rate, crop_size=self.crop_size, margin=self.margin, grey=self.grey)

    def prepare(self, rank: int | None = None, world_size: int | None = None, strict: bool | None = None) -> Manifest:
        return prepare_pairs(self, rank=rank, world_size=world_size, strict=strict)

    def prepare_data(self) -> Manifest:
        """Build (or reuse) the pair shards; the `prepare` task calls this."""
        self._manifest = self.prepare()
        return self._manifest

    def prepare_report(self) -> dict[str, Any]:
        """Counts for the `prepare` task's metrics.json (segments, frames, skips by reason)."""
        return prepare_report(getattr(self, "_manifest", None) or load_manifest(self.pairs_dir))


# ----------------------------------------------------------------------------------- discovery


@dataclass(frozen=True)
class PairItem:
    """One utterance/video of the source: the unit that becomes one or more segments."""

    kind: str  # "video" | "centred_video" | "frames" | "orphan_frames"
    identity: str
    video: str
    utterance: str
    media: str  # the video file, or the wav for voxceleb1
    audio: str | None = None  # a separate audio file (voxceleb2 .m4a), when present
    frames_dir: str | None = None  # voxceleb1 face-frame folder

    @property
    def key(self) -> str:
        return "_".join(_slug(p) for p in (self.identity, self.video, self.utterance))


def _slug(text: str) -> str:
    # Sample keys may not contain dots (webdataset splits the field name at the first dot).
    return re.sub(r"[^A-Za-z0-9_-]+", "-", str(text)).strip("-")


def detect_layout(source: Path, frames_root: str | None) -> str:
    if (source / "wav").is_dir():
        if not frames_root:
            raise ValueError(
                f"{source} looks like VoxCeleb1 (it has wav/) but data.frames_root is not set: point it at the "
                "face-frame folder (<frames_root>/<id>/<youtube_id>/<n>/*.jpg), or set data.layout=videos"
            )
        return "voxceleb1"
    videos = _video_files(source)
    if videos and all(len(v.relative_to(source).parts) == 3 for v in videos) and all(
        re.fullmatch(r"id\d+", v.relative_to(source).parts[0]) for v in videos
    ):
        return "voxceleb2"
    return "videos"


def _video_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.suffix.lower() in VIDEO_EXTENSIONS and p.is_file())


def discover(cfg: PairsConfig) -> tuple[str, list[PairItem]]:
    """The items of the source, in a fixed order, and the layout used."""
    if not cfg.source:
        raise ValueError("data.source is not set: point it at a folder of talking-face data (or data.pairs at pair shards)")
    source = Path(cfg.source)
    if not source.is_dir():
        raise FileNotFoundError(f"data.source={source} is not a folder")
    layout = cfg.layout if cfg.layout != "auto" else detect_layout(source, cfg.frames_root)
    if layout == "voxceleb1":
        items = _discover_voxceleb1(source, cfg.frames_root)
    else:
        items = []
        for path in _video_files(source):
            parts = path.relative_to(source).parts
            if len(parts) == 1:
                identity, video, utterance = path.stem, path.stem, "0"
            elif len(parts) == 2:
                identity, video, utterance = parts[0], path.stem, "0"
            else:
                identity, video, utterance = parts[0], parts[-2], path.stem
            audio = None
            if layout == "voxceleb2":
                m4a = path.with_suffix(".m4a")
                audio = str(m4a) if m4a.exists() else None
            kind = "centred_video" if layout == "voxceleb2" else "video"
            items.append(PairItem(kind, identity, video, utterance, str(path), audio))
    if not items:
        raise FileNotFoundError(f"no talking-face data found in data.source={source} (layout {layout}); see crossmodal.pipeline.pairs")
    keys = Counter(item.key for item in items)
    duplicated = [k for k, n in keys.items() if n > 1]
    if duplicated:
        raise ValueError(f"two source files map to the same sample key {duplicated[0]!r} in {source}; rename one of them")
    return layout, items


def _discover_voxceleb1(source: Path, frames_root: str | None) -> list[PairItem]:
    if not frames_root:
        raise ValueError("data.layout=voxceleb1 needs data.frames_root (the folder of <id>/<youtube_id>/<n>/*.jpg)")
    frames = Path(frames_root)
    if not frames.is_dir():
        raise FileNotFoundError(f"data.frames_root={frames} is not a folder")
    items: dict[tuple[str, str, str], PairItem] = {}
    for wav in sorted((source / "wav").rglob("*.wav")):
        parts = wav.relative_to(source / "wav").parts
        if len(parts) != 3:
            continue
        identity, video, utterance = parts[0], parts[1], wav.stem
        folder = frames / identity / video / utterance
        items[(identity, video, utterance)] = PairItem("frames", identity, video, utterance, str(wav), frames_dir=str(folder))
    for folder in sorted(p for p in frames.glob("*/*/*") if p.is_dir()):
        identity, video, utterance = folder.relative_to(frames).parts
        if (identity, video, utterance) not in items:
            items[(identity, video, utterance)] = PairItem("orphan_frames", identity, video, utterance, str(folder), frames_dir=str(folder))
    return [items[k] for k in sorted(items)]


# -------------------------------------------------------------------------------------- segments


@dataclass
class BuildStats:
    """Frame-level counts of one shard (skips of whole items go to the SkipLog)."""

    segments: int = 0
    frames: int = 0
    frames_sampled: int = 0
    frames_no_face: int = 0
    frames_corrupt: int = 0
    frames_unused: int = 0  # face frames outside any kept segment (short tails, too few frames)

    def add(self, other: BuildStats | dict) -> None:
        values = other if isinstance(other, dict) else dataclasses.asdict(other)
        for key, value in values.items():
            if hasattr(self, key):
                setattr(self, key, getattr(self, key) + int(value))


def segment_bounds(start: float, end: float, segment_seconds: float) -> list[tuple[float, float]]:
    """Cut [start, end) into the fewest equal pieces no longer than ``segment_seconds``."""
    span = end - start
    n = max(1, math.ceil(span / segment_seconds - 1e-9))
    length = span / n
    return [(start + i * length, start + (i + 1) * length) for i in range(n)]


def encode_image(image: np.ndarray, fmt: str = "jpg", quality: int = 90) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    pil = Image.fromarray(image, mode="L" if image.ndim == 2 else "RGB")
    if fmt in ("jpg", "jpeg"):
        pil.save(buffer, format="JPEG", quality=quality)
    else:
        pil.save(buffer, format="PNG", optimize=False, compress_level=3)
    return buffer.getvalue()


def npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def frame_field(index: int, fmt: str = "jpg") -> str:
    return f"f{index:03d}.{fmt}"


def make_pair_sample(
    key: str,
    wave: np.ndarray,
    sample_rate: int,
    frames: Sequence[np.ndarray],
    times: np.ndarray,
    meta: dict[str, Any],
    *,
    image_format: str = "jpg",
    jpeg_quality: int = 90,
) -> dict[str, Any]:
    """A pair-shard sample from a segment's audio, face frames and frame times (seconds from its start)."""
    if len(frames) != len(times):
        raise ValueError(f"{key}: {len(frames)} frames but {len(times)} timestamps")
    if len(frames) > 1000:
        raise ValueError(f"{key}: {len(frames)} frames in one segment; the field naming allows 1000 (lower data.segment_seconds)")
    sample: dict[str, Any] = {"__key__": key, "flac": encode_flac(wave, sample_rate)}
    for i, frame in enumerate(frames):
        sample[frame_field(i, image_format)] = encode_image(frame, image_format, jpeg_quality)
    sample["times.npy"] = npy_bytes(np.asarray(times, dtype=np.float32))
    full_meta = {"duration": round(len(wave) / sample_rate, 6), "sample_rate": sample_rate, "n_frames": len(frames), "synthetic": False}
    full_meta.update(meta)
    sample["json"] = json.dumps(full_meta, sort_keys=True).encode()
    return sample


def track_segments(
    item: PairItem,
    split: str,
    wave: np.ndarray,
    frames: list[np.ndarray],
    times: np.ndarray,
    tracks: Sequence[int],
    cfg: PairsConfig,
    skips: SkipLog,
    stats: BuildStats,
    extra_meta: dict[str, Any] | None = None,
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
            meta = {
                "identity": item.identity,
                "video": item.video,
                "utterance": item.utterance,
                "track": int(track_id),
                "segment": segment_index,
                "split": split,
                "start": round(seg_start, 6),
                "frame_rate": cfg.frame_rate,
                "source": item.media,
            }
            if item.audio:
                meta["audio_source"] = item.audio
            if item.frames_dir:
                meta["frames_source"] = item.frames_dir
            meta.update(extra_meta or {})
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


# ------------------------------------------------------------------------------------- builders

_DETECTORS: dict[tuple, FaceDetector] = {}


def _detector(cfg: FaceConfig) -> FaceDetector:
    key = (cfg.cascade, cfg.min_face, cfg.detect_width)
    if key not in _DETECTORS:
        _DETECTORS[key] = FaceDetector(cfg)
    return _DETECTORS[key]


def _load_audio_or_skip(path: str, cfg: PairsConfig, skips: SkipLog) -> np.ndarray | None:
    try:
        return load_audio(path, cfg.sample_rate)
    except AudioError as exn:
        skips.skip(exn.reason, path, str(exn))
        return None


def item_samples(item: PairItem, split: str, cfg: PairsConfig, skips: SkipLog, stats: BuildStats) -> Iterator[dict[str, Any]]:
    """All pair samples of one source item (skips reported through ``skips``)."""
    if item.kind == "orphan_frames":
        skips.skip("frames_without_audio", item.media, "a face-frame folder with no matching wav")
        return
    face_cfg = cfg.face_config()
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
    if item.audio is None:
        wave = align_audio_to_video(wave, av_offset(item.media), cfg.sample_rate)
    try:
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


def probe_video(path: str, needs_audio: bool = True) -> tuple[str, str] | None:
    """(reason, detail) when a video file cannot serve as a talking-face source, else None."""
    import av

    try:
        with av.open(path) as container:
            has_video = bool(container.streams.video)
            has_audio = bool(container.streams.audio)
    except Exception as exn:  # noqa: BLE001 - PyAV raises many error types for bad files
        return "unreadable_video", f"cannot open: {exn}"
    if not has_video:
        return "no_video_stream", "audio with no video"
    if needs_audio and not has_audio:
        return "no_audio_stream", "a video with no audio stream"
    return None


def av_offset(path: str) -> float:
    """Seconds by which the first audio stream starts after the first video stream (0 when unknown)."""
    import av

    try:
        with av.open(path) as container:
            video, audio = container.streams.video[0], container.streams.audio[0]
            if video.start_time is None or audio.start_time is None:
                return 0.0
            return float(audio.start_time * audio.time_base - video.start_time * video.time_base)
    except Exception:  # noqa: BLE001 - probe_video already vetted the file; no offset then
        return 0.0


def align_audio_to_video(wave: np.ndarray, offset: float, sample_rate: int) -> np.ndarray:
    """Make audio sample 0 fall on video time 0 (frame times count from the first video frame)."""
    shift = int(round(offset * sample_rate))
    if shift > 0:
        return np.concatenate([np.zeros(shift, dtype=wave.dtype), wave])
    return wave[-shift:] if shift < 0 else wave


def frame_index_times(paths: Sequence[Path], fps: float) -> np.ndarray:
    """Times of face-frame files from the frame numbers in their names (sequential when not numbered)."""
    numbers = []
    for path in paths:
        digits = re.findall(r"\d+", path.stem)
        numbers.append(int(digits[-1]) if digits else None)
    if any(n is None for n in numbers) or len(set(numbers)) != len(numbers):
        return np.arange(len(paths), dtype=np.float64) / fps
    numbers_arr = np.asarray(numbers, dtype=np.float64)
    return (numbers_arr - numbers_arr.min()) / fps


def _sample_on_grid(times: np.ndarray, frame_rate: float, source_fps: float) -> list[int]:
    """Indices of (sorted) frame times taken on a ``frame_rate`` grid, as video.sample_frames does."""
    half = 0.5 / source_fps
    step = 1.0 / frame_rate
    next_time = 0.0
    chosen = []
    for i, t in enumerate(times):
        if t + half < next_time:
            continue
        while next_time <= t + half:
            next_time += step
        chosen.append(i)
    return chosen


def _frames_item_samples(item: PairItem, split: str, cfg: PairsConfig, skips: SkipLog, stats: BuildStats) -> Iterator[dict[str, Any]]:
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
    for i in _sample_on_grid(all_times, cfg.frame_rate, cfg.frames_fps):
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


# ------------------------------------------------------------------------------ parallel decoding


def prefetched(
    todo: Sequence[ShardJob], build: Callable[[ShardJob], Any], num_workers: int
) -> Iterator[tuple[str, Any]]:
    """``(job.name, build(job))`` for each job in order, built in ``num_workers`` loader processes.

    Worker w builds jobs w, w+W, ...; the DataLoader hands results back round-robin, which is
    the job order again. Results must pickle (lists of sample dicts of bytes do).
    """
    if num_workers <= 0 or len(todo) <= 1:
        for job in todo:
            yield job.name, build(job)
        return
    import torch.utils.data as tud

    class _Jobs(tud.IterableDataset):
        def __iter__(self):
            info = tud.get_worker_info()
            wid, n = (info.id, info.num_workers) if info else (0, 1)
            for job in list(todo)[wid::n]:
                yield job.name, build(job)

    workers = min(num_workers, len(todo))
    loader = tud.DataLoader(_Jobs(), batch_size=None, num_workers=workers, collate_fn=lambda x: x, prefetch_factor=1)
    yield from loader


class _SkipRecorder(SkipLog):
    """Records skips in a worker so the shard writer can replay them into the shard's SkipLog."""

    def __init__(self) -> None:
        super().__init__(strict=False)
        self.events: list[tuple[str, str, str]] = []

    def skip(self, reason: str, where: str, detail: str = "") -> None:
        self.events.append((reason, where, detail))


def _build_pair_shard(job: ShardJob, cfg: PairsConfig) -> tuple[list[dict[str, Any]], list, dict]:
    recorder = _SkipRecorder()
    stats = BuildStats()
    samples: list[dict[str, Any]] = []
    for split, item in job.items:
        samples.extend(item_samples(item, split, cfg, recorder, stats))
    return samples, recorder.events, dataclasses.asdict(stats)


# -------------------------------------------------------------------------------------- prepare


def plan_split(cfg: PairsConfig, items: Sequence[PairItem], out_dir: Path) -> tuple[IdentitySplit, Path]:
    """The user's split file, or a split made from seed + fractions; saved as splits.json beside the shards.

    Making the split is a pure function of the seed, the fractions and the items, so every rank
    and every re-run computes the same one (the folder is named from the recipe's fingerprint).
    """
    split_path = out_dir / SPLIT_FILE
    if cfg.split_file:
        split = load_split_file(cfg.split_file)
    else:
        videos = [(i.identity, i.video) for i in items]
        split = make_split(videos, seed=cfg.seed, unheard_fraction=cfg.unheard_fraction, heard_fraction=cfg.heard_fraction)
    if dist_info()[0] == 0:
        save_split(split, split_path, (i.identity for i in items))
    return split, split_path


def plan_jobs(items: Sequence[PairItem], split: IdentitySplit, videos_per_shard: int) -> list[ShardJob]:
    by_split: dict[str, list[tuple[str, PairItem]]] = {"train": [], "heard": [], "unheard": []}
    for item in items:
        which = split.assign(item.identity, item.video)
        by_split[which].append((which, item))
    jobs = []
    for which, members in by_split.items():
        for start in range(0, len(members), videos_per_shard):
            jobs.append(ShardJob(f"{which}-{start // videos_per_shard:06d}", members[start : start + videos_per_shard]))
    return jobs


def wait_for_shards(out_dir: Path, names: Sequence[str], poll_seconds: float = 2.0) -> None:
    """Block until every shard is written (other ranks), via torch.distributed or by polling."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        return
    while not all(shard_done(out_dir, n) for n in names):
        time.sleep(poll_seconds)


def prepare_pairs(cfg_data: Any, *, rank: int | None = None, world_size: int | None = None, strict: bool | None = None) -> Manifest:
    """Build the pair shards of ``cfg_data`` (a PairsConfig, dict or config node) into the folder
    named from their fingerprint; reuse a finished set of the same inputs, resume an unfinished one.

    With ``data.pairs`` set, the existing shard set there is used as is (when ``data.source`` is
    set too, it must have been built from it with these settings).
    """
    cfg = PairsConfig.from_cfg(cfg_data)
    strict = cfg.strict if strict is None else strict
    if cfg.pairs:
        return use_named_pairs(cfg.pairs, cfg.fingerprint() if cfg.source else None, strict)
    if rank is None or world_size is None:
        rank, world_size = dist_info()
    fingerprint = cfg.fingerprint()
    out_dir = cfg.folder_for(fingerprint)
    if rank == 0 and not (out_dir / "manifest.json").exists():
        note_unfingerprinted(out_dir.parent, "pair shards")
    with folder_lock(out_dir, "pair shards", rank=rank, world_size=world_size):
        if claim(out_dir, fingerprint, strict=strict, what="pair shard set", write_stamp=True):
            return load_manifest(out_dir)
        return _build_pairs(cfg, out_dir, fingerprint, rank, world_size, strict)


def use_named_pairs(folder: str | Path, fingerprint: dict[str, Any] | None, strict: bool) -> Manifest:
    """``data.pairs=DIR``: that finished set, checked against ``fingerprint`` when the inputs are known."""
    folder = Path(folder)
    if not (folder / "manifest.json").exists():
        raise FileNotFoundError(f"data.pairs={folder} holds no finished pair shard set (no manifest.json). "
                                "Build one with task=prepare data.source=..., or drop data.pairs")
    if fingerprint is not None:
        claim(folder, fingerprint, strict=strict, named_by="data.pairs", what="pair shard set", write_stamp=False)
    manifest = load_manifest(folder)
    check_skips(folder, {"skipped": manifest.skipped, "meta": manifest.meta}, strict)
    return manifest


def _build_pairs(cfg: PairsConfig, out_dir: Path, fingerprint: dict[str, Any], rank: int, world_size: int, strict: bool) -> Manifest:
    layout, items = discover(cfg)
    if layout == "videos":
        from crossmodal.io.video import require_cv2

        require_cv2()
    split, split_path = plan_split(cfg, items, out_dir)
    jobs = plan_jobs(items, split, cfg.videos_per_shard)
    mine = jobs[rank::world_size]
    todo = [job for job in mine if not shard_done(out_dir, job.name)]
    results = prefetched(todo, lambda job: _build_pair_shard(job, cfg), cfg.num_workers)

    def make_samples(job: ShardJob, skips: SkipLog) -> Iterator[dict[str, Any]]:
        name, (samples, events, stats) = next(results)
        if name != job.name:  # pragma: no cover - the order is fixed by construction
            raise RuntimeError(f"pair shard order mismatch: built {name}, writing {job.name}")
        for reason, where, detail in events:
            skips.skip(reason, where, detail)
        (out_dir / f"{job.name}.stats.json").write_text(json.dumps(stats, sort_keys=True))
        yield from samples

    log.info("pairs: %d items (%s layout) from %s -> %d shards in %s", len(items), layout, cfg.source, len(jobs), out_dir)
    write_shard_set(out_dir, jobs, make_samples, strict=strict, desc="pair shards", rank=rank, world_size=world_size, finalize=False)
    names = [job.name for job in jobs]
    if world_size > 1:
        wait_for_shards(out_dir, names)
    if rank != 0:
        return _wait_manifest(out_dir)
    stats = BuildStats()
    for name in names:
        stats_path = out_dir / f"{name}.stats.json"
        if stats_path.exists():
            stats.add(json.loads(stats_path.read_text()))
    meta = {
        "kind": "pairs",
        "name": cfg.dataset_name,
        "source": str(cfg.source),
        "layout": layout,
        "split_file": str(split_path),
        "split_source": split.source,
        "frame_rate": cfg.frame_rate,
        "sample_rate": cfg.sample_rate,
        "crop_size": cfg.crop_size,
        "grey": cfg.grey,
        "segment_seconds": cfg.segment_seconds,
        "synthetic": False,
        "items": len(items),
        "stats": dataclasses.asdict(stats),
        "fingerprint": fingerprint,
    }
    manifest = write_manifest(out_dir, names, meta)
    log.info(
        "pairs: %d segments, %d face frames (%d sampled, %d without a face) in %s; %s",
        stats.segments, stats.frames, stats.frames_sampled, stats.frames_no_face, out_dir, _skip_summary(manifest),
    )
    return manifest


def prepare_report(manifest: Manifest) -> dict[str, Any]:
    metrics: dict[str, Any] = {"pairs/segments": manifest.total, "pairs/shards": len(manifest.shards)}
    for split in ("train", "heard", "unheard"):
        metrics[f"pairs/segments/{split}"] = manifest.count(split)
    for key, value in manifest.meta.get("stats", {}).items():
        if key != "segments":
            metrics[f"pairs/{key}"] = value
    counts = manifest.skipped.get("counts", {})
    metrics["pairs/skipped"] = sum(counts.values())
    metrics.update({f"pairs/skipped/{reason}": n for reason, n in sorted(counts.items())})
    log.info("pairs: %s", ", ".join(f"{k}={v}" for k, v in metrics.items()))
    return metrics


def _wait_manifest(out_dir: Path, poll_seconds: float = 1.0) -> Manifest:
    """Other ranks: all shards are done (after wait_for_shards); wait for rank 0's manifest."""
    path = out_dir / "manifest.json"
    while not path.exists():
        time.sleep(poll_seconds)
    return load_manifest(out_dir)


def _skip_summary(manifest: Manifest) -> str:
    counts = manifest.skipped.get("counts", {})
    return "nothing skipped" if not counts else "skipped " + ", ".join(f"{n} {r}" for r, n in sorted(counts.items()))


# -------------------------------------------------------------------------------------- reading


def frame_fields(sample: dict[str, Any]) -> list[str]:
    """The frame fields of a pair sample in frame order (``f000.jpg``, ``f001.png``, ...)."""
    return sorted(k for k in sample if re.fullmatch(r"f\d{3,}\.(jpg|jpeg|png)", k))


def decode_image(data: bytes) -> np.ndarray:
    from PIL import Image

    with Image.open(io.BytesIO(data)) as pil:
        if pil.mode not in ("L", "RGB"):
            pil = pil.convert("RGB")
        return np.asarray(pil)


def decode_pair_frames(sample: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """Face frames and their times of a raw pair sample: (uint8 [n, H, W] or [n, H, W, 3], float32 [n]).

    Raises ValueError naming the sample when a frame is corrupt or frames and times disagree.
    """
    key = sample.get("__key__", "?")
    names = frame_fields(sample)
    times_raw = sample.get("times.npy")
    if times_raw is None:
        raise ValueError(f"pair sample {key} has no times.npy")
    times = np.load(io.BytesIO(times_raw), allow_pickle=False) if isinstance(times_raw, (bytes, bytearray)) else np.asarray(times_raw)
    if len(names) != len(times):
        raise ValueError(f"pair sample {key}: {len(names)} frames but {len(times)} timestamps")
    if not names:
        raise ValueError(f"pair sample {key} holds no face frames")
    images = []
    for name in names:
        try:
            images.append(decode_image(sample[name]))
        except Exception as exn:  # noqa: BLE001
            raise ValueError(f"pair sample {key}: corrupt frame {name}: {exn}") from exn
    if len({im.shape for im in images}) > 1:
        # Mixed sizes or grey/colour within one sample: bring all to the first frame's format.
        first = images[0]
        images = [resize(to_grey(im) if first.ndim == 2 else im, first.shape[0]) for im in images]
    return np.stack(images), times.astype(np.float32)
