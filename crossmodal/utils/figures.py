"""Save a figure as PNG in the run folder and send it to the loggers that show images."""
from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from crossmodal.utils.plots import close

log = logging.getLogger(__name__)


def figure_path(plots_dir: Path, name: str) -> Path:
    safe = name.replace("/", "_").replace(" ", "_")
    return Path(plots_dir) / f"{safe}.png"


def save_and_send(fig, name: str, plots_dir: Path, loggers: Iterable[Any], step: int | None = None) -> Path:
    """Write ``plots_dir/<name>.png`` and log the image to W&B / TensorBoard loggers; close the figure."""
    path = figure_path(plots_dir, name)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    for logger in loggers:
        kind = type(logger).__name__
        try:
            if kind == "WandbLogger":
                logger.log_image(key=name, images=[str(path)], step=step)
            elif kind == "TensorBoardLogger":
                logger.experiment.add_figure(name, fig, global_step=step or 0)
        except Exception as exn:  # noqa: BLE001 - a logger failure must not lose the PNG or the run
            log.warning("could not send figure %s to %s: %s", name, kind, exn)
    close(fig)
    return path


def log_figure(trainer, name: str, fig) -> Path | None:
    """From a LightningModule: ``log_figure(self.trainer, "val/confusion", fig)``.

    Only global rank 0 writes; other ranks close the figure and return None.
    """
    if not trainer.is_global_zero:
        close(fig)
        return None
    plots_dir = Path(trainer.default_root_dir) / "plots"
    return save_and_send(fig, name, plots_dir, trainer.loggers, step=trainer.global_step)
