"""`crossmodal timeline`: real GRID talking-face clips (tests/data/grid) through the shipped teacher and
student, a synthetic face-less video, the folder summary, the picture's panels, and the streaming
window aggregator's bounded memory."""
from __future__ import annotations

import csv
import fractions
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from crossmodal.cli import main as cli_main
from crossmodal.data.distill import aggregate_logits
from crossmodal.emotions import EMOTION_COLORS, EMOTIONS
from crossmodal.inference.timeline import ThumbnailPicker, WindowAggregator, video_timeline
from crossmodal.inference.waveform import window_spans

pytest.importorskip("cv2", reason="face detection needs the faces extra (opencv-python-headless)")

GRID = ("bbaf2n", "swiz3n")


def blank_video(path: Path, seconds: float = 3.0, fps: int = 25, rate: int = 16000, audio: bool = True) -> Path:
    """A grey 160x120 video (no face anywhere) with a noise soundtrack the student can judge."""
    import av

    rng = np.random.default_rng(0)
    with av.open(str(path), "w") as container:
        video = container.add_stream("mpeg4", rate=fps)
        video.width, video.height, video.pix_fmt = 160, 120, "yuv420p"
        sound = container.add_stream("aac", rate=rate) if audio else None
        if sound is not None:
            sound.layout = "mono"
        for _ in range(int(seconds * fps)):
            frame = av.VideoFrame.from_ndarray(np.full((120, 160, 3), 90, np.uint8), format="rgb24")
            for packet in video.encode(frame):
                container.mux(packet)
        for packet in video.encode():
            container.mux(packet)
        if sound is not None:
            wave = (0.1 * rng.standard_normal(int(seconds * rate))).astype(np.float32)
            for start in range(0, len(wave), 1024):
                frame = av.AudioFrame.from_ndarray(wave[None, start : start + 1024], format="flt", layout="mono")
                frame.sample_rate, frame.pts, frame.time_base = rate, start, fractions.Fraction(1, rate)
                for packet in sound.encode(frame):
                    container.mux(packet)
            for packet in sound.encode():
                container.mux(packet)
    return path


@pytest.fixture(scope="module")
def folder_run(grid_root: Path, tmp_path_factory) -> dict:
    """One `crossmodal timeline FOLDER` over two GRID clips and a face-less video, 1-s windows every 0.5 s."""
    videos = tmp_path_factory.mktemp("videos")
    for name in GRID:
        shutil.copy(grid_root / f"{name}.mpg", videos / f"{name}.mpg")
    blank_video(videos / "blank.mp4")
    out = tmp_path_factory.mktemp("timelines")
    code = cli_main(["timeline", str(videos), "--out", str(out), "--window", "1", "--hop", "0.5", "--thumbnails", "6"])
    return {"code": code, "out": out, "videos": videos}


def test_grid_video_gives_json_csv_and_png(folder_run: dict) -> None:
    assert folder_run["code"] == 0
    out = folder_run["out"]
    doc = json.loads((out / "bbaf2n.timeline.json").read_text())
    rows = doc["windows"]
    # 2.98 s of audio in 1-s windows every 0.5 s: starts 0, 0.5, ..., 1.5, then one ending at the end
    assert [r["start"] for r in rows] == [0.0, 0.5, 1.0, 1.5, 1.978]
    assert doc["emotions"] == list(EMOTIONS) and doc["settings"]["reduce"] == "max" and doc["settings"]["temperature"] == 2.0
    assert doc["settings"]["teacher_precision"] == "int8"  # the CPU default (--teacher-precision auto)
    # GRID clips open with about a second of silence: the first window holds no speech, the others do
    assert [r["speech"] for r in rows] == [False, True, True, True, True] and rows[0]["voiced_fraction"] == 0.0
    assert all(r["voiced_fraction"] >= 0.1 for r in rows[1:]) and doc["summary"]["windows_with_speech"] == 4
    for row in rows:
        assert row["face"] and row["face_frames"] >= 4  # GRID: one face filling the frame, 25/6 face frames per second
        teacher = np.array([row[f"teacher_{e}"] for e in EMOTIONS])
        assert teacher.sum() == pytest.approx(1, abs=1e-3) and row["teacher_top"] == EMOTIONS[int(teacher.argmax())]
        if not row["speech"]:  # marked as a window without a face is: no student distribution, no agreement
            assert row["student_top"] is None and row["kl"] is None and row["top_match"] is None
            assert all(row[f"student_{e}"] is None for e in EMOTIONS)
            continue
        student = np.array([row[f"student_{e}"] for e in EMOTIONS])
        assert student.sum() == pytest.approx(1, abs=1e-3) and row["student_top"] == EMOTIONS[int(student.argmax())]
        assert row["top_match"] == (row["teacher_top"] == row["student_top"])
        assert row["soft_ce"] > row["kl"] >= 0  # soft CE = KL + the teacher's entropy
    with open(out / "bbaf2n.timeline.csv", newline="") as f:
        table = list(csv.DictReader(f))
    assert len(table) == len(rows) and float(table[2]["kl"]) == pytest.approx(rows[2]["kl"], abs=1e-5)
    png = out / "bbaf2n.timeline.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and 20_000 < png.stat().st_size < 600_000
    from PIL import Image

    with Image.open(png) as image:
        assert image.size == (1200, 720)


