"""Figures and tables of a run: saved in the run folder and sent to the loggers that show them.

One place knows which logger is W&B (:func:`is_wandb`) and how a figure or a table reaches it.
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def is_wandb(logger: Any) -> bool:
    """A Lightning ``WandbLogger`` (or a subclass of it)."""
    from lightning.pytorch.loggers import WandbLogger

    return isinstance(logger, WandbLogger)


def send(logger: Any, what: str, call: Callable[[], Any]) -> None:
    """One call to a logger. What a logger raises when it cannot take the value (disk: OSError; W&B's
    own errors) is a warning: the value is in the run folder already. Anything else is a bug and raises."""
    try:
        call()
    except (OSError, _wandb_error()) as exn:  # the tuple is only built when the call raised
        log.warning("could not send %s to %s (the run folder has it): %s", what, type(logger).__name__, exn)


def _wandb_error() -> type[Exception]:
    import wandb.errors

    return wandb.errors.Error


def save_and_send(fig, name: str, plots_dir: Path, loggers: Iterable[Any], step: int | None = None) -> Path:
    """Write ``plots_dir/<name>.png`` and log the image to W&B / TensorBoard loggers; close the figure."""
    from lightning.pytorch.loggers import TensorBoardLogger

    from crossmodal.utils.plots import close  # matplotlib: only for figures, not for the tables below

    path = Path(plots_dir) / (name.replace("/", "_").replace(" ", "_") + ".png")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    for logger in loggers:
        if is_wandb(logger):
            send(logger, f"figure {name}", lambda lg=logger: lg.log_image(key=name, images=[str(path)], step=step))
        elif isinstance(logger, TensorBoardLogger):
            send(logger, f"figure {name}", lambda lg=logger: lg.experiment.add_figure(name, fig, global_step=step or 0))
    close(fig)
    return path


def log_figure(trainer, name: str, fig) -> Path | None:
    """:func:`save_and_send` into ``<run>/plots`` from a LightningModule; other ranks than 0 only close ``fig``."""
    if not trainer.is_global_zero:
        from crossmodal.utils.plots import close

        close(fig)
        return None
    plots_dir = Path(trainer.default_root_dir) / "plots"
    return save_and_send(fig, name, plots_dir, trainer.loggers, step=trainer.global_step)


def table_cell(value: Any) -> str:
    """A table cell as text: floats to 4 decimals, None empty, anything else as ``str``."""
    if hasattr(value, "item") and getattr(value, "ndim", 0) == 0:  # numpy / torch scalars
        value = value.item()
    if isinstance(value, float):
        return f"{value:.4f}"
    return "" if value is None else str(value)


def markdown_table(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A Markdown table (no trailing newline); cells formatted by :func:`table_cell`."""
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(table_cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def send_table(loggers: Iterable[Any], key: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """Send a table to the W&B loggers among ``loggers`` (others have no table view)."""
    data = [[value.item() if hasattr(value, "item") else value for value in row] for row in rows]
    for logger in loggers:
        if is_wandb(logger):
            send(logger, f"table {key}", lambda lg=logger: lg.log_table(key=key, columns=list(columns), data=data))
