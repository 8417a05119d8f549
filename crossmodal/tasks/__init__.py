"""Tasks: what `python -m crossmodal.run task=<name>` does. Each is `run(cfg, ctx) -> dict` in its module."""
from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

TASKS = {
    "train": "crossmodal.tasks.train",
    "test": "crossmodal.tasks.test",
    "prepare": "crossmodal.tasks.prepare",
    "extract": "crossmodal.tasks.extract",
    "evaluate": "crossmodal.tasks.evaluate",
    "predict": "crossmodal.tasks.predict",
    "demo": "crossmodal.tasks.demo",
}


def get_task(name: str) -> Callable[..., dict[str, Any]]:
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; choose one of {', '.join(TASKS)}")
    return importlib.import_module(TASKS[name]).run
