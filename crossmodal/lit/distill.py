"""DistillationModule: a speech student learns the face teacher's soft emotion predictions.

Training: the target of a window of speech is the teacher's logits aggregated over the face frames
inside it, read from distillation shards (``mode=cached``) or computed by a frozen teacher on the pair
shards' frames in the loop (``mode=online``).

Validation (the paper's §4): each clip's dominant teacher emotion (argmax of the max-pooled logits over
the whole clip) is the label and the student's softmax the score; ROC AUC per emotion on heard, unheard
and train identities (:mod:`crossmodal.eval.roc`); UA/WA per split for clips with a true label.
"""
from __future__ import annotations

import csv
import io
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from crossmodal.emotions import EMOTIONS
from crossmodal.eval.roc import ScoreCollector, per_emotion_auc
from crossmodal.io.splits import SPLITS
from crossmodal.lit.student import SpeechModuleBase
from crossmodal.models.losses import DistillationLoss
from crossmodal.utils.atomic import write_text
from crossmodal.utils.figures import send_table

log = logging.getLogger(__name__)


class DistillationModule(SpeechModuleBase):
    """``loss``: ``{temperature: 2, kind: soft_ce | kl, t2_scaling: false, hard_weight: 0}``. ``mode``: ``cached``
    (batches carry ``target``) or ``online`` (face ``frames``, labelled by ``teacher``, a model file; None = the
    shipped CPU teacher). ``reduce``: the online teacher's frame logits -> window target (max | mean)."""

    def __init__(
        self,
        *,
        loss: dict[str, Any] | None = None,
        mode: str = "cached",
        teacher: str | None = None,
        teacher_batch_size: int = 256,
        reduce: str = "max",
        roc_figures: bool = True,
        **settings: Any,  # the student, front-end, optimiser... settings of SpeechModuleBase
    ) -> None:
        super().__init__(**settings)
        if mode not in ("cached", "online"):
            raise ValueError(f"model.mode={mode!r} must be 'cached' or 'online'")
        self.mode = mode
        self.criterion = DistillationLoss(**dict(loss or {}))
        self.reduce = reduce
        self.teacher_path = teacher
        self.teacher_batch_size = teacher_batch_size
        self.roc_figures = roc_figures
        self.scores = ScoreCollector()
        # Plain attribute: not a submodule, so not in state_dict, the optimiser, or DDP's gradient sync.
        self.__dict__["teacher"] = None
        self._val_splits: tuple[str, ...] | None = None  # set at each validation's start

    def set_teacher(self, teacher: nn.Module) -> None:
        teacher.eval().requires_grad_(False)
        self.__dict__["teacher"] = teacher

    def get_teacher(self) -> nn.Module:
        teacher = self.__dict__.get("teacher")
        if teacher is None:
            from crossmodal.models.loading import load_teacher

            teacher = load_teacher(self.teacher_path)
            self.set_teacher(teacher)
        if next(teacher.parameters()).device != self.device:
            teacher.to(self.device)
        return teacher

    def setup(self, stage: str) -> None:
        if self.mode == "online":
            self.get_teacher()

    def student_provenance(self) -> dict[str, Any]:
        """The base provenance plus the teacher's digest (sha256 of its file, as the distillation shards record it)."""
        provenance = super().student_provenance()
        digest = None
        if self.mode == "cached":
            datamodule = getattr(self._trainer, "datamodule", None) if self._trainer is not None else None
            manifest = getattr(datamodule, "manifest", None)
            try:
                digest = manifest().meta.get("teacher_sha256") if callable(manifest) else None
            except (FileNotFoundError, ValueError):
                digest = None
        else:
            from crossmodal.models.loading import teacher_digest, teacher_file

            path = teacher_file(self.teacher_path)
            if path.exists():
                provenance.setdefault("teacher", str(path))
                digest = teacher_digest(path)
        if digest:
            provenance["teacher_digest"] = f"sha256:{digest}"
        return provenance

    @torch.no_grad()
    def teacher_targets(self, frames: Sequence[torch.Tensor]) -> torch.Tensor:
        """Face frames per sample (uint8 [n_i, H, W(, 3)]) -> aggregated teacher logits [B, 8]."""
        teacher = self.get_teacher()
        counts = [len(f) for f in frames]
        if min(counts) == 0:
            raise ValueError("a sample reached the teacher with no face frame in its window (the loader should have skipped it)")
        flat = torch.cat([teacher.preprocess(f.to(self.device)) for f in frames])
        logits = torch.cat([teacher(chunk) for chunk in flat.split(self.teacher_batch_size)]).float()
        per_sample = logits.split(counts)
        if self.reduce == "max":
            return torch.stack([chunk.max(0).values for chunk in per_sample])
        return torch.stack([chunk.mean(0) for chunk in per_sample])

    def batch_targets(self, batch: dict[str, Any]) -> torch.Tensor:
        if self.mode == "online":
            if "frames" not in batch:
                raise ValueError("model.mode=online needs pair shards with face frames (data.mode=online)")
            return self.teacher_targets(batch["frames"])
        if "target" not in batch:
            raise ValueError("model.mode=cached needs distillation shards with teacher logits (data.mode=cached)")
        return batch["target"]

    def batch_loss(self, batch: dict[str, Any]) -> tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor]:
        targets = self.batch_targets(batch)
        parts, logits = self.mixed_loss(batch["wave"], batch["lengths"], self.criterion, targets)
        return parts, logits, targets

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        self.count_skipped(batch)
        parts, _, _ = self.batch_loss(batch)
        for name, value in parts.items():
            self.log(f"train/{name}", value, prog_bar=name == "loss")
        return parts["loss"]

    def _eval_step(self, batch: dict[str, Any], splits: tuple[str, ...] | None = None) -> None:
        """Score a batch; ``splits``: only the clips of these splits (None: all). A batch with none of
        them is not run; a mixed one runs whole (so the kept clips' outputs are those of a full pass)."""
        kept = None
        if splits is not None:
            kept = torch.isin(batch["split"], torch.tensor([SPLITS.index(s) for s in splits], device=batch["split"].device))
            if not kept.any():
                return
        targets = self.batch_targets(batch)
        logits, _ = self(batch["wave"], batch["lengths"])
        if kept is not None and not kept.all():
            targets, logits = targets[kept], logits[kept]
            batch = {"split": batch["split"][kept], "label": batch["label"][kept]}
        for index, _split in enumerate(SPLITS):
            chosen = batch["split"] == index
            if chosen.any():
                self.split_loss.update(index, self.criterion(logits[chosen], targets[chosen])["loss"], int(chosen.sum()))
        self.scores.update(torch.softmax(logits.float(), -1), targets.argmax(-1), batch["split"])
        self.update_recall(logits, batch)

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._eval_step(batch, self._val_splits)

    def on_validation_epoch_start(self) -> None:
        """This validation scores the datamodule's ``val_splits`` (the unheard/train curves every
        ``data.curve_every_n_epochs`` epochs); all splits (None) in the sanity check and trainer.validate()."""
        trainer = self.trainer
        choose = getattr(getattr(trainer, "datamodule", None), "val_splits", None)
        fitting = not trainer.sanity_checking and trainer.state.fn == "fit"
        self._val_splits = choose(self.current_epoch, trainer.max_epochs) if choose and fitting else None
        self.scores.start_epoch()

    def on_test_epoch_start(self) -> None:
        self.scores.start_epoch()

    def _eval_epoch_end(self, stage: str) -> None:
        super()._eval_epoch_end(stage)  # losses, UA/WA
        scores, labels, groups = self.scores.compute()  # on every rank (a collective under DDP)
        self.scores.reset()
        figures = self.roc_figures and self.want_figures(stage)
        table: dict[str, dict[str, Any]] = {}
        for index, split in enumerate(SPLITS):
            chosen = groups == index
            if not chosen.any():
                continue
            result = per_emotion_auc(scores[chosen], labels[chosen], with_curves=figures)
            table[split] = result
            for emotion, auc in result["auc"].items():
                self.log(f"{stage}/auc_{split}/{emotion}", auc, sync_dist=True)
            for name in ("mean", "mean_paper"):
                if name in result:
                    self.log(f"{stage}/auc_{split}/{name}", result[name], sync_dist=True)
            self.log(f"{stage}/auc_{split}/scored", float(len(result["auc"])), sync_dist=True)
            if figures and result["curves"]:
                self.roc_figure(stage, split, result)
        if figures and table:
            self.auc_table(stage, table)

    def roc_figure(self, stage: str, split: str, result: dict[str, Any]) -> None:
        from crossmodal.utils.figures import log_figure
        from crossmodal.utils.plots import roc_figure

        absent = f"; absent: {', '.join(result['absent'])}" if result["absent"] else ""
        title = f"{stage} {split} (n={result['count']}): student vs teacher's dominant emotion{absent}"
        fig = roc_figure(result["curves"], title=title)
        fig.axes[0].title.set_fontsize(8)
        log_figure(self.trainer, f"{stage}/roc_{split}", fig)

    def auc_table(self, stage: str, table: dict[str, dict[str, Any]]) -> None:
        """AUC per emotion x split: CSV in the plots folder, and a W&B table when W&B is on."""
        if not self.trainer.is_global_zero:
            return
        splits = list(table)
        rows = []
        for emotion in list(EMOTIONS) + ["mean", "mean_paper"]:
            row = [emotion]
            for split in splits:
                value = table[split]["auc"].get(emotion, table[split].get(emotion))
                row.append(f"{value:.4f}" if isinstance(value, float) else "absent")
            rows.append(row)
        rows.append(["clips"] + [str(table[split]["count"]) for split in splits])
        columns = ["emotion"] + splits
        path = Path(self.trainer.default_root_dir) / "plots" / f"{stage}_auc_table.csv"
        text = io.StringIO()
        writer = csv.writer(text)
        writer.writerow(columns)
        writer.writerows(rows)
        write_text(path, text.getvalue())  # makes plots/ when needed
        send_table(self.trainer.loggers, f"{stage}/auc_table", columns, rows)
