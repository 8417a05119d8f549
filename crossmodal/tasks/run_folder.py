"""RunFolder: one run's output folder (docs/conventions.md, "Lightning and Hydra"), the loggers that mirror
it (W&B, TensorBoard, CSV), and the Trainer (or, for extraction, the Fabric) built from the trainer config."""
from __future__ import annotations

import logging
import math
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from crossmodal.callbacks.training import LineProgress
from crossmodal.config.checks import explicit_trainer_keys, translate_gpus
from crossmodal.utils.atomic import write_json, write_text
from crossmodal.utils.figures import markdown_table, save_and_send, send, send_table

log = logging.getLogger(__name__)


def flatten_metrics(metrics: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Flat ``"stage/name": value`` pairs with plain Python numbers (tensors and numpy converted)."""
    flat: dict[str, Any] = {}
    for key, value in metrics.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten_metrics(value, name + "/"))
            continue
        if hasattr(value, "item") and getattr(value, "numel", lambda: 1)() == 1:
            value = value.item()
        if isinstance(value, float) and not math.isfinite(value):
            value = None  # JSON has no NaN; absent is clearer than a fake number
        flat[name] = value
    return flat


@dataclass
class RunFolder:
    """The run folder of one task run, the loggers that mirror it and the Trainer that writes into it."""

    cfg: DictConfig
    run_dir: Path
    loggers: list[Any] = field(default_factory=list)
    metrics: dict[str, Any] = field(default_factory=dict)

    @property
    def plots_dir(self) -> Path:
        return self.run_dir / "plots"

    def add_metrics(self, metrics: Mapping[str, Any]) -> None:
        flat = flatten_metrics(metrics)
        self.metrics.update(flat)
        numeric = {k: v for k, v in flat.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        if numeric and L.fabric.utilities.rank_zero.rank_zero_only.rank == 0:
            for logger in self.loggers:
                send(logger, "metrics", lambda lg=logger: lg.log_metrics(numeric))

    def save_figure(self, name: str, fig) -> Path:
        return save_and_send(fig, name, self.plots_dir, self.loggers)

    def log_table(self, name: str, columns: list[str], rows: list[list[Any]]) -> Path:
        """A table as Markdown in <run>/tables/<name>.md and as a W&B table."""
        path = self.run_dir / "tables" / (name.replace("/", "_") + ".md")
        path.parent.mkdir(parents=True, exist_ok=True)
        write_text(path, markdown_table(columns, rows) + "\n")
        send_table(self.loggers, name, columns, rows)
        return path

    def write_metrics(self, error: BaseException | None = None) -> Path:
        """metrics.json of a finished run; a failed one writes failed.json (the error and the metrics so
        far) instead, so that no failed run, nor a stale file of an earlier one, reads as finished."""
        done, failed = self.run_dir / "metrics.json", self.run_dir / "failed.json"
        if error is None:
            failed.unlink(missing_ok=True)
            return write_json(done, self.metrics)
        done.unlink(missing_ok=True)
        return write_json(failed, {"error": f"{type(error).__name__}: {error}", "metrics": self.metrics})

    def trainer_kwargs(self) -> dict[str, Any]:
        trainer_cfg = OmegaConf.to_container(self.cfg.trainer, resolve=True)
        try:
            overrides = list(HydraConfig.get().overrides.task)
        except ValueError:  # not inside a Hydra run (e.g. a test calling a task directly)
            overrides = []
        kwargs = translate_gpus(trainer_cfg, explicit_trainer_keys(overrides))
        return {k: v for k, v in kwargs.items() if v is not None}

    def launch_processes(self) -> Any:
        """For tasks that are not a Trainer loop (extraction): start the trainer config's processes
        the way Lightning does (local subprocesses, torchrun or SLURM tasks, `trainer.num_nodes`),
        join the process group, and return the Fabric (``.device``, ``.global_rank``, ``.world_size``)."""
        from lightning.fabric import Fabric

        kwargs = self.trainer_kwargs()
        fabric = Fabric(**{k: kwargs[k] for k in ("accelerator", "devices", "num_nodes", "strategy") if k in kwargs})
        fabric.launch()
        return fabric

    def build_trainer(self, callbacks: list[L.Callback] | None = None) -> L.Trainer:
        built = [instantiate(c) for c in (self.cfg.get("callbacks") or {}).values() if c and c.get("_target_")]
        kwargs = self.trainer_kwargs()
        if kwargs.get("enable_progress_bar") is None and not sys.stderr.isatty():
            # no terminal (log file, CI, SLURM): a live bar draws nothing useful; log lines instead
            kwargs["enable_progress_bar"] = False
            built.append(LineProgress())
        return L.Trainer(
            default_root_dir=str(self.run_dir),
            logger=self.loggers or False,
            callbacks=built + list(callbacks or []),
            use_distributed_sampler=False,  # shard streams split themselves by rank and worker
            **kwargs,
        )


def sweep_info() -> tuple[str | None, str | None, list[str]]:
    """(group, job name, override tags) when this run is one job of a Hydra multirun."""
    try:
        hydra_cfg = HydraConfig.get()
    except ValueError:
        return None, None, []
    if hydra_cfg.mode != RunMode.MULTIRUN:
        return None, None, []
    sweep_dir = Path(hydra_cfg.sweep.dir)
    group = f"{sweep_dir.parent.parent.name}-{sweep_dir.name}" if sweep_dir.parent.name == "multiruns" else sweep_dir.name
    overrides = list(hydra_cfg.overrides.task)
    # name a job by what the sweep varies (its sweeper params), e.g. "model.loss.temperature=2,data.reduce=max"
    swept = set((hydra_cfg.sweeper.get("params") or {}).keys())
    varied = [o for o in overrides if o.split("=", 1)[0].lstrip("+~") in swept]
    name = ",".join(varied) or hydra_cfg.job.override_dirname or f"job{hydra_cfg.job.num}"
    return group, f"{name}#{hydra_cfg.job.num}", overrides


def build_loggers(cfg: DictConfig, run_dir: Path) -> list[Any]:
    loggers = []
    group, job_name, overrides = sweep_info()
    for key, node in (cfg.get("logger") or {}).items():
        if not node or not node.get("_target_"):
            continue
        if key == "wandb":
            loggers.append(_wandb_logger(node, cfg, run_dir, group, job_name, overrides))
        else:
            loggers.append(instantiate(node))
    return loggers


def _wandb_logger(node: DictConfig, cfg: DictConfig, run_dir: Path, group, job_name, overrides):
    options = OmegaConf.to_container(node, resolve=True)
    online = bool(options.pop("online", False))
    # WANDB_MODE from the environment wins (disabled in tests, online on a cluster that sets it).
    mode = os.environ.get("WANDB_MODE") or ("online" if online else "offline")
    options["name"] = options.get("name") or job_name or f"{cfg.name}/{run_dir.name}"
    options["group"] = options.get("group") or group
    options["tags"] = list(options.get("tags") or []) + [o.replace("/", "|")[:64] for o in overrides]
    Path(options["save_dir"]).mkdir(parents=True, exist_ok=True)
    return instantiate({**options, "offline": False, "mode": mode})
