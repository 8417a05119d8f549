"""Tasks: what `python -m crossmodal.run task=<name>` does. Each is `run(cfg, ctx) -> dict` in its module."""
from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

TASKS = ("train", "test", "prepare", "extract", "evaluate", "predict", "demo")  # crossmodal.tasks.<name>


def get_task(name: str) -> Callable[..., dict[str, Any]]:
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; choose one of {', '.join(TASKS)}")
    return importlib.import_module(f"crossmodal.tasks.{name}").run
