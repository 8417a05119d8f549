"""The pair-sample format: encode a segment (FLAC audio, ``f000.jpg``... face frames, ``times.npy``,
``json``) into a shard sample, and decode its frames back (:func:`decode_pair_frames`)."""
from __future__ import annotations

import io
import json
import re
from collections.abc import Sequence
from typing import Any

import numpy as np

from crossmodal.io.audio import encode_flac
from crossmodal.io.video import resize, to_grey


def slug(text: str) -> str:
    # Sample keys may not contain dots (webdataset splits the field name at the first dot).
    return re.sub(r"[^A-Za-z0-9_-]+", "-", str(text)).strip("-")


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


def segment_meta(identity: str, video: str, utterance: str, track: int, segment: int, split: str, start: float,
                 frame_rate: float, **more: Any) -> dict[str, Any]:
    """A pair sample's json: where its segment comes from (``start`` in seconds in the source), and ``more``."""
    return {"identity": identity, "video": video, "utterance": utterance, "track": track, "segment": segment,
            "split": split, "start": round(start, 6), "frame_rate": frame_rate, **more}


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
        sample[f"f{i:03d}.{image_format}"] = encode_image(frame, image_format, jpeg_quality)
    sample["times.npy"] = npy_bytes(np.asarray(times, dtype=np.float32))
    full_meta = {"duration": round(len(wave) / sample_rate, 6), "sample_rate": sample_rate, "n_frames": len(frames),
                 "synthetic": False, **meta}
    sample["json"] = json.dumps(full_meta, sort_keys=True).encode()
    return sample


def frame_fields(sample: dict[str, Any]) -> list[str]:
    """The frame fields of a pair sample in frame order (``f000.jpg``, ``f001.png``, ...)."""
    return sorted(k for k in sample if re.fullmatch(r"f\d{3,}\.(jpg|jpeg|png)", k))


def decode_pair_frames(sample: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """Face frames and their times of a raw pair sample: (uint8 [n, H, W] or [n, H, W, 3], float32 [n]);
    ValueError naming the sample when a frame is corrupt or frames and times disagree."""
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
    from PIL import Image

    images = []
    for name in names:
        try:
            with Image.open(io.BytesIO(sample[name])) as pil:
                images.append(np.asarray(pil if pil.mode in ("L", "RGB") else pil.convert("RGB")))
        except (OSError, ValueError, Image.DecompressionBombError) as exn:  # PIL's errors for bad image bytes
            raise ValueError(f"pair sample {key}: corrupt frame {name}: {exn}") from exn
    if len({im.shape for im in images}) > 1:
        # Mixed sizes or grey/colour within one sample: bring all to the first frame's format.
        first = images[0]
        images = [resize(to_grey(im) if first.ndim == 2 else im, first.shape[0]) for im in images]
    return np.stack(images), times.astype(np.float32)
