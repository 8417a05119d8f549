"""Speech students as LightningModules: :class:`SpeechModuleBase` (what every speech module shares),
:class:`StudentSpeech` (cross-entropy on corpus labels, the supervised upper bound); distillation is
:class:`~crossmodal.lit.distill.DistillationModule`."""
from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.utils import instantiate
from torch.nn import functional as F
from torchmetrics import SumMetric

from crossmodal import paper
from crossmodal.emotions import EMOTIONS, NUM_EMOTIONS, emotion_index
from crossmodal.eval.classification import SplitClassification, SplitMean
from crossmodal.io.splits import NO_LABEL, SPLITS
from crossmodal.models.frontend import build_frontend
from crossmodal.models.speech import create_student, save_student
from crossmodal.utils.optim import with_scheduler
from crossmodal.utils.seeding import ResumedRng

log = logging.getLogger(__name__)

# the paper's student optimiser: what a null optimizer means (a null scheduler: a constant lr)
DEFAULT_OPTIMIZER = {"_target_": "torch.optim.SGD", "_partial_": True, "lr": paper.STUDENT_LR, "momentum": paper.MOMENTUM,
                     "weight_decay": paper.WEIGHT_DECAY}
STUDENT_FILE = "student.safetensors"  # written into the run folder after testing


