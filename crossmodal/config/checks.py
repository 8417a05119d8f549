"""Checks that make a bad config fail before any work, with a message that says how to fix it."""
from __future__ import annotations

import difflib
import fnmatch
import importlib
import inspect
import math
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf


class ConfigError(ValueError):
    """A config problem the user can fix; the message names the key."""


# ------------------------------------------------------------------------------------ key lookups


def flat_keys(cfg: Any, prefix: str = "") -> list[str]:
    """All dotted keys of a config (interpolations are not resolved)."""
    keys: list[str] = []
    if isinstance(cfg, DictConfig):
        for key in cfg.keys():
            full = f"{prefix}{key}"
            keys.append(full)
            child = cfg._get_node(key)
            if isinstance(child, DictConfig):
                keys.extend(flat_keys(child, full + "."))
    return keys


def closest_key(key: str, candidates: Iterable[str]) -> str | None:
    """The valid key nearest to a misspelt one: first by its last name among its siblings and the
    keys one level below them (``model.temprature`` -> ``model.loss.temperature``; a sibling wins a
    tie), then by the whole dotted key anywhere."""
    candidates = list(candidates)
    parent, _, leaf = key.rpartition(".")
    scored: list[tuple[float, int, str]] = []
    for candidate in candidates:
        c_parent, _, c_leaf = candidate.rpartition(".")
        if c_parent == parent:
            depth = 0
        elif c_parent.rpartition(".")[0] == parent and "." in candidate[len(parent) + 1 if parent else 0 :]:
            depth = 1
        else:
            continue
        ratio = difflib.SequenceMatcher(None, leaf, c_leaf).ratio()
        if ratio >= 0.6:
            scored.append((ratio, -depth, candidate))
    if scored:
        return max(scored)[2]
    elsewhere = [c for c in candidates if not c.startswith(parent + ".")] if parent else candidates
    match = difflib.get_close_matches(key, elsewhere, n=1, cutoff=0.6)  # e.g. a misspelt parent: trainr.max_epochs
    return match[0] if match else None


def unknown_key_message(key: str, cfg: DictConfig, experiment: str | None = None) -> str:
    where = f" (experiment={experiment})" if experiment else ""
    nearest = closest_key(key, flat_keys(cfg))
    hint = f" Did you mean '{nearest}'?" if nearest else ""
    return (
        f"Unknown config key '{key}'{where}.{hint} "
        f"To add a new key on purpose, write +{key}=... ; `python -m crossmodal.run --cfg job` shows every valid key."
    )


def missing_values(cfg: DictConfig, experiment: str | None) -> None:
    """Fail when a required value (`???`) is still unset, naming the key and the experiment."""
    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing:
        who = f"experiment={experiment}" if experiment else "this run"
        examples = " ".join(f"{k}=..." for k in missing)
        raise ConfigError(f"{who} needs a value for {', '.join(missing)}. Set it on the command line: {examples}")


# ------------------------------------------------------------------------------- trainer.gpus


