"""What a run config may hold, checked in one place: :func:`check_config` on the composed config.

Hydra composes conf/ (an unknown key fails there); then each node becomes one pydantic model, validated
in strict JSON mode (``2`` is a float, ``true`` is not an int, ``"3"`` is not a number), before any work:
a node with a ``_target_`` against the signature of what it names (unknown key: the nearest valid one;
a missing or mistyped argument: the key; a ``_partial_`` node may leave out what its caller passes), and
every value whose key matches :data:`BOUNDS` against its range, typed and plain nodes alike.
"""
from __future__ import annotations

import fnmatch
import functools
import importlib
import inspect
import json
import typing
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import InterpolationResolutionError
from pydantic import ConfigDict, Field, ValidationError, create_model

from crossmodal.config.checks import ConfigError, closest_key, flat_keys
from crossmodal.paper import paper_value

MAX_BATCH = 4096  # per process: 4096 3-s windows are ~0.8 GB of audio before features; a larger batch is a typo


@dataclass(frozen=True)
class Bound:
    """What a value must be: ``text`` for the message, ``type`` for pydantic (strict)."""

    text: str
    type: Any


Finite = Annotated[float, Field(allow_inf_nan=False)]
POSITIVE_INT = Bound("a whole number >= 1", Annotated[int, Field(ge=1)])
NON_NEGATIVE_INT = Bound("a whole number >= 0", Annotated[int, Field(ge=0)])
BATCH = Bound(f"a whole number in [1, {MAX_BATCH}] (per process)", Annotated[int, Field(ge=1, le=MAX_BATCH)])
POSITIVE = Bound("a finite number > 0", Annotated[Finite, Field(gt=0)])
NON_NEGATIVE = Bound("a finite number >= 0", Annotated[Finite, Field(ge=0)])
FRACTION = Bound("a fraction in (0, 1]", Annotated[Finite, Field(gt=0, le=1)])
PROBABILITY = Bound("a number in [0, 1)", Annotated[Finite, Field(ge=0, lt=1)])
EPOCHS = Bound("a whole number of epochs >= 0 (or -1: Lightning's no limit)", Annotated[int, Field(ge=-1)])
STEPS = Bound("a whole number of steps >= 0 (or -1: Lightning's no limit)", Annotated[int, Field(ge=-1)])
LIMIT_BATCHES = Bound("a whole number of batches >= 0 or a fraction in [0, 1] (Lightning's rule)",
                      Annotated[int, Field(ge=0)] | Annotated[Finite, Field(ge=0, le=1)])
WINDOW = Bound("a finite number of seconds > 0, or 0 / null for the whole file only", Annotated[Finite, Field(ge=0)])
TASK = Bound("one of train, test, prepare, extract, evaluate, predict, demo",
             Literal["train", "test", "prepare", "extract", "evaluate", "predict", "demo"])

