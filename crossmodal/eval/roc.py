"""ROC AUC per emotion, the paper's test of a distilled student (§4): each clip's dominant teacher
emotion is the label, the student's softmax the score, one-vs-rest per emotion (torchmetrics'
binary AUROC / ROC). Only emotions with both positives and negatives are scored; the others are
reported as absent (never NaN). Means: over the scored emotions, and the paper's mean that leaves
out fear, disgust and contempt (rare in the wild).
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torchmetrics import Metric
from torchmetrics.functional.classification import binary_auroc, binary_roc

from crossmodal.emotions import EMOTIONS, NUM_EMOTIONS, RARE_IN_THE_WILD


class ScoreCollector(Metric):
    """Gathers (scores [N, C], labels [N], groups [N]) over an epoch, concatenated across ranks."""

    full_state_update = False

    def __init__(self) -> None:
        super().__init__()
        self.add_state("scores", default=[], dist_reduce_fx="cat")
        self.add_state("labels", default=[], dist_reduce_fx="cat")
        self.add_state("groups", default=[], dist_reduce_fx="cat")

    def update(self, scores: torch.Tensor, labels: torch.Tensor, groups: torch.Tensor) -> None:
        self.scores.append(scores.detach().float())
        self.labels.append(labels.detach().long())
        self.groups.append(groups.detach().long())

    def start_epoch(self) -> None:
        """An empty entry, so that a rank that gets no clip (all its samples skipped) still syncs."""
        self.update(torch.zeros(0, NUM_EMOTIONS, device=self.device), torch.zeros(0, device=self.device), torch.zeros(0, device=self.device))

    def compute(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        def cat(items):
            return torch.cat(items) if isinstance(items, list) else items

        return cat(self.scores), cat(self.labels), cat(self.groups)


def per_emotion_auc(scores: torch.Tensor, labels: torch.Tensor, with_curves: bool = False) -> dict[str, Any]:
    """One-vs-rest ROC AUC per emotion of ``scores [N, 8]`` against ``labels [N]`` (class indices).

    Returns ``{"auc": {emotion: float}, "absent": [emotions without positives or negatives],
    "mean": ..., "mean_paper": ..., "curves": {emotion: (fpr, tpr, auc)}}``; a mean is left out
    when no emotion it covers could be scored.
    """
    scores, labels = scores.detach().float().cpu(), labels.detach().long().cpu()
    aucs: dict[str, float] = {}
    curves: dict[str, tuple[np.ndarray, np.ndarray, float]] = {}
    absent: list[str] = []
    for index, emotion in enumerate(EMOTIONS[: scores.shape[1]]):
        target = (labels == index).long()
        positives = int(target.sum())
        if positives == 0 or positives == len(target):
            absent.append(emotion)
            continue
        auc = float(binary_auroc(scores[:, index], target))
        aucs[emotion] = auc
        if with_curves:
            fpr, tpr, _ = binary_roc(scores[:, index], target)
            curves[emotion] = (fpr.numpy(), tpr.numpy(), auc)
    out: dict[str, Any] = {"auc": aucs, "absent": absent, "curves": curves, "count": int(len(labels))}
    if aucs:
        out["mean"] = float(np.mean(list(aucs.values())))
    common = [v for k, v in aucs.items() if k not in RARE_IN_THE_WILD]
    if common:
        out["mean_paper"] = float(np.mean(common))
    return out
