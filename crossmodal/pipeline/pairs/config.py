"""Pair-data settings: :class:`PairSettings` (the keys of ``conf/prep/pairs.yaml``), their checks,
and the fingerprint and folder name they give a pair shard set; :class:`PairRecipe`, what every pair
recipe (real pairs, pseudo-pairs) shares: where its set goes and what `task=prepare` reports of it.
Settings only: building the set is :mod:`crossmodal.pipeline.pairs.build`'s job (its ``PairsConfig``)."""
from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from crossmodal.io.video import DEFAULT_FRAME_RATE
from crossmodal.models.modelfile import plain
from crossmodal.pipeline.fingerprint import input_fingerprint, shard_folder
from crossmodal.pipeline.pairs.codec import slug
from crossmodal.pipeline.shards import Manifest, load_manifest

log = logging.getLogger(__name__)

LAYOUTS = ("auto", "voxceleb2", "voxceleb1", "videos")

# Settings that change the content of the shards: part of the set's fingerprint (and folder name).
CONTENT_SETTINGS = (
    "layout", "frame_rate", "frames_fps", "segment_seconds", "min_segment_seconds", "min_frames",
    "crop_size", "margin", "center_crop", "grey", "jpeg_quality", "sample_rate", "videos_per_shard",
    "seed", "unheard_fraction", "heard_fraction",
)

T = TypeVar("T")


def settings_from_cfg(cls: type[T], cfg: Any, what: str) -> T:
    """A settings dataclass from itself, a dict or an OmegaConf node (interpolations resolved):
    keys starting with ``_`` (``_target_``) are dropped, an unknown key is an error naming it."""
    if isinstance(cfg, cls):
        return cfg
    values = dataclasses.asdict(cfg) if dataclasses.is_dataclass(cfg) and not isinstance(cfg, type) else plain(cfg)
    if not isinstance(values, dict):
        values = plain(dict(cfg))
    values = {k: v for k, v in values.items() if not k.startswith("_")}
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"unknown {what} key data.{unknown[0]}; valid keys: {', '.join(sorted(known))}")
    return cls(**values)


@dataclass
class PairRecipe:
    """What a pair recipe (PairSettings, PseudoPairsConfig) shares: the settings below, where its set goes and
    what `task=prepare` reports of it. Subclasses give ``dataset_name``, ``fingerprint()`` and ``prepare()`` (build
    or reuse the shards); `task=prepare` calls ``prepare_data()``, then ``prepare_report()`` for the counts."""

    source: str | None = None  # the raw data folder (each recipe's module says what it holds)
    pairs: str | None = None  # an existing pair shard set to use instead of building one from source
    data_dir: str = "data"  # shards go to <data_dir>/pairs/<name>-<fp8> and <data_dir>/distill/<name>-<teacher>-<fp8>
    name: str | None = None  # default: from the source (dataset_name)
    split_file: str | None = None  # a user's split file; default: made from seed + fractions
    seed: int = 0
    unheard_fraction: float = 0.2
    frame_rate: float = DEFAULT_FRAME_RATE  # face frames per second (25 fps / 6)
    segment_seconds: float = 10.0
    sample_rate: int = 16000
    num_workers: int = 0  # loader worker processes for decoding (prepare and extract)
    strict: bool = False
    # extraction (task=extract)
    distill_dir: str | None = None  # default: <data_dir>/distill/<name>-<teacher>-<fingerprint of pairs + teacher file>
    batch_size: int = 256  # face frames per teacher forward pass
    logits_dtype: str = "float16"  # float16 | float32

    def __post_init__(self) -> None:
        if self.logits_dtype not in ("float16", "float32"):
            raise ValueError(f"data.logits_dtype={self.logits_dtype!r}: expected float16 or float32")

    @property
    def pairs_dir(self) -> Path:
        """``data.pairs`` when set, else ``<data_dir>/pairs/<name>-<fingerprint8>``."""
        return Path(self.pairs) if self.pairs else self.folder_for(self.fingerprint())

    def folder_for(self, fingerprint: dict[str, Any]) -> Path:
        return Path(self.pairs) if self.pairs else shard_folder(self.data_dir, "pairs", self.dataset_name, fingerprint)

    def prepare_data(self) -> Manifest:
        self._manifest = self.prepare()
        return self._manifest

    def prepare_report(self) -> dict[str, Any]:
        """Counts for the `prepare` task's metrics.json (segments, frames, skips by reason)."""
        return prepare_report(getattr(self, "_manifest", None) or load_manifest(self.pairs_dir))


def prepare_report(manifest: Manifest) -> dict[str, Any]:
    """A pair shard set's counts: segments (by split), shards, frames, skips by reason."""
    metrics: dict[str, Any] = {"pairs/segments": manifest.total, "pairs/shards": len(manifest.shards)}
    for split in ("train", "heard", "unheard"):
        metrics[f"pairs/segments/{split}"] = manifest.count(split)
    for key, value in manifest.meta.get("stats", {}).items():
        if key != "segments":
            metrics[f"pairs/{key}"] = value
    counts = manifest.skipped.get("counts", {})
    metrics["pairs/skipped"] = sum(counts.values())
    metrics.update({f"pairs/skipped/{reason}": n for reason, n in sorted(counts.items())})
    log.info("pairs: %s", ", ".join(f"{k}={v}" for k, v in metrics.items()))
    return metrics


@dataclass
class PairSettings(PairRecipe):
    """Talking-face pair data: how to build pair shards, and how ``task=extract`` turns them into
    distillation shards. ``conf/prep/pairs.yaml`` instantiates its builder, ``PairsConfig``."""

    layout: str = "auto"  # auto | voxceleb2 | voxceleb1 | videos
    frames_root: str | None = None  # voxceleb1: folder of <id>/<youtube_id>/<n>/*.jpg face frames
    heard_fraction: float = 0.05
    frames_fps: float = 25.0  # voxceleb1: frame rate of the released face-frame numbering
    min_segment_seconds: float = 1.0
    min_frames: int = 2
    crop_size: int = 112
    margin: float = 0.2  # videos: detected box widened by this fraction per side
    center_crop: float = 0.625  # voxceleb1/2: centre crop of the face-centred frame (1/1.6)
    grey: bool = True
    jpeg_quality: int = 90
    videos_per_shard: int = 64

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.layout not in LAYOUTS:
            raise ValueError(f"data.layout={self.layout!r}: expected one of {', '.join(LAYOUTS)}")
        if self.frame_rate <= 0 or self.segment_seconds <= 0 or self.min_segment_seconds > self.segment_seconds:
            raise ValueError(
                f"data.frame_rate={self.frame_rate}, data.segment_seconds={self.segment_seconds}, "
                f"data.min_segment_seconds={self.min_segment_seconds}: need positive values with min <= segment length"
            )

    @classmethod
    def from_cfg(cls: type[T], cfg: Any) -> T:
        """From an instance, a dict or an OmegaConf node (``_target_`` is ignored, unknown keys are errors)."""
        return settings_from_cfg(cls, cfg, "pair-data")

    def fingerprint(self) -> dict[str, Any]:
        """The source listing (videos, face frames, split file) and the settings that change the shards."""
        return input_fingerprint(
            "pairs",
            sources={"source": self.source, "frames_root": self.frames_root, "split_file": self.split_file},
            settings={k: getattr(self, k) for k in CONTENT_SETTINGS},
        )

    @property
    def dataset_name(self) -> str:
        if self.name:
            return self.name
        if not self.source:
            raise ValueError("data.source is not set: point it at a folder of talking-face data (or set data.pairs)")
        return slug(Path(self.source).resolve().name) or "pairs"
