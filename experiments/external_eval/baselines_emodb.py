"""EmoDB: the practitioner's baselines (eGeMAPSv02 + LR, MFCC functionals + LR), leave-one-speaker-out.

    python experiments/external_eval/baselines_emodb.py --source /data/emodb [--cache feats.npz] [--out table.md]

For 6 classes (the emotions EmoDB shares with FER+: boredom left out) and all 7, with features
standardised globally (training folds' statistics) or per speaker (each speaker's own), the probe
of task=evaluate (crossmodal.eval.probe.cross_validate_probe: C by 3-fold inner CV grouped by
speaker) and the same probe with C fixed at 1. UA is the mean over the 10 folds (± std) and,
in brackets, pooled over all out-of-fold predictions.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from crossmodal.eval.baselines import cross_validate_probe, egemaps_features, mfcc_features
from crossmodal.eval.metrics import ua_score
from crossmodal.eval.probe import DEFAULT_CS, speaker_folds
from crossmodal.io.audio import load_audio
from crossmodal.io.corpora import read_corpus

SHARED_6 = ("anger", "disgust", "fear", "happiness", "sadness", "neutral")


def features(source: Path, cache: Path | None) -> dict[str, np.ndarray]:
    if cache is not None and cache.exists():
        return dict(np.load(cache))
    clips = read_corpus("emodb", source)
    waves = [load_audio(c.path, 16000) for c in clips]
    started = time.perf_counter()
    egemaps = egemaps_features(waves)
    egemaps_seconds = time.perf_counter() - started
    mfcc = mfcc_features(waves)
    print(f"{len(clips)} clips, {sum(len(w) for w in waves) / 16000:.0f} s of audio; eGeMAPS {egemaps_seconds:.1f} s, "
          f"MFCC {time.perf_counter() - started - egemaps_seconds:.1f} s")
    out = {"egemaps": egemaps, "mfcc": mfcc, "labels": np.array([c.corpus_label for c in clips]),
           "speakers": np.array([c.speaker for c in clips]), "paths": np.array([str(c.path) for c in clips])}
    if cache is not None:
        from crossmodal.utils.atomic import atomic_path

        with atomic_path(cache) as tmp, open(tmp, "wb") as f:
            np.savez_compressed(f, **out)
    return out


def table(data: dict[str, np.ndarray]) -> str:
    lines = ["| features | classes | standardised | UA % (C by inner CV) | UA % (C = 1) | WA % (C by inner CV) |", "|---|---|---|---|---|---|"]
    for name, title in (("egemaps", "eGeMAPSv02 (88)"), ("mfcc", "40 MFCC + Δ, mean/std (160)")):
        for classes, class_title in ((SHARED_6, "6 shared"), (tuple(sorted(set(data["labels"].tolist()))), "7")):
            rows = np.isin(data["labels"], classes)
            labels = np.array([classes.index(label) for label in data["labels"][rows]])
            speakers = data["speakers"][rows]
            folds = speaker_folds(speakers, labels, "loso")
            for per_speaker in (False, True):
                cells = []
                for Cs in (DEFAULT_CS, (1.0,)):
                    result = cross_validate_probe(data[name][rows], labels, folds, classes, groups=speakers, Cs=Cs, per_speaker=per_speaker)
                    summary = result.scores.summary()
                    pooled = ua_score(labels, result.predictions)
                    cells.append(f"{100 * summary['ua_mean']:.1f} ± {100 * summary['ua_std']:.1f} ({100 * pooled:.1f})")
                    if Cs == DEFAULT_CS:
                        wa = f"{100 * summary['wa_mean']:.1f} ± {100 * summary['wa_std']:.1f}"
                lines.append(f"| {title} | {class_title} | {'per speaker' if per_speaker else 'globally'} | {cells[0]} | {cells[1]} | {wa} |")
                print(lines[-1], flush=True)
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", type=Path, required=True, help="the EmoDB folder (wav/03a01Wa.wav ...)")
    parser.add_argument("--cache", type=Path, help="features .npz: written on the first run, read on the next")
    parser.add_argument("--out", type=Path, help="write the Markdown table here")
    args = parser.parse_args()
    started = time.perf_counter()
    text = table(features(args.source, args.cache))
    print(f"total {time.perf_counter() - started:.0f} s")
    if args.out:
        from crossmodal.utils.atomic import write_text

        write_text(args.out, text)


if __name__ == "__main__":
    main()
