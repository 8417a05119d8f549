"""Checks that make a bad config fail before any work, with a message that says how to fix it."""
from __future__ import annotations

import difflib
import importlib
import inspect
import types
import typing
from typing import Any, Iterable, Mapping

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
    candidates = list(candidates)
    parent = key.rsplit(".", 1)[0] if "." in key else ""
    siblings = [c for c in candidates if (c.rsplit(".", 1)[0] if "." in c else "") == parent]
    for pool in (siblings, candidates):
        match = difflib.get_close_matches(key, pool, n=1, cutoff=0.6)
        if match:
            return match[0]
    return None


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
            nearest = difflib.get_close_matches(str(key), list(params), n=1, cutoff=0.6)
            hint = f" Did you mean '{path}.{nearest[0]}'?" if nearest else ""
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


def check_targets(cfg: DictConfig, groups: Iterable[str] = ("data", "model")) -> None:
    for group in groups:
        node = cfg.get(group)
        if isinstance(node, DictConfig):
            check_target(node, group)
