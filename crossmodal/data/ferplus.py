"""FER+ (FER2013 faces with 10 crowd votes each): readers, cleaning, face shards, DataModule.

Two layouts users download:

* the FER+ folder layout: ``FER2013Train/``, ``FER2013Valid/``, ``FER2013Test/``, each with 48x48 grey
  PNGs and a ``label.csv`` (``name.png,"(0, 0, 48, 48)",`` then 10 vote counts);
* the original Kaggle ``fer2013.csv`` (``emotion,pixels,Usage``) with FER+'s ``fer2013new.csv``
  (``Usage,Image name,`` then the 10 counts), row i of one describing row i of the other.

Both become the same face shards: a grey PNG (re-encoded from the pixels, so both layouts give
identical bytes), the 10 raw votes, the split and the image name.

Cleaning (applied to every split, before anything is written):

* ``cntk`` (the paper's, FER+ reference code): votes <= 1 are set to 0; an image is dropped when
  unknown or NF holds the maximum, when 3 or more emotions tie for the maximum, or when the
  maximum is <= half of the remaining votes;
* ``majority``: votes are kept as they are; an image is dropped only when unknown/NF holds the maximum;
* ``none``: only images without a single emotion vote are dropped (they have no label at all).

Label modes (what the training loss sees; evaluation is always top-1 against the majority label):

* ``majority``: the argmax of the (cleaned) emotion votes, ordinary cross-entropy;
* ``probability``: the cleaned emotion votes normalised to a distribution (the paper's default);
* ``crossentropy``: the FER+ reference code's target for its cross-entropy mode: the largest
  emotions, at most 3, until they hold 75% of the votes, normalised.
"""
from __future__ import annotations

import csv
import io
import json
import logging
import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from crossmodal.data.shards import (
    BadSampleError,
    EpochLoader,
    ShardJob,
    ShardStream,
    SkipLog,
    eval_loader,
    load_manifest,
    write_shard_set,
)
from crossmodal.emotions import FERPLUS_VOTE_COLUMNS, NUM_EMOTIONS
from crossmodal.pipeline.cache import check_skips, claim, find_sets, note_unfingerprinted, read_manifest
from crossmodal.pipeline.fingerprint import input_fingerprint, shard_folder
from crossmodal.pipeline.lock import folder_lock

log = logging.getLogger(__name__)

IMAGE_SIZE = 48
SPLIT_FOLDERS = {"train": "FER2013Train", "val": "FER2013Valid", "test": "FER2013Test"}
USAGE_SPLITS = {"Training": "train", "PublicTest": "val", "PrivateTest": "test"}
CLEANING_MODES = ("cntk", "majority", "none")
LABEL_MODES = ("majority", "probability", "crossentropy")
FER2013_HEADER = ["emotion", "pixels", "Usage"]
FER2013NEW_HEADER = ["Usage", "Image name", *FERPLUS_VOTE_COLUMNS]
# The paper's mean (VGGFace2 models), on 0..255 values, std 1.
PAPER_MEAN = (131.0912, 103.8827, 91.4953)


@dataclass
class FerPlusImage:
    """One FER+ image: where its pixels are, its 10 raw votes and its majority emotion."""

    name: str  # e.g. "fer0000000.png"
    split: str  # train | val | test
    votes: np.ndarray  # 10 raw vote counts in FERPLUS_VOTE_COLUMNS order
    majority: int  # emotion index (argmax of the cleaned emotion votes)
    path_or_pixels: Path | np.ndarray  # the PNG path (folder layout) or 48x48 uint8 pixels (csv layout)

    @property
    def key(self) -> str:
        return f"{self.split}_{Path(self.name).stem}"


