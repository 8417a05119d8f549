"""Video frames and face crops: PyAV decoding at a chosen frame rate, OpenCV face detection/tracking.

Frames are taken on a time grid of ``frame_rate`` frames per second (default 25 / 6, the paper's every
6th frame of 25 fps video): a frame is taken when its timestamp reaches the next grid point (within
half a source frame), so 30 fps and variable-rate video are sampled on the same grid.

Raw talking-face videos need a face detector: OpenCV's frontal-face Haar cascade (the optional extra
``faces``: ``pip install 'crossmodal[faces]'``), tracked by :class:`FaceTracker`; frames with no face are
dropped and counted. Face-centred videos (VoxCeleb2 mp4, VoxCeleb1 face frames) take a centre crop instead
(the paper: 1/1.6 of the box).
"""
from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from crossmodal import paper

DEFAULT_FRAME_RATE = paper.FACE_FRAME_RATE
log = logging.getLogger(__name__)


class VideoError(RuntimeError):
    """A video could not be used. ``reason`` is a short tag for skip counts:
    ``unreadable_video``, ``no_video_stream`` or ``no_frames``."""

    def __init__(self, message: str, reason: str = "unreadable_video") -> None:
        super().__init__(message)
        self.reason = reason


def sample_frames(
    path: str | Path,
    frame_rate: float = DEFAULT_FRAME_RATE,
    *,
    grey: bool = False,
    start: float = 0.0,
    end: float | None = None,
) -> Iterator[tuple[float, np.ndarray]]:
    """Yield ``(time_s, image)`` for frames on a ``frame_rate`` grid from ``start`` to ``end``.

    ``image`` is uint8 [H, W, 3] RGB, or [H, W] when ``grey``. Times are seconds from the start of
    the video stream (its first frame is 0). Raises :class:`VideoError` naming the file when it
    cannot be opened, has no video stream or yields no frame at all.
    """
    import av

    path = Path(path)
    if frame_rate <= 0:
        raise ValueError(f"frame_rate must be positive, got {frame_rate}")
    try:
        container = av.open(str(path))
    except av.FFmpegError as exn:  # PyAV's errors for a file ffmpeg cannot open
        raise VideoError(f"cannot open video {path}: {exn}") from exn
    with container:
        if not container.streams.video:
            raise VideoError(f"no video stream in {path} (an audio-only file?)", "no_video_stream")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        source_fps = float(stream.average_rate or stream.guessed_rate or 25)
        half_frame = 0.5 / source_fps
        step = 1.0 / frame_rate
        next_time = start
        first_pts: float | None = None
        decoded = 0
        try:
            for frame in container.decode(stream):
                decoded += 1
                stamp = (decoded - 1) / source_fps if frame.time is None else float(frame.time)
                if first_pts is None:
                    first_pts = stamp
                time = stamp - first_pts
                if end is not None and time > end + half_frame:
                    break
                if time + half_frame < next_time:
                    continue
                # Catch up when frames are missing (variable frame rate): never emit twice for one grid point.
                while next_time <= time + half_frame:
                    next_time += step
                image = frame.to_ndarray(format="gray" if grey else "rgb24")
                yield time, image
        except av.FFmpegError as exn:
            if decoded == 0:
                raise VideoError(f"cannot decode video {path}: {exn}") from exn
            # A truncated/corrupt tail: the frames decoded so far are used, and the loss is said
            log.warning("%s is damaged or truncated: decoding stopped after %d frames (%s); those frames are used",
                        path, decoded, exn)
        if decoded == 0:
            raise VideoError(f"video stream of {path} holds no frames", "no_frames")


def video_duration(path: str | Path) -> float:
    """Duration of the first video stream in seconds (from the container; 0 when unknown)."""
    import av

    with av.open(str(path)) as container:
        if not container.streams.video:
            raise VideoError(f"no video stream in {path}", "no_video_stream")
        stream = container.streams.video[0]
        if stream.duration is not None and stream.time_base is not None:
            return float(stream.duration * stream.time_base)
        return float(container.duration or 0) / 1e6


