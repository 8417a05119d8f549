"""Distillation losses: the student matches the teacher's softened emotion distribution.

The paper's loss (``kind="soft_ce"``, :func:`soft_cross_entropy`) has T = 2 and no T^2 factor.
``kind="kl"`` subtracts the teacher's entropy (same gradients, zero at a perfect match).
``t2_scaling`` multiplies by T^2 (Hinton et al.), which keeps gradient sizes comparable across
temperatures. ``hard_weight`` adds ordinary cross-entropy on the teacher's argmax.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from crossmodal.paper import TEMPERATURE

LOSS_KINDS = ("soft_ce", "kl")


def soft_cross_entropy(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = TEMPERATURE) -> torch.Tensor:
    """Per-sample -sum_c softmax(t/T)_c log softmax(s/T)_c  -> ``[B]``."""
    target = F.softmax(teacher_logits.float() / temperature, dim=-1)
    return -(target * F.log_softmax(student_logits.float() / temperature, dim=-1)).sum(-1)


def kl_divergence(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = TEMPERATURE) -> torch.Tensor:
    """Per-sample KL(softmax(t/T) || softmax(s/T)) -> ``[B]``."""
    log_target = F.log_softmax(teacher_logits.float() / temperature, dim=-1)
    log_student = F.log_softmax(student_logits.float() / temperature, dim=-1)
    return F.kl_div(log_student, log_target, reduction="none", log_target=True).sum(-1)


class DistillationLoss(nn.Module):
    """Student logits + teacher logits -> scalar loss (mean over the batch) and its parts."""

    def __init__(self, temperature: float = TEMPERATURE, kind: str = "soft_ce", t2_scaling: bool = False, hard_weight: float = 0.0) -> None:
        super().__init__()
        if kind not in LOSS_KINDS:
            raise ValueError(f"model.loss.kind={kind!r} is not one of {LOSS_KINDS}")
        if temperature <= 0:
            raise ValueError(f"model.loss.temperature must be positive, got {temperature}")
        self.temperature = temperature
        self.kind = kind
        self.t2_scaling = t2_scaling
        self.hard_weight = hard_weight

    def forward(self, student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> dict[str, torch.Tensor]:
        if student_logits.shape != teacher_logits.shape:
            raise ValueError(f"student logits {tuple(student_logits.shape)} and teacher logits {tuple(teacher_logits.shape)} differ in shape")
        fn = soft_cross_entropy if self.kind == "soft_ce" else kl_divergence
        soft = fn(student_logits, teacher_logits, self.temperature).mean()
        if self.t2_scaling:
            soft = soft * self.temperature**2
        parts = {"soft": soft, "loss": soft}
        if self.hard_weight > 0:
            parts["hard"] = F.cross_entropy(student_logits.float(), teacher_logits.argmax(-1))
            parts["loss"] = soft + self.hard_weight * parts["hard"]
        return parts