# Dotted key (fnmatch pattern; the first match wins) -> its bound; null means "not set" for all of
# them. Keys absent from a config are not checked.
BOUNDS: dict[str, Bound] = {
    "task": TASK,
    "*batch_size": BATCH,  # data.batch_size, data.eval_batch_size, data.global_batch_size, model.teacher_batch_size, ...
    "data.num_workers": NON_NEGATIVE_INT,
    "data.shuffle_buffer": NON_NEGATIVE_INT,
    "data.batches_per_epoch": POSITIVE_INT,
    "data.epoch_fraction": FRACTION,
    "data.train_eval_shards": NON_NEGATIVE_INT,
    "data.curve_every_n_epochs": POSITIVE_INT,
    "data.window_seconds": POSITIVE,
    "data.max_seconds": POSITIVE,
    "data.min_seconds": NON_NEGATIVE,
    "data.silence_rms": NON_NEGATIVE,
    # prep: preparation recipes and the files of task=predict
    "prep.window": WINDOW,
    "prep.hop": POSITIVE,
    "prep.num_workers": NON_NEGATIVE_INT,
    "prep.*_fraction": PROBABILITY,
    "prep.segment_seconds": POSITIVE,
    "prep.min_segment_seconds": NON_NEGATIVE,
    "prep.frame_rate": POSITIVE,
    "benchmark.folds": POSITIVE_INT,
    "benchmark.inner_folds": POSITIVE_INT,
    "benchmark.max_clips": POSITIVE_INT,
    # model: optimisation (model.optimizer.*, model.scheduler.*) and loss
    "model.*lr": POSITIVE,
    "model.*lr_end": POSITIVE,
    "model.*weight_decay": NON_NEGATIVE,
    "model.*momentum": PROBABILITY,
    "model.*temperature": POSITIVE,
    "model.*hard_weight": NON_NEGATIVE,
    "model.*label_smoothing": PROBABILITY,
    "model.*dropout": PROBABILITY,
    "model.*drop_rate": PROBABILITY,
    "model.*pct_start": FRACTION,
    "model.scheduler.gamma": POSITIVE,
    "model.*warmup_epochs": NON_NEGATIVE,
    "model.*min_lr_ratio": NON_NEGATIVE,
    "model.*pretrained_lr_mult": NON_NEGATIVE,
    "model.*time_budget_minutes": POSITIVE,
    "model.*every_n_epochs": POSITIVE_INT,
    "model.mixup_alpha": NON_NEGATIVE,
    "trainer.max_epochs": EPOCHS,
    "trainer.min_epochs": NON_NEGATIVE_INT,
    "trainer.max_steps": STEPS,
    "trainer.num_nodes": POSITIVE_INT,
    "trainer.gpus": NON_NEGATIVE_INT,
    "trainer.accumulate_grad_batches": POSITIVE_INT,
    "trainer.check_val_every_n_epoch": POSITIVE_INT,
    "trainer.log_every_n_steps": POSITIVE_INT,
    "trainer.gradient_clip_val": NON_NEGATIVE,
    "trainer.limit_*_batches": LIMIT_BATCHES,
    "trainer.val_check_interval": POSITIVE,
    "seed": Bound("a whole number", int),
    "cpu_threads": POSITIVE_INT,
    "paths.min_free_gb": NON_NEGATIVE,
}


def bound_for(key: str) -> Bound | None:
    return BOUNDS.get(key) or next((b for pattern, b in BOUNDS.items() if fnmatch.fnmatchcase(key, pattern)), None)


HYDRA_KEYS = ("_target_", "_partial_", "_recursive_", "_convert_", "_args_")
_UNSET = object()


def check_config(cfg: DictConfig, experiment: str | None = None, *, signatures: bool = True,
                 require_values: bool = True) -> None:
    """Fail with one :class:`ConfigError` naming every bad key of ``cfg`` (the ``hydra`` node aside).

    ``signatures``: check ``_target_`` nodes against what they name (imports it; ``--cfg`` skips it
    to stay fast). ``require_values``: a ``???`` left unset is an error naming the experiment."""
    missing: list[str] = []
    ranges: list[str] = []
    others: list[str] = []
    for path, node in _nodes(cfg):
        missing += [f"{path}{k}" for k in node.keys() if OmegaConf.is_missing(node, k) and (path or k != "hydra")]
        target = node.get("_target_") if signatures else None
        values = {k: v for k, v in ((str(k), _value(node, k)) for k in node.keys()) if v is not _UNSET
                  and k not in HYDRA_KEYS and not (not path and k == "hydra")}
        model = _model(path, tuple(sorted(values)), tuple(sorted(map(str, node.keys()))), str(target) if target else None,
                       bool(node.get("_partial_", False)))
        try:
            model.model_validate_json(json.dumps(values))
        except ValidationError as exn:
            for error in exn.errors():
                key = str(error["loc"][0])
                full = f"{path}{key}"
                bound = bound_for(full)
                if error["type"] == "extra_forbidden":
                    others.append(_unknown_argument(full, target, node))
                elif error["type"] == "missing":
                    others.append(f"{full} is required by {target}: set {full}=...")
                elif bound is not None:
                    ranges.append(f"{full}={values.get(key)!r} must be {bound.text}")
                else:
                    others.append(f"{full}={values.get(key)!r} has the wrong type for {target}: {error['msg'].lower()}")
    if require_values and missing:
        who = f"experiment={experiment}" if experiment else "this run"
        examples = " ".join(f"{k}=..." for k in missing)
        raise ConfigError(f"{who} needs a value for {', '.join(missing)}. Set it on the command line: {examples}")
    problems = others + _cpu_sync_batchnorm(cfg.get("trainer"))
    if ranges:
        fixes = " ".join(f"{p.split('=', 1)[0]}=..." for p in ranges)
        problems.append(f"Config value out of range: {'; '.join(ranges)}. "
                        f"Set it on the command line ({fixes}) or in the experiment file")
    if problems:
        raise ConfigError(" ".join(p if p.endswith((".", "?")) else p + "." for p in problems))