def translate_gpus(trainer: Mapping[str, Any], explicit: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Turn the Lightning 1.x `gpus` flag into accelerator/devices/strategy.

    `explicit` holds the trainer keys the user set on the command line; a value there that
    contradicts `gpus` is an error. Values from config files give way to `gpus`.
    """
    out = dict(trainer)
    gpus = out.pop("gpus", None)
    if gpus is None:
        return out
    explicit = dict(explicit or {})
    gpus = int(gpus)
    if gpus < 0:
        raise ConfigError(f"trainer.gpus={gpus}: use a number of GPUs per node (0 for CPU)")
    accelerator = explicit.get("accelerator")
    if gpus == 0:
        if accelerator not in (None, "cpu", "auto"):
            raise ConfigError(f"trainer.gpus=0 means CPU but trainer.accelerator={accelerator}: drop one of them")
        out["accelerator"] = "cpu"
        return out
    if accelerator not in (None, "gpu", "cuda", "auto"):
        raise ConfigError(
            f"trainer.gpus={gpus} asks for GPUs but trainer.accelerator={accelerator}: drop trainer.accelerator "
            f"or use trainer.gpus=0 for CPU"
        )
    devices = explicit.get("devices")
    if devices is not None and str(devices) != str(gpus):
        raise ConfigError(f"trainer.gpus={gpus} and trainer.devices={devices} disagree: set only one of them")
    out["accelerator"] = "gpu"
    out["devices"] = gpus
    strategy = explicit.get("strategy")
    multi = gpus > 1 or int(out.get("num_nodes") or 1) > 1
    if strategy is None:
        out["strategy"] = "ddp" if multi else out.get("strategy", "auto")
    return out


# ------------------------------------------------------------------- `_target_` signature checks


def _type_ok(value: Any, annotation: Any) -> bool:
    if annotation is inspect.Parameter.empty or annotation is Any or value is None and _optional(annotation):
        return True
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return any(_type_ok(value, a) for a in typing.get_args(annotation))
    if origin is typing.Literal:
        return value in typing.get_args(annotation)
    if annotation is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if annotation in (str, bool):
        return isinstance(value, annotation)
    if origin in (list, tuple, typing.Sequence) or annotation in (list, tuple):
        return isinstance(value, (list, tuple, ListConfig))
    if origin in (dict, typing.Mapping) or annotation is dict:
        return isinstance(value, (dict, DictConfig))
    return True  # a type we do not check (classes, callables): the constructor will


def _optional(annotation: Any) -> bool:
    return annotation is type(None) or type(None) in typing.get_args(annotation)


def check_target(node: DictConfig, path: str) -> None:
    """Check a `_target_` node against the signature of what it names: unknown keys, missing
    required arguments and simple type mismatches fail here, before anything is built."""
    target = node.get("_target_")
    if not target:
        return
    module_name, _, attr = str(target).rpartition(".")
    try:
        obj = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exn:
        raise ConfigError(f"{path}._target_={target} cannot be imported: {exn}") from exn
    signature = inspect.signature(obj)
    try:
        hints = typing.get_type_hints(obj.__init__ if inspect.isclass(obj) else obj)
    except Exception:  # noqa: BLE001 - unresolvable forward references: skip type checks
        hints = {}
    params = {name: p for name, p in signature.parameters.items() if name != "self"}
    takes_kwargs = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    keys = [k for k in node.keys() if not str(k).startswith("_")]
    for key in keys:
        if key not in params and not takes_kwargs:
            valid = [f"{path}.{name}" for name in params] + [f"{path}.{k}" for k in flat_keys(node) if "." in k and k.split(".")[0] in params]
            nearest = closest_key(f"{path}.{key}", valid)
            hint = f" Did you mean '{nearest}'?" if nearest else ""
            raise ConfigError(f"Unknown config key '{path}.{key}': {target} has no argument '{key}'.{hint}")
    for name, param in params.items():
        if param.kind in (inspect.Parameter.VAR_KEYWORD, inspect.Parameter.VAR_POSITIONAL):
            continue
        if name not in node:
            if param.default is inspect.Parameter.empty:
                raise ConfigError(f"{path}.{name} is required by {target}: set {path}.{name}=...")
            continue
        if OmegaConf.is_missing(node, name):
            continue  # reported by missing_values with the experiment's name
        try:
            value = node[name]
        except Exception:  # noqa: BLE001 - an interpolation that only resolves inside the run
            continue
        if isinstance(value, (DictConfig, ListConfig)):
            value = OmegaConf.to_container(value, resolve=False)
        annotation = hints.get(name, param.annotation)
        if not _type_ok(value, annotation):
            raise ConfigError(
                f"{path}.{name}={value!r} has the wrong type for {target}: expected {getattr(annotation, '__name__', annotation)}"
            )


TARGET_GROUPS = ("data", "model", "prep", "benchmark")  # the groups whose node names a class in `_target_`


def check_targets(cfg: DictConfig, groups: Iterable[str] = TARGET_GROUPS) -> None:
    for group in groups:
        node = cfg.get(group)
        if isinstance(node, DictConfig):
            check_target(node, group)


# ------------------------------------------------------------------------------- value ranges


@dataclass(frozen=True)
class Rule:
    """What a config value must be: ``text`` for the message, ``test`` on the (non-null) value."""

    text: str
    test: Callable[[Any], bool]
    nullable: bool = True  # null means "not set" (the code's default) for the keys in VALUE_RULES


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _whole(value: Any) -> bool:
    return _number(value) and float(value).is_integer()


POSITIVE_INT = Rule("a whole number >= 1", lambda v: _whole(v) and v >= 1)
NON_NEGATIVE_INT = Rule("a whole number >= 0", lambda v: _whole(v) and v >= 0)
POSITIVE = Rule("a finite number > 0", lambda v: _number(v) and v > 0)
NON_NEGATIVE = Rule("a finite number >= 0", lambda v: _number(v) and v >= 0)
FRACTION = Rule("a fraction in (0, 1]", lambda v: _number(v) and 0 < v <= 1)
PROBABILITY = Rule("a number in [0, 1)", lambda v: _number(v) and 0 <= v < 1)
EPOCHS = Rule("a whole number of epochs >= 0 (or -1: Lightning's no limit)", lambda v: _whole(v) and (v >= 0 or v == -1))
STEPS = Rule("a whole number of steps >= 0 (or -1: Lightning's no limit)", lambda v: _whole(v) and (v >= 0 or v == -1))
LIMIT_BATCHES = Rule(
    "a whole number of batches >= 0 or a fraction in [0, 1] (Lightning's rule)",
    lambda v: _number(v) and v >= 0 and (isinstance(v, int) or v <= 1),
)
WINDOW = Rule("a finite number of seconds > 0, or 0 / null for the whole file only", lambda v: _number(v) and v >= 0)

# Range checks, in one place: dotted key (fnmatch pattern; the first match wins) -> rule. They run
# on the composed config before any work (crossmodal.run), so `data.batch_size=-1` fails naming the
# key instead of deep inside BatchNorm. Keys absent from a config are simply not checked.
VALUE_RULES: dict[str, Rule] = {
    # data
    "data.num_workers": NON_NEGATIVE_INT,
    "data.shuffle_buffer": NON_NEGATIVE_INT,
    "data.batches_per_epoch": POSITIVE_INT,
    "data.epoch_fraction": FRACTION,
    "data.train_eval_shards": NON_NEGATIVE_INT,
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
    # benchmark
    "benchmark.folds": POSITIVE_INT,
    "benchmark.inner_folds": POSITIVE_INT,
    "benchmark.max_clips": POSITIVE_INT,
    "*batch_size": POSITIVE_INT,  # data.batch_size, data.eval_batch_size, data.global_batch_size, model.teacher_batch_size, ...
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
    "model.*step_gamma": POSITIVE,
    "model.*warmup_epochs": NON_NEGATIVE,
    "model.*pretrained_lr_mult": NON_NEGATIVE,
    "model.*time_budget_minutes": POSITIVE,
    "model.*every_n_epochs": POSITIVE_INT,
    # trainer
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
    # run
    "cpu_threads": POSITIVE_INT,
    "paths.min_free_gb": NON_NEGATIVE,
}


def rule_for(key: str, rules: Mapping[str, Rule] = VALUE_RULES) -> Rule | None:
    return rules.get(key) or next((rule for pattern, rule in rules.items() if fnmatch.fnmatchcase(key, pattern)), None)


def check_values(cfg: DictConfig, rules: Mapping[str, Rule] = VALUE_RULES) -> None:
    """Fail on any value outside its range (``VALUE_RULES``), naming every such key and its rule.
    Values that are unset (``???``) or only resolve inside a run (``${hydra:...}``) are skipped."""
    problems: list[str] = []
    for key in flat_keys(cfg):
        if key.startswith("hydra.") or key == "hydra":
            continue
        rule = rule_for(key, rules)
        if rule is None:
            continue
        try:
            if OmegaConf.is_missing(cfg, key):
                continue
        except Exception:  # noqa: BLE001 - is_missing wants a direct child on some versions
            pass
        try:
            value = OmegaConf.select(cfg, key, throw_on_missing=False, throw_on_resolution_failure=True)
        except Exception:  # noqa: BLE001 - an interpolation that only resolves inside the run
            continue
        if isinstance(value, (DictConfig, ListConfig)) or value == "???":
            continue
        if value is None and rule.nullable:
            continue
        if not rule.test(value):
            problems.append(f"{key}={value!r} must be {rule.text}")
    if problems:
        fixes = " ".join(f"{p.split('=', 1)[0]}=..." for p in problems)
        raise ConfigError(f"Config value out of range: {'; '.join(problems)}. Set it on the command line ({fixes}) or in the experiment file")
