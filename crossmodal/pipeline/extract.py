"""Teacher-logit extraction: pair shards -> distillation shards (the EmoVoxCeleb product).

Each pair shard gives one distillation shard of the same name holding, per segment: the audio (``flac``), the
teacher's pre-softmax logits per face frame (``logits.npy``, [n_frames, 8] in FER+ order, float16 unless
``data.logits_dtype=float32``), the frame times (``times.npy``) and the pair metadata plus the teacher's name
(``json``); the frames are not copied. Folder names and fingerprints: :mod:`crossmodal.pipeline.distill_sets`.
Shards are split across ranks, their decoding across ``num_workers`` loader processes; the teacher runs in the
main process. Finished shards are reused, so a killed run resumes.
"""
from __future__ import annotations

import json
import logging
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from crossmodal.emotions import EMOTIONS, NUM_EMOTIONS
from crossmodal.pipeline.cache import claim
from crossmodal.pipeline.fingerprint import input_fingerprint
from crossmodal.pipeline.lock import folder_lock
from crossmodal.pipeline.pairs.codec import decode_pair_frames, npy_bytes
from crossmodal.pipeline.parallel import prefetched, wait_for_shards
from crossmodal.pipeline.shards import (
    Manifest,
    ShardJob,
    SkipLog,
    iter_shard,
    load_manifest,
    load_npy,
    shard_done,
    write_manifest,
    write_shard_set,
)

log = logging.getLogger(__name__)


def _read_pair_shard(path: str, strict: bool) -> tuple[list[dict[str, Any]], list[tuple[str, str, str]]]:
    """Decode every sample of one pair shard: frames as uint8 arrays; bad samples become skip events."""
    events: list[tuple[str, str, str]] = []

    def on_error(exn: Exception) -> bool:
        events.append(("corrupt_pair_shard", path, str(exn)))
        return True

    samples = []
    for sample in iter_shard(path, handler=on_error):
        key = sample.get("__key__", "?")
        try:
            frames, times = decode_pair_frames(sample)
            meta = json.loads(sample["json"].decode("utf-8"))
            flac = sample["flac"]
        except Exception as exn:  # noqa: BLE001 - a bad sample is counted (or raised under strict)
            reason = "frames_times_mismatch" if "timestamps" in str(exn) else "corrupt_pair_sample"
            events.append((reason, f"{path}:{key}", str(exn)))
            continue
        samples.append({"key": key, "frames": frames, "times": times, "meta": meta, "flac": flac})
    return samples, events


@torch.inference_mode()
def teacher_logits(teacher: torch.nn.Module, frames: np.ndarray, batch_size: int, device: str = "cpu") -> np.ndarray:
    """The teacher's pre-softmax logits for uint8 frames [N, H, W(, 3)], in batches: float32 [N, 8]."""
    outputs = []
    for start in range(0, len(frames), batch_size):
        batch = torch.from_numpy(np.ascontiguousarray(frames[start : start + batch_size])).to(device)
        outputs.append(teacher(teacher.preprocess(batch)).float().cpu())
    if not outputs:
        return np.zeros((0, NUM_EMOTIONS), dtype=np.float32)
    return torch.cat(outputs).numpy()


