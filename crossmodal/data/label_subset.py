"""Few labels: supervised training on k labelled clips per emotion of the training speakers
(``experiment=finetune_cpu labels_per_class=k``, the label-efficiency study of issue 23).

:func:`choose_labelled` is the one seeded choice of the k clips (experiments/label_efficiency/summary.py
gives the same clips to its baselines). :class:`LabelSubsetDataModule` writes them as one train shard plus
``label_subset.json`` (the clips per emotion, k, the seed, the source shards) into the run folder and trains
on that shard; validation and test read the same heard and unheard shards as before.
"""
from __future__ import annotations

import json
import logging
import random
from collections import defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from crossmodal.data.distill import DistillDataModule

log = logging.getLogger(__name__)

SUBSET_FILE = "label_subset.json"


def parse_labels_per_class(value: Any) -> int | None:
    """``labels_per_class``: a positive int, or ``all`` / null (every training clip) -> None."""
    if value is None or (isinstance(value, str) and value.strip().lower() == "all"):
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"labels_per_class={value!r}: a positive number of labelled clips per emotion (1, 2, 5, ...) "
                         "or `all` for every training clip")
    return value


def choose_labelled(clips: Iterable[tuple[str, str, str]], k: int | None, seed: int) -> dict[str, list[tuple[str, str]]]:
    """``{emotion: [(speaker, clip), ...]}``: k clips per emotion (all when fewer, or when k is None)
    from ``(speaker, clip, emotion)`` triples; seeded and independent of the input order."""
    by_emotion: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for speaker, clip, emotion in sorted(set(clips)):
        by_emotion[emotion].append((speaker, clip))
    rng = random.Random(f"labels-{seed}")
    return {emotion: sorted(members if k is None or k >= len(members) else rng.sample(members, k))
            for emotion, members in sorted(by_emotion.items())}


class LabelSubsetDataModule(DistillDataModule):
    """DistillDataModule (``labels_only``) trained on ``labels_per_class`` clips per emotion of its
    train split, chosen by :func:`choose_labelled` with ``subset_seed``; ``all`` = the whole split."""

    def __init__(self, *args: Any, labels_per_class: Any = None, subset_seed: int = 0, subset_dir: str | None = None,
                 **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.labels_per_class = parse_labels_per_class(labels_per_class)
        self.subset_seed = int(subset_seed)
        self.subset_dir = subset_dir  # default: <run folder>/label_subset
        self._subset: list[str] | None = None
        self._subset_info: dict[str, Any] = {}
        if not self.labels_only and self.labels_per_class is not None:
            raise ValueError("labels_per_class needs data.labels_only=true (supervised training reads the clips' labels)")

    def split_paths(self, split: str) -> list[str]:
        if split != "train" or self.labels_per_class is None:
            return super().split_paths(split)
        if self._subset is None:
            self._subset = self._write_subset(super().split_paths("train"))
        return self._subset

    def _write_subset(self, paths: Sequence[str]) -> list[str]:
        from crossmodal.pipeline.shards import iter_shard, write_shard
        from crossmodal.utils.atomic import write_json

        trainer = getattr(self, "trainer", None)
        if not self.subset_dir and trainer is None:
            raise ValueError("labels_per_class: no run folder to write the chosen clips into (set data.subset_dir)")
        folder = Path(self.subset_dir) if self.subset_dir else Path(trainer.default_root_dir) / "label_subset"
        samples: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
        labels: dict[tuple[str, str], str] = {}
        for path in paths:
            for sample in iter_shard(path):
                meta = json.loads(sample["json"])
                if not meta.get("label"):
                    continue
                clip = (str(meta["identity"]), str(meta["video"]))
                labels[clip] = meta["label"]
                samples[clip].append({k: v for k, v in sample.items() if k == "__key__" or not k.startswith("__")})
        chosen = choose_labelled(((s, c, e) for (s, c), e in labels.items()), self.labels_per_class, self.subset_seed)
        shard = folder / "train-000000.tar"
        count = write_shard(shard, (s for members in chosen.values() for clip in members for s in samples[clip]))
        self._subset_info = {
            "labels_per_class": self.labels_per_class, "subset_seed": self.subset_seed, "source_shards": list(paths),
            "clips": {emotion: [f"{s}/{c}" for s, c in members] for emotion, members in chosen.items()},
            "available": {e: sum(1 for v in labels.values() if v == e) for e in sorted(set(labels.values()))},
            "segments": count,
        }
        write_json(folder.parent / SUBSET_FILE if not self.subset_dir else folder / SUBSET_FILE, self._subset_info)
        log.info("label subset: %d per emotion (seed %d): %s -> %s", self.labels_per_class, self.subset_seed,
                 {e: len(m) for e, m in chosen.items()}, shard)
        return [str(shard)]

    def student_info(self) -> dict[str, Any]:
        info = super().student_info()
        if self.labels_per_class is not None and self._subset_info:
            info["label_subset"] = {k: self._subset_info[k] for k in ("labels_per_class", "subset_seed", "clips")}
        return info