@dataclass
class CleaningReport:
    """What the cleaning rule kept and dropped, per split and reason."""

    cleaning: str
    kept: Counter = field(default_factory=Counter)
    dropped: dict[str, Counter] = field(default_factory=dict)

    def drop(self, split: str, reason: str) -> None:
        self.dropped.setdefault(split, Counter())[reason] += 1

    def as_dict(self) -> dict[str, Any]:
        return {"cleaning": self.cleaning, "kept": dict(self.kept), "dropped": {s: dict(c) for s, c in self.dropped.items()}}

    def summary(self) -> str:
        parts = []
        for split in sorted(set(self.kept) | set(self.dropped)):
            drops = self.dropped.get(split, {})
            detail = ", ".join(f"{n} {reason}" for reason, n in sorted(drops.items())) or "none"
            parts.append(f"{split}: kept {self.kept.get(split, 0)}, dropped {sum(drops.values())} ({detail})")
        return f"FER+ cleaning '{self.cleaning}': " + "; ".join(parts)


# ----------------------------------------------------------------------------------------- labels


def clean_votes(votes: Sequence[float], cleaning: str = "cntk") -> tuple[np.ndarray | None, str]:
    """Apply a cleaning rule to 10 raw votes. Returns (cleaned votes, "") or (None, reason dropped)."""
    if cleaning not in CLEANING_MODES:
        raise ValueError(f"unknown FER+ cleaning {cleaning!r}: choose one of {', '.join(CLEANING_MODES)} (data.cleaning)")
    votes = np.asarray(votes, dtype=np.float32).copy()
    if votes.shape != (len(FERPLUS_VOTE_COLUMNS),):
        raise ValueError(f"expected {len(FERPLUS_VOTE_COLUMNS)} vote counts, got {votes.shape}")
    if cleaning == "cntk":
        votes[votes <= 1] = 0
    if votes[:NUM_EMOTIONS].sum() <= 0:
        return None, "no_emotion_votes"
    if cleaning == "none":
        return votes, ""
    top = votes.max()
    if votes[NUM_EMOTIONS:].max() >= top:
        return None, "unknown_or_nf_max"
    if cleaning == "cntk":
        if int((votes[:NUM_EMOTIONS] == top).sum()) >= 3:
            return None, "three_way_tie"
        if top <= 0.5 * votes.sum():
            return None, "no_majority"
    return votes, ""


def majority_label(votes: np.ndarray) -> int:
    return int(np.argmax(np.asarray(votes)[:NUM_EMOTIONS]))


def emotion_target(votes: np.ndarray, label_mode: str) -> np.ndarray:
    """The 8-way training target for cleaned votes (see the module docstring)."""
    emotions = np.asarray(votes, dtype=np.float32)[:NUM_EMOTIONS]
    if label_mode == "majority":
        target = np.zeros(NUM_EMOTIONS, np.float32)
        target[int(np.argmax(emotions))] = 1.0
        return target
    if label_mode == "probability":
        return emotions / emotions.sum()
    if label_mode == "crossentropy":
        remaining, target, total = emotions.copy(), np.zeros(NUM_EMOTIONS, np.float32), emotions.sum()
        count = 0
        while target.sum() < 0.75 * total and count < 3 and remaining.max() > 0:
            top = remaining.max()
            for index in np.flatnonzero(remaining == top):
                target[index], remaining[index] = top, 0
                count += 1
        return target / target.sum()
    raise ValueError(f"unknown FER+ label mode {label_mode!r}: choose one of {', '.join(LABEL_MODES)} (data.label_mode)")


# ----------------------------------------------------------------------------------------- readers


def detect_layout(source: str | Path) -> str:
    """``folders`` (FER2013Train/... + label.csv) or ``csv`` (fer2013.csv + fer2013new.csv)."""
    source = Path(source)
    if not source.is_dir():
        raise FileNotFoundError(f"FER+ source {source} is not a folder. Set data.source to the FER+ root (FER2013Train/ ...) "
                                "or to a folder holding fer2013.csv and fer2013new.csv")
    if any((source / folder).is_dir() for folder in SPLIT_FOLDERS.values()):
        return "folders"
    if (source / "fer2013.csv").exists():
        return "csv"
    raise FileNotFoundError(f"{source} holds neither the FER+ folders ({', '.join(SPLIT_FOLDERS.values())}) nor fer2013.csv "
                            "(+ fer2013new.csv). Point data.source at the folder that does")