def center_crop(image: np.ndarray, fraction: float) -> np.ndarray:
    """The centre square of side ``fraction`` x the shorter side (1.0 = the largest centred square)."""
    h, w = image.shape[:2]
    side = max(1, int(round(min(h, w) * fraction)))
    top, left = (h - side) // 2, (w - side) // 2
    return image[top : top + side, left : left + side]


def resize(image: np.ndarray, size: int) -> np.ndarray:
    """Resize to ``size`` x ``size`` (area filter when shrinking, bilinear when growing)."""
    if image.shape[0] == size and image.shape[1] == size:
        return image
    from PIL import Image

    method = Image.Resampling.BOX if image.shape[0] > size else Image.Resampling.BILINEAR  # shrinking: area filter
    return np.asarray(Image.fromarray(image).resize((size, size), method))


def to_grey(image: np.ndarray) -> np.ndarray:
    if image.ndim == 2:
        return image
    # ITU-R 601 luma, as PIL's "L" and OpenCV's BGR2GRAY.
    return (image[..., 0] * 0.299 + image[..., 1] * 0.587 + image[..., 2] * 0.114 + 0.5).astype(np.uint8)


def require_cv2():
    try:
        import cv2
    except ImportError as exn:
        raise ImportError(
            "face detection for raw talking-face videos needs OpenCV: install the optional extra with "
            "`pip install 'crossmodal[faces]'` (opencv-python-headless<5, which ships the Haar cascades), "
            "or use face-centred input (VoxCeleb2 mp4 / VoxCeleb1 face frames, data.layout=voxceleb2|voxceleb1)"
        ) from exn
    return cv2


@dataclass
class FaceConfig:
    frame_rate: float = DEFAULT_FRAME_RATE
    crop_size: int = 112
    margin: float = 0.2  # the detected box is widened by this fraction of its side on each side
    smoothing: float = 0.5  # weight of the new detection in the moving average of the box
    new_track_iou: float = 0.2  # below this overlap with the smoothed box a detection starts a new track
    min_face: float = 0.12  # smallest face side as a fraction of the frame's shorter side
    detect_width: int = 320  # frames are shrunk to this width for detection (speed)
    grey: bool = True  # store grey crops (the teacher is a grey-face model); false keeps colour
    cascade: str = "haarcascade_frontalface_default.xml"


class FaceDetector:
    """OpenCV frontal-face cascade: all faces of an image as (x, y, w, h) boxes in its pixels."""

    def __init__(self, cfg: FaceConfig) -> None:
        cv2 = require_cv2()
        path = Path(cv2.data.haarcascades) / cfg.cascade
        self.cascade = cv2.CascadeClassifier(str(path))
        if self.cascade.empty():
            raise RuntimeError(f"could not load the face cascade {path}; reinstall opencv-python-headless<5")
        self.cv2 = cv2
        self.cfg = cfg

    def __call__(self, image: np.ndarray) -> np.ndarray:
        grey = to_grey(image)
        h, w = grey.shape
        scale = min(1.0, self.cfg.detect_width / w)
        small = grey if scale == 1.0 else self.cv2.resize(grey, (int(w * scale), int(h * scale)), interpolation=self.cv2.INTER_AREA)
        small = self.cv2.equalizeHist(small)
        min_side = max(12, int(min(small.shape) * self.cfg.min_face))
        boxes = self.cascade.detectMultiScale(small, scaleFactor=1.1, minNeighbors=5, minSize=(min_side, min_side))
        if len(boxes) == 0:
            return np.zeros((0, 4), dtype=np.float32)
        return np.asarray(boxes, dtype=np.float32) / scale


