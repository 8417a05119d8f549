"""Distillation data: shards of speech + the teacher's per-frame logits (:mod:`crossmodal.pipeline.extract`
describes a sample; pseudo-pairs also hold the true ``label``) -> batches of (audio window, target). A pair-shard
sample has face frames instead (``online`` mode: the teacher runs on them in the training loop). Training draws a
random window of each utterance from the sample's own seed and aggregates the logits of the teacher frames inside
it (per-class max, or mean); evaluation uses the whole (clamped) utterance and all its frames, as the paper does.
``labels_only=true`` (supervised training) reads the true ``label`` instead. Bad samples are counted and skipped,
or raise with the sample key when ``strict=true``.
"""
from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch

from crossmodal import paper
from crossmodal.data.stream import (
    EpochLoader,
    ReplayedPasses,
    ShardStream,
    check_remote_set,
    eval_loader,
    sample_generator,
)
from crossmodal.emotions import EMOTIONS, NUM_EMOTIONS
from crossmodal.io.audio import SAMPLE_RATE
from crossmodal.io.splits import NO_LABEL, SPLIT_INDEX
from crossmodal.pipeline.cache import CacheMismatch, check_skips, mismatch_message, read_manifest
from crossmodal.pipeline.distill_sets import (
    distill_fingerprint,
    distill_folder,
    find_distill_set,
    prepare_shards,
    recipe_config,
    teacher_file,
)
from crossmodal.pipeline.fingerprint import file_sha256
from crossmodal.pipeline.shards import is_remote, load_manifest, load_npy, shard_location
from crossmodal.utils.seeding import isolated_rng

REDUCTIONS = ("max", "mean")


class BadDistillSample(ValueError):
    """A distillation sample that cannot be used; ``reason`` is a short tag for counting."""

    def __init__(self, reason: str, key: str, detail: str = "") -> None:
        self.reason = reason
        super().__init__(f"{reason}: sample {key}" + (f" ({detail})" if detail else ""))


def frames_in_window(times: np.ndarray, start: float, end: float) -> np.ndarray:
    """Boolean mask of the frames with ``start <= time < end``."""
    times = np.asarray(times)
    if not np.issubdtype(times.dtype, np.floating):
        times = times.astype(np.float64)
    # compare at the timestamps' own precision (float32 in shards): 0.24 s must equal float32(0.24)
    kind = times.dtype.type
    return (times >= kind(start)) & (times < kind(end))


def aggregate_logits(logits: np.ndarray, times: np.ndarray, start: float, end: float, reduce: str = "max") -> np.ndarray | None:
    """Per-class max (or mean) of the teacher logits of the frames inside [start, end); None if none."""
    if reduce not in REDUCTIONS:
        raise ValueError(f"data.reduce={reduce!r} is not one of {REDUCTIONS}")
    inside = frames_in_window(times, start, end)
    if not inside.any():
        return None
    selected = np.asarray(logits, dtype=np.float32)[inside]
    return selected.max(0) if reduce == "max" else selected.mean(0)


def choose_window(duration: float, window: float, train: bool, generator: torch.Generator | None = None) -> tuple[float, float]:
    """(start, end) in seconds: random ``window``-long span in training, the whole clip otherwise (also for a
    clip shorter than the window: it is zero-padded to the window later)."""
    if not train or duration <= window:
        return 0.0, duration if not train else min(duration, window)
    start = float(torch.rand((), generator=generator)) * (duration - window)
    return start, start + window


