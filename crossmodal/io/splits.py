"""Identity splits of talking-face data: train, heard and unheard (the paper's, from Learnable PINs).

- ``unheard``: identities held out entirely (no segment of theirs is in train).
- ``heard``: held-out *videos* of training identities (the identity's voice is heard in training,
  these recordings are not). Only identities with two or more videos give videos to heard, so every
  heard identity keeps a video in train; whole videos are held out so that no segment of a heard
  recording sits beside its neighbours in train.
- ``train``: everything else.

A split is made from a seed and two fractions, or from speaker folds (cross-validation,
:func:`make_fold_split`), or read from a user's split file, and is saved as ``splits.json`` beside the
shards, so every later stage (extraction, training, evaluation) uses the same one. The assignment is
a pure function of the seed and the sorted identity/video names.

Split file formats read by :func:`load_split_file`:
- JSON as written by :func:`save_split` (``{"unheard": [identity, ...], "heard": ["identity/video",
  ...], "train": [identity, ...], ...}``; only ``unheard`` is required, ``heard`` lists videos);
- text, one ``<split> <name>`` or ``<name> <split>`` pair per line (``#`` comments), where name is an
  identity (``id10001``) or an ``identity/video`` for heard. Identities not named go to train.
"""
from __future__ import annotations

import json
import random
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from crossmodal.utils.atomic import write_json

SPLITS = ("train", "heard", "unheard")
SPLIT_INDEX = {name: index for index, name in enumerate(SPLITS)}
NO_LABEL = -1  # a clip without a true emotion label (real talking-face data)
SPLIT_FILE = "splits.json"


@dataclass
class IdentitySplit:
    unheard: set[str] = field(default_factory=set)  # identities held out entirely
    heard: set[str] = field(default_factory=set)  # "identity/video" held out from training identities
    seed: int | None = None
    source: str = "seed"  # "seed", "folds" or the user split file it came from
    # identities held out for model selection: every clip of theirs goes to the heard split
    validation: set[str] = field(default_factory=set)
    folds: dict | None = None  # speaker folds: {"speaker_folds", "fold", "groups", "validation"}

    def assign(self, identity: str, video: str) -> str:
        if identity in self.unheard:
            return "unheard"
        if identity in self.validation or f"{identity}/{video}" in self.heard:
            return "heard"
        return "train"

    def to_dict(self, identities: Iterable[str] = ()) -> dict:
        """``train`` lists every identity whose audio training or model selection used (all but unheard);
        ``validation`` (when set) the ones of those that only model selection used."""
        identities = sorted(set(identities))
        out = {
            "seed": self.seed,
            "source": self.source,
            "unheard": sorted(self.unheard),
            "heard": sorted(self.heard),
            "train": [i for i in identities if i not in self.unheard],
        }
        if self.validation:
            out["validation"] = sorted(self.validation)
        if self.folds:
            out["folds"] = self.folds
        return out


def make_fold_split(identities: Iterable[str], speaker_folds: int, fold: int, *, seed: int | None = None) -> IdentitySplit:
    """Fold ``fold`` of ``speaker_folds`` speaker folds: that group of consecutive sorted names unheard
    (test), the first identity of the next group the validation identity (all its clips go to the heard
    split that model selection watches), the other identities train.

    A pure function of the sorted identity names: every seed and every model sees the same folds.
    """
    names = sorted(set(identities))
    if not isinstance(speaker_folds, int) or speaker_folds < 2:
        raise ValueError(f"data.prepare.speaker_folds={speaker_folds!r}: need an integer >= 2 (or null for the seed split)")
    if not isinstance(fold, int) or not 0 <= fold < speaker_folds:
        raise ValueError(f"data.prepare.fold={fold!r}: must be one of 0..{speaker_folds - 1} (data.prepare.speaker_folds={speaker_folds})")
    # groups of consecutive names, sizes differing by at most 1 (the first ones the larger)
    groups = [group.tolist() for group in np.array_split(np.asarray(names, dtype=object), speaker_folds)]
    if any(not group for group in groups) or len(names) - len(groups[fold]) < 2:
        raise ValueError(
            f"data.prepare.speaker_folds={speaker_folds}: {len(names)} speakers cannot make {speaker_folds} folds that each "
            "leave a validation speaker and a training speaker; use fewer folds"
        )
    per_fold = [groups[(i + 1) % speaker_folds][0] for i in range(speaker_folds)]  # the next group's first
    record = {"speaker_folds": speaker_folds, "fold": fold, "groups": groups, "validation": per_fold}
    return IdentitySplit(unheard=set(groups[fold]), validation={per_fold[fold]}, seed=seed, source="folds", folds=record)


