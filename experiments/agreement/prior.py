"""The in-the-wild prior of the agreement knob: the shipped teacher's class frequencies on the
talking-face frames we hold (the 11 GRID clips), read from `crossmodal timeline` outputs made with
one face frame per window:

    crossmodal timeline ../shared/data/grid/ --out OUT --window 0.24 --hop 0.24 --reduce mean \\
        --temperature 1 --frame-rate 4.1666667 --no-plot
    python experiments/agreement/prior.py OUT

Prints the teacher's mean softmax over the face frames (the prior crossmodal.pipeline.pseudo_pairs
uses as IN_THE_WILD_PRIOR) and its argmax counts.
"""
from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", type=Path, help="the timeline output folder (<video>.timeline.json files)")
    args = parser.parse_args(argv)
    files = sorted(args.folder.glob("*.timeline.json"))
    if not files:
        raise SystemExit(f"{args.folder}: no *.timeline.json (run `crossmodal timeline` first, see --help)")
    soft: Counter = Counter()
    top: Counter = Counter()
    frames = 0
    emotions: list[str] = []
    for path in files:
        timeline = json.loads(path.read_text())
        emotions = timeline["emotions"]
        for window in timeline["windows"]:
            if window["face"] and window["face_frames"] == 1:  # one face frame per window: per-frame figures
                frames += 1
                top[window["teacher_top"]] += 1
                for emotion in emotions:
                    soft[emotion] += window[f"teacher_{emotion}"]
    print(f"{frames} face frames of {len(files)} videos")
    print("mean softmax:", json.dumps({e: round(soft[e] / frames, 4) for e in emotions}))
    print("argmax counts:", json.dumps({e: top[e] for e in emotions}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
