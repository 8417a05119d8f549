"""Structured schema of the run config (Hydra ConfigStore).

The root dataclass types the keys every run has (task, seed, paths, trainer, ...). Hydra merges
the YAML files onto it, so a wrong type (`trainer.max_epochs=ten`) or an unknown key
(`trainer.max_epoch=3`) fails at composition. Each group holds one kind of thing, typed by the
class its `_target_` names:

    data       a LightningDataModule (crossmodal.data.*)         train, test, prepare
    model      a LightningModule (crossmodal.lit.*)              train, test
    prep       a preparation recipe (PairsConfig, PseudoPairsConfig) or the files to predict
               (crossmodal.tasks.predict.PredictConfig)          extract, prepare, predict
    benchmark  an external corpus (crossmodal.tasks.evaluate.BenchmarkConfig)   evaluate

Those nodes are checked against the signature of that class (see :mod:`crossmodal.config.checks`):
the constructor / dataclass is the single source of truth for what the group accepts, so a
misspelt key fails naming the nearest valid one. The paper's constants come from
:mod:`crossmodal.paper` through the `${paper:NAME}` resolver.
Value ranges (batch sizes >= 1, learning rates and temperatures > 0, ...) are one table,
:data:`crossmodal.config.checks.VALUE_RULES`, checked on the composed config before any work.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import OmegaConf

from crossmodal.paper import paper_value


class Task(str, Enum):
    train = "train"
    test = "test"
    prepare = "prepare"
    extract = "extract"
    evaluate = "evaluate"
    predict = "predict"
    demo = "demo"


@dataclass
class PathsConf:
    root_dir: str = "."
    data_dir: str = "${paths.root_dir}/data"
    log_dir: str = "${paths.root_dir}/logs"
    output_dir: str = "${hydra:runtime.output_dir}"
    shared_data_dir: str | None = None  # a shared copy of the raw corpora, searched after data_dir
    min_free_gb: float = 1.0  # checked on the run folder and data_dir before any work starts


@dataclass
class TrainerConf:
    """Lightning Trainer arguments we expose, plus the Lightning 1.x `gpus` shorthand."""

    accelerator: str = "cpu"
    devices: Any = 1
    strategy: Any = "auto"
    num_nodes: int = 1
    gpus: int | None = None  # removed in Lightning 2; translated to accelerator/devices/strategy
    precision: Any = "32-true"
    max_epochs: int | None = None
    min_epochs: int | None = None
    max_steps: int = -1
    max_time: str | None = None
    limit_train_batches: Any = None  # int = batches, float = fraction (Lightning's rule)
    limit_val_batches: Any = None  # int = batches, float = fraction (Lightning's rule)
    limit_test_batches: Any = None  # int = batches, float = fraction (Lightning's rule)
    val_check_interval: float | None = None
    check_val_every_n_epoch: int | None = 1
    num_sanity_val_steps: int | None = None
    log_every_n_steps: int | None = None
    gradient_clip_val: float | None = None
    accumulate_grad_batches: int = 1
    deterministic: Any = None
    benchmark: bool | None = None
    sync_batchnorm: bool = False
    enable_progress_bar: bool | None = None
    fast_dev_run: Any = False
    detect_anomaly: bool = False
    profiler: str | None = None


@dataclass
class RunConf:
    task: Task = Task.train
    name: str = "run"
    seed: int | None = 42
    ckpt_path: str | None = None
    teacher_ckpt: str | None = None
    strict: bool = False
    cpu_threads: int | None = None  # torch threads per process (1 is often faster on a shared CPU box)
    test_after_fit: bool = True
    optimized_metric: str | None = None  # the metric a sweeper (Optuna) optimises
    report: bool = True  # write report.html into the run folder (and index.html into a sweep folder)
    tags: list[str] = field(default_factory=list)
    paths: PathsConf = field(default_factory=PathsConf)
    trainer: TrainerConf = field(default_factory=TrainerConf)
    logger: dict[str, Any] | None = None
    callbacks: dict[str, Any] | None = None
    data: dict[str, Any] | None = None  # a LightningDataModule
    model: dict[str, Any] | None = None  # a LightningModule
    prep: dict[str, Any] | None = None  # a preparation recipe, or the files task=predict reads
    benchmark: dict[str, Any] | None = None  # an external corpus for task=evaluate
    extras: dict[str, Any] = field(default_factory=dict)


def _slurm_devices(devices: Any, accelerator: str) -> int:
    try:
        count = int(devices)
    except (TypeError, ValueError):
        count = -1
    if count < 1:
        raise ValueError(
            f"hydra/launcher=submitit_slurm needs the GPUs per node as a number, but trainer.devices={devices}: "
            "set trainer.gpus=N (or trainer.devices=N)"
        )
    return count


def _asset(relative: str = "") -> str:
    """Absolute path of a file the package ships (crossmodal/assets/...)."""
    from pathlib import Path

    return str(Path(__file__).resolve().parents[1] / "assets" / relative)


def _raw_corpus(name: str, markers: str, *roots: str | None) -> str:
    """``<root>/<name>`` for the first root where that folder holds one of ``markers`` ("a|b"), so
    a raw corpus is found in paths.data_dir or else in paths.shared_data_dir (when set); with none,
    the first root's (the error then names the usual place)."""
    from pathlib import Path

    for root in filter(None, roots):
        if any((Path(root) / name / marker).exists() for marker in markers.split("|")):
            return str(Path(root) / name)
    return str(Path(roots[0]) / name)


def register_configs() -> None:
    ConfigStore.instance().store(name="run_schema", node=RunConf)
    if not OmegaConf.has_resolver("paper"):
        OmegaConf.register_new_resolver("paper", paper_value)
    if not OmegaConf.has_resolver("cm.asset"):
        OmegaConf.register_new_resolver("cm.asset", _asset)
    if not OmegaConf.has_resolver("cm.raw_corpus"):
        OmegaConf.register_new_resolver("cm.raw_corpus", _raw_corpus)
    if not OmegaConf.has_resolver("cm.slurm_devices"):
        OmegaConf.register_new_resolver("cm.slurm_devices", _slurm_devices)