def test_a_video_without_a_face_or_speech_says_so_in_every_window(folder_run: dict) -> None:
    doc = json.loads((folder_run["out"] / "blank.timeline.json").read_text())
    assert doc["windows"] and all(not r["face"] and r["face_frames"] == 0 and r["sampled_frames"] >= 4 for r in doc["windows"])
    # its soundtrack is Gaussian noise: no window has speech, so none has a student distribution either
    assert all(r["teacher_top"] is None and r["kl"] is None and r["student_top"] is None for r in doc["windows"])
    assert all(r["speech"] is False and r["voiced_fraction"] == 0.0 for r in doc["windows"])
    assert doc["summary"]["windows_with_face"] == 0 and doc["summary"]["windows_with_speech"] == 0
    assert doc["summary"]["top_match_rate"] is None and doc["settings"]["voiced_fraction"] == 0.0
    assert (folder_run["out"] / "blank.timeline.png").exists()


def test_folder_gives_one_summary_row_per_video(folder_run: dict) -> None:
    out = folder_run["out"]
    with open(out / "summary.csv", newline="") as f:
        rows = {Path(r["video"]).stem: r for r in csv.DictReader(f)}
    assert sorted(rows) == ["bbaf2n", "blank", "swiz3n"]
    assert rows["blank"]["windows_with_face"] == "0" and rows["bbaf2n"]["windows_with_face"] == rows["bbaf2n"]["windows"] == "5"
    assert rows["blank"]["windows_with_speech"] == "0" and rows["bbaf2n"]["windows_with_speech"] == "4"
    summary = json.loads((out / "summary.json").read_text())["videos"]
    assert [Path(v["video"]).stem for v in summary] == ["bbaf2n", "blank", "swiz3n"] and not any(v["error"] for v in summary)


def test_fp32_teacher_when_asked_agrees_with_the_int8_default(folder_run: dict, tmp_path: Path, capsys) -> None:
    video = folder_run["videos"] / "swiz3n.mpg"
    args = ["timeline", str(video), "--out", str(tmp_path), "--window", "1", "--hop", "0.5", "--no-plot", "--thumbnails", "0"]
    assert cli_main([*args, "--teacher-precision", "fp32"]) == 0
    fp32 = json.loads((tmp_path / "swiz3n.timeline.json").read_text())
    int8 = json.loads((folder_run["out"] / "swiz3n.timeline.json").read_text())
    assert fp32["settings"]["teacher_precision"] == "fp32"
    same = [a["teacher_top"] == b["teacher_top"] for a, b in zip(fp32["windows"], int8["windows"])]
    assert len(same) == len(int8["windows"]) and sum(same) >= len(same) - 1
    with pytest.raises(SystemExit):
        cli_main([*args, "--teacher-precision", "bf16"])
    assert "--teacher-precision: invalid choice: 'bf16'" in capsys.readouterr().err


