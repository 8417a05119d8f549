"""A VoxCeleb-shaped distillation set of N segments, built from real material (issue 21, item 2).

    python experiments/scaling/make_voxshaped.py --n 10000 --out /data/voxshaped-10k
    python experiments/scaling/make_voxshaped.py --n 100000 --out /data/voxshaped-100k --workers 8
    python -m crossmodal.run experiment=distill_senet data.shards=/data/voxshaped-10k ...

What is real and what is not:
- audio: real speech windows cut from the speech given with ``--speech`` (defaults: the shipped
  EmoDB demo clips; the shared EmoDB, GRID and VoxCeleb1 files and the 1,000 GRID s1 clips when
  present). Every segment is a fresh random crop of one real speaker's concatenated clips at a
  random gain, so no two segments are identical (the recipe is recorded in each sample's json);
- logits: the shipped teacher's (or ``--teacher``'s) pre-softmax logits on real FER+ faces
  (``--ferplus``), computed once per face; each synthetic identity gets its own few faces and each
  frame of a segment shows one of them. Frames at the paper's 25/6 fps;
- shape: segment lengths drawn like VoxCeleb utterances (log-normal, median 7 s, at least 4 s),
  clamped to the paper's 19.9 s; thousands of synthetic identities (VoxCeleb2's 6,112 at most),
  several videos each, split train / heard / unheard by the project's identity split
  (:func:`crossmodal.io.splits.make_split`);
- pairing: NOT real. Voice and faces are unrelated, so a student trained on this learns nothing
  about emotion: the set measures cost (disk, reading, loader, step), never accuracy. Marked
  ``synthetic: true`` in the manifest and in every sample.

The output is exactly what ``task=extract`` writes (the project's shard writer: tars + sidecars +
``manifest.json`` with a fingerprint, ``splits.json``), so ``data.shards=<out>`` reads it; a
killed build resumes (finished shards are reused, the set's inputs are checked by fingerprint).
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import os
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
SHARED = Path(os.environ.get("CROSSMODAL_SHARED_DATA", ROOT.parent / "shared" / "data"))
DEMO = ROOT / "crossmodal" / "assets" / "demo"
GRID_S1 = Path(os.environ.get("CROSSMODAL_GRID_S1", "/work/grid_s1/data/s1"))
AUDIO_EXTENSIONS = (".wav", ".flac", ".mpg", ".mp4", ".m4a")
EMODB_NAME = re.compile(r"\d\d[a-z]\d\d[A-Z][a-z]")

log = logging.getLogger("make_voxshaped")


def default_speech() -> list[Path]:
    """The shipped demo EmoDB, then whichever shared corpora and GRID s1 clips are here."""
    found = [SHARED / "emodb" / "wav" if (SHARED / "emodb" / "wav").is_dir() else DEMO / "emodb" / "wav"]
    found += [p for p in (SHARED / "grid", SHARED / "voxceleb1", GRID_S1) if p.is_dir()]
    return found


def default_ferplus() -> Path:
    return SHARED / "ferplus" if (SHARED / "ferplus").is_dir() else DEMO / "ferplus"


# ----------------------------------------------------------------------------------- material


def speaker_of(path: Path, root: Path) -> str:
    """Which real voice a file is: EmoDB's two-digit speaker, GRID's ``idN_``/folder, else the folder."""
    stem = path.stem
    if EMODB_NAME.fullmatch(stem):
        return f"{root.name}/{stem[:2]}"
    match = re.match(r"id(\d+)_", stem)  # the shared GRID samples: id2_vcd_swwp2s
    if match:
        return f"grid/s{match.group(1)}"
    return f"{root.name}/{path.parent.name}"


def load_voices(roots: list[Path], sample_rate: int, max_files: int | None) -> dict[str, dict[str, Any]]:
    """``{speaker: {"wave": float32 concatenation of the speaker's clips, "files": [...], "seconds": s}}``."""
    from crossmodal.io.audio import AudioError, load_audio
    from crossmodal.utils.progress import progress

    files: list[tuple[Path, Path]] = []
    for root in roots:
        if not root.exists():
            raise FileNotFoundError(f"--speech {root}: no such folder")
        listed = sorted(p for p in root.rglob("*") if p.suffix.lower() in AUDIO_EXTENSIONS and p.is_file())
        files += [(root, p) for p in (listed[:max_files] if max_files else listed)]
    if not files:
        raise FileNotFoundError(f"no speech ({', '.join(AUDIO_EXTENSIONS)}) under {', '.join(map(str, roots))}")
    parts: dict[str, list[np.ndarray]] = {}
    names: dict[str, list[str]] = {}
    skipped = 0
    for root, path in progress(files, desc="reading speech", unit="file"):
        try:
            wave = load_audio(path, sample_rate)
        except AudioError as exn:
            log.warning("skipped %s: %s", path, exn)
            skipped += 1
            continue
        speaker = speaker_of(path, root)
        parts.setdefault(speaker, []).append(wave.astype(np.float32))
        names.setdefault(speaker, []).append(str(path))
    voices = {}
    for speaker in sorted(parts):
        wave = np.concatenate(parts[speaker])
        voices[speaker] = {"wave": wave, "files": names[speaker], "seconds": len(wave) / sample_rate}
    log.info("speech: %d files of %d real speakers, %.1f min (%d unreadable, skipped)", len(files) - skipped, len(voices),
             sum(v["seconds"] for v in voices.values()) / 60, skipped)
    return voices


def face_logits(ferplus: Path, teacher: str | None, max_faces: int, seed: int) -> tuple[list[str], np.ndarray]:
    """The teacher's logits on up to ``max_faces`` real FER+ faces (validation and test first): (names, [K, 8])."""
    import torch

    from crossmodal.io.ferplus import load_ferplus_image, read_ferplus
    from crossmodal.models.loading import load_teacher
    from crossmodal.pipeline.extract import teacher_logits

    splits = [s for s, folder in (("val", "FER2013Valid"), ("test", "FER2013Test"), ("train", "FER2013Train"))
              if (ferplus / folder).is_dir()] or ["val", "test"]
    faces = read_ferplus(ferplus, splits=splits, cleaning="cntk")
    rng = np.random.default_rng(seed)
    chosen = [faces[i] for i in sorted(rng.permutation(len(faces))[:max_faces])]
    images = np.stack([load_ferplus_image(face) for face in chosen])
    torch.set_num_threads(max(1, min(4, os.cpu_count() or 1)))
    logits = teacher_logits(load_teacher(teacher), images, batch_size=256)
    log.info("teacher logits on %d real FER+ faces (%s)", len(chosen), "+".join(splits))
    return [f"{face.split}/{face.name}" for face in chosen], logits.astype(np.float32)


# ----------------------------------------------------------------------------------- the plan


@dataclass(frozen=True)
class Segment:
    """One planned segment: everything needed to build it (a pure function of the seed)."""

    index: int
    identity: str
    video: str
    utterance: str
    voice: str
    duration: float
    start_fraction: float  # where the crop starts in the voice's concatenated speech (0..1 of the room left)
    gain_db: float
    faces: tuple[int, ...]  # indices into the face pool: the faces of this video's track


def plan(n: int, voices: list[str], n_faces: int, seed: int, *, identities: int | None = None,
         max_seconds: float = 19.9, min_seconds: float = 4.0) -> list[Segment]:
    """N segments over ``identities`` synthetic speakers (default: N/16, at least 2, at most 6,112 as in
    VoxCeleb2), ~4 segments per video, lengths log-normal (median 7 s) clamped to [min, max] seconds."""
    rng = np.random.default_rng(seed)
    identities = identities or int(min(6112, max(2, n // 16)))
    per_id = rng.multinomial(n - identities, np.full(identities, 1.0 / identities)) + 1 if n >= identities else None
    if per_id is None:
        raise ValueError(f"--n {n} is smaller than --identities {identities}")
    id_voice = rng.integers(0, len(voices), identities)
    id_faces = rng.integers(0, n_faces, (identities, 8))  # each identity's own faces
    durations = np.clip(np.exp(rng.normal(math.log(7.0), 0.45, n)), min_seconds, max_seconds)
    starts, gains = rng.random(n), rng.uniform(-9.0, 3.0, n)
    segments, index = [], 0
    for ident, count in enumerate(per_id):
        videos = max(1, int(round(count / 4)))
        for k in range(int(count)):
            video = k % videos
            track = tuple(int(f) for f in rng.choice(id_faces[ident], 3, replace=False))
            segments.append(Segment(index, f"vs{ident:05d}", f"v{video:03d}", f"{k:05d}", voices[int(id_voice[ident])],
                                    round(float(durations[index]), 3), float(starts[index]), round(float(gains[index]), 2),
                                    track))
            index += 1
    return segments


def build_sample(seg: Segment, split: str, voice: np.ndarray, face_names: list[str], logits: np.ndarray,
                 sample_rate: int, frame_rate: float, teacher_name: str) -> dict[str, Any]:
    """One distillation sample (flac, logits.npy, times.npy, json), as ``task=extract`` writes it."""
    from crossmodal.io.audio import encode_flac
    from crossmodal.pipeline.pairs.codec import npy_bytes

    length = int(round(seg.duration * sample_rate))
    if len(voice) <= length:  # a short voice: loop it (the crop start still differs per segment)
        voice = np.tile(voice, length // len(voice) + 2)
    begin = int(seg.start_fraction * (len(voice) - length))
    wave = voice[begin : begin + length] * np.float32(10.0 ** (seg.gain_db / 20.0))
    peak = float(np.max(np.abs(wave))) or 1.0
    if peak > 0.99:  # no clipping: scale down, keep the recorded gain honest
        wave = wave * np.float32(0.99 / peak)
    n_frames = int(math.ceil(seg.duration * frame_rate - 1e-9))
    times = (np.arange(n_frames) / frame_rate).astype(np.float32)
    frame_rng = np.random.default_rng([seg.index, 7])
    shown = np.asarray(seg.faces)[frame_rng.integers(0, len(seg.faces), n_frames)]
    meta = {
        "identity": seg.identity, "video": seg.video, "utterance": seg.utterance, "track": 0, "segment": 0,
        "split": split, "start": 0.0, "duration": round(length / sample_rate, 6), "sample_rate": sample_rate,
        "frame_rate": frame_rate, "n_frames": n_frames, "synthetic": True, "teacher": teacher_name,
        "voice": seg.voice, "voice_offset": begin, "gain_db": seg.gain_db,
        "faces": [face_names[i] for i in seg.faces],
    }
    return {
        "__key__": f"{seg.identity}_{seg.video}_{seg.utterance}",
        "flac": encode_flac(wave, sample_rate),
        "logits.npy": npy_bytes(logits[shown].astype(np.float16)),
        "times.npy": npy_bytes(times),
        "json": json.dumps(meta, sort_keys=True).encode(),
    }


# ----------------------------------------------------------------------------------- the set


def make_voxshaped(out: Path, n: int, *, speech: list[Path] | None = None, ferplus: Path | None = None,
                   teacher: str | None = None, seed: int = 0, samples_per_shard: int = 64, workers: int = 0,
                   max_faces: int = 4096, max_files: int | None = None, identities: int | None = None) -> dict[str, Any]:
    """Build (or finish, or reuse) the set in ``out``; return its summary (also in the manifest's meta)."""
    from crossmodal import paper
    from crossmodal.emotions import EMOTIONS
    from crossmodal.io.splits import make_split, save_split
    from crossmodal.models.loading import teacher_file, teacher_name
    from crossmodal.pipeline.cache import claim
    from crossmodal.pipeline.fingerprint import file_sha256, input_fingerprint
    from crossmodal.pipeline.parallel import prefetched
    from crossmodal.pipeline.shards import ShardJob, load_manifest, write_shard_set

    speech = [Path(p) for p in (speech or default_speech())]
    ferplus = Path(ferplus or default_ferplus())
    sample_rate, frame_rate = 16000, paper.FACE_FRAME_RATE
    settings = {"n": n, "seed": seed, "samples_per_shard": samples_per_shard, "max_faces": max_faces, "max_files": max_files,
                "identities": identities, "max_seconds": paper.MAX_SECONDS, "frame_rate": frame_rate, "logits_dtype": "float16",
                "generator": "experiments/scaling/make_voxshaped.py v1", "synthetic": True}
    fingerprint = input_fingerprint("distill", sources={f"speech{i}": p for i, p in enumerate(speech)} | {"ferplus": ferplus},
                                    settings=settings, teacher=teacher_file(teacher))
    if claim(out, fingerprint, what="VoxCeleb-shaped set", named_by="--out"):
        return load_manifest(out).meta["summary"]
    started = time.perf_counter()
    voices = load_voices(speech, sample_rate, max_files)
    face_names, logits = face_logits(ferplus, teacher, max_faces, seed)
    segments = plan(n, sorted(voices), len(face_names), seed, identities=identities, max_seconds=paper.MAX_SECONDS)
    split = make_split(sorted({(s.identity, s.video) for s in segments}), seed=seed)
    save_split(split, out / "splits.json", {s.identity for s in segments})
    by_split: dict[str, list[Segment]] = {"train": [], "heard": [], "unheard": []}
    for seg in segments:
        by_split[split.assign(seg.identity, seg.video)].append(seg)
    jobs = [ShardJob(f"{which}-{start // samples_per_shard:06d}", [(which, s) for s in members[start : start + samples_per_shard]])
            for which, members in by_split.items() for start in range(0, len(members), samples_per_shard)]
    name = teacher_name(teacher)
    prepared = time.perf_counter() - started

    def build(job: ShardJob) -> list[dict[str, Any]]:
        return [build_sample(seg, which, voices[seg.voice]["wave"], face_names, logits, sample_rate, frame_rate, name)
                for which, seg in job.items]

    from crossmodal.pipeline.shards import shard_done

    results = prefetched([j for j in jobs if not shard_done(out, j.name)], build, workers)

    def make_samples(job: ShardJob, skips: Any):
        built_name, samples = next(results)
        if built_name != job.name:  # pragma: no cover - fixed by construction
            raise RuntimeError(f"order mismatch: built {built_name}, writing {job.name}")
        yield from samples

    seconds = [s.duration for s in segments]
    summary = {
        "segments": n, "identities": len({s.identity for s in segments}), "videos": len({(s.identity, s.video) for s in segments}),
        "per_split": {k: len(v) for k, v in by_split.items()}, "shards": len(jobs),
        "hours": round(sum(seconds) / 3600, 3), "seconds": {"min": min(seconds), "median": float(np.median(seconds)),
                                                            "mean": round(float(np.mean(seconds)), 3), "max": max(seconds)},
        "frames": int(sum(math.ceil(d * frame_rate - 1e-9) for d in seconds)),
        "real_voices": len(voices), "real_speech_minutes": round(sum(v["seconds"] for v in voices.values()) / 60, 2),
        "real_faces": len(face_names),
    }
    meta = {
        "kind": "distill", "teacher": name, "teacher_sha256": file_sha256(teacher_file(teacher)), "pairs": None,
        "split_file": str(out / "splits.json"), "frame_rate": frame_rate, "sample_rate": sample_rate, "synthetic": True,
        "purpose": "VoxCeleb-shaped cost rehearsal: real speech windows and real teacher logits on real FER+ faces, "
                   "randomly paired (no emotion signal): for measuring disk, reading, loaders and steps, never accuracy",
        "emotions": list(EMOTIONS), "logits_dtype": "float16", "fingerprint": fingerprint, "summary": summary,
        "speech": [str(p) for p in speech], "ferplus": str(ferplus),
    }
    write_started = time.perf_counter()
    write_shard_set(out, jobs, make_samples, meta=meta, desc="voxshaped shards")
    summary["build_seconds"] = {"material": round(prepared, 1), "shards": round(time.perf_counter() - write_started, 1)}
    log.info("voxshaped: %s", json.dumps(summary))
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, required=True, help="segments")
    parser.add_argument("--out", type=Path, required=True, help="the shard-set folder to write (resumed when there)")
    parser.add_argument("--speech", type=Path, action="append", help="a folder of real speech (repeatable); default: %(default)s")
    parser.add_argument("--ferplus", type=Path, default=None, help="FER+ root (FER2013Valid/Test[/Train] with label.csv)")
    parser.add_argument("--teacher", default=None, help="teacher file (default: the shipped CPU teacher)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--samples-per-shard", type=int, default=64)
    parser.add_argument("--identities", type=int, default=None, help="synthetic speakers (default N/16, at most 6,112)")
    parser.add_argument("--workers", type=int, default=0, help="building processes")
    parser.add_argument("--max-faces", type=int, default=4096)
    parser.add_argument("--max-files", type=int, default=None, help="at most this many speech files per --speech folder")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    summary = make_voxshaped(args.out, args.n, speech=args.speech, ferplus=args.ferplus, teacher=args.teacher, seed=args.seed,
                             samples_per_shard=args.samples_per_shard, workers=args.workers, max_faces=args.max_faces,
                             max_files=args.max_files, identities=args.identities)
    print(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