def extract_logits(
    pairs: Manifest,
    out_dir: str | Path,
    teacher: torch.nn.Module,
    *,
    teacher_name: str,
    teacher_id: str | None = None,
    batch_size: int = 256,
    logits_dtype: str = "float16",
    num_workers: int = 0,
    strict: bool = False,
    rank: int = 0,
    world_size: int = 1,
    device: str = "cpu",
    fingerprint: dict[str, Any] | None = None,
    named_by: str | None = "out_dir",
) -> tuple[Manifest | None, dict[str, Any]]:
    """Write one distillation shard per pair shard into ``out_dir``; reuse finished ones.

    Returns the manifest (None on ranks other than 0) and this rank's work: ``{"frames", "segments", "seconds"
    (wall time), "teacher_seconds", "written", "reused"}``. ``fingerprint`` (default: from the pair set,
    ``teacher_name``, ``teacher_id``, the teacher's precision and ``logits_dtype``) guards the reuse: a set of
    other inputs in ``out_dir`` is an error naming ``named_by``; a teacher of another precision is refused.
    One writer per folder: a second run waits for the first (a lock file), then reuses its set.
    """
    out_dir = Path(out_dir)
    precision = getattr(teacher, "precision", "fp32")
    if fingerprint is None:
        pairs_fp = pairs.meta.get("fingerprint") or {"kind": "pairs", "folder": str(Path(pairs.root).resolve())}
        settings = {"teacher": teacher_name, "teacher_id": teacher_id, "logits_dtype": logits_dtype}
        if precision == "int8":
            settings |= {"teacher_precision": "int8", "teacher_int8": teacher.__dict__["_int8"].fingerprint["digest"]}
        fingerprint = input_fingerprint("distill", inputs={"pairs": pairs_fp}, settings=settings)
    if fingerprint["settings"].get("teacher_precision", "fp32") != precision:
        raise ValueError(f"the teacher runs in {precision} but the distillation set's fingerprint is for "
                         f"{fingerprint['settings'].get('teacher_precision', 'fp32')} logits: load it with that precision")
    with folder_lock(out_dir, "teacher logits", rank=rank, world_size=world_size):
        if claim(out_dir, fingerprint, strict=strict, named_by=named_by, what="distillation shard set", write_stamp=True):
            reused = {"frames": 0, "segments": 0, "seconds": 0.0, "teacher_seconds": 0.0, "written": 0,
                      "reused": len(pairs.shards[rank::world_size])}
            return (load_manifest(out_dir) if rank == 0 else None), reused
        return _extract(pairs, out_dir, teacher, teacher_name, teacher_id, batch_size, logits_dtype, num_workers, strict,
                        rank, world_size, device, fingerprint)


