"""Video decoding and face detection/tracking on the real GRID clips."""
from __future__ import annotations

import sys
from pathlib import Path

import av
import numpy as np
import pytest

from crossmodal.io.video import (
    FaceConfig,
    FaceDetector,
    FaceTracker,
    VideoError,
    center_crop,
    crop_face,
    detect_face_crops,
    require_cv2,
    sample_frames,
)

pytest.importorskip("cv2")


def write_video(path: Path, frames: list[np.ndarray], fps: int = 25) -> None:
    with av.open(str(path), "w") as out:
        stream = out.add_stream("mpeg4", rate=fps)
        stream.height, stream.width = frames[0].shape[:2]
        stream.pix_fmt = "yuv420p"
        for image in frames:
            rgb = image if image.ndim == 3 else np.repeat(image[..., None], 3, axis=2)
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)


def test_sampling_every_sixth_frame_of_25fps(grid_root: Path) -> None:
    clip = grid_root / "bbaf2n.mpg"
    every = list(sample_frames(clip, frame_rate=25.0, grey=True))
    sixth = list(sample_frames(clip))  # default: 25 / 6 fps
    assert 70 <= len(every) <= 80  # ~3 s at 25 fps
    assert len(sixth) == len(range(0, len(every), 6))
    times = np.array([t for t, _ in sixth])
    np.testing.assert_allclose(times, np.arange(len(sixth)) * 0.24, atol=1e-6)
    # The frames taken are exactly every 6th decoded frame.
    for k, (_, image) in enumerate(sixth):
        grey = every[6 * k][1]
        assert image.shape == (288, 360, 3) and grey.shape == (288, 360)
    window = list(sample_frames(clip, frame_rate=25.0, start=1.0, end=2.0))
    assert window[0][0] == pytest.approx(1.0) and window[-1][0] == pytest.approx(2.0)


def test_faces_found_and_tracked_on_grid(grid_root: Path) -> None:
    cfg = FaceConfig()
    detector = FaceDetector(cfg)
    for clip in sorted(grid_root.glob("*.mpg"))[:3]:
        crops = detect_face_crops(clip, cfg, detector)
        assert crops.sampled >= 12 and crops.no_face == 0
        assert crops.track_ids() == [0]  # one speaker, one steady track
        assert all(f.shape == (112, 112) and f.dtype == np.uint8 for f in crops.frames)
        # The crop is a face: the detector finds one filling most of it.
        big = np.kron(crops.frames[0], np.ones((3, 3), np.uint8))
        found = detector(big)
        assert len(found) >= 1 and found[:, 2].max() > 0.5 * big.shape[1]
        # Smoothed boxes move little from frame to frame (a talking head).
        boxes = np.array(crops.boxes)
        assert np.abs(np.diff(boxes[:, :2], axis=0)).max() < 0.1 * boxes[:, 2].mean()


def test_no_face_frames_are_dropped_and_counted(grid_root: Path, tmp_path: Path) -> None:
    real = [image for _, image in sample_frames(grid_root / "swiz3n.mpg", frame_rate=25.0)][:30]
    blank = [np.full_like(real[0], 90) for _ in range(30)]
    write_video(tmp_path / "mixed.mp4", blank + real)
    crops = detect_face_crops(tmp_path / "mixed.mp4", FaceConfig())
    assert crops.sampled == 10
    assert crops.no_face == 5 and len(crops.frames) == 5
    assert min(crops.times) >= 1.2 - 1e-6  # faces only where the real frames are


def test_a_jump_starts_a_new_track(grid_root: Path) -> None:
    cfg = FaceConfig()
    tracker = FaceTracker(cfg)
    _, image = next(iter(sample_frames(grid_root / "bbaf2n.mpg")))
    canvas = np.full((288, 720, 3), 120, np.uint8)
    canvas[:, :360] = image
    first = tracker.update(canvas)
    again = tracker.update(canvas)
    moved = np.full_like(canvas, 120)
    moved[:, 360:] = image
    jumped = tracker.update(moved)
    assert first[0] == again[0] == 0 and jumped[0] == 1
    assert jumped[1][0] > 300  # the box followed the face to the right half


def test_crop_pads_at_the_border() -> None:
    image = np.full((100, 100), 200, np.uint8)
    crop = crop_face(image, np.array([-20.0, -20.0, 60.0, 60.0]), margin=0.0, size=60)
    assert crop.shape == (60, 60) and crop[0, 0] == 0 and crop[-1, -1] == 200
    assert center_crop(np.zeros((224, 300)), 0.625).shape == (140, 140)


def test_bad_videos_name_the_file(tmp_path: Path) -> None:
    (tmp_path / "junk.mp4").write_bytes(b"\x00" * 1000)
    with pytest.raises(VideoError, match="junk.mp4"):
        list(sample_frames(tmp_path / "junk.mp4"))
    import soundfile as sf

    sf.write(tmp_path / "voice.wav", np.zeros(16000, np.float32), 16000)
    with pytest.raises(VideoError, match="no video stream.*voice.wav") as info:
        list(sample_frames(tmp_path / "voice.wav"))
    assert info.value.reason == "no_video_stream"


def test_missing_opencv_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "cv2", None)
    with pytest.raises(ImportError, match=r"crossmodal\[faces\]"):
        require_cv2()