class SpeechModuleBase(ResumedRng, L.LightningModule):
    """The settings every speech module takes are this constructor's keyword arguments (their one home): a
    subclass declares only its own and hands the rest on as ``**settings``; the config check follows them here
    (:func:`crossmodal.config.schema.check_config`) and ``save_hyperparameters`` records both."""

    def __init__(
        self,
        *,
        student: dict[str, Any] | None = None,
        frontend: dict[str, Any] | None = None,
        optimizer: dict[str, Any] | None = None,
        scheduler: dict[str, Any] | None = None,
        label_classes: Sequence[str] | None = None,
        export_student: bool = True,
        figure_every_n_epochs: int = 10,
        compile_student: bool = False,
        mixup_alpha: float = 0.0,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()  # these arguments and every subclass's (Lightning reads each __init__ frame)
        if mixup_alpha < 0:
            raise ValueError(f"model.mixup_alpha={mixup_alpha} must be >= 0 (0 = no mixup)")
        self.mixup_alpha = mixup_alpha
        student = dict(student or {"name": "vggvox"})
        self.student_name = student["name"]
        self.frontend = build_frontend(frontend)
        self.student_kwargs = {"n_freq": self.frontend.n_freq, **dict(student.get("kwargs") or {})}
        self.net = create_student(self.student_name, **self.student_kwargs)
        self.optimizer_cfg = dict(optimizer or DEFAULT_OPTIMIZER)
        self.scheduler_cfg = dict(scheduler) if scheduler else None
        # UA is computed over these classes, and predictions are restricted to them (argmax over the
        # classes the labelled corpus has: a student cannot be right about a class the corpus lacks).
        self.label_classes = [emotion_index(name) for name in (label_classes or EMOTIONS)]
        self.export_student = export_student
        self.figure_every_n_epochs = figure_every_n_epochs
        self.compile_student = compile_student
        self.classification = SplitClassification(SPLITS, NUM_EMOTIONS)  # UA, WA, recall, confusion per split
        self.split_loss = SplitMean(SPLITS)
        self.skipped = SumMetric()

    def configure_model(self) -> None:
        # torch.compile in place (nn.Module.compile): checkpoints and student files keep their keys
        if self.compile_student and getattr(self.net, "_compiled_call_impl", None) is None:
            self.net.compile(dynamic=True)  # evaluation feeds whole clips of any length

    def forward(self, wave: torch.Tensor, lengths: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        features, frames = self.frontend(wave, lengths)
        return self.net(features, frames)

    def mixed_loss(self, wave: torch.Tensor, lengths: torch.Tensor, loss_fn, targets: torch.Tensor):
        """Training loss with mixup on the front-end features (``mixup_alpha`` > 0; Zhang et al. 2018):
        each window mixed with another of the batch at lam ~ Beta(a, a), the loss the same mix of the
        two windows' losses (exact for cross-entropy against soft or hard targets); in training only. Returns
        ``loss_fn``'s output (a tensor, or a dict of tensors mixed key by key) and the logits."""
        if self.mixup_alpha <= 0 or not self.training or wave.shape[0] < 2:
            logits, _ = self(wave, lengths)
            return loss_fn(logits, targets), logits
        features, frames = self.frontend(wave, lengths)
        alpha = torch.tensor(float(self.mixup_alpha))
        lam = float(torch.distributions.Beta(alpha, alpha).sample())
        lam = max(lam, 1.0 - lam)  # the first window dominates: its frame count stays the valid length
        order = torch.randperm(features.shape[0], device=features.device)
        logits, _ = self.net(lam * features + (1.0 - lam) * features[order], torch.maximum(frames, frames[order]))
        first, second = loss_fn(logits, targets), loss_fn(logits, targets[order])
        if isinstance(first, dict):
            return {key: lam * first[key] + (1.0 - lam) * second[key] for key in first}, logits
        return lam * first + (1.0 - lam) * second, logits

    def update_recall(self, logits: torch.Tensor, batch: dict[str, Any]) -> None:
        labels, splits = batch["label"], batch["split"]
        labelled = labels != NO_LABEL
        classes = torch.tensor(self.label_classes, device=logits.device)
        predictions = classes[logits.detach()[:, classes].argmax(1)]  # argmax over label_classes only
        self.classification.update(predictions[labelled], labels[labelled], splits[labelled])

    def log_recall(self, stage: str) -> None:
        """Log ``<stage>/ua_<split>``, ``<stage>/wa_<split>`` and ``<stage>/recall_<split>/<emotion>``
        for the splits with labelled clips (torchmetrics, reduced over ranks: ``sync_dist=True`` on
        identical values tells Lightning they are global)."""
        results = self.classification.results(EMOTIONS)  # on every rank (a collective under DDP)
        for split, result in results.items():
            self.log(f"{stage}/ua_{split}", result["ua"], sync_dist=True)
            self.log(f"{stage}/wa_{split}", result["wa"], sync_dist=True)
            for emotion, value in result["recall"].items():
                self.log(f"{stage}/recall_{split}/{emotion}", value, sync_dist=True)
            if self.want_figures(stage):
                self.confusion_figure(stage, split, result["confusion"])

    def log_split_losses(self, stage: str, losses: SplitMean) -> None:
        """Log ``<stage>/loss_<split>`` and ``<stage>/loss``: the heard split's loss when there is one, so that
        model selection (``val/loss``) keeps the unheard speakers out of every choice made during training."""
        values = losses.compute()  # torchmetrics: already reduced over ranks
        losses.reset()
        for split, value in values.items():
            self.log(f"{stage}/loss_{split}", value, sync_dist=True)
        for split in ("heard", "unheard", "train"):
            if split in values:
                self.log(f"{stage}/loss", values[split], sync_dist=True)
                break

    def want_figures(self, stage: str) -> bool:
        """Figures at test time, and at validation every ``figure_every_n_epochs`` and at the last epoch."""
        if self.trainer.sanity_checking or stage == "train":
            return False
        if stage != "val":
            return True
        epoch, last = self.current_epoch + 1, self.trainer.max_epochs
        every = self.figure_every_n_epochs
        return bool(every) and (epoch % every == 0 or (last is not None and epoch >= last))

    def confusion_figure(self, stage: str, split: str, confusion: torch.Tensor) -> None:
        from crossmodal.utils.figures import log_figure
        from crossmodal.utils.plots import confusion_matrix_figure

        classes = self.label_classes
        fig = confusion_matrix_figure(confusion[classes][:, classes].cpu().numpy(), [EMOTIONS[c] for c in classes],
                                      title=f"{stage} {split}: UA on labelled clips")
        log_figure(self.trainer, f"{stage}/confusion_{split}", fig)

    def count_skipped(self, batch: dict[str, Any]) -> None:
        if "skipped" in batch:
            self.skipped.update(batch["skipped"].float().sum())

    def on_train_epoch_end(self) -> None:
        self.log("data/skipped", self.skipped.compute(), sync_dist=True)  # SumMetric: 0 when nothing was skipped
        self.skipped.reset()

    # -- evaluation: each subclass scores a batch in _eval_step(batch)
    def _eval_epoch_end(self, stage: str) -> None:
        self.log_split_losses(stage, self.split_loss)
        self.log_recall(stage)

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._eval_step(batch)

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._eval_step(batch)

    def on_validation_epoch_end(self) -> None:
        self._eval_epoch_end("val")

    def on_test_epoch_end(self) -> None:
        self._eval_epoch_end("test")

    def configure_optimizers(self):
        optimizer = instantiate(self.optimizer_cfg)(params=self.net.parameters())
        return with_scheduler(optimizer, self.scheduler_cfg, trainer=self._trainer)

    def student_provenance(self) -> dict[str, Any]:
        """What the student file records about how this student was made: module, data, run, metrics."""
        provenance: dict[str, Any] = {"module": type(self).__name__}
        trainer = self._trainer
        if trainer is None:
            return provenance
        provenance["run"] = str(Path(trainer.default_root_dir).resolve())
        datamodule = getattr(trainer, "datamodule", None)
        if datamodule is not None and hasattr(datamodule, "student_info"):
            provenance.update(datamodule.student_info())
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("test/") and "/" in k and v.numel() == 1}
        if metrics:
            provenance["metrics"] = metrics
        return provenance

    def on_test_end(self) -> None:
        if self.export_student and self.trainer.is_global_zero and not getattr(self.trainer, "fast_dev_run", False):
            path = Path(self.trainer.default_root_dir) / STUDENT_FILE
            save_student(path, net_name=self.student_name, net_kwargs=dict(self.student_kwargs),
                         frontend_cfg=self.frontend.frontend_config(), state_dict=self.net.state_dict(),
                         extra={"label_classes": [EMOTIONS[c] for c in self.label_classes]},
                         provenance=self.student_provenance())
            log.info("wrote the student file %s (use it with predict/export)", path)


class StudentSpeech(SpeechModuleBase):
    """A speech student trained with true emotion labels (cross-entropy), the supervised upper bound."""

    def __init__(self, *, label_smoothing: float = 0.0, **settings: Any) -> None:
        super().__init__(**settings)
        self.label_smoothing = label_smoothing

    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if (labels == NO_LABEL).all():
            raise ValueError("a supervised batch has no labelled sample: StudentSpeech needs shards whose json carries `label`")
        return F.cross_entropy(logits, labels, ignore_index=NO_LABEL, label_smoothing=self.label_smoothing)

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        self.count_skipped(batch)
        loss, _ = self.mixed_loss(batch["wave"], batch["lengths"], self.loss, batch["label"])
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def _eval_step(self, batch: dict[str, Any]) -> None:
        logits, _ = self(batch["wave"], batch["lengths"])
        labels = batch["label"]
        for index, _split in enumerate(SPLITS):
            chosen = (labels != NO_LABEL) & (batch["split"] == index)
            if chosen.any():
                self.split_loss.update(index, self.loss(logits[chosen], labels[chosen]), int(chosen.sum()))
        self.update_recall(logits, batch)
