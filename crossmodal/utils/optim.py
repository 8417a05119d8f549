"""One optimizer and scheduler shape for every LightningModule (teacher, student, distillation).

    optimizer: {name: sgd | adamw, lr, weight_decay, momentum, nesterov, betas}
    scheduler: {name: step | cosine | onecycle | logspace | none, warmup_epochs, ...its arguments}

Scheduler arguments, by name:
- ``step``: ``milestones`` (epochs), ``gamma`` (lr x gamma at each milestone); per epoch.
- ``cosine``: ``min_lr_ratio`` (the floor as a fraction of lr), ``warmup_epochs`` (linear ramp);
  per step. The module may pass ``time_progress`` (0..1 of a wall-time budget) to anneal on time.
- ``onecycle``: ``pct_start`` (or ``warmup_epochs``), ``div_factor``, ``final_div_factor`` (or
  ``min_lr_ratio``); per step, peak = each group's lr.
- ``logspace``: ``lr_end``: lr log-spaced from lr to lr_end over the epochs (the paper's student);
  ``epochs`` when trainer.max_epochs is unset.
- ``none``: constant lr.

The modules call :func:`build_optimizer` and :func:`build_scheduler` from ``configure_optimizers``
(:func:`configure` does both); the parameter groups (no decay on norms, a pretrained lr multiplier)
stay the module's business.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch

OPTIMIZERS = ("sgd", "adamw")
SCHEDULERS = ("step", "cosine", "onecycle", "logspace", "none")
OPTIMIZER_KEYS = ("name", "lr", "weight_decay", "momentum", "nesterov", "betas")
SCHEDULER_KEYS = {
    "step": ("milestones", "gamma"),
    "cosine": ("min_lr_ratio",),
    "onecycle": ("pct_start", "div_factor", "final_div_factor", "min_lr_ratio"),
    "logspace": ("lr_end", "epochs"),
    "none": (),
}
# weight decay when the config gives none: SGD's is the paper's, AdamW's the usual decoupled value
DEFAULT_WEIGHT_DECAY = {"sgd": 5e-4, "adamw": 1e-2}


def _check_keys(cfg: Mapping[str, Any], allowed: Iterable[str], where: str) -> None:
    unknown = sorted(set(cfg) - set(allowed))
    if unknown:
        raise ValueError(f"{where}.{unknown[0]} is not a key of {where}; valid keys: {', '.join(sorted(allowed))}")


def optimizer_config(cfg: Mapping[str, Any] | None, where: str = "model.optimizer") -> dict[str, Any]:
    """The optimizer node checked and completed: a known name, a positive lr, no unknown key."""
    out = dict(cfg or {})
    _check_keys(out, OPTIMIZER_KEYS, where)
    name = out.setdefault("name", "sgd")
    if name not in OPTIMIZERS:
        raise ValueError(f"{where}.name={name!r} is not one of {', '.join(OPTIMIZERS)}")
    if out.get("lr") is None or not float(out["lr"]) > 0:
        raise ValueError(f"{where}.lr={out.get('lr')!r}: give a learning rate > 0")
    if out.get("weight_decay") is None:
        out["weight_decay"] = DEFAULT_WEIGHT_DECAY[name]
    out.setdefault("momentum", 0.9)
    out.setdefault("nesterov", False)
    out["betas"] = [float(b) for b in out.get("betas") or (0.9, 0.999)]
    return out


def scheduler_config(cfg: Mapping[str, Any] | None, where: str = "model.scheduler") -> dict[str, Any]:
    out = dict(cfg or {})
    name = out.setdefault("name", "none") or "none"
    out["name"] = name
    if name not in SCHEDULERS:
        raise ValueError(f"{where}.name={name!r} is not one of {', '.join(SCHEDULERS)}")
    # every scheduler's keys are accepted (a config that switches `name` keeps the others' keys), unknown ones are not
    _check_keys(out, ("name", "warmup_epochs", *{k for keys in SCHEDULER_KEYS.values() for k in keys}), where)
    return out


def build_optimizer(param_groups: Iterable[Any], cfg: Mapping[str, Any] | None) -> torch.optim.Optimizer:
    """SGD or AdamW over ``param_groups`` (parameters, or dicts whose own lr / weight_decay win)."""
    opt = optimizer_config(cfg)
    common = {"lr": float(opt["lr"]), "weight_decay": float(opt["weight_decay"])}
    if opt["name"] == "sgd":
        return torch.optim.SGD(param_groups, momentum=float(opt["momentum"]), nesterov=bool(opt["nesterov"]), **common)
    return torch.optim.AdamW(param_groups, betas=tuple(float(b) for b in opt["betas"]), **common)


def build_scheduler(
    optimizer: torch.optim.Optimizer,
    cfg: Mapping[str, Any] | None,
    trainer: Any = None,
    time_progress: Callable[[], float | None] | None = None,
) -> dict[str, Any] | None:
    """Lightning's ``lr_scheduler`` entry ``{"scheduler", "interval"}`` for ``cfg``, or None for ``none``.

    ``trainer`` gives ``max_epochs`` and ``estimated_stepping_batches`` (read only by the schedulers
    that need them)."""
    sched = scheduler_config(cfg)
    name = sched["name"]
    if name == "none":
        return None
    base_lrs = [group["lr"] for group in optimizer.param_groups]
    max_epochs = getattr(trainer, "max_epochs", None)
    if name == "step":
        scheduler = torch.optim.lr_scheduler.MultiStepLR(
            optimizer, milestones=[int(m) for m in sched.get("milestones") or ()], gamma=float(sched.get("gamma", 0.1)))
        return {"scheduler": scheduler, "interval": "epoch"}
    if name == "logspace":
        epochs = max_epochs if max_epochs and max_epochs > 0 else sched.get("epochs")
        if not epochs:
            raise ValueError("model.scheduler.name=logspace needs trainer.max_epochs (or model.scheduler.epochs)")
        lr = base_lrs[0]
        ratio = float(sched.get("lr_end", lr / 10)) / lr
        span = max(1, int(epochs) - 1)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda epoch: ratio ** (min(epoch, span) / span))
        return {"scheduler": scheduler, "interval": "epoch"}
    total = max(1, int(trainer.estimated_stepping_batches))
    steps_per_epoch = max(1, total // max(1, max_epochs or 1))
    warmup = int(float(sched.get("warmup_epochs") or 0.0) * steps_per_epoch)
    if name == "onecycle":
        div = float(sched.get("div_factor", 25.0))
        final_div = float(sched.get("final_div_factor", 1e4))
        if sched.get("min_lr_ratio"):
            final_div = 1.0 / max(float(sched["min_lr_ratio"]), 1e-4) / div
        pct = max(warmup, 1) / total if warmup else float(sched.get("pct_start", 0.3))
        scheduler = torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=base_lrs, total_steps=total, pct_start=pct, div_factor=div, final_div_factor=final_div)
        return {"scheduler": scheduler, "interval": "step"}
    floor = float(sched.get("min_lr_ratio", 0.0))

    def cosine(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        by_time = time_progress() if time_progress is not None else None
        progress = by_time if by_time is not None else min(1.0, (step - warmup) / max(1, total - warmup))
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))

    return {"scheduler": torch.optim.lr_scheduler.LambdaLR(optimizer, cosine), "interval": "step"}


def configure(param_groups: Iterable[Any], optimizer: Mapping[str, Any] | None, scheduler: Mapping[str, Any] | None,
              trainer: Any = None, time_progress: Callable[[], float | None] | None = None) -> Any:
    """What ``configure_optimizers`` returns: the optimizer, with its scheduler when there is one."""
    built = build_optimizer(param_groups, optimizer)
    entry = build_scheduler(built, scheduler, trainer=trainer, time_progress=time_progress)
    return built if entry is None else {"optimizer": built, "lr_scheduler": entry}
