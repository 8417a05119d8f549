"""Learning-rate schedules that need the run's length, and the step that hands them to Lightning
(:func:`with_scheduler`; scheduler configs: docs/conventions.md)."""
from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Mapping
from typing import Any

import torch
from hydra.utils import instantiate

Optimizer = torch.optim.Optimizer


def with_scheduler(optimizer: Optimizer, scheduler: Mapping[str, Any] | None, trainer: Any = None,
                   time_progress: Callable[[], float | None] | None = None) -> Any:
    """What ``configure_optimizers`` returns: ``optimizer`` alone (``scheduler`` null), or with the
    scheduler the config builds. The factory gets ``trainer`` / ``time_progress`` when it takes them."""
    if not scheduler:
        return optimizer
    factory = instantiate(scheduler)
    accepted = inspect.signature(factory).parameters
    context = {k: v for k, v in (("trainer", trainer), ("time_progress", time_progress)) if k in accepted}
    built = factory(optimizer=optimizer, **context)
    entry = built if isinstance(built, dict) else {"scheduler": built, "interval": "epoch"}
    return {"optimizer": optimizer, "lr_scheduler": entry}


def _steps(trainer: Any) -> tuple[int, int]:
    """(optimizer steps of the whole fit, steps per epoch)."""
    total = max(1, int(trainer.estimated_stepping_batches))
    return total, max(1, total // max(1, trainer.max_epochs or 1))


def logspace(optimizer: Optimizer, lr_end: float | None = None, epochs: int | None = None, trainer: Any = None) -> dict:
    """lr log-spaced per epoch from the first group's lr to ``lr_end`` (default lr / 10) over
    trainer.max_epochs (``epochs`` when that is unset)."""
    max_epochs = getattr(trainer, "max_epochs", None)
    epochs = max_epochs if max_epochs and max_epochs > 0 else epochs
    if not epochs:
        raise ValueError("model.scheduler logspace needs trainer.max_epochs (or model.scheduler.epochs)")
    lr = optimizer.param_groups[0]["lr"]
    ratio = float(lr_end if lr_end is not None else lr / 10) / lr
    span = max(1, int(epochs) - 1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda epoch: ratio ** (min(epoch, span) / span))
    return {"scheduler": scheduler, "interval": "epoch"}


def onecycle(optimizer: Optimizer, trainer: Any, pct_start: float = 0.3, div_factor: float = 25.0,
             final_div_factor: float = 1e4, warmup_epochs: float = 0.0, min_lr_ratio: float | None = None) -> dict:
    """torch's OneCycleLR over all training steps, peak = each group's lr. ``warmup_epochs`` (when
    > 0) sets the rise instead of ``pct_start``; ``min_lr_ratio`` the floor instead of ``final_div_factor``."""
    total, per_epoch = _steps(trainer)
    warmup = int(float(warmup_epochs or 0.0) * per_epoch)
    if min_lr_ratio:
        final_div_factor = 1.0 / max(float(min_lr_ratio), 1e-4) / div_factor
    pct = max(warmup, 1) / total if warmup else float(pct_start)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=[g["lr"] for g in optimizer.param_groups], total_steps=total, pct_start=pct,
        div_factor=div_factor, final_div_factor=final_div_factor)
    return {"scheduler": scheduler, "interval": "step"}


def cosine(optimizer: Optimizer, trainer: Any, warmup_epochs: float = 0.0, min_lr_ratio: float = 0.0,
           time_progress: Callable[[], float | None] | None = None) -> dict:
    """Linear warm-up over ``warmup_epochs``, then a cosine from lr to ``min_lr_ratio`` x lr, per
    step; ``time_progress`` (0..1 of a wall-time budget, from the module) anneals on time instead."""
    total, per_epoch = _steps(trainer)
    warmup = int(float(warmup_epochs or 0.0) * per_epoch)
    floor = float(min_lr_ratio)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        by_time = time_progress() if time_progress is not None else None
        progress = by_time if by_time is not None else min(1.0, (step - warmup) / max(1, total - warmup))
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))

    return {"scheduler": torch.optim.lr_scheduler.LambdaLR(optimizer, factor), "interval": "step"}
