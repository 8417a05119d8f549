"""Build the data the demo ships with (crossmodal/assets/demo/) from the full corpora.

    python experiments/demo/make_demo_assets.py --emodb /data/emodb --ferplus /data/ferplus

- EmoDB: every clip whose emotion maps onto FER+ (boredom has no FER+ class and is left out),
  resampled to 16 kHz and stored as FLAC under the corpus's own names (wav/03a01Wa.flac).
- FER+: `--faces-per-emotion` faces per emotion from FER2013Valid and FER2013Test (faces the
  teacher never trained on), with clear majorities, in the FER+ folder layout with label.csv rows.
The result is a few tens of MB; the demo reads it through the same readers as the full corpora.
"""
from __future__ import annotations

import argparse
import csv
import shutil
from pathlib import Path

import numpy as np
import soundfile as sf

from crossmodal.emotions import EMOTIONS
from crossmodal.io.audio import load_audio

OUT = Path(__file__).resolve().parents[2] / "crossmodal" / "assets" / "demo"


def build_emodb(source: Path, out: Path) -> int:
    (out / "wav").mkdir(parents=True, exist_ok=True)
    count = 0
    for path in sorted((source / "wav").glob("*.wav")):
        if path.stem[5] == "L":  # boredom: no FER+ emotion
            continue
        sf.write(out / "wav" / f"{path.stem}.flac", load_audio(path, 16000), 16000, format="FLAC")
        count += 1
    return count


def build_ferplus(source: Path, out: Path, per_emotion: int, seed: int) -> int:
    rng = np.random.default_rng(seed)
    count = 0
    for folder in ("FER2013Valid", "FER2013Test"):
        rows = list(csv.reader(open(source / folder / "label.csv")))
        by_emotion: dict[int, list[list[str]]] = {}
        for row in rows:
            votes = np.array([int(v) for v in row[2:12]])
            top = int(votes.argmax())
            if top < len(EMOTIONS) and votes[top] >= 0.5 * votes.sum():
                by_emotion.setdefault(top, []).append(row)
        (out / folder).mkdir(parents=True, exist_ok=True)
        chosen = []
        for _emotion, candidates in sorted(by_emotion.items()):
            take = rng.permutation(len(candidates))[: per_emotion // 2]
            chosen += [candidates[i] for i in sorted(take)]
        with open(out / folder / "label.csv", "w", newline="") as f:
            csv.writer(f).writerows(chosen)
        for row in chosen:
            shutil.copy(source / folder / row[0], out / folder / row[0])
        count += len(chosen)
    return count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--emodb", type=Path, required=True)
    parser.add_argument("--ferplus", type=Path, required=True)
    parser.add_argument("--faces-per-emotion", type=int, default=80)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if OUT.exists():
        shutil.rmtree(OUT)
    clips = build_emodb(args.emodb, OUT / "emodb")
    faces = build_ferplus(args.ferplus, OUT / "ferplus", args.faces_per_emotion, args.seed)
    print(f"wrote {clips} EmoDB clips and {faces} FER+ faces to {OUT}")


if __name__ == "__main__":
    main()
