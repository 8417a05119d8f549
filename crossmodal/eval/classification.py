"""Epoch metrics of the LightningModules, as torchmetrics objects (their states are summed across
DDP ranks when computed, so every rank logs the same global value).

Names, the same everywhere (logged keys, metrics.json, tables):
- ``ua``: unweighted average recall, the mean of the per-class recalls over the classes that occur
  in the ground truth (the speech-emotion literature's "unweighted accuracy"; sklearn's
  ``balanced_accuracy_score``, which :func:`crossmodal.eval.metrics.ua_score` uses).
- ``wa``: weighted accuracy, the fraction of clips classified correctly (``MulticlassAccuracy``
  with ``average="micro"``); the FER+ teacher logs it as ``acc``, the FER+ literature's name.
- ``recall``: per-class recall, reported for the classes that occur in the ground truth.
- ``confusion``: counts, rows = true class, columns = predicted class.

Why UA is not ``MulticlassRecall(average="macro")``: torchmetrics' macro average (like sklearn's
``recall_score(average="macro")``) also averages a class that was predicted but never true, with
recall 0. A held-out speaker without, say, disgust clips would then be scored on a class it has
no clip of. UA averages over the classes in the truth only; where every class occurs, the two agree.
"""
from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from torchmetrics import Metric, MetricCollection
from torchmetrics.classification import MulticlassAccuracy, MulticlassConfusionMatrix, MulticlassRecall

from crossmodal.emotions import EMOTIONS, NUM_EMOTIONS


class UnweightedAverageRecall(MulticlassRecall):
    """UA: mean recall over the classes that occur in the targets (balanced accuracy)."""

    def __init__(self, num_classes: int, **kwargs: Any) -> None:
        super().__init__(num_classes, average="none", **kwargs)

    def compute(self) -> torch.Tensor:
        tp, _fp, _tn, fn = self._final_state()
        support = tp + fn
        present = support > 0
        if not present.any():
            return torch.tensor(float("nan"), device=tp.device)
        return (tp[present].double() / support[present]).mean().float()


def classification_metrics(num_classes: int = NUM_EMOTIONS) -> MetricCollection:
    """``ua``, ``wa``, per-class ``recall`` and ``confusion`` of class predictions (indices)."""
    # No compute groups: each metric syncs its own states, so every rank runs the same collectives
    # whatever it saw (groups are formed at a first update, which a rank without clips never makes).
    return MetricCollection({
        "ua": UnweightedAverageRecall(num_classes),
        "wa": MulticlassAccuracy(num_classes, average="micro"),
        "recall": MulticlassRecall(num_classes, average="none"),
        "confusion": MulticlassConfusionMatrix(num_classes),
    }, compute_groups=False)


def classification_results(metrics: MetricCollection, class_names: Sequence[str] = EMOTIONS) -> dict[str, Any]:
    """Compute (on every rank: a collective under DDP) and reset. Returns ``{"count", "ua", "wa",
    "recall": {class: value} for the classes with clips, "confusion": [C, C] long tensor}``;
    ``count == 0`` (no clip on any rank) leaves out ``ua``, ``wa`` and ``recall``."""
    with warnings.catch_warnings():  # a rank (or split) without clips computes too: zero counts
        warnings.filterwarnings("ignore", message=".*was called before the ``update`` method.*")
        computed = metrics.compute()
    metrics.reset()
    confusion = computed["confusion"].long()
    support = confusion.sum(1)
    out: dict[str, Any] = {"count": int(support.sum()), "confusion": confusion}
    if out["count"]:
        out["ua"] = float(computed["ua"])
        out["wa"] = float(computed["wa"])
        out["recall"] = {name: float(computed["recall"][i]) for i, name in enumerate(class_names) if support[i] > 0}
    return out


class SplitClassification(nn.Module):
    """:func:`classification_metrics` per split of the clips (e.g. train / heard / unheard speakers)."""

    def __init__(self, splits: Sequence[str], num_classes: int = NUM_EMOTIONS) -> None:
        super().__init__()
        self.splits = tuple(splits)
        self.per_split = nn.ModuleList([classification_metrics(num_classes) for _ in self.splits])  # in ``splits`` order

    def update(self, predictions: torch.Tensor, labels: torch.Tensor, split_index: torch.Tensor) -> None:
        for index, metrics in enumerate(self.per_split):
            chosen = split_index == index
            if chosen.any():
                metrics.update(predictions[chosen], labels[chosen])

    def results(self, class_names: Sequence[str] = EMOTIONS) -> dict[str, dict[str, Any]]:
        """:func:`classification_results` of the splits that had clips (on any rank), then reset.
        Every rank computes every split, so no rank waits on another at the end of an epoch."""
        results = {split: classification_results(metrics, class_names) for split, metrics in zip(self.splits, self.per_split)}
        return {split: result for split, result in results.items() if result["count"]}


class SplitMean(Metric):
    """Per-split running mean (e.g. the loss on train / heard / unheard clips), summed across ranks; the states
    are fixed-size, so every rank syncs every split and none waits on another at the end of an epoch."""

    full_state_update = False

    def __init__(self, splits: Sequence[str]) -> None:
        super().__init__()
        self.splits = tuple(splits)
        self.add_state("sums", default=torch.zeros(len(self.splits), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("counts", default=torch.zeros(len(self.splits), dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, split: int, mean: torch.Tensor, count: int | torch.Tensor) -> None:
        self.sums[split] += mean.detach().double() * float(count)
        self.counts[split] += float(count)

    def compute(self) -> dict[str, float]:
        return {name: float(self.sums[i] / self.counts[i]) for i, name in enumerate(self.splits) if self.counts[i] > 0}