def make_split(
    videos: Iterable[tuple[str, str]], *, seed: int = 0, unheard_fraction: float = 0.2, heard_fraction: float = 0.05
) -> IdentitySplit:
    """Split ``(identity, video)`` pairs: a fraction of identities unheard, a fraction of the
    remaining identities' videos heard (only from identities with at least two videos)."""
    if not 0.0 <= unheard_fraction < 1.0 or not 0.0 <= heard_fraction < 1.0:
        raise ValueError(f"split fractions must be in [0, 1): unheard_fraction={unheard_fraction}, heard_fraction={heard_fraction}")
    per_identity: dict[str, set[str]] = {}
    for identity, video in videos:
        per_identity.setdefault(identity, set()).add(video)
    identities = sorted(per_identity)
    rng = random.Random(f"identity-split-{seed}")
    n_unheard = int(round(len(identities) * unheard_fraction))
    if unheard_fraction > 0 and n_unheard == 0 and len(identities) >= 2:
        n_unheard = 1  # a requested held-out set is never silently empty
    if n_unheard >= len(identities) and identities:
        n_unheard = len(identities) - 1  # keep at least one training identity
    unheard = set(rng.sample(identities, n_unheard))
    candidates = [f"{i}/{v}" for i in identities if i not in unheard and len(per_identity[i]) >= 2 for v in sorted(per_identity[i])]
    n_heard = int(round(len(candidates) * heard_fraction))
    heard: set[str] = set()
    for item in rng.sample(candidates, len(candidates)):
        if len(heard) >= n_heard:
            break
        identity = item.split("/", 1)[0]
        in_train = [v for v in per_identity[identity] if f"{identity}/{v}" not in heard and f"{identity}/{v}" != item]
        if in_train:  # the identity must keep at least one training video
            heard.add(item)
    return IdentitySplit(unheard=unheard, heard=heard, seed=seed, source="seed")


def save_split(split: IdentitySplit, path: str | Path, identities: Iterable[str] = ()) -> Path:
    return write_json(path, split.to_dict(identities), sort_keys=False)


def load_split_file(path: str | Path) -> IdentitySplit:
    """Read a split file (JSON as saved, or ``split name`` text lines). Errors name the file and line."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"split file not found: {path} (data.split_file)")
    text = path.read_text()
    if path.suffix == ".json" or text.lstrip().startswith("{"):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exn:
            raise ValueError(f"split file {path} is not valid JSON: {exn}") from exn
        if "unheard" not in data:
            raise ValueError(f"split file {path} has no 'unheard' list (identities held out entirely)")
        split = IdentitySplit(set(data["unheard"]), set(data.get("heard", [])), data.get("seed"), str(path),
                              validation=set(data.get("validation", [])), folds=data.get("folds"))
        train, kept = set(data.get("train", [])) | split.validation, "train/validation"
    else:
        split, train, kept = IdentitySplit(source=str(path)), set(), "train"
        for number, line in enumerate(text.splitlines(), 1):
            line = line.split("#", 1)[0].strip()
            if not line:
                continue
            parts = line.split()
            names = [p for p in parts if p not in SPLITS]
            which = [p for p in parts if p in SPLITS]
            if len(parts) != 2 or len(which) != 1:
                raise ValueError(f"{path}:{number}: expected '<split> <name>' with split one of {SPLITS}, got {line!r}")
            name = names[0]
            if which[0] == "unheard":
                split.unheard.add(name.split("/", 1)[0])
            elif which[0] == "heard":
                if "/" not in name:
                    raise ValueError(f"{path}:{number}: heard entries are videos 'identity/video', got {name!r}")
                split.heard.add(name)
            else:
                train.add(name.split("/", 1)[0])
    overlap = split.unheard & train
    if overlap:
        raise ValueError(f"split file {path} puts {len(overlap)} identities in both {kept} and unheard (e.g. {sorted(overlap)[0]})")
    bad = [h for h in split.heard if h.split("/", 1)[0] in split.unheard]
    if bad:
        raise ValueError(f"split file {path}: heard video {bad[0]} belongs to an unheard identity; heard videos come from training identities")
    return split