def _extract(pairs, out_dir, teacher, teacher_name, teacher_id, batch_size, logits_dtype, num_workers, strict, rank, world_size,
             device, fingerprint) -> tuple[Manifest | None, dict[str, Any]]:
    dtype = {"float16": np.float16, "float32": np.float32}[logits_dtype]
    names = [Path(s["name"]).stem for s in pairs.shards]
    jobs = [ShardJob(n, [str(pairs.root / f"{n}.tar")]) for n in names]
    todo = [job for job in jobs[rank::world_size] if not shard_done(out_dir, job.name)]
    work = {"frames": 0, "segments": 0, "seconds": 0.0, "teacher_seconds": 0.0}
    results = prefetched(todo, lambda job: _read_pair_shard(job.items[0], strict), num_workers)

    def make_samples(job: ShardJob, skips: SkipLog) -> Iterator[dict[str, Any]]:
        name, (samples, events) = next(results)
        if name != job.name:  # pragma: no cover - fixed by construction
            raise RuntimeError(f"extraction order mismatch: read {name}, writing {job.name}")
        for reason, where, detail in events:
            skips.skip(reason, where, detail)
        logits_per_sample: dict[int, np.ndarray] = {}
        groups: dict[tuple, list[int]] = {}  # one teacher run per frame size
        for i, sample in enumerate(samples):
            groups.setdefault(sample["frames"].shape[1:], []).append(i)
        for members in groups.values():
            frames = np.concatenate([samples[i]["frames"] for i in members])
            tick = time.perf_counter()
            logits = teacher_logits(teacher, frames, batch_size, device)
            work["teacher_seconds"] += time.perf_counter() - tick
            if logits.shape != (len(frames), NUM_EMOTIONS):
                skips.skip("logits_frames_mismatch", job.items[0], f"teacher gave {tuple(logits.shape)} for {len(frames)} frames")
                return
            offset = 0
            for i in members:
                n = len(samples[i]["frames"])
                logits_per_sample[i] = logits[offset : offset + n]
                offset += n
        for i, sample in enumerate(samples):
            logits = logits_per_sample[i]
            if len(logits) != len(sample["times"]):
                skips.skip("logits_frames_mismatch", f"{job.items[0]}:{sample['key']}", f"{len(logits)} logits, {len(sample['times'])} times")
                continue
            meta = dict(sample["meta"], teacher=teacher_name, n_frames=len(logits))
            work["frames"] += len(logits)
            work["segments"] += 1
            yield {
                "__key__": sample["key"],
                "flac": sample["flac"],
                "logits.npy": npy_bytes(logits.astype(dtype)),
                "times.npy": npy_bytes(sample["times"].astype(np.float32)),
                "json": json.dumps(meta, sort_keys=True).encode(),
            }

    meta = {
        "kind": "distill",
        "teacher": teacher_name,
        "teacher_sha256": teacher_id,
        "pairs": str(pairs.root),
        "split_file": pairs.meta.get("split_file"),
        "frame_rate": pairs.meta.get("frame_rate"),
        "sample_rate": pairs.meta.get("sample_rate"),
        "synthetic": pairs.meta.get("synthetic", False),
        "emotions": list(EMOTIONS),
        "logits_dtype": logits_dtype,
        "teacher_precision": getattr(teacher, "precision", "fp32"),
        "fingerprint": fingerprint,
    }
    started = time.perf_counter()
    _, counts = write_shard_set(
        out_dir, jobs, make_samples, strict=strict, desc="teacher logits", rank=rank, world_size=world_size, finalize=False
    )
    work["seconds"] = time.perf_counter() - started
    work.update(counts)
    if work["frames"]:
        log.info(
            "extract: %d frames of %d segments in %.1f s: %.1f frames/s (rank %d)",
            work["frames"], work["segments"], work["seconds"], work["frames"] / work["seconds"], rank,
        )
    if rank != 0:
        # Only rank 0 writes the manifest; the others are done (after the barrier, under torch.distributed).
        if world_size > 1 and torch.distributed.is_available() and torch.distributed.is_initialized():
            wait_for_shards(out_dir, names)
        return None, work
    if world_size > 1:
        wait_for_shards(out_dir, names)
    return write_manifest(out_dir, names, meta), work


def iter_distill(paths: Sequence[str]) -> Iterator[dict[str, Any]]:
    """Raw distillation samples with ``logits`` and ``times`` decoded (for statistics and tests)."""
    for path in paths:
        for sample in iter_shard(path):
            sample["logits"] = load_npy(sample["logits.npy"])
            sample["times"] = load_npy(sample["times.npy"])
            sample["meta"] = json.loads(sample["json"].decode("utf-8"))
            yield sample


def summarise(manifest: Manifest) -> dict[str, Any]:
    """Segments, frames and the dominant emotion per segment over every shard of the set."""
    dominant: Counter[str] = Counter({e: 0 for e in EMOTIONS})
    per_split: Counter[str] = Counter()
    frames = 0
    segments = 0
    # Pseudo-pairs carry the true emotion: how often the teacher agrees with it (segments, frames).
    labelled = agree_segments = labelled_frames = agree_frames = 0
    for sample in iter_distill(manifest.paths()):
        logits = sample["logits"].astype(np.float32)
        top = EMOTIONS[int(np.argmax(logits.max(axis=0)))]
        dominant[top] += 1
        per_split[sample["meta"].get("split", "?")] += 1
        frames += len(logits)
        segments += 1
        label = sample["meta"].get("label")
        if label in EMOTIONS:
            labelled += 1
            agree_segments += int(top == label)
            labelled_frames += len(logits)
            agree_frames += int(np.sum(np.argmax(logits, axis=1) == EMOTIONS.index(label)))
    summary = {"segments": segments, "frames": frames, "dominant": dict(dominant), "per_split": dict(per_split)}
    if labelled:
        summary["label_agreement"] = agree_segments / labelled
        summary["frame_label_agreement"] = agree_frames / max(1, labelled_frames)
    return summary