def _cpu_sync_batchnorm(trainer: Any) -> list[str]:
    """torch refuses SyncBatchNorm in DDP on CPU processes ("SyncBatchNorm layers only work with GPU
    modules"), after they have started: say so before any work."""
    if not isinstance(trainer, DictConfig):
        return []
    sync, gpus, accelerator, devices, nodes, strategy = (
        _value(trainer, key) if key in trainer else None
        for key in ("sync_batchnorm", "gpus", "accelerator", "devices", "num_nodes", "strategy"))
    cpu = gpus == 0 if isinstance(gpus, int) else accelerator == "cpu"
    if sync is not True or not cpu or not ("ddp" in str(strategy) or (isinstance(devices, int) and devices > 1) or
                       (isinstance(nodes, int) and nodes > 1)):
        return []
    return [f"trainer.sync_batchnorm=true needs GPUs, but this run's processes are on the CPU (trainer.accelerator={accelerator}, "
            f"devices={devices}): add trainer.sync_batchnorm=false (batch norm then sees each process's batch), "
            "or run on GPUs with trainer.gpus=N"]


def _nodes(cfg: DictConfig, path: str = "") -> Iterator[tuple[str, DictConfig]]:
    yield path, cfg
    for key in cfg.keys():
        if not path and key == "hydra":
            continue
        child = cfg._get_node(key)
        if isinstance(child, DictConfig) and not child._is_none() and not child._is_missing():
            yield from _nodes(child, f"{path}{key}.")


def _value(node: DictConfig, key: Any) -> Any:
    """The resolved plain value of ``node[key]``, or _UNSET when it is ``???`` or only resolves inside a run."""
    if OmegaConf.is_missing(node, key):
        return _UNSET
    try:
        value = node[key]
        if isinstance(value, (DictConfig, ListConfig)):
            value = OmegaConf.to_container(value, resolve=True)
    except InterpolationResolutionError:  # one that only resolves inside a run (${hydra:...}): not checked here
        return _UNSET
    return value  # NaN / Infinity: json.dumps writes them, pydantic reads them and a finite bound refuses them


@functools.lru_cache(maxsize=512)
def _model(path: str, keys: tuple[str, ...], present: tuple[str, ...], target: str | None, partial: bool) -> Any:
    """The pydantic model of one node: fields typed by ``target``'s signature, bounded by BOUNDS.
    ``keys``: those with a value to check; ``present``: every key of the node (some unset, ``???``)."""
    params, hints, open_ended = _signature(target, path) if target else ({}, {}, True)
    fields: dict[str, Any] = {}
    for key in keys:
        if target and key not in params and not open_ended:
            continue  # an unknown argument: pydantic reports it (extra="forbid")
        bound = bound_for(f"{path}{key}")
        fields[key] = (bound.type | None if bound else hints.get(key, Any), None)
    for name, param in params.items():
        if name not in present and param.default is inspect.Parameter.empty and not partial:
            fields[name] = (Any, ...)
    extra = "allow" if open_ended else "forbid"
    name = (target or path or "run").replace(".", "_")
    return create_model(name, __config__=ConfigDict(strict=True, extra=extra, arbitrary_types_allowed=True), **fields)


