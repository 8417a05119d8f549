"""task=train: fit the experiment's LightningModule on its DataModule, then test the best checkpoint."""
from __future__ import annotations

import logging
from typing import Any

from lightning.pytorch.utilities.model_helpers import is_overridden
from omegaconf import DictConfig

from crossmodal.models.modelfile import checkpoint_globals
from crossmodal.tasks.common import build_datamodule, build_model, resolve_checkpoint
from crossmodal.tasks.run_folder import RunFolder

log = logging.getLogger(__name__)


def run(cfg: DictConfig, ctx: RunFolder) -> dict[str, Any]:
    datamodule = build_datamodule(cfg)
    model = build_model(cfg)
    trainer = ctx.build_trainer()
    ckpt = resolve_checkpoint(cfg.ckpt_path, ctx.run_dir, cfg.paths.log_dir, cfg.name)
    with checkpoint_globals():  # a resumed checkpoint is unpickled weights-only (allow-list), never with code
        trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt, weights_only=True)
    ctx.add_metrics({k: v for k, v in trainer.callback_metrics.items() if not k.startswith("test/")})
    if cfg.test_after_fit and is_overridden("test_dataloader", datamodule) and not trainer.interrupted:
        best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
        with checkpoint_globals():
            trainer.test(model, datamodule=datamodule, ckpt_path=best or None, weights_only=True)
        ctx.add_metrics({k: v for k, v in trainer.callback_metrics.items() if k.startswith("test/")})
    if trainer.checkpoint_callback and trainer.checkpoint_callback.best_model_path:
        log.info("best checkpoint: %s", trainer.checkpoint_callback.best_model_path)
    return {}
