"""Small real distillation shard sets for tests: EmoDB voices with teacher logits the test constructs.

Each clip's logits favour its true emotion (so a student can learn something), sampled at the
paper's ~4.17 fps with timestamps from the segment start. Speakers 03 and 08 are "train" (two
clips each held out as "heard"), speaker 09 is "unheard".
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from crossmodal.emotions import EMOTIONS
from crossmodal.io.audio import encode_flac, load_audio
from crossmodal.pipeline.shards import ShardJob, write_shard_set

# EmoDB's emotion letter (6th character of the file name) -> FER+ emotion (boredom has none)
EMODB_TO_FERPLUS = {"W": "anger", "E": "disgust", "A": "fear", "F": "happiness", "T": "sadness", "N": "neutral"}
FRAME_STEP = 0.24  # seconds between teacher frames (every 6th frame of 25 fps video)


def emodb_clips(emodb_root: Path, speakers=("03", "08", "09"), per_speaker: int = 6) -> list[tuple[Path, str, str]]:
    """(path, speaker, FER+ emotion) for the first clips of each speaker, emotions interleaved."""
    chosen = []
    for speaker in speakers:
        files = sorted(p for p in (Path(emodb_root) / "wav").glob(f"{speaker}*.wav") if p.name[5] in EMODB_TO_FERPLUS)
        by_emotion: dict[str, list[Path]] = {}
        for path in files:
            by_emotion.setdefault(path.name[5], []).append(path)
        picked = []
        while len(picked) < per_speaker and any(by_emotion.values()):
            for letter in sorted(by_emotion):
                if by_emotion[letter] and len(picked) < per_speaker:
                    picked.append(by_emotion[letter].pop(0))
        chosen += [(p, speaker, EMODB_TO_FERPLUS[p.name[5]]) for p in picked]
    return chosen


def constructed_logits(emotion: str, n_frames: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    logits = rng.normal(0.0, 0.5, size=(n_frames, len(EMOTIONS))).astype(np.float32)
    logits[:, EMOTIONS.index(emotion)] += 3.0
    return logits


def write_distill_shards(out_dir: Path, emodb_root: Path, per_speaker: int = 6, with_frames: bool = False, frame_size: int = 48) -> Path:
    """Write train-/heard-/unheard- shards (logits, or face-like frames when ``with_frames``)."""
    clips = emodb_clips(emodb_root, per_speaker=per_speaker)
    items: dict[str, list] = {"train": [], "heard": [], "unheard": []}
    for index, (path, speaker, emotion) in enumerate(clips):
        if speaker == "09":
            split = "unheard"
        else:
            split = "heard" if sum(1 for p, s, _ in clips[:index] if s == speaker) < 2 else "train"
        items[split].append((index, path, speaker, emotion, split))

    def make_samples(job: ShardJob, skips):
        for index, path, speaker, emotion, split in job.items:
            wave = load_audio(path, 16000)
            duration = len(wave) / 16000
            times = np.arange(0.0, duration, FRAME_STEP, dtype=np.float32)
            sample = {
                "__key__": f"emodb_{path.stem}",
                "flac": encode_flac(wave, 16000),
                "times.npy": times,
                "json": {
                    "identity": speaker, "video": path.stem, "track": 0, "segment": 0, "split": split,
                    "duration": duration, "sample_rate": 16000, "synthetic": True, "label": emotion,
                },
            }
            if with_frames:  # a pair-shard sample: face-like frames (PNG, lossless) instead of logits
                from crossmodal.pipeline.pairs import make_pair_sample

                rng = np.random.default_rng(index)
                frames = rng.integers(0, 256, size=(len(times), frame_size, frame_size), dtype=np.uint8)
                yield make_pair_sample(sample["__key__"], wave, 16000, list(frames), times, sample["json"], image_format="png")
                continue
            sample["logits.npy"] = constructed_logits(emotion, len(times), index)
            yield sample

    jobs = [ShardJob(f"{split}-000000", split_items) for split, split_items in items.items() if split_items]
    write_shard_set(out_dir, jobs, make_samples, meta={"kind": "test distillation shards"})
    return Path(out_dir)
