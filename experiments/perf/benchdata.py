"""Shard sets for the performance benchmarks: pair shards (speech + face frames) and distillation
shards (speech + the shipped teacher's logits) made from real clips when they are there.

Speech: EmoDB utterances (``--emodb``, default ``../shared/data/emodb`` beside the clone), resampled
to 16 kHz and concatenated per speaker into segments of ``segment_seconds`` (VoxCeleb's segments
are ~8 s; EmoDB's clips ~2.8 s), or synthesised voiced sound when EmoDB is absent.
Faces: real FER+ 48x48 grey faces (``--ferplus``) at the pair shards' 25/6 fps, stored as PNG as
the pseudo-pair shards store them, or synthesised blobs when FER+ is absent.
The distillation shards are written by ``crossmodal.pipeline.extract.extract_logits`` with the
shipped CPU teacher, exactly as ``task=extract`` writes them.

``replicate_shards`` copies a shard set k times with fresh keys (P4's 10 x N epoch).
Everything is cached under the work folder and reused when the settings match.
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[2]
SHARED = Path(os.environ.get("CROSSMODAL_SHARED_DATA", REPO.parent / "shared" / "data"))
SAMPLE_RATE = 16000
FRAME_RATE = 25.0 / 6.0
EMODB_TO_FERPLUS = {"W": "anger", "E": "disgust", "A": "fear", "F": "happiness", "T": "sadness", "N": "neutral", "L": "neutral"}


@dataclass
class BenchDataSpec:
    segments: int = 96            # training segments (unique)
    segment_seconds: float = 8.0  # target length of a concatenated segment
    per_shard: int = 32           # segments per shard
    heard: int = 8                # segments in the heard- shard (eval paths need one)
    seed: int = 0
    emodb: str | None = None
    ferplus: str | None = None


def default_sources() -> tuple[str | None, str | None]:
    emodb, ferplus = SHARED / "emodb", SHARED / "ferplus"
    return (str(emodb) if (emodb / "wav").is_dir() else None, str(ferplus) if (ferplus / "FER2013Valid").is_dir() else None)


def _voices(spec: BenchDataSpec, rng: np.random.Generator) -> tuple[list[tuple[str, np.ndarray, str]], str]:
    """(speaker, 16 kHz wave, emotion) per segment, and a description of where the sound came from."""
    total = spec.segments + spec.heard
    if spec.emodb:
        from crossmodal.io.audio import load_audio

        files = sorted((Path(spec.emodb) / "wav").glob("*.wav"))
        by_speaker: dict[str, list[Path]] = {}
        for path in files:
            by_speaker.setdefault(path.name[:2], []).append(path)
        speakers = sorted(by_speaker)
        out, cursor = [], {s: 0 for s in speakers}
        cache: dict[Path, np.ndarray] = {}
        while len(out) < total:
            speaker = speakers[len(out) % len(speakers)]
            pieces, length = [], 0
            clips = by_speaker[speaker]
            first = clips[cursor[speaker] % len(clips)]
            while length < spec.segment_seconds * SAMPLE_RATE:
                path = clips[cursor[speaker] % len(clips)]
                cursor[speaker] += 1
                if path not in cache:
                    cache[path] = load_audio(path, SAMPLE_RATE)
                pieces.append(cache[path])
                length += len(cache[path])
            wave = np.concatenate(pieces)[: int(spec.segment_seconds * SAMPLE_RATE)]
            out.append((speaker, wave, EMODB_TO_FERPLUS.get(first.name[5], "neutral")))
        return out, f"real EmoDB speech ({spec.emodb}), clips concatenated per speaker into {spec.segment_seconds:g} s segments"
    out = []
    t = np.arange(int(spec.segment_seconds * SAMPLE_RATE)) / SAMPLE_RATE
    for index in range(total):
        f0 = 100 + 120 * rng.random() + 20 * np.sin(2 * np.pi * 0.5 * t)
        phase = 2 * np.pi * np.cumsum(f0) / SAMPLE_RATE
        wave = sum(np.sin(k * phase) / k for k in range(1, 12)) * (0.5 + 0.5 * np.sin(2 * np.pi * 3 * t) ** 2)
        wave = 0.1 * wave + 0.01 * rng.standard_normal(len(t))
        out.append((f"s{index % 10:02d}", wave.astype(np.float32), "neutral"))
    return out, f"synthesised voiced sound (EmoDB not found), {spec.segment_seconds:g} s segments"


def _faces(spec: BenchDataSpec, rng: np.random.Generator, count: int = 512) -> tuple[list[np.ndarray], str]:
    if spec.ferplus:
        from PIL import Image

        files = sorted((Path(spec.ferplus) / "FER2013Valid").glob("*.png"))[:count]
        return [np.asarray(Image.open(p).convert("L")) for p in files], f"real FER+ faces ({spec.ferplus}/FER2013Valid, 48x48 grey PNG)"
    yy, xx = np.mgrid[:48, :48]
    faces = []
    for _ in range(count):
        cy, cx = 24 + rng.normal(0, 2, 2)
        face = 200 * np.exp(-((yy - cy) ** 2 / 300 + (xx - cx) ** 2 / 200)) + rng.normal(0, 10, (48, 48))
        faces.append(np.clip(face, 0, 255).astype(np.uint8))
    return faces, "synthesised 48x48 grey blobs (FER+ not found)"


def make_bench_data(work: Path, spec: BenchDataSpec) -> dict[str, Any]:
    """Pair shards in ``work/pairs`` and distillation shards in ``work/distill``; returns their paths and a description."""
    from crossmodal.models.loading import load_teacher
    from crossmodal.pipeline.extract import extract_logits
    from crossmodal.pipeline.pairs import make_pair_sample
    from crossmodal.pipeline.shards import ShardJob, load_manifest, write_shard_set

    work = Path(work)
    info_file = work / "bench_data.json"
    settings = asdict(spec)
    if info_file.exists():
        info = json.loads(info_file.read_text())
        if info.get("spec") == settings and (Path(info["distill"]) / "manifest.json").exists():
            return info
    rng = np.random.default_rng(spec.seed)
    voices, voice_desc = _voices(spec, rng)
    faces, face_desc = _faces(spec, rng)
    samples = []
    for index, (speaker, wave, emotion) in enumerate(voices):
        n_frames = int(np.ceil(len(wave) / SAMPLE_RATE * FRAME_RATE - 1e-9))
        times = (np.arange(n_frames) / FRAME_RATE).astype(np.float32)
        frames = [faces[int(i)] for i in rng.integers(0, len(faces), n_frames)]
        split = "train" if index < spec.segments else "heard"
        meta = {"identity": speaker, "video": f"v{index:05d}", "utterance": "0", "track": 0, "segment": 0, "split": split,
                "start": 0.0, "frame_rate": FRAME_RATE, "synthetic": True, "label": emotion}
        samples.append((split, make_pair_sample(f"seg{index:05d}", wave, SAMPLE_RATE, frames, times, meta, image_format="png")))
    train = [s for split, s in samples if split == "train"]
    heard = [s for split, s in samples if split == "heard"]
    jobs = [ShardJob(f"train-{i // spec.per_shard:06d}", train[i : i + spec.per_shard]) for i in range(0, len(train), spec.per_shard)]
    jobs.append(ShardJob("heard-000000", heard))
    pairs_dir, distill_dir = work / "pairs", work / "distill"
    import shutil

    for folder in (pairs_dir, distill_dir):
        shutil.rmtree(folder, ignore_errors=True)
    write_shard_set(pairs_dir, jobs, lambda job, skips: iter(job.items), meta={"kind": "pairs", "frame_rate": FRAME_RATE,
                    "sample_rate": SAMPLE_RATE, "synthetic": True}, desc="bench pair shards")
    extract_logits(load_manifest(pairs_dir), distill_dir, load_teacher(), teacher_name="teacher_cpu")
    frames = sum(json.loads(s["json"])["n_frames"] for _, s in samples)
    info = {"spec": settings, "pairs": str(pairs_dir), "distill": str(distill_dir), "voices": voice_desc, "faces": face_desc,
            "segments": spec.segments, "frames": frames}
    info_file.write_text(json.dumps(info, indent=1))
    return info


def replicate_shards(src: Path, out: Path, copies: int, prefix: str = "train-") -> Path:
    """``copies`` copies of the ``prefix`` shards of ``src`` (keys made unique) plus its other shards, in ``out``."""
    from crossmodal.pipeline.shards import ShardJob, iter_shard, load_manifest, write_shard_set

    src, out = Path(src), Path(out)
    manifest = load_manifest(src)
    marker = out / "replicated.json"
    want = {"src": str(src), "copies": copies, "shards": manifest.shards}
    if marker.exists() and json.loads(marker.read_text()) == want and (out / "manifest.json").exists():
        return out

    def read(path: str) -> list[dict[str, Any]]:
        return [{k: v for k, v in s.items() if not k.startswith("__") or k == "__key__"} for s in iter_shard(path)]

    import shutil

    shutil.rmtree(out, ignore_errors=True)
    jobs, index = [], 0
    for copy in range(copies):
        for path in manifest.paths(prefix):
            items = [dict(s, __key__=f"{s['__key__']}_c{copy}") for s in read(path)]
            jobs.append(ShardJob(f"{prefix}{index:06d}", items))
            index += 1
    for path in manifest.paths():
        name = Path(path).stem
        if not name.startswith(prefix):
            jobs.append(ShardJob(name, read(path)))
    write_shard_set(out, jobs, lambda job, skips: iter(job.items), meta=manifest.meta, desc=f"replicate x{copies}")
    marker.write_text(json.dumps(want))
    return out


def subset_shards(src: Path, out: Path, segments: int) -> Path:
    """The first ``segments`` samples of a shard set's train- shards, in one shard (P6's workload)."""
    import shutil

    from crossmodal.pipeline.shards import ShardJob, iter_shard, load_manifest, write_shard_set

    src, out = Path(src), Path(out)
    marker = out / "subset.json"
    want = {"src": str(src), "segments": segments, "shards": load_manifest(src).shards}
    if marker.exists() and json.loads(marker.read_text()) == want and (out / "manifest.json").exists():
        return out
    manifest = load_manifest(src)
    items: list[dict[str, Any]] = []
    for path in manifest.paths("train-"):
        for s in iter_shard(path):
            items.append({k: v for k, v in s.items() if not k.startswith("__") or k == "__key__"})
            if len(items) == segments:
                break
        if len(items) == segments:
            break
    shutil.rmtree(out, ignore_errors=True)
    write_shard_set(out, [ShardJob("train-000000", items)], lambda job, skips: iter(job.items), meta=manifest.meta, desc="subset")
    marker.write_text(json.dumps(want))
    return out
