"""task=prepare: build the experiment's shards from raw data (the DataModule's prepare_data).

Every DataModule prepares what it needs on first use anyway; this task does only that step, for
example on a CPU node before a GPU job."""
from __future__ import annotations

from typing import Any

from omegaconf import DictConfig

from crossmodal.tasks.common import build_datamodule
from crossmodal.tasks.run_folder import RunFolder


def run(cfg: DictConfig, ctx: RunFolder) -> dict[str, Any]:
    datamodule = build_datamodule(cfg)
    datamodule.prepare_data()
    report = getattr(datamodule, "prepare_report", None)
    return dict(report() if callable(report) else {})
