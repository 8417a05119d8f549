"""task=test: evaluate a checkpoint (ckpt_path=...) on the DataModule's test split."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from crossmodal.config.checks import ConfigError
from crossmodal.models.modelfile import checkpoint_globals, is_safetensors
from crossmodal.tasks.common import build_datamodule, build_model, resolve_checkpoint
from crossmodal.tasks.run_folder import RunFolder


def run(cfg: DictConfig, ctx: RunFolder) -> dict[str, Any]:
    datamodule = build_datamodule(cfg)
    model = build_model(cfg)
    trainer = ctx.build_trainer()
    ckpt = resolve_checkpoint(cfg.ckpt_path, ctx.run_dir, cfg.paths.log_dir, cfg.name)
    ckpt = _model_file_already_loaded(ckpt, model)
    with checkpoint_globals():  # the checkpoint is unpickled weights-only (allow-list), never with code
        trainer.test(model, datamodule=datamodule, ckpt_path=ckpt, weights_only=True)
    return dict(trainer.callback_metrics)


def _model_file_already_loaded(ckpt: str | None, model: Any) -> str | None:
    """A model file (.safetensors) is not a Lightning checkpoint: fine when the model was built from it
    (``model.init_from``, as experiment=teacher_eval does with ckpt_path), an error otherwise."""
    if ckpt is None or not is_safetensors(ckpt):
        return ckpt
    init_from = getattr(model, "hparams", {}).get("init_from")
    if init_from and Path(str(init_from)).expanduser().resolve() == Path(ckpt).resolve():
        return None
    raise ConfigError(f"ckpt_path={ckpt} is a crossmodal model file, not a Lightning checkpoint: task=test restores "
                      "Lightning .ckpt files. Evaluate a teacher file with experiment=teacher_eval ckpt_path=FILE, "
                      "a student file with experiment=eval_<corpus> ckpt_path=FILE")