def _check_splits(splits: Iterable[str]) -> list[str]:
    splits = list(splits)
    unknown = [s for s in splits if s not in SPLIT_FOLDERS]
    if unknown:
        raise ValueError(f"unknown FER+ split(s) {unknown}: use train, val, test")
    return splits


def _parse_votes(row: Sequence[str], where: str) -> np.ndarray:
    try:
        votes = np.array([float(v) for v in row], dtype=np.float32)
    except ValueError as exn:
        raise ValueError(f"{where}: vote counts must be numbers, got {list(row)}") from exn
    if votes.shape != (len(FERPLUS_VOTE_COLUMNS),) or (votes < 0).any():
        raise ValueError(f"{where}: expected {len(FERPLUS_VOTE_COLUMNS)} non-negative vote counts, got {list(row)}")
    return votes


def read_ferplus(
    source: str | Path,
    splits: Sequence[str] = ("train", "val", "test"),
    cleaning: str = "cntk",
    *,
    report: CleaningReport | None = None,
    skips: SkipLog | None = None,
) -> list[FerPlusImage]:
    """Read the FER+ images of ``splits`` from either layout, cleaned with ``cleaning``.

    ``report`` (optional) receives the kept/dropped counts per split and reason; ``skips`` the
    rows that could not be used at all (missing image, unreadable row). Raises with the file
    name when a split is missing or ends up empty.
    """
    splits = _check_splits(splits)
    report = report if report is not None else CleaningReport(cleaning)
    skips = skips if skips is not None else SkipLog()
    layout = detect_layout(source)
    raw = _read_folders(Path(source), splits, skips) if layout == "folders" else _read_csv(Path(source), splits, skips)
    items: list[FerPlusImage] = []
    for name, split, votes, pixels in raw:
        cleaned, reason = clean_votes(votes, cleaning)
        if cleaned is None:
            report.drop(split, reason)
            continue
        report.kept[split] += 1
        items.append(FerPlusImage(name, split, votes, majority_label(cleaned), pixels))
    for split in splits:
        if report.kept.get(split, 0) == 0:
            raise ValueError(f"FER+ split {split!r} in {source} has no usable image after cleaning {cleaning!r} "
                             f"({sum(report.dropped.get(split, {}).values())} dropped). Check the data or use data.cleaning=none")
    log.info(report.summary())
    return items


def _read_folders(source: Path, splits: list[str], skips: SkipLog) -> Iterable[tuple[str, str, np.ndarray, Path]]:
    for split in splits:
        folder = source / SPLIT_FOLDERS[split]
        labels = folder / "label.csv"
        if not folder.is_dir():
            raise FileNotFoundError(f"FER+ split folder {folder} is missing (needed for split {split!r}). "
                                    f"Download the FER+ folders or drop {split!r} from the splits")
        if not labels.exists():
            raise FileNotFoundError(f"{labels} is missing: FER+ folders need label.csv (name.png,box,10 vote counts)")
        with open(labels, newline="") as f:
            for line_no, row in enumerate(csv.reader(f), start=1):
                if not row or not row[0].strip():
                    continue
                where = f"{labels}:{line_no}"
                if len(row) != 2 + len(FERPLUS_VOTE_COLUMNS):
                    skips.skip("bad_label_row", where, f"{len(row)} columns, expected name, box and 10 vote counts")
                    continue
                votes = _parse_votes(row[2:], where)
                path = folder / row[0].strip()
                if not path.exists():
                    skips.skip("missing_image", str(path), f"listed in {where}")
                    continue
                yield row[0].strip(), split, votes, path


