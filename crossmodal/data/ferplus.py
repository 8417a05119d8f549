"""FerPlusDataModule: FER+ face shards -> augmented, preprocessed batches with the label mode's targets.

The shards are built on first use by :mod:`crossmodal.pipeline.ferplus` (cleaning and label modes
are described in :mod:`crossmodal.io.ferplus`). Training batches are augmented (random crop, flip,
small rotation and scale) after the backbone's preprocessing; evaluation is a centre crop.
"""
from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F

from crossmodal.data.stream import EpochLoader, ShardStream, check_remote_set, eval_loader
from crossmodal.io.ferplus import CLEANING_MODES, LABEL_MODES, clean_votes, decode_png, emotion_target, majority_label
from crossmodal.pipeline.cache import check_skips, find_sets, note_unfingerprinted, read_manifest
from crossmodal.pipeline.ferplus import ferplus_fingerprint, ferplus_folder, prepare_ferplus
from crossmodal.pipeline.shards import is_remote, load_manifest, shard_location
from crossmodal.utils.seeding import isolated_rng

log = logging.getLogger(__name__)
NO_SOURCE = (" and no data.source to prepare them from. "
             "Set data.source to the FER+ root (FER2013Train/ ...) or the folder with fer2013.csv")


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

    Batches: ``image`` float [N, C, S, S], ``target`` [N, 8] (the label mode's distribution), ``label`` [N]
    (majority emotion), ``votes`` [N, 10], ``skipped``; augmentation and preprocessing run on the whole batch
    on the device. ``shard_dir``: a local folder, an ``http(s)://`` URL or a ``pipe:`` command (docs/streaming.md);
    a remote set is checked (its fingerprint when ``source`` is given), never built.
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
        self.named_dir = shard_location(shard_dir, "data.shard_dir")
        self._shard_dir: Path | str | None = None
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
    def shard_dir(self) -> Path | str:
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
            raise FileNotFoundError(f"no FER+ shards in {kind_dir} (cleaning {self.cleaning!r}){NO_SOURCE}")
        listing = "\n".join(f"  {folder}  (data.source={fp['sources']['source']['path']})" for folder, fp in found)
        raise ValueError(f"{len(found)} FER+ shard sets (cleaning {self.cleaning!r}) in {kind_dir}:\n{listing}\n"
                         "Say which with data.source=<the FER+ folder they were made from>")

    def prepare_data(self) -> None:
        with isolated_rng():  # built or reused, training draws the same random numbers afterwards
            self._prepare_data()

    def _prepare_data(self) -> None:
        folder = self.shard_dir
        if is_remote(folder):  # read-only: checked, never built
            check_remote_set(folder, "data.shard_dir", self._fingerprint, self.strict, "FER+ shard set")
            return
        if not self.source:  # a set named or found without its inputs: use it as it is
            manifest = read_manifest(folder)
            if manifest is None:
                raise FileNotFoundError(f"no FER+ shards in {folder}{NO_SOURCE}")
            check_skips(folder, manifest, self.strict)
            return
        if self.named_dir is None and not (folder / "manifest.json").exists():
            note_unfingerprinted(folder.parent, "FER+ shards")
        prepare_ferplus(self.source, folder, cleaning=self.cleaning, samples_per_shard=self.samples_per_shard,
                        strict=self.strict, fingerprint=self._fingerprint, named_by="data.shard_dir" if self.named_dir else None)

    def setup(self, stage: str | None = None) -> None:
        self.manifest = load_manifest(self.shard_dir, key="data.shard_dir")
        made_with = self.manifest.meta.get("cleaning_report", {}).get("cleaning")
        if made_with and made_with != self.cleaning:
            raise ValueError(f"shards in {self.shard_dir} were cleaned with {made_with!r} but data.cleaning={self.cleaning!r}; "
                             "point data.shard_dir at a separate folder per cleaning rule")

    def _stream(self, split: str, train: bool) -> ShardStream:
        if self.manifest is None:
            self.setup()
        paths = self.manifest.paths(split)
        if not paths:
            raise ValueError(f"no {split!r} shards in {self.shard_dir} (manifest lists {len(self.manifest.shards)} shards)")
        # a picklable decoder, not a bound method: forkserver/spawn workers would pickle this module and its trainer
        return ShardStream(paths, FerPlusDecoder(self.cleaning, self.label_mode), collate_faces,
                           self.batch_size if train else self.eval_batch_size,
                           train=train, seed=self.seed, shuffle_buffer=self.shuffle_buffer if train else 0, strict=self.strict)

    def train_dataloader(self):
        stream = self._stream("train", True)  # loads the manifest
        per_epoch = self.batches_per_epoch or max(1, self.manifest.count("train") // self.batch_size)
        return EpochLoader(stream, self.num_workers, per_epoch, persistent_workers=self.num_workers > 0)

    def _eval(self, split: str):
        workers = min(self.num_workers, len(self.manifest.paths(split)) if self.manifest else self.num_workers)
        return eval_loader(self._stream(split, False), workers)

    def val_dataloader(self):
        return self._eval("val")

    def test_dataloader(self):
        return self._eval("test")

    predict_dataloader = test_dataloader

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
