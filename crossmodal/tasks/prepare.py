"""task=prepare: build the run's shards from raw data, and nothing else.

With a DataModule (``data``), its ``prepare_data()`` (every DataModule prepares what it needs on
first use anyway; this task does only that step, e.g. on a CPU node before a GPU job). Without one,
the preparation recipe (``prep``: pair shards from videos, pseudo-pairs), e.g.
``experiment=pseudo_pairs task=prepare`` or ``task=prepare prep=pairs prep.source=VIDEOS``."""
from __future__ import annotations

from typing import Any

from omegaconf import DictConfig

from crossmodal.config.checks import ConfigError
from crossmodal.tasks.common import build_datamodule, build_recipe
from crossmodal.tasks.run_folder import RunFolder


def run(cfg: DictConfig, ctx: RunFolder) -> dict[str, Any]:
    if cfg.get("prep"):  # an experiment that names a recipe prepares the recipe, whatever its data
        target = build_recipe(cfg, "")
    elif cfg.get("data"):
        target = build_datamodule(cfg)
    else:
        raise ConfigError("task=prepare needs a DataModule (data=...) or a preparation recipe "
                          "(prep=pairs prep.source=VIDEOS, or experiment=pseudo_pairs)")
    if not callable(getattr(target, "prepare_data", None)):
        raise ConfigError(f"task=prepare: {type(target).__name__} has nothing to prepare (no prepare_data)")
    target.prepare_data()
    report = getattr(target, "prepare_report", None)
    return dict(report() if callable(report) else {})