def test_figure_has_face_panel_above_voice_panel(grid_root: Path) -> None:
    from crossmodal.inference import load_student
    from crossmodal.inference.timeline_plot import FACE_TITLE, VOICE_TITLE, timeline_figure
    from crossmodal.models.loading import load_teacher
    from crossmodal.utils.plots import close

    timeline = video_timeline(grid_root / "lbax4n.mpg", load_student(), load_teacher(), window=1.5, hop=0.5, reduce="mean", thumbnails=4)
    assert 1 <= len(timeline.thumbnails) <= 4 and timeline.frames_with_face == timeline.frames_sampled
    fig = timeline_figure(timeline)
    try:
        axes = {ax.get_title(loc="left").split(" (")[0]: ax for ax in fig.axes}
        face, voice = axes[FACE_TITLE], axes[VOICE_TITLE]
        assert face.get_position().y0 > voice.get_position().y1  # face above voice
        assert len(fig.axes) == 4  # thumbnails, face, voice, agreement
        # stacked areas in the one palette, same order in both panels
        for ax in (face, voice):
            colours = [tuple(np.round(c.get_facecolor()[0][:3], 3)) for c in ax.collections[: len(EMOTIONS)]]
            from matplotlib.colors import to_rgb

            assert colours == [tuple(np.round(to_rgb(EMOTION_COLORS[e]), 3)) for e in EMOTIONS]
    finally:
        close(fig)


def test_outputs_go_to_the_current_folder_not_beside_the_video(grid_root: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    videos, here = tmp_path / "data", tmp_path / "here"
    videos.mkdir(), here.mkdir()
    shutil.copy(grid_root / "swiz3n.mpg", videos / "swiz3n.mpg")
    monkeypatch.chdir(here)
    assert cli_main(["timeline", str(videos / "swiz3n.mpg"), "--no-plot", "--thumbnails", "0"]) == 0
    assert sorted(p.name for p in here.iterdir()) == ["swiz3n.timeline.csv", "swiz3n.timeline.json"]
    assert sorted(p.name for p in videos.iterdir()) == ["swiz3n.mpg"]  # the user's data folder is left alone
    assert str(here / "swiz3n.timeline.json") in capsys.readouterr().out


def test_video_without_audio_is_refused_naming_it(tmp_path: Path) -> None:
    from crossmodal.inference import load_student

    path = blank_video(tmp_path / "mute.mp4", seconds=1.0, audio=False)
    with pytest.raises(ValueError, match="mute.mp4.*audio"):
        video_timeline(path, load_student(), teacher=None)


def test_aggregator_streams_an_hour_in_bounded_memory() -> None:
    """An hour at 25/6 frames per second, 4-s windows every 2 s: every window's target equals
    aggregate_logits over all frames, yet only the open windows' frames are ever held."""
    fps, seconds = 25 / 6, 3600.0
    n = int(seconds * fps)
    rng = np.random.default_rng(0)
    times = np.arange(n) / fps
    logits = rng.standard_normal((n, len(EMOTIONS))).astype(np.float32)
    face = np.ones(n, bool)
    face[(times > 100) & (times < 110)] = False  # ten seconds without a face
    spans = [(a / 16000, b / 16000) for a, b in window_spans(int(seconds * 16000), 4 * 16000, 2 * 16000)]
    aggregator = WindowAggregator(spans, "max")

    def frames():  # a generator: the test never hands the aggregator a list
        for i in range(n):
            yield times[i], (logits[i] if face[i] else None)

    closed = []
    for time, frame_logits in frames():
        closed += aggregator.add(time, frame_logits)
    closed += aggregator.finish()
    assert [c[0] for c in closed] == list(range(len(spans)))
    assert aggregator.peak <= 4 * fps + 2 and aggregator.held == 0
    for index in (0, 1, 50, 51, 52, len(spans) - 1):
        start, end = spans[index]
        expected = aggregate_logits(logits[face], times[face], start, end, "max")
        np.testing.assert_array_equal(closed[index][1], expected)
    no_face = [c for c in closed if spans[c[0]][0] > 100 and spans[c[0]][1] < 110]
    assert no_face and all(c[1] is None and c[2] == 0 and c[3] > 0 for c in no_face)


def test_thumbnails_stay_bounded() -> None:
    picker = ThumbnailPicker(duration=3600.0, count=8)
    crop = np.zeros((4, 4), np.uint8)
    for i in range(20_000):
        picker.offer(i * 0.18, crop + (i % 200))
    thumbnails = picker.thumbnails()
    assert len(thumbnails) == 8
    assert [round(t) for t, _ in thumbnails] == [225, 675, 1125, 1575, 2025, 2475, 2925, 3375]