@dataclass(eq=False)
class DistillDecoder:
    """Raw shard sample -> dict ready for :class:`SpeechCollate` (a picklable callable, for workers)."""

    train: bool
    mode: str = "cached"
    window_seconds: float = paper.WINDOW_SECONDS
    max_seconds: float = paper.MAX_SECONDS
    min_seconds: float = 0.5
    reduce: str = "max"
    num_classes: int = NUM_EMOTIONS
    silence_rms: float = 1e-4
    window_tries: int = 5
    labels_only: bool = False
    sample_rate: int = SAMPLE_RATE
    cache_mb: float = 0.0

    def __post_init__(self) -> None:
        if self.mode not in ("cached", "online"):
            raise ValueError(f"data.mode={self.mode!r} must be 'cached' (logits in the shards) or 'online' "
                             "(teacher on pair-shard frames)")
        if self.reduce not in REDUCTIONS:
            raise ValueError(f"data.reduce={self.reduce!r} is not one of {REDUCTIONS}")
        # training only: each clip's checked waveform and teacher logits kept after their first decode, up to this
        # many bytes (a small set is then decoded once, not every epoch; decoding is deterministic: same batches)
        self.cache_bytes = int(self.cache_mb * 2**20) if self.train else 0
        self._cache: dict[tuple[str, str, str], Any] = {}
        self._cached_bytes = 0

    def _kept(self, sample: dict[str, Any], key: str, what: str, decode: Callable[[], Any]) -> Any:
        where = (str(sample.get("__url__", "")), key, what)
        if where not in self._cache:
            value = decode()
            size = sum(array.nbytes for array in (value if isinstance(value, tuple) else (value,)))
            if self._cached_bytes + size > self.cache_bytes:
                return value
            self._cache[where], self._cached_bytes = value, self._cached_bytes + size
        return self._cache[where]

    def _audio(self, sample: dict[str, Any], key: str) -> np.ndarray:
        from crossmodal.io.audio import decode_flac, resample

        if "flac" not in sample:
            raise BadDistillSample("no_audio", key, "the sample has no flac member")
        wave, rate = decode_flac(sample["flac"])
        wave = resample(np.asarray(wave, dtype=np.float32), rate, self.sample_rate)
        wave = wave[: int(round(self.max_seconds * self.sample_rate))]
        if len(wave) < self.min_seconds * self.sample_rate:
            raise BadDistillSample("too_short", key, f"{len(wave) / self.sample_rate:.3f} s < data.min_seconds={self.min_seconds}")
        rms = float(np.sqrt(np.mean(np.square(wave - wave.mean()))))
        if rms < self.silence_rms:
            raise BadDistillSample("silent", key, f"rms {rms:.2e} < data.silence_rms={self.silence_rms}")
        return wave

    def _logits(self, sample: dict[str, Any], key: str) -> tuple[np.ndarray, np.ndarray]:
        if "logits.npy" not in sample or "times.npy" not in sample:
            raise BadDistillSample("no_logits", key, "needs logits.npy and times.npy (a pair shard? use data.mode=online)")
        logits = load_npy(sample["logits.npy"]).astype(np.float32)
        times = load_npy(sample["times.npy"]).astype(np.float32).reshape(-1)
        if logits.ndim != 2 or logits.shape[1] != self.num_classes:
            raise BadDistillSample("logit_dim", key, f"logits of shape {logits.shape}, expected [n_frames, {self.num_classes}]")
        if len(times) != len(logits):
            raise BadDistillSample("times_mismatch", key, f"{len(logits)} logit rows but {len(times)} timestamps")
        if not np.isfinite(logits).all():
            raise BadDistillSample("nonfinite_logits", key, "NaN or inf in the teacher logits")
        return logits, times

    def __call__(self, sample: dict[str, Any]) -> dict[str, Any]:
        key = sample.get("__key__", "?")
        meta = json.loads(sample["json"]) if "json" in sample else {}
        wave = self._kept(sample, key, "wave", lambda: self._audio(sample, key))
        duration = len(wave) / self.sample_rate
        if self.labels_only:  # supervised training: the true label, no teacher output needed
            label = _label_index(meta.get("label"))
            if label == NO_LABEL:
                raise BadDistillSample("no_label", key, "json has no emotion `label` (data.labels_only needs labelled shards)")
            start, end = choose_window(duration, self.window_seconds, self.train, sample_generator(sample))
        else:
            start, end, inside, teacher = self._window_with_frames(sample, key, duration)
        begin = int(round(start * self.sample_rate))
        stop = min(len(wave), begin + int(round((end - start) * self.sample_rate)))
        out: dict[str, Any] = {
            "key": key,
            "wave": torch.from_numpy(wave[begin:stop].copy()),  # a copy: the waveform may be cached
            "split": SPLIT_INDEX.get(meta.get("split", "train"), 0),
            "label": _label_index(meta.get("label")),
            "identity": str(meta.get("identity", "")),
        }
        if self.labels_only:
            return out
        if self.mode == "cached":
            selected = teacher[inside]
            out["target"] = torch.from_numpy(selected.max(0) if self.reduce == "max" else selected.mean(0))
        else:
            out["frames"] = torch.from_numpy(np.ascontiguousarray(teacher[inside]))
        return out

    def _window_with_frames(self, sample: dict[str, Any], key: str, duration: float) -> tuple[float, float, np.ndarray, np.ndarray]:
        """A window holding at least one teacher frame: (start, end, frames-inside mask, logits or face frames)."""
        if self.mode == "cached":
            teacher, times = self._kept(sample, key, "logits", lambda: self._logits(sample, key))
        else:
            from crossmodal.pipeline.pairs import decode_pair_frames

            teacher, times = decode_pair_frames(sample)  # raises when frames and timestamps disagree
            times = times.reshape(-1)
        generator = sample_generator(sample)
        for _ in range(self.window_tries if self.train else 1):
            start, end = choose_window(duration, self.window_seconds, self.train, generator)
            inside = frames_in_window(times, start, end)
            if inside.any():
                return start, end, inside, teacher
        raise BadDistillSample("no_frame_in_window", key, f"no teacher frame in [{start:.2f}, {end:.2f}) s of a {duration:.2f} s clip")


