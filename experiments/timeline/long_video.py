"""A long talking-face video for the timeline's memory check: GRID clips played one after another
(looped until ``--minutes`` are reached), re-encoded with PyAV as MPEG-4 video + AAC audio in one mp4.

    .venv/bin/python experiments/timeline/long_video.py GRID_FOLDER OUT.mp4 --minutes 6
"""
from __future__ import annotations

import argparse
import fractions
import itertools
from pathlib import Path

import av
import numpy as np

from crossmodal.io.audio import load_audio
from crossmodal.io.video import sample_frames

RATE = 16000
FPS = 25


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("grid", type=Path, help="a folder of GRID .mpg clips")
    parser.add_argument("out", type=Path)
    parser.add_argument("--minutes", type=float, default=6.0)
    args = parser.parse_args()
    clips = sorted(args.grid.glob("*.mpg"))
    if not clips:
        raise SystemExit(f"no .mpg clips in {args.grid}")
    with av.open(str(args.out), "w") as container:
        video = container.add_stream("mpeg4", rate=FPS)
        video.width, video.height, video.pix_fmt, video.bit_rate = 360, 288, "yuv420p", 600_000
        sound = container.add_stream("aac", rate=RATE)
        sound.layout = "mono"
        frames = samples = 0
        for clip in itertools.cycle(clips):
            if frames >= args.minutes * 60 * FPS:
                break
            images = [image for _time, image in sample_frames(clip, FPS)]
            wave = load_audio(clip, RATE)[: round(len(images) * RATE / FPS)]
            wave = np.pad(wave, (0, round(len(images) * RATE / FPS) - len(wave)))
            for image in images:
                for packet in video.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")):
                    container.mux(packet)
            for start in range(0, len(wave), 1024):
                frame = av.AudioFrame.from_ndarray(wave[None, start : start + 1024].astype(np.float32), format="flt", layout="mono")
                frame.sample_rate, frame.pts, frame.time_base = RATE, samples + start, fractions.Fraction(1, RATE)
                for packet in sound.encode(frame):
                    container.mux(packet)
            frames += len(images)
            samples += len(wave)
        for stream in (video, sound):
            for packet in stream.encode():
                container.mux(packet)
    print(f"{args.out}: {frames / FPS / 60:.1f} min from {len(clips)} GRID clips")


if __name__ == "__main__":
    main()
