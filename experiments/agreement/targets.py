"""What the student is taught at each agreement p: how often the teacher's target for a clip (its
logits averaged over the clip's faces, as data.reduce=mean does per window) names the voice's emotion.

    python experiments/agreement/targets.py DISTILL_SET [DISTILL_SET...]

DISTILL_SET: a distillation shard folder (<data_dir>/distill/emodb_ferplus-teacher_cpu-<fp8>, built by
the curve's runs). Per set and split: clips, the fraction whose faces were chosen to agree
(``faces_agree``; all when p = 1), and the fraction whose teacher target's argmax is the voice's
emotion, overall and among agreeing / disagreeing clips. The teacher is not perfect on FER+ faces,
so even p = 1 teaches the voice's emotion on fewer than all clips.
"""
from __future__ import annotations

import argparse
import io
import json
from collections import defaultdict
from pathlib import Path

import numpy as np


def main(argv: list[str] | None = None) -> int:
    from crossmodal.emotions import EMOTIONS
    from crossmodal.pipeline.shards import iter_shard, load_manifest

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sets", nargs="+", type=Path)
    args = parser.parse_args(argv)
    print("| set | agreement p | split | clips | faces agree | teacher target = voice emotion | ... among agreeing | ... among disagreeing |")
    print("|---|---|---|---|---|---|---|---|")
    for folder in args.sets:
        manifest = load_manifest(folder)
        counts: dict[str, dict[str, list[int]]] = defaultdict(lambda: defaultdict(lambda: [0, 0]))
        p = None
        for path in manifest.paths(""):
            for sample in iter_shard(path):
                meta = json.loads(sample["json"])
                if not meta.get("label"):
                    continue
                p = meta.get("agreement", 1.0)
                logits = np.load(io.BytesIO(sample["logits.npy"]), allow_pickle=False).astype(np.float64)
                hit = int(EMOTIONS[int(logits.mean(0).argmax())] == meta["label"])
                agree = meta.get("faces_agree", True)
                for group in ("all", "agree" if agree else "disagree"):
                    counts[meta["split"]][group][0] += hit
                    counts[meta["split"]][group][1] += 1

        def rate(cell: list[int]) -> str:
            return f"{cell[0] / cell[1]:.3f} ({cell[1]})" if cell[1] else "-"

        for split in ("train", "heard", "unheard"):
            c = counts[split]
            n = c["all"][1]
            if n:
                print(f"| {folder.name} | {p:g} | {split} | {n} | {c['agree'][1] / n:.3f} | {rate(c['all'])} | "
                      f"{rate(c['agree'])} | {rate(c['disagree'])} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