def _label_index(label: Any) -> int:
    if label is None or label == "":
        return NO_LABEL
    if isinstance(label, int):
        return label
    return EMOTIONS.index(label) if label in EMOTIONS else NO_LABEL


@dataclass
class SpeechCollate:
    """Picklable collate: pad waveforms to the longest, or to ``pad_to`` samples (training windows: fixed-size
    batches) -> ``wave [B, S]`` + ``lengths [B]``, with ``target`` or ``frames`` when the items have them."""

    pad_to: int = 0

    def __call__(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        lengths = torch.tensor([len(item["wave"]) for item in items], dtype=torch.long)
        wave = torch.zeros(len(items), max(int(lengths.max()), self.pad_to))
        for row, item in enumerate(items):
            wave[row, : len(item["wave"])] = item["wave"]
        batch: dict[str, Any] = {
            "wave": wave,
            "lengths": lengths,
            "split": torch.tensor([item["split"] for item in items], dtype=torch.long),
            "label": torch.tensor([item["label"] for item in items], dtype=torch.long),
            "key": [item["key"] for item in items],
        }
        if "target" in items[0]:
            batch["target"] = torch.stack([item["target"] for item in items]).float()
        if "frames" in items[0]:
            batch["frames"] = [item["frames"] for item in items]
            batch["frame_counts"] = torch.tensor([len(item["frames"]) for item in items], dtype=torch.long)
        return batch


class DistillDataModule(L.LightningDataModule):
    """Distillation (or pair, for ``mode=online``) shards -> train windows and whole-clip eval batches.

    The keys are documented in ``conf/data/distill.yaml``. ``shards`` may be a local folder, an ``http(s)://``
    URL or a ``pipe:`` command with ``{name}`` (docs/streaming.md; a remote set is checked, never built).
    Validation and test read the heard and unheard shards plus ``train_eval_shards`` training shards; the
    caches (``eval_cache_mb``, ``train_cache_mb``) never change the batches.
    """

    def __init__(
        self,
        shards: str | None = None,
        mode: str = "cached",
        window_seconds: float = paper.WINDOW_SECONDS,
        max_seconds: float = paper.MAX_SECONDS,
        min_seconds: float = 0.5,
        reduce: str = "max",
        batch_size: int = paper.STUDENT_BATCH_SIZE,
        global_batch_size: int | None = None,
        eval_batch_size: int = 32,
        num_workers: int = 2,
        batches_per_epoch: int = 100,
        epoch_fraction: float | None = None,
        shuffle_buffer: int = 1000,
        train_eval_shards: int = 1,
        silence_rms: float = 1e-4,
        seed: int = 0,
        strict: bool = False,
        prepare: dict[str, Any] | None = None,
        emodb: str | None = None,
        ferplus: str | None = None,
        labels_only: bool = False,
        data_dir: str = "data",
        teacher: str | None = None,
        teacher_precision: str = "auto",
        source: str | None = None,
        eval_cache_mb: float = 512.0,
        train_cache_mb: float = 0.0,
        curve_every_n_epochs: int = 5,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.shards = shards  # as configured (None: found from the fingerprint)
        self.data_dir, self.teacher, self.source = data_dir, teacher, source
        self.teacher_precision = teacher_precision
        self._shard_dir: Path | str | None = None
        self._remote_manifest = None  # a remote set's manifest, fetched once
        self._fingerprint: dict[str, Any] | None = None
        self.mode = mode
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size
        self.num_workers = num_workers
        self.global_batch_size = global_batch_size
        self.batches_per_epoch = batches_per_epoch
        self.epoch_fraction = epoch_fraction
        self.shuffle_buffer = shuffle_buffer
        self.train_eval_shards = train_eval_shards
        if int(curve_every_n_epochs) < 1:
            raise ValueError(f"data.curve_every_n_epochs={curve_every_n_epochs} must be >= 1 (1: score every split at every validation)")
        self.curve_every_n_epochs = int(curve_every_n_epochs)
        self.seed = seed
        self.strict = strict
        self.prepare = dict(prepare) if prepare else None
        # raw sources of the pseudo-pair recipe (data.emodb, data.ferplus)
        if self.prepare is not None:
            for name, value in (("emodb", emodb), ("ferplus", ferplus)):
                if value is not None:
                    self.prepare.setdefault(name, value)
        self.window_seconds = window_seconds
        self.decoder_kwargs = dict(
            mode=mode, window_seconds=window_seconds, max_seconds=max_seconds, min_seconds=min_seconds,
            reduce=reduce, silence_rms=silence_rms, labels_only=labels_only, cache_mb=train_cache_mb,
        )
        self.labels_only = labels_only
        self._train_loader: EpochLoader | None = None
        self._pending_state: dict[str, Any] = {}
        self.eval_cache_mb = eval_cache_mb
        self._eval: ReplayedPasses | None = None

    # -- shards
    @property
    def shard_dir(self) -> Path | str:
        """The shard folder (or remote location) this run reads (resolved once; the same on every process)."""
        if self._shard_dir is None:
            self._shard_dir = self._resolve()
        return self._shard_dir

    def _resolve(self) -> Path | str:
        named = shard_location(self.shards, "data.shards")
        if self.prepare:
            config, teacher = recipe_config(self.prepare, self.teacher, self.data_dir)
            pairs_fp = config.fingerprint()
            if self.mode == "online" or self.labels_only:  # the pair shards themselves
                self._fingerprint = pairs_fp
                return named or config.folder_for(pairs_fp)
            self._fingerprint = distill_fingerprint(pairs_fp, teacher, logits_dtype=config.logits_dtype,
                                                    precision=self.teacher_precision)
            return named or distill_folder(config.data_dir, config.dataset_name, teacher, self._fingerprint)
        if named:
            return named
        if self.mode == "online" or self.labels_only:
            raise ValueError("data.mode=online and data.labels_only read pair shards: set data.shards=<pair shard folder> "
                             "(or data.prepare to build pseudo-pairs)")
        return find_distill_set(self.data_dir, self.teacher, self.source, self.teacher_precision)

    def prepare_data(self) -> None:
        # built or reused, the run's random streams come out the same (training draws identical numbers)
        with isolated_rng():
            self._prepare_data()

    def _prepare_data(self) -> None:
        folder = self.shard_dir
        named_by = "data.shards" if self.shards else None
        if is_remote(folder):  # read-only: checked, never built
            manifest = check_remote_set(folder, "data.shards", self._fingerprint, self.strict, "distillation shard set")
            self._remote_manifest = manifest
            self._check_teacher(folder, manifest.meta.get("fingerprint"), named_by)
            return
        if not self.prepare:
            manifest = read_manifest(folder)
            if manifest is None:
                raise FileNotFoundError(
                    f"no shard set at data.shards={folder} (no manifest.json). Write it with `task=extract` "
                    "(or `task=prepare` for pair shards), or point data.shards at an existing shard set"
                )
            self._check_teacher(folder, (manifest.get("meta") or {}).get("fingerprint"), named_by)
            check_skips(folder, manifest, self.strict)
            return
        prepare_shards(folder, "labels" if self.labels_only else self.mode, dict(self.prepare), fingerprint=self._fingerprint,
                       named_by=named_by, strict=self.strict, teacher=self.teacher, data_dir=self.data_dir)

    def _check_teacher(self, folder: Path | str, stored: dict[str, Any] | None, named_by: str | None) -> None:
        """A named cached-logits set must come from ``teacher_ckpt`` when one is given."""
        if self.shards and self.teacher and self.mode == "cached" and not self.labels_only and not self.prepare:
            wanted = file_sha256(teacher_file(self.teacher))
            if not stored or (stored.get("teacher") or {}).get("sha256") != wanted:
                raise CacheMismatch(mismatch_message(
                    folder, stored, {"kind": "distill", "teacher": {"sha256": wanted}, "digest": ""}, named_by,
                    f"distillation shard set (teacher_ckpt={self.teacher} is not the teacher that made it)"))

    def manifest(self):
        if is_remote(self.shard_dir):  # fetched once per process
            if self._remote_manifest is None:
                self._remote_manifest = load_manifest(self.shard_dir, key="data.shards")
            return self._remote_manifest
        return load_manifest(self.shard_dir)

    def split_paths(self, split: str) -> list[str]:
        return self.manifest().paths(f"{split}-")

    def selection_split(self) -> str:
        """The split whose loss is ``val/loss`` (model selection): heard, else unheard, else train."""
        return next((split for split in ("heard", "unheard") if self.split_paths(split)), "train")

    def val_splits(self, epoch: int, max_epochs: int | None) -> tuple[str, ...] | None:
        """The splits validation scores at 0-based ``epoch``: None (all of them) every
        ``curve_every_n_epochs`` epochs and at the last, otherwise only :meth:`selection_split`."""
        every, done = self.curve_every_n_epochs, epoch + 1
        if every <= 1 or done % every == 0 or (max_epochs is not None and max_epochs >= 0 and done >= max_epochs):
            return None
        return (self.selection_split(),)

    def student_info(self) -> dict[str, Any]:
        """What a student file should record about its training data: the shards, the teacher, and
        ``train_speakers[corpus]`` (identities whose audio it heard) so evaluation can leave them out."""
        try:
            manifest = self.manifest()
        except FileNotFoundError:
            return {}
        meta = dict(manifest.meta)
        pairs_meta = meta
        if meta.get("kind") != "pairs" and meta.get("pairs") and (Path(meta["pairs"]) / "manifest.json").exists():
            pairs_meta = load_manifest(meta["pairs"]).meta
        info: dict[str, Any] = {"data": str(self.shard_dir), "synthetic": bool(meta.get("synthetic", False))}
        if meta.get("teacher"):
            info["teacher"] = meta["teacher"]
        split_file = meta.get("split_file") or pairs_meta.get("split_file")
        corpus = pairs_meta.get("corpus") or pairs_meta.get("name") or Path(str(pairs_meta.get("source", self.shard_dir))).name
        if split_file and Path(split_file).exists():
            train = json.loads(Path(split_file).read_text()).get("train") or []
            if train:
                info["train_speakers"] = {str(corpus): sorted(str(s) for s in train)}
        return info

    # -- loaders
    def train_dataloader(self):
        """Per process: batches of ``batch_size``, or of ``global_batch_size`` shared over the processes; epochs of
        ``batches_per_epoch``, or of ``epoch_fraction`` of the training segments (all processes together)."""
        paths = self.split_paths("train")
        if not paths:
            raise ValueError(f"{self.shard_dir} has no train-* shards")
        trainer = getattr(self, "trainer", None)
        world = int(trainer.world_size) if trainer is not None else 1
        batch_size = self.batch_size
        if self.global_batch_size:
            if self.global_batch_size % world:
                raise ValueError(f"data.global_batch_size={self.global_batch_size} does not split evenly over {world} "
                                 "processes")
            batch_size = self.global_batch_size // world
        per_epoch = self.batches_per_epoch
        if self.epoch_fraction:
            per_epoch = max(1, math.ceil(self.epoch_fraction * self.manifest().count("train-") / (batch_size * world)))
        pad_to = int(round(self.window_seconds * SAMPLE_RATE))
        stream = ShardStream(
            paths, DistillDecoder(train=True, **self.decoder_kwargs), SpeechCollate(pad_to), batch_size,
            train=True, seed=self.seed, shuffle_buffer=self.shuffle_buffer, strict=self.strict,
            cache_mb=self.decoder_kwargs["cache_mb"],
        )
        self._train_loader = EpochLoader(stream, self.num_workers, per_epoch)
        if self._pending_state:
            self._train_loader.load_state_dict(self._pending_state)
            self._pending_state = {}
        return self._train_loader

    def val_dataloader(self):
        """Validation and test read the same clips: one loader for both, replayed from memory when it fits in
        ``eval_cache_mb`` (the demo's ~230 clips: ~30 MB)."""
        if self._eval is None:
            paths = self.split_paths("heard") + self.split_paths("unheard")
            paths += self.split_paths("train")[: max(0, self.train_eval_shards)]
            if not paths:
                raise ValueError(f"{self.shard_dir} has no heard-/unheard- shards (and train_eval_shards=0): "
                                 "nothing to validate on")
            stream = ShardStream(
                paths, DistillDecoder(train=False, **self.decoder_kwargs), SpeechCollate(), self.eval_batch_size,
                train=False, strict=self.strict,
            )
            self._eval = ReplayedPasses(eval_loader(stream, min(self.num_workers, len(paths))), int(self.eval_cache_mb * 2**20))
        return self._eval

    test_dataloader = val_dataloader

    # -- resumable mid-epoch (the EpochLoader knows how many batches were consumed)
    def state_dict(self) -> dict[str, Any]:
        return self._train_loader.state_dict() if self._train_loader is not None else {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        # Lightning restores this before it asks for the loader: keep it until train_dataloader()
        self._pending_state = dict(state or {})
        if self._pending_state and self._train_loader is not None:
            self._train_loader.load_state_dict(self._pending_state)
            self._pending_state = {}