def _read_csv(source: Path, splits: list[str], skips: SkipLog) -> Iterable[tuple[str, str, np.ndarray, np.ndarray]]:
    old_path, new_path = source / "fer2013.csv", source / "fer2013new.csv"
    if not new_path.exists():
        raise FileNotFoundError(f"{new_path} is missing: fer2013.csv needs FER+'s fer2013new.csv beside it for the votes")
    with open(old_path, newline="") as old_file, open(new_path, newline="") as new_file:
        old_rows, new_rows = csv.reader(old_file), csv.reader(new_file)
        old_header, new_header = next(old_rows, None), next(new_rows, None)
        if [h.strip() for h in old_header or []] != FER2013_HEADER:
            raise ValueError(f"{old_path} has header {old_header}, expected {','.join(FER2013_HEADER)} (the Kaggle fer2013.csv)")
        if [h.strip() for h in new_header or []] != FER2013NEW_HEADER:
            raise ValueError(f"{new_path} has header {new_header}, expected {','.join(FER2013NEW_HEADER)} (FER+'s fer2013new.csv)")
        wanted = set(splits)
        for line_no, (old, new) in enumerate(zip(old_rows, new_rows), start=2):
            if len(new) != 2 + len(FERPLUS_VOTE_COLUMNS) or len(old) != 3:
                skips.skip("bad_label_row", f"{new_path}:{line_no}", f"{len(old)} / {len(new)} columns")
                continue
            usage, name = new[0].strip(), new[1].strip()
            if usage != old[2].strip():
                raise ValueError(f"row {line_no}: fer2013.csv says {old[2]!r} but fer2013new.csv says {usage!r}; "
                                 "the two files must be the unmodified originals, row for row")
            split = USAGE_SPLITS.get(usage)
            if split is None:
                skips.skip("bad_label_row", f"{new_path}:{line_no}", f"unknown Usage {usage!r}")
                continue
            if split not in wanted or not name:  # FER+ gives no name to the images it discarded
                continue
            try:
                pixels = np.array(old[1].split(), dtype=np.uint8)
                pixels = pixels.reshape(IMAGE_SIZE, IMAGE_SIZE)
            except ValueError:
                skips.skip("bad_pixels", f"{old_path}:{line_no}", f"{len(old[1].split())} values, expected {IMAGE_SIZE * IMAGE_SIZE}")
                continue
            yield name, split, _parse_votes(new[2:], f"{new_path}:{line_no}"), pixels


def load_ferplus_image(item: FerPlusImage, *, strict: bool = False) -> np.ndarray:
    """The 48x48 uint8 grey image of ``item``. Other sizes / colour are converted (strict: an error)."""
    if isinstance(item.path_or_pixels, np.ndarray):
        image = item.path_or_pixels
    else:
        try:
            with Image.open(item.path_or_pixels) as pil:
                pil.load()
                if strict and (pil.mode != "L" or pil.size != (IMAGE_SIZE, IMAGE_SIZE)):
                    raise BadSampleError(f"{item.path_or_pixels} is {pil.mode} {pil.size[0]}x{pil.size[1]}, not 48x48 grey "
                                         "(strict=true; set strict=false to convert and count such images)")
                image = np.asarray(pil.convert("L"))
        except (OSError, SyntaxError) as exn:
            raise ValueError(f"cannot read FER+ image {item.path_or_pixels}: {exn}") from exn
    if image.shape != (IMAGE_SIZE, IMAGE_SIZE):
        image = np.asarray(Image.fromarray(image).resize((IMAGE_SIZE, IMAGE_SIZE), Image.BILINEAR))
    return np.ascontiguousarray(image, dtype=np.uint8)


def encode_png(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image, mode="L").save(buffer, format="PNG", optimize=False, compress_level=6)
    return buffer.getvalue()


