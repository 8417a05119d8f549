"""task=test: evaluate a checkpoint (ckpt_path=...) on the DataModule's test split."""
from __future__ import annotations

from typing import Any

from omegaconf import DictConfig

from crossmodal.tasks.common import build_datamodule, build_model, resolve_checkpoint
from crossmodal.utils.run_context import RunContext


def run(cfg: DictConfig, ctx: RunContext) -> dict[str, Any]:
    datamodule = build_datamodule(cfg)
    model = build_model(cfg)
    trainer = ctx.build_trainer()
    ckpt = resolve_checkpoint(cfg.ckpt_path, ctx.run_dir, cfg.paths.log_dir, cfg.name)
    trainer.test(model, datamodule=datamodule, ckpt_path=ckpt)
    return dict(trainer.callback_metrics)