def _signature(target: str, path: str) -> tuple[dict[str, inspect.Parameter], dict[str, Any], bool]:
    """(parameters, type hints, takes **kwargs) of what ``target`` names."""
    module_name, _, attr = target.rpartition(".")
    try:
        obj = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exn:
        raise ConfigError(f"{path}_target_={target} cannot be imported: {exn}") from exn
    functions = [obj.__init__ if inspect.isclass(obj) else obj]
    params, open_ended = _own_parameters(inspect.signature(obj).parameters)
    # A class whose **settings go on to a crossmodal base class (the speech modules): the base's arguments count too.
    for base in obj.__mro__[1:] if inspect.isclass(obj) else ():
        if not open_ended or not base.__module__.startswith("crossmodal."):
            break
        if "__init__" in vars(base):
            inherited, open_ended = _own_parameters(inspect.signature(base.__init__).parameters)
            params = {**inherited, **params}
            functions.append(base.__init__)
    hints = {}
    for function in reversed(functions):
        try:
            hints.update(typing.get_type_hints(function))
        except (NameError, TypeError):  # a forward reference that does not resolve: the constructor checks types
            pass
    hints = {n: h for n, h in hints.items() if n in params}
    return params, hints, open_ended


def _own_parameters(parameters: Any) -> tuple[dict[str, inspect.Parameter], bool]:
    """(named parameters but ``self``, takes **kwargs) of a signature's parameters."""
    variadic = (inspect.Parameter.VAR_KEYWORD, inspect.Parameter.VAR_POSITIONAL)
    named = {n: p for n, p in parameters.items() if n != "self" and p.kind not in variadic}
    return named, any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())


def _unknown_argument(full: str, target: Any, node: DictConfig) -> str:
    path, _, key = full.rpartition(".")
    params, _, _ = _signature(str(target), path + ".")
    valid = [f"{path}.{n}" for n in params] + [f"{path}.{k}" for k in flat_keys(node) if "." in k and k.split(".")[0] in params]
    nearest = closest_key(full, valid)
    hint = f" Did you mean '{nearest}'?" if nearest else ""
    return f"Unknown config key '{full}': {target} has no argument '{key}'.{hint}"


def _slurm_devices(gpus: Any, devices: Any, accelerator: str) -> int:
    """GPUs per node for the SLURM launcher: ``trainer.gpus`` when set (it wins over the files'
    trainer.devices, as in the job), else ``trainer.devices``, which must then be a number."""
    try:
        count = int(gpus if gpus is not None else devices)
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
    return str(Path(__file__).resolve().parents[1] / "assets" / relative)


def _raw_corpus(name: str, markers: str, *roots: str | None) -> str:
    """``<root>/<name>`` for the first root where that folder holds one of ``markers`` ("a|b"), so
    a raw corpus is found in paths.data_dir or else in paths.shared_data_dir (when set); with none,
    the first root's (the error then names the usual place)."""
    for root in filter(None, roots):
        if any((Path(root) / name / marker).exists() for marker in markers.split("|")):
            return str(Path(root) / name)
    return str(Path(roots[0]) / name)


def register_configs() -> None:
    """The resolvers the YAML uses: ${paper:NAME}, ${cm.asset:...}, ${cm.raw_corpus:...}, ${cm.slurm_devices:...}."""
    for name, resolver in (("paper", paper_value), ("cm.asset", _asset), ("cm.raw_corpus", _raw_corpus),
                           ("cm.slurm_devices", _slurm_devices)):
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, resolver)
