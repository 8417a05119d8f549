"""Lightning callbacks that keep finished work: mid-epoch checkpoints, SIGTERM, training curves."""
from __future__ import annotations

import logging
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.utilities.exceptions import SIGTERMException

from crossmodal.utils.atomic import publish, tmp_path_for
from crossmodal.utils.figures import log_figure
from crossmodal.utils.plots import curves_figure

log = logging.getLogger(__name__)


def save_last(trainer: L.Trainer) -> Path:
    """Write <run>/checkpoints/last.ckpt atomically (temp file, then rename on rank 0)."""
    folder = Path(trainer.default_root_dir) / "checkpoints"
    path = folder / "last.ckpt"
    tmp = tmp_path_for(path)  # Lightning writes it on rank 0 only, which then publishes it
    trainer.save_checkpoint(tmp)
    if trainer.is_global_zero:
        publish(tmp, path)
    trainer.strategy.barrier("save_last")
    return path


class PeriodicCheckpoint(L.Callback):
    """Save last.ckpt every `every_n_train_steps` optimizer steps (mid-epoch too), and when the
    run is told to stop with SIGTERM (what SLURM sends before pre-emption)."""

    def __init__(self, every_n_train_steps: int = 500) -> None:
        self.every_n_train_steps = every_n_train_steps

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        if self.every_n_train_steps and step > 0 and step % self.every_n_train_steps == 0 and not trainer.sanity_checking:
            # Skip epoch ends: ModelCheckpoint(save_last=True) writes last.ckpt there anyway.
            if batch_idx + 1 < trainer.num_training_batches:
                save_last(trainer)

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        if isinstance(exception, SIGTERMException):
            path = save_last(trainer)
            log.warning("SIGTERM: saved %s at step %d; resume with ckpt_path=last", path, trainer.global_step)


class TrainingCurves(L.Callback):
    """Collect epoch-level train/val metrics and save them as a curves PNG (and to W&B) at the end of fit."""

    def __init__(self) -> None:
        self.history: dict[str, tuple[list[int], list[float]]] = defaultdict(lambda: ([], []))
        self._seen: dict[str, Any] = {}  # name -> the value object last recorded (callback_metrics keeps stale ones)

    def _record(self, trainer) -> None:
        for name, value in trainer.callback_metrics.items():
            if not name.startswith(("train/", "val/")) or value.numel() != 1 or name.endswith("_step"):
                continue
            epochs, values = self.history[name.removesuffix("_epoch")]
            if self._seen.get(name) is value and epochs and epochs[-1] != trainer.current_epoch:
                continue  # not logged this epoch (e.g. a curve scored every data.curve_every_n_epochs): no point
            self._seen[name] = value
            if epochs and epochs[-1] == trainer.current_epoch:
                values[-1] = float(value)
            else:
                epochs.append(trainer.current_epoch)
                values.append(float(value))

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self._record(trainer)

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        if not trainer.sanity_checking:
            self._record(trainer)

    def on_fit_end(self, trainer, pl_module) -> None:
        by_kind: dict[str, dict] = defaultdict(dict)
        for name, series in self.history.items():
            kind = name.split("/", 1)[1].split("/")[0]  # e.g. loss, acc, auc_unheard
            by_kind[kind][name] = series
        for kind, series in by_kind.items():
            if any(len(x) > 1 for x, _ in series.values()):
                log_figure(trainer, f"curves/{kind}", curves_figure(series, title=kind, xlabel="epoch", ylabel=kind))


class LineProgress(L.Callback):
    """Progress for logs, CI and SLURM (no terminal): a line every ~10% of an epoch and one per epoch
    with its metrics. On a terminal Lightning's own bar is used instead."""

    def __init__(self, lines_per_epoch: int = 10) -> None:
        self.lines_per_epoch = lines_per_epoch
        self._start = 0.0

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._start = time.monotonic()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        total = trainer.num_training_batches
        total = int(total) if total not in (None, float("inf")) else None
        every = max(5, (total or 100) // self.lines_per_epoch)
        if trainer.is_global_zero and (batch_idx + 1) % every == 0 and (total is None or batch_idx + 1 < total):
            loss = trainer.callback_metrics.get("train/loss_step", trainer.callback_metrics.get("train/loss"))
            loss_text = f" loss {float(loss):.4f}" if loss is not None else ""
            log.info("epoch %d/%s batch %d/%s%s", trainer.current_epoch + 1, trainer.max_epochs, batch_idx + 1, total or "?", loss_text)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if not trainer.is_global_zero:
            return
        shown = {k: float(v) for k, v in trainer.callback_metrics.items()
                 if v.numel() == 1 and k.count("/") == 1 and not k.endswith("_step")}
        text = ", ".join(f"{k} {v:.4f}" for k, v in sorted(shown.items()))
        log.info("epoch %d/%s done in %.1f s: %s", trainer.current_epoch + 1, trainer.max_epochs, time.monotonic() - self._start, text)
