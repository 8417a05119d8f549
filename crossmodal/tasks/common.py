"""Pieces the Lightning tasks share: building the DataModule and model, finding checkpoints."""
from __future__ import annotations

import logging
import zipfile
from pathlib import Path
from typing import Any

import lightning as L
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig

from crossmodal.config.checks import ConfigError
from crossmodal.models.modelfile import ModelFileError, is_safetensors, safe_torch_load

log = logging.getLogger(__name__)


def build_datamodule(cfg: DictConfig) -> L.LightningDataModule:
    if not cfg.get("data"):
        raise ConfigError(f"task={cfg.task} needs data: choose an experiment (experiment=...) or a data config (data=...)")
    return instantiate(cfg.data, _convert_="all")


def build_recipe(cfg: DictConfig, usage: str) -> Any:
    """The run's ``prep`` node built (a PairsConfig, PseudoPairsConfig or PredictConfig): what
    extract, prepare and predict read. ``usage`` is the command to show when there is none."""
    node = cfg.get("prep")
    if not node:
        task = cfg.get("task")
        raise ConfigError(f"task={getattr(task, 'value', task)} needs a preparation recipe (the prep group): {usage}")
    try:
        return instantiate(node, _convert_="all")
    except InstantiationException as exn:
        cause = exn.__cause__ or exn
        raise ConfigError(f"prep ({node.get('_target_')}): {cause}") from None


def build_model(cfg: DictConfig) -> L.LightningModule:
    if not cfg.get("model"):
        raise ConfigError(f"task={cfg.task} needs a model: choose an experiment (experiment=...) or a model config (model=...)")
    try:
        return instantiate(cfg.model, _convert_="all")
    except InstantiationException as exn:
        if isinstance(exn.__cause__, ModelFileError):  # a refused or unreadable model.init_from / teacher file: say so plainly
            raise exn.__cause__ from None
        raise


def resolve_checkpoint(ckpt_path: str | None, run_dir: Path, log_dir: Path, name: str) -> str | None:
    """`last` means this run folder's checkpoints/last.ckpt if it exists (a re-run with the same
    hydra.run.dir), else the newest last.ckpt among earlier runs of the same experiment name."""
    if ckpt_path in (None, ""):
        return None
    if ckpt_path != "last":
        path = Path(ckpt_path).expanduser()
        if not path.exists():
            raise FileNotFoundError(f"ckpt_path={ckpt_path}: no such checkpoint file")
        return check_checkpoint(path)
    own = run_dir / "checkpoints" / "last.ckpt"
    if own.exists():
        return check_checkpoint(own)
    candidates = sorted((Path(log_dir) / name).glob("**/checkpoints/last.ckpt"), key=lambda p: p.stat().st_mtime)
    if not candidates:
        raise FileNotFoundError(
            f"ckpt_path=last: no last.ckpt in {own.parent} nor under {Path(log_dir) / name}. "
            "Pass the run folder again (hydra.run.dir=DIR) or a checkpoint path."
        )
    log.info("resuming from %s", candidates[-1])
    return check_checkpoint(candidates[-1])


def check_checkpoint(path: Path) -> str:
    """Refuse, naming the file, a checkpoint that would run code when unpickled (nothing in it runs); Lightning
    then restores it weights-only too, inside ``checkpoint_globals()``. Model files (.safetensors) pass."""
    if not is_safetensors(path):
        safe_torch_load(path, map_location="cpu", mmap=zipfile.is_zipfile(path) or None)
    return str(path)