def decode_png(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as pil:
        image = np.asarray(pil.convert("L"))
    if image.shape != (IMAGE_SIZE, IMAGE_SIZE):
        image = np.asarray(Image.fromarray(image).resize((IMAGE_SIZE, IMAGE_SIZE), Image.BILINEAR))
    return image


# ----------------------------------------------------------------------------------------- prepare


def ferplus_fingerprint(
    source: str | Path, *, cleaning: str = "cntk", splits: Sequence[str] = ("train", "val", "test"), samples_per_shard: int = 2000
) -> dict[str, Any]:
    """What FER+ face shards are built from: the source's listing and the settings that change them."""
    return input_fingerprint("ferplus", sources={"source": source},
                             settings={"cleaning": cleaning, "splits": list(splits), "samples_per_shard": samples_per_shard})


def ferplus_folder(data_dir: str | Path, source: str | Path, fingerprint: dict[str, Any]) -> Path:
    """``<data_dir>/ferplus/<source name>-<cleaning>-<digest8>``."""
    return shard_folder(data_dir, "ferplus", f"{Path(source).resolve().name}-{fingerprint['settings']['cleaning']}", fingerprint)


def prepare_ferplus(
    source: str | Path,
    out_dir: str | Path,
    *,
    cleaning: str = "cntk",
    splits: Sequence[str] = ("train", "val", "test"),
    samples_per_shard: int = 2000,
    strict: bool = False,
    fingerprint: dict[str, Any] | None = None,
    named_by: str | None = "out_dir",
):
    """Write face shards (``<split>-NNNNNN.tar``: png + json with name, split, votes) into ``out_dir``.

    A finished set of the same inputs (``fingerprint``, computed from the arguments when not
    given) is reused; a set of other inputs there is an error naming both (``named_by``: the
    config key that named ``out_dir``, for the message). Unfinished shards are resumed.
    Returns the :class:`Manifest`; its meta holds the fingerprint, the cleaning counts and its
    ``skipped`` the unusable rows/images.
    """
    splits = list(splits)
    if fingerprint is None:
        fingerprint = ferplus_fingerprint(source, cleaning=cleaning, splits=splits, samples_per_shard=samples_per_shard)
    with folder_lock(out_dir, "FER+ shards"):
        if claim(out_dir, fingerprint, strict=strict, named_by=named_by, what="FER+ face shard set"):
            return load_manifest(out_dir)
        return _write_ferplus(source, Path(out_dir), cleaning, splits, samples_per_shard, strict, fingerprint)


def _write_ferplus(source, out_dir: Path, cleaning: str, splits: list[str], samples_per_shard: int, strict: bool,
                   fingerprint: dict[str, Any]):
    report, read_skips = CleaningReport(cleaning), SkipLog(strict=strict)
    items = read_ferplus(source, splits, cleaning, report=report, skips=read_skips)  # logs the cleaning counts
    jobs = []
    for split in splits:
        in_split = [item for item in items if item.split == split]
        for start in range(0, len(in_split), samples_per_shard):
            jobs.append(ShardJob(f"{split}-{start // samples_per_shard:06d}", in_split[start:start + samples_per_shard]))

    def make_samples(job: ShardJob, skips: SkipLog) -> Iterable[dict[str, Any]]:
        for item in job.items:
            where = str(item.path_or_pixels) if isinstance(item.path_or_pixels, Path) else f"{item.split}/{item.name}"
            try:
                image = load_ferplus_image(item, strict=strict)
            except ValueError as exn:
                skips.skip("corrupt_image", where, str(exn))
                continue
            if isinstance(item.path_or_pixels, Path) and _needed_conversion(item.path_or_pixels):
                skips.counts["converted_to_48x48_grey (kept)"] += 1  # counted, not dropped
            yield {
                "__key__": item.key,
                "png": encode_png(image),
                "json": {"name": item.name, "split": item.split, "votes": [int(v) for v in item.votes]},
            }

    meta = {"dataset": "ferplus", "layout": detect_layout(source), "cleaning_report": report.as_dict(),
            "read_skipped": read_skips.as_dict(), "vote_columns": list(FERPLUS_VOTE_COLUMNS), "fingerprint": fingerprint}
    manifest, stats = write_shard_set(out_dir, jobs, make_samples, meta=meta, strict=strict, desc="FER+ shards")
    log.info("FER+ shards in %s: %d written, %d reused; %d images", out_dir, stats["written"], stats["reused"], manifest.total)
    return manifest


def _needed_conversion(path: Path) -> bool:
    try:
        with Image.open(path) as pil:
            return pil.mode != "L" or pil.size != (IMAGE_SIZE, IMAGE_SIZE)
    except OSError:
        return False


# ----------------------------------------------------------------------------------------- tensors


def augment_faces(
    images: torch.Tensor,
    *,
    flip_p: float = 0.5,
    affine_p: float = 0.5,
    zoom: Sequence[float] = (0.96, 1.04),
    translate: float = 0.04,
    rotations: Sequence[float] = (-10.0, 0.0, 10.0),
    skews: Sequence[float] = (-0.1, 0.0, 0.1),
    continuous: bool = False,
    padding_mode: str = "border",
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """The paper's augmentation on a float batch [N, C, H, W], in one ``grid_sample`` call.

    Flip with ``flip_p``; with ``affine_p`` an affine jitter: zoom uniform in ``zoom``, translation
    uniform up to ``translate`` of the image side (the paper's 9 px of 224), rotation and skew
    drawn from the lists (``continuous``: uniform between their extremes).
    """
    n, device = images.shape[0], images.device

    def uniform(low: float, high: float) -> torch.Tensor:
        return torch.rand(n, generator=generator) * (high - low) + low

    def choice(values: Sequence[float]) -> torch.Tensor:
        values = torch.as_tensor(list(values), dtype=torch.float32)
        if continuous:
            return uniform(float(values.min()), float(values.max()))
        return values[torch.randint(len(values), (n,), generator=generator)]

    use_affine = torch.rand(n, generator=generator) < affine_p
    scale = torch.where(use_affine, uniform(*zoom), torch.ones(n))
    angle = torch.where(use_affine, choice(rotations), torch.zeros(n)) * math.pi / 180
    skew = torch.where(use_affine, choice(skews), torch.zeros(n))
    shift = torch.where(use_affine[:, None], (torch.rand(n, 2, generator=generator) * 2 - 1) * 2 * translate, torch.zeros(n, 2))
    flip = torch.where(torch.rand(n, generator=generator) < flip_p, -1.0, 1.0)
    cos, sin = torch.cos(angle), torch.sin(angle)
    # theta maps output to input coordinates: rotation @ shear @ (1/zoom), x mirrored by flip.
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0] = (cos + sin * skew) / scale * flip
    theta[:, 0, 1] = (-sin + cos * skew) / scale
    theta[:, 1, 0] = sin / scale * flip
    theta[:, 1, 1] = cos / scale
    theta[:, :, 2] = shift
    grid = F.affine_grid(theta.to(device=device, dtype=images.dtype), list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode=padding_mode, align_corners=False)


class FerPlusDecoder:
    """Raw face-shard sample -> image, training target, majority label, votes (picklable, for loader workers)."""

    def __init__(self, cleaning: str, label_mode: str) -> None:
        self.cleaning, self.label_mode = cleaning, label_mode

    def __call__(self, sample: dict[str, Any]) -> dict[str, Any] | None:
        info = json.loads(sample["json"])
        votes = np.asarray(info["votes"], dtype=np.float32)
        cleaned, _ = clean_votes(votes, self.cleaning)
        if cleaned is None:  # the shards were cleaned already; guard against hand-made shard sets
            return None
        return {
            "image": torch.from_numpy(decode_png(sample["png"]).copy()),
            "target": torch.from_numpy(emotion_target(cleaned, self.label_mode)),
            "label": majority_label(cleaned),
            "votes": torch.from_numpy(votes),
            "key": sample["__key__"],
        }


def collate_faces(batch: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "image": torch.stack([b["image"] for b in batch]),
        "target": torch.stack([b["target"] for b in batch]),
        "label": torch.tensor([b["label"] for b in batch], dtype=torch.long),
        "votes": torch.stack([b["votes"] for b in batch]),
        "key": [b["key"] for b in batch],
    }


class FerPlusDataModule(L.LightningDataModule):
    """Streams FER+ face shards; prepares them from ``source`` on first use.

    Batches: ``image`` float [N, C, S, S] (augmented in training, preprocessed as ``preprocess``
    says), ``target`` [N, 8] (the label mode's distribution), ``label`` [N] (majority emotion),
    ``votes`` [N, 10], ``skipped``. Augmentation and preprocessing run on the whole batch after
    it reaches the device (cheap on CPU too, no per-image work in loader workers).
    """

    def __init__(
        self,
        source: str | None = None,
        shard_dir: str | None = None,
        data_dir: str = "data",
        cleaning: str = "cntk",
        label_mode: str = "probability",
        batch_size: int = 128,
        eval_batch_size: int = 256,
        num_workers: int = 1,
        samples_per_shard: int = 2000,
        shuffle_buffer: int = 4000,
        batches_per_epoch: int | None = None,
        preprocess: dict | None = None,
        augment: dict | None = None,
        strict: bool = False,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if cleaning not in CLEANING_MODES:
            raise ValueError(f"data.cleaning={cleaning!r} is not one of {', '.join(CLEANING_MODES)}")
        if label_mode not in LABEL_MODES:
            raise ValueError(f"data.label_mode={label_mode!r} is not one of {', '.join(LABEL_MODES)}")
        self.save_hyperparameters()
        self.source, self.data_dir = source, data_dir
        # data.shard_dir names the folder explicitly; None: <data_dir>/ferplus/<source>-<cleaning>-<fingerprint>
        self.named_dir = Path(shard_dir) if shard_dir else None
        self._shard_dir: Path | None = None
        self._fingerprint: dict[str, Any] | None = None
        self.cleaning, self.label_mode = cleaning, label_mode
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size
        self.num_workers, self.samples_per_shard = num_workers, samples_per_shard
        self.shuffle_buffer, self.batches_per_epoch = shuffle_buffer, batches_per_epoch
        from crossmodal.models.face import PreprocessSpec

        self.preprocess = PreprocessSpec.from_config(preprocess)
        self.augment = dict(augment or {})
        self.augment_enabled = bool(self.augment.pop("enabled", True))
        self.strict, self.seed = strict, seed
        self.manifest = None

    # -- preparation
    @property
    def shard_dir(self) -> Path:
        """The face-shard folder of this run's inputs (found or named from their fingerprint)."""
        if self._shard_dir is None:
            self._shard_dir = self._resolve()
        return self._shard_dir

    def _resolve(self) -> Path:
        if self.source:
            self._fingerprint = ferplus_fingerprint(self.source, cleaning=self.cleaning, samples_per_shard=self.samples_per_shard)
            return self.named_dir or ferplus_folder(self.data_dir, self.source, self._fingerprint)
        if self.named_dir:
            return self.named_dir
        kind_dir = Path(self.data_dir) / "ferplus"
        found = find_sets(kind_dir, lambda fp: fp.get("kind") == "ferplus" and fp["settings"].get("cleaning") == self.cleaning)
        if len(found) == 1:
            log.info("FER+ shards: data.source not given; using the only %s-cleaned set in %s: %s (from %s)",
                     self.cleaning, kind_dir, found[0][0].name, found[0][1]["sources"]["source"]["path"])
            return found[0][0]
        if not found:
            raise FileNotFoundError(f"no FER+ shards in {kind_dir} (cleaning {self.cleaning!r}) and no data.source to prepare them from. "
                                    "Set data.source to the FER+ root (FER2013Train/ ...) or the folder with fer2013.csv")
        listing = "\n".join(f"  {folder}  (data.source={fp['sources']['source']['path']})" for folder, fp in found)
        raise ValueError(f"{len(found)} FER+ shard sets (cleaning {self.cleaning!r}) in {kind_dir}:\n{listing}\n"
                         "Say which with data.source=<the FER+ folder they were made from>")

    def prepare_data(self) -> None:
        folder = self.shard_dir
        if not self.source:  # a set named or found without its inputs: use it as it is
            manifest = read_manifest(folder)
            if manifest is None:
                raise FileNotFoundError(f"no FER+ shards in {folder} and no data.source to prepare them from. "
                                        "Set data.source to the FER+ root (FER2013Train/ ...) or the folder with fer2013.csv")
            check_skips(folder, manifest, self.strict)
            return
        if self.named_dir is None and not (folder / "manifest.json").exists():
            note_unfingerprinted(folder.parent, "FER+ shards")
        prepare_ferplus(self.source, folder, cleaning=self.cleaning, samples_per_shard=self.samples_per_shard,
                        strict=self.strict, fingerprint=self._fingerprint, named_by="data.shard_dir" if self.named_dir else None)

    def setup(self, stage: str | None = None) -> None:
        self.manifest = load_manifest(self.shard_dir)
        made_with = self.manifest.meta.get("cleaning_report", {}).get("cleaning")
        if made_with and made_with != self.cleaning:
            raise ValueError(f"shards in {self.shard_dir} were cleaned with {made_with!r} but data.cleaning={self.cleaning!r}; "
                             "point data.shard_dir at a separate folder per cleaning rule")

    # -- samples (a picklable decoder, not a bound method: loader workers may be started by forkserver/spawn,
    # which would otherwise pickle this DataModule and its trainer)
    def decode(self, sample: dict[str, Any]) -> dict[str, Any] | None:
        return FerPlusDecoder(self.cleaning, self.label_mode)(sample)

    collate = staticmethod(collate_faces)

    def _stream(self, split: str, train: bool) -> ShardStream:
        if self.manifest is None:
            self.setup()
        paths = self.manifest.paths(split)
        if not paths:
            raise ValueError(f"no {split!r} shards in {self.shard_dir} (manifest lists {len(self.manifest.shards)} shards)")
        return ShardStream(paths, FerPlusDecoder(self.cleaning, self.label_mode), collate_faces,
                           self.batch_size if train else self.eval_batch_size,
                           train=train, seed=self.seed, shuffle_buffer=self.shuffle_buffer if train else 0, strict=self.strict)

    def split_size(self, split: str) -> int:
        if self.manifest is None:
            self.setup()
        return self.manifest.count(split)

    def train_dataloader(self):
        per_epoch = self.batches_per_epoch or max(1, self.split_size("train") // self.batch_size)
        return EpochLoader(self._stream("train", True), self.num_workers, per_epoch,
                           persistent_workers=self.num_workers > 0)

    def _eval(self, split: str):
        workers = min(self.num_workers, len(self.manifest.paths(split)) if self.manifest else self.num_workers)
        return eval_loader(self._stream(split, False), workers)

    def val_dataloader(self):
        return self._eval("val")

    def test_dataloader(self):
        return self._eval("test")

    def predict_dataloader(self):
        return self._eval("test")

    # -- batch transforms, on the device
    def on_after_batch_transfer(self, batch: dict[str, Any], dataloader_idx: int) -> dict[str, Any]:
        training = self.trainer is not None and self.trainer.training
        batch["image"] = self.transform(batch["image"], train=training)
        return batch

    def transform(self, images: torch.Tensor, train: bool) -> torch.Tensor:
        """uint8 [N, 48, 48] -> augmented (train) and preprocessed float [N, C, S, S]."""
        x = images.float().unsqueeze(1) if images.ndim == 3 else images.float()
        if train and self.augment_enabled:
            x = augment_faces(x, **self.augment)
        return self.preprocess(x, random_crop=train)
