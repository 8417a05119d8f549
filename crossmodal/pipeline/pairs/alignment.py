"""Audio/video alignment: which videos can serve (:func:`probe_video`), how far their audio starts
after their video (:func:`av_offset`, applied by :func:`align_audio_to_video`), and the times of
numbered face-frame files and their sampling on the ``frame_rate`` grid."""
from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from crossmodal.io.video import VideoError


def probe_video(path: str, needs_audio: bool = True) -> tuple[str, str] | None:
    """(reason, detail) when a video file cannot serve as a talking-face source, else None."""
    import av

    try:
        with av.open(path) as container:
            has_video = bool(container.streams.video)
            has_audio = bool(container.streams.audio)
    except av.FFmpegError as exn:  # the caller counts the skip with this reason
        return "unreadable_video", f"cannot open: {exn}"
    if not has_video:
        return "no_video_stream", "audio with no video"
    if needs_audio and not has_audio:
        return "no_audio_stream", "a video with no audio stream"
    return None


def av_offset(path: str) -> float:
    """Seconds by which the first audio stream starts after the first video stream; 0 when the
    container gives no start times (both then start at 0). A file whose streams cannot be read
    raises :class:`VideoError` (reason ``unknown_av_offset``): guessing 0 could misalign the data."""
    import av

    try:
        with av.open(path) as container:
            video, audio = container.streams.video[0], container.streams.audio[0]
            if video.start_time is None or audio.start_time is None:
                return 0.0
            return float(audio.start_time * audio.time_base - video.start_time * video.time_base)
    except (av.error.FFmpegError, OSError, IndexError) as exn:
        detail = "no audio or no video stream" if isinstance(exn, IndexError) else str(exn)
        raise VideoError(f"{path}: cannot read the audio/video start times ({detail})", reason="unknown_av_offset") from exn


def align_audio_to_video(wave: np.ndarray, offset: float, sample_rate: int) -> np.ndarray:
    """Make audio sample 0 fall on video time 0 (frame times count from the first video frame)."""
    shift = int(round(offset * sample_rate))
    if shift > 0:
        return np.concatenate([np.zeros(shift, dtype=wave.dtype), wave])
    return wave[-shift:] if shift < 0 else wave


def frame_index_times(paths: Sequence[Path], fps: float) -> np.ndarray:
    """Times of face-frame files from the frame numbers in their names (sequential when not numbered)."""
    numbers = [int(digits[-1]) if (digits := re.findall(r"\d+", path.stem)) else None for path in paths]
    if any(n is None for n in numbers) or len(set(numbers)) != len(numbers):
        return np.arange(len(paths), dtype=np.float64) / fps
    numbers_arr = np.asarray(numbers, dtype=np.float64)
    return (numbers_arr - numbers_arr.min()) / fps


def sample_on_grid(times: np.ndarray, frame_rate: float, source_fps: float) -> list[int]:
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
