"""FER+ (FER2013 faces with 10 crowd votes each): the two layouts users download, vote cleaning, label targets.

Layouts, both read into the same :class:`FerPlusImage` records (identical PNG bytes either way):

* the FER+ folders ``FER2013Train/``, ``FER2013Valid/``, ``FER2013Test/``, each with 48x48 grey PNGs
  and a ``label.csv`` (``name.png,"(0, 0, 48, 48)",`` then 10 vote counts);
* the Kaggle ``fer2013.csv`` (``emotion,pixels,Usage``) with FER+'s ``fer2013new.csv``
  (``Usage,Image name,`` then the 10 counts), row i of one describing row i of the other.

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
import logging
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from crossmodal.emotions import FERPLUS_VOTE_COLUMNS, NUM_EMOTIONS
from crossmodal.io.skips import BadSampleError, SkipLog

log = logging.getLogger(__name__)


IMAGE_SIZE = 48
SPLIT_FOLDERS = {"train": "FER2013Train", "val": "FER2013Valid", "test": "FER2013Test"}
USAGE_SPLITS = {"Training": "train", "PublicTest": "val", "PrivateTest": "test"}
CLEANING_MODES = ("cntk", "majority", "none")
LABEL_MODES = ("majority", "probability", "crossentropy")
FER2013_HEADER = ["emotion", "pixels", "Usage"]
FER2013NEW_HEADER = ["Usage", "Image name", *FERPLUS_VOTE_COLUMNS]


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
    splits = list(splits)
    if any(s not in SPLIT_FOLDERS for s in splits):
        raise ValueError(f"unknown FER+ split(s) {[s for s in splits if s not in SPLIT_FOLDERS]}: use train, val, test")
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
                pixels = np.array(old[1].split(), dtype=np.uint8).reshape(IMAGE_SIZE, IMAGE_SIZE)
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