def box_iou(a: np.ndarray, b: np.ndarray) -> float:
    ax2, ay2, bx2, by2 = a[0] + a[2], a[1] + a[3], b[0] + b[2], b[1] + b[3]
    iw = max(0.0, min(ax2, bx2) - max(a[0], b[0]))
    ih = max(0.0, min(ay2, by2) - max(a[1], b[1]))
    inter = iw * ih
    union = a[2] * a[3] + b[2] * b[3] - inter
    return float(inter / union) if union > 0 else 0.0


def crop_face(image: np.ndarray, box: np.ndarray, margin: float, size: int) -> np.ndarray:
    """Square crop around ``box`` widened by ``margin`` per side, zero-padded at the image border."""
    from PIL import Image

    x, y, w, h = (float(v) for v in box)
    side = max(w, h) * (1.0 + 2.0 * margin)
    cx, cy = x + w / 2.0, y + h / 2.0
    left, top = int(round(cx - side / 2.0)), int(round(cy - side / 2.0))
    side_px = max(1, int(round(side)))
    crop = Image.fromarray(image).crop((left, top, left + side_px, top + side_px))  # outside the image: zeros
    return resize(np.asarray(crop), size)


@dataclass
class FaceCrops:
    """Face crops of one video: ``frames[i]`` taken at ``times[i]`` belongs to track ``tracks[i]``."""

    frames: list[np.ndarray] = field(default_factory=list)
    times: list[float] = field(default_factory=list)
    tracks: list[int] = field(default_factory=list)
    boxes: list[np.ndarray] = field(default_factory=list)
    sampled: int = 0  # frames looked at
    no_face: int = 0  # of which dropped for want of a face

    def track_ids(self) -> list[int]:
        return sorted(set(self.tracks))


class FaceTracker:
    """Largest face per frame, smoothed box, new track on a jump; stateful over one video."""

    def __init__(self, cfg: FaceConfig, detector: FaceDetector | None = None) -> None:
        self.cfg = cfg
        self.detector = detector or FaceDetector(cfg)
        self.box: np.ndarray | None = None
        self.track_id = -1

    def update(self, image: np.ndarray) -> tuple[int, np.ndarray] | None:
        """(track id, smoothed box) for this frame, or None when no face is found."""
        boxes = self.detector(image)
        if len(boxes) == 0:
            return None
        largest = boxes[np.argmax(boxes[:, 2] * boxes[:, 3])]
        if self.box is None or box_iou(self.box, largest) < self.cfg.new_track_iou:
            self.track_id += 1
            self.box = largest.copy()
        else:
            a = self.cfg.smoothing
            self.box = a * largest + (1.0 - a) * self.box
        return self.track_id, self.box.copy()


def detect_face_crops(path: str | Path, cfg: FaceConfig, detector: FaceDetector | None = None) -> FaceCrops:
    """Decode ``path`` at ``cfg.frame_rate``, find and track the largest face, crop it."""
    tracker = FaceTracker(cfg, detector)
    crops = FaceCrops()
    for time, image in sample_frames(path, cfg.frame_rate, grey=cfg.grey):
        crops.sampled += 1
        found = tracker.update(image)
        if found is None:
            crops.no_face += 1
            continue
        track_id, box = found
        crops.frames.append(crop_face(image, box, cfg.margin, cfg.crop_size))
        crops.times.append(time)
        crops.tracks.append(track_id)
        crops.boxes.append(box)
    return crops


def centred_face_crops(path: str | Path, cfg: FaceConfig, fraction: float) -> FaceCrops:
    """Face-centred video (VoxCeleb2): a centre crop of every sampled frame, one track."""
    crops = FaceCrops()
    for time, image in sample_frames(path, cfg.frame_rate, grey=cfg.grey):
        crops.sampled += 1
        crops.frames.append(resize(center_crop(image, fraction), cfg.crop_size))
        crops.times.append(time)
        crops.tracks.append(0)
    return crops
