"""Keys users typed before the config groups were split, accepted with the same meaning.

- ``data=pairs|pseudo_pairs|predict`` is ``prep=...`` and ``data=<corpus>`` is ``benchmark=<corpus>``;
  ``data.KEY=V`` is ``prep.KEY=V`` / ``benchmark.KEY=V`` when the run has no DataModule but a
  preparation recipe / benchmark (``experiment=extract_logits data.source=DIR``,
  ``experiment=eval_emodb data.source=DIR``): said once on the log, no warning (the README types them).
- The teacher's flat optimisation keys (``model.lr``, ``model.optimizer=sgd``, ``model.scheduler=step``,
  ``model.step_epochs``, ...) are the nested ``model.optimizer.*`` / ``model.scheduler.*`` keys every
  module now has; on the command line and in old checkpoints' hyper-parameters, with a deprecation
  warning (:func:`nest_flat_optim_keys`).
"""
from __future__ import annotations

import logging
import warnings
from collections.abc import Callable, Mapping
from typing import Any

from omegaconf import DictConfig

log = logging.getLogger("crossmodal")

# options that left the data group, and the group they are in now
MOVED_OPTIONS = {
    "pairs": "prep", "pseudo_pairs": "prep", "predict": "prep",
    "corpus": "benchmark", "cremad": "benchmark", "emodb": "benchmark", "enterface": "benchmark",
    "iemocap": "benchmark", "ravdess": "benchmark", "rml": "benchmark",
}
# flat TeacherFER key -> (node, key) in the nested shape
FLAT_OPTIM_KEYS = {
    "lr": ("optimizer", "lr"),
    "momentum": ("optimizer", "momentum"),
    "nesterov": ("optimizer", "nesterov"),
    "weight_decay": ("optimizer", "weight_decay"),
    "betas": ("optimizer", "betas"),
    "step_epochs": ("scheduler", "milestones"),
    "step_gamma": ("scheduler", "gamma"),
    "warmup_epochs": ("scheduler", "warmup_epochs"),
    "min_lr_ratio": ("scheduler", "min_lr_ratio"),
}


def nest_flat_optim_keys(optimizer: Any, scheduler: Any, flat: Mapping[str, Any], where: str = "model"
                         ) -> tuple[dict[str, Any], dict[str, Any]]:
    """``optimizer``/``scheduler`` as nested dicts, with old flat values (not None) moved in.

    ``optimizer="sgd"`` / ``scheduler="step"`` (the old flat names) become ``{"name": ...}``. The old
    keys only fill what the nested nodes leave unset, so a user's override of the new key wins."""
    opt = {"name": optimizer} if isinstance(optimizer, str) else dict(optimizer or {})
    sched = {"name": scheduler} if isinstance(scheduler, str) else dict(scheduler or {})
    used = []
    if isinstance(optimizer, str) or isinstance(scheduler, str):
        used += [k for k, v in (("optimizer", optimizer), ("scheduler", scheduler)) if isinstance(v, str)]
    for key, value in flat.items():
        if value is None:
            continue
        node, nested = FLAT_OPTIM_KEYS[key]
        (opt if node == "optimizer" else sched).setdefault(nested, list(value) if isinstance(value, tuple) else value)
        used.append(key)
    if used:
        moved = ", ".join(f"{where}.{k} -> {where}.{'.'.join(FLAT_OPTIM_KEYS.get(k, (k, 'name')))}" for k in used)
        warnings.warn(f"deprecated flat optimisation keys, read as the nested ones: {moved}", DeprecationWarning, stacklevel=3)
        log.warning("deprecated flat optimisation keys, read as the nested ones: %s", moved)
    return opt, sched


def _split(line: str) -> tuple[str, str, str]:
    prefix = line[: len(line) - len(line.lstrip("+~"))]
    key, sep, value = line[len(prefix):].partition("=")
    return prefix, key, sep + value


def translate_overrides(overrides: list[str], compose_groups: Callable[[list[str]], DictConfig],
                        is_group: Callable[[str], bool]) -> list[str]:
    """The overrides with old keys spelt the new way (see the module doc); others unchanged.

    ``compose_groups(group_overrides)`` composes the run with the group choices only: whether
    ``data.KEY`` means ``prep.KEY`` depends on what the experiment selects."""
    out, chosen = [], None  # chosen: the group a `data=<moved option>` of this command line now names
    for line in overrides:
        prefix, key, rest = _split(line)
        if key == "data" and rest[1:] in MOVED_OPTIONS:
            chosen = MOVED_OPTIONS[rest[1:]]
            moved = f"{prefix}{chosen}{rest}"
            log.info("%s is read as %s", line, moved)
            line = moved
        out.append(line)
    values = [line for line in out if not is_group(_split(line)[1]) and not _split(line)[1].startswith("hydra")]
    if not any(_split(v)[1].startswith(("data.", "model.")) for v in values):
        return out
    base = compose_groups([line for line in out if line not in values])
    translated = []
    for line in out:
        new = line if line not in values else _translate_value(line, base, chosen)
        if new != line:
            log.info("%s is read as %s", line, new)
        translated.append(new)
    return translated


def _translate_value(line: str, base: DictConfig, chosen: str | None = None) -> str:
    prefix, key, rest = _split(line)
    head, _, tail = key.partition(".")
    if head == "data" and chosen:
        return f"{prefix}{chosen}.{tail}{rest}"
    if head == "data" and base.get("data") is None:
        for group in ("prep", "benchmark"):
            if base.get(group) is not None:
                return f"{prefix}{group}.{tail}{rest}"
        return line
    model = base.get("model")
    if head != "model" or not isinstance(model, DictConfig) or not isinstance(model.get("optimizer"), DictConfig):
        return line
    if tail in ("optimizer", "scheduler") and not rest[1:].lstrip().startswith(("{", "null")):
        new = f"{prefix}model.{tail}.name{rest}"
    elif tail in FLAT_OPTIM_KEYS and tail not in model:
        node, nested = FLAT_OPTIM_KEYS[tail]
        new = f"{prefix}model.{node}.{nested}{rest}"
    else:
        return line
    warnings.warn(f"{line}: deprecated flat key, read as {new}", DeprecationWarning, stacklevel=2)
    log.warning("%s: deprecated flat key, read as %s", line, new)
    return new
