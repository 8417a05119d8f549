"""The config's error type and its messages: the nearest valid key of a misspelt one, and the
Lightning 1.x ``trainer.gpus=N`` read as accelerator/devices/strategy. The checks themselves are
:func:`crossmodal.config.schema.check_config`."""
from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from typing import Any

from omegaconf import DictConfig


class ConfigError(ValueError):
    """A config problem the user can fix; the message names the key."""


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
    keys = flat_keys(cfg)
    # the same key in another group first (data.source of a run whose corpus is benchmark.source)
    moved = [k for k in keys if "." in key and k.partition(".")[2] == key.partition(".")[2]]
    nearest = moved[0] if len(moved) == 1 else closest_key(key, keys)
    hint = f" Did you mean '{nearest}'?" if nearest else ""
    return (
        f"Unknown config key '{key}'{where}.{hint} "
        f"To add a new key on purpose, write +{key}=... ; `python -m crossmodal.run --cfg job` shows every valid key."
    )


def translate_gpus(trainer: Mapping[str, Any], explicit: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The Lightning 1.x `gpus` flag as accelerator/devices/strategy. A trainer key the user set on the command
    line (`explicit`) that contradicts `gpus` is an error; values from config files give way to `gpus`."""
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


def explicit_trainer_keys(overrides: Iterable[str]) -> dict[str, str]:
    """The trainer keys set on the command line (``trainer.KEY=V`` overrides), for :func:`translate_gpus`."""
    explicit = {}
    for item in overrides:
        key, _, value = item.lstrip("+~").partition("=")
        if key.startswith("trainer."):
            explicit[key.split(".", 1)[1]] = value
    return explicit
