"""TeacherFER: training the face-expression teacher on FER+ (a LightningModule around a
:class:`~crossmodal.models.teacher.FaceTeacher`, whose module holds the network and its model files).

Pretrained layers train at ``pretrained_lr_mult`` x the lr. Val and test report top-1 against the majority
label (``acc``, the FER+ number), UA, per-class recall and a confusion matrix.
"""
from __future__ import annotations

import logging
import time
from typing import Any

import lightning as L
import torch
import torch.nn as nn
import torch.nn.functional as F
from hydra.utils import instantiate
from torchmetrics.functional.classification import multiclass_accuracy

from crossmodal import paper
from crossmodal.emotions import EMOTIONS, NUM_EMOTIONS
from crossmodal.eval.classification import classification_metrics, classification_results
from crossmodal.models.face import PreprocessSpec, create_face_backbone
from crossmodal.models.loading import load_teacher, teacher_file
from crossmodal.models.modelfile import LEGACY_TEACHER_FORMAT
from crossmodal.models.teacher import FaceTeacher, head_names
from crossmodal.models.teacher_int8 import int8_form, resolve_precision
from crossmodal.utils.optim import with_scheduler
from crossmodal.utils.seeding import ResumedRng

log = logging.getLogger(__name__)
# the paper's teacher optimiser: what a null optimizer means (a null scheduler: a constant lr)
PAPER_OPTIMIZER = {"_target_": "torch.optim.SGD", "_partial_": True, "lr": paper.TEACHER_LR, "momentum": paper.MOMENTUM,
                   "weight_decay": paper.WEIGHT_DECAY}

class TeacherFER(ResumedRng, L.LightningModule):
    def __init__(
        self,
        backbone: str = "vgg_small",
        backbone_kwargs: dict | None = None,
        pretrained: str | None = None,
        preprocess: dict | None = None,
        label_mode: str = "probability",
        drop_rate: float = paper.TEACHER_DROPOUT,
        optimizer: dict[str, Any] | None = None,
        scheduler: dict[str, Any] | None = None,
        pretrained_lr_mult: float = paper.PRETRAINED_LR_MULT,
        label_smoothing: float = 0.0,
        tta_flip: bool = False,
        teacher_precision: str = "fp32",
        channels_last: bool = True,
        init_from: str | None = None,
        init_from_default: bool = False,
        plot_every_n_epochs: int = 1,
        time_budget_minutes: float | None = None,
    ) -> None:
        super().__init__()
        optimizer = dict(optimizer or PAPER_OPTIMIZER)  # the hyper-parameters saved below: the optimiser that runs
        scheduler = dict(scheduler) if scheduler else None
        saved = None
        if init_from or init_from_default:  # evaluate / fine-tune a saved teacher: its architecture and preprocessing win
            saved = load_teacher(init_from or None)
            backbone, backbone_kwargs, preprocess = saved.name, dict(saved.kwargs), saved.spec.as_dict()
            drop_rate = backbone_kwargs.pop("drop_rate", drop_rate)
            pretrained = None
        self.save_hyperparameters()
        resolve_precision(teacher_precision, key="model.teacher_precision")  # a bad value fails here
        if teacher_precision == "int8" and saved is None:
            raise ValueError("model.teacher_precision=int8 tests a saved teacher: give model.init_from=FILE (or init_from_default)")
        if label_mode not in ("majority", "probability", "crossentropy"):
            raise ValueError(f"model.label_mode={label_mode!r}: use majority, probability or crossentropy")
        if time_budget_minutes and scheduler and scheduler.get("_target_") != "crossmodal.utils.optim.cosine":
            raise ValueError("model.time_budget_minutes needs model/scheduler=cosine (the anneal follows wall time)")
        spec = PreprocessSpec.from_config(preprocess)
        kwargs = dict(backbone_kwargs or {})
        kwargs.setdefault("in_chans", spec.channels)
        net = create_face_backbone(backbone, pretrained=pretrained, drop_rate=drop_rate, **kwargs)
        self.teacher = FaceTeacher(net, spec, name=backbone, kwargs=dict(kwargs, drop_rate=drop_rate), tta_flip=False)
        if saved is not None:
            self.teacher.backbone.load_state_dict(saved.backbone.state_dict())
        if channels_last:
            self.teacher = self.teacher.to(memory_format=torch.channels_last)
        # Parameters that came from a pretrained file/cache get the lr multiplier; a new head does not.
        self._pretrained_names = set()
        if pretrained:
            head = head_names(net)
            self._pretrained_names = {n for n, _ in net.named_parameters() if not any(n.startswith(h) for h in head)}
        self._train_seconds = 0.0  # wall time spent in fit (kept in checkpoints, for the time budget)
        self._clock: float | None = None
        self._fitted = False
        self.metrics = nn.ModuleDict({stage: classification_metrics(NUM_EMOTIONS) for stage in ("val", "test")})

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype == torch.uint8:  # raw faces (a loader without the DataModule's batch transform)
            x = self.teacher.spec(x)
        if self.hparams.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.teacher(x)

    def setup(self, stage: str) -> None:
        # The model's preprocessing is the one the weights need; the DataModule follows it.
        datamodule = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        if datamodule is not None and hasattr(datamodule, "preprocess"):
            if datamodule.preprocess != self.teacher.spec:
                log.info("data preprocessing %s replaced by the model's %s", datamodule.preprocess, self.teacher.spec)
            datamodule.preprocess = self.teacher.spec

    # -- the time budget: the schedule runs on wall time, so a busy machine shortens training, not the anneal
    def on_train_start(self) -> None:
        self._clock = time.monotonic()

    def elapsed_minutes(self) -> float:
        now = time.monotonic()
        if self._clock is not None:
            self._train_seconds += now - self._clock
            self._clock = now
        return self._train_seconds / 60

    def time_progress(self) -> float | None:
        budget = self.hparams.time_budget_minutes
        return None if not budget else min(1.0, self.elapsed_minutes() / budget)

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        progress = self.time_progress()
        if progress is not None:
            self.log("train/minutes", self.elapsed_minutes())
            if progress >= 1.0:
                log.info("time budget of %.1f min used up: stopping", self.hparams.time_budget_minutes)
                self.trainer.should_stop = True

    def on_fit_start(self) -> None:
        self._fitted = True  # the weights are no longer the file's: a later test runs fp32

    def on_test_start(self) -> None:
        """The saved teacher's int8 form (``teacher_precision`` int8, or auto on a CPU) for a test of its file's weights."""
        hp = self.hparams
        if (hp.init_from or hp.init_from_default) and not self._fitted and \
                resolve_precision(hp.teacher_precision, self.device, "model.teacher_precision") == "int8":
            self.teacher.use_int8(int8_form(self.teacher, teacher_file(hp.init_from or None)))

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)  # the random states (ResumedRng)
        checkpoint["train_seconds"] = self._train_seconds

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_load_checkpoint(checkpoint)
        if checkpoint.get("format") == LEGACY_TEACHER_FORMAT:  # a v1 teacher file given as ckpt_path: weights only
            own = self.state_dict()
            checkpoint["state_dict"] = {k: v.to(own[k].dtype) if k in own else v for k, v in checkpoint["state_dict"].items()}
        self._train_seconds = float(checkpoint.get("train_seconds", 0.0))

    def loss(self, logits: torch.Tensor, batch: dict[str, Any]) -> torch.Tensor:
        """Cross-entropy against the majority label or the vote distribution (torch smooths either)."""
        target = batch["label"] if self.hparams.label_mode == "majority" else batch["target"].float()
        return F.cross_entropy(logits.float(), target, label_smoothing=self.hparams.label_smoothing)

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        logits = self(batch["image"])
        loss = self.loss(logits, batch)
        n = len(batch["label"])
        self.log("train/loss", loss, prog_bar=True, batch_size=n)
        self.log("train/acc", multiclass_accuracy(logits.argmax(-1), batch["label"], NUM_EMOTIONS, average="micro"), batch_size=n)
        self.log("data/skipped", batch["skipped"].float(), reduce_fx="sum", batch_size=n)
        return loss

    def _eval_step(self, batch: dict[str, Any], stage: str) -> None:
        x = batch["image"]
        logits = self(x)
        if self.hparams.tta_flip:
            logits = (logits + self(torch.flip(x, dims=[-1]))) / 2
        n = len(batch["label"])
        self.log(f"{stage}/loss", self.loss(logits, batch), batch_size=n, sync_dist=True)
        self.log("data/skipped", batch["skipped"].float(), reduce_fx="sum", batch_size=n, sync_dist=True)
        self.metrics[stage].update(logits.argmax(-1), batch["label"])

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._eval_step(batch, "val")

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._eval_step(batch, "test")

    def _eval_epoch_end(self, stage: str) -> None:
        result = classification_results(self.metrics[stage], EMOTIONS)  # on every rank (a collective under DDP)
        if not result["count"]:
            log.warning("%s: no labelled face reached the metrics (every sample skipped?); nothing to score", stage)
            return
        # acc: accuracy against the majority label, the FER+ literature's number (``wa`` elsewhere)
        self.log(f"{stage}/acc", result["wa"], prog_bar=True, sync_dist=True)
        self.log(f"{stage}/ua", result["ua"], sync_dist=True)
        for name, value in result["recall"].items():
            self.log(f"{stage}/recall/{name}", value, sync_dist=True)
        confusion = result["confusion"].cpu().numpy()
        every = max(1, self.hparams.plot_every_n_epochs)
        if self._trainer is not None and not self.trainer.sanity_checking and (stage == "test" or self.current_epoch % every == 0
                                                                              or self.current_epoch == self.trainer.max_epochs - 1):
            from crossmodal.utils.figures import log_figure
            from crossmodal.utils.plots import confusion_matrix_figure

            acc = confusion.trace() / max(1, confusion.sum())
            fig = confusion_matrix_figure(confusion, EMOTIONS, title=f"FER+ {stage}: top-1 {acc:.1%} (n={int(confusion.sum())})")
            log_figure(self.trainer, f"{stage}/confusion", fig)

    def on_validation_epoch_end(self) -> None:
        self._eval_epoch_end("val")

    def on_test_epoch_end(self) -> None:
        self._eval_epoch_end("test")

    def configure_optimizers(self):
        hp = self.hparams
        decay, no_decay, pre_decay, pre_no_decay = [], [], [], []
        for name, param in self.teacher.backbone.named_parameters():
            if not param.requires_grad:
                continue
            pretrained = name in self._pretrained_names
            flat = param.ndim <= 1  # no weight decay on norms and biases
            (pre_no_decay if pretrained and flat else pre_decay if pretrained else no_decay if flat else decay).append(param)
        build = instantiate(hp.optimizer)  # the optimizer's lr and weight decay, unless a group sets its own
        pretrained_lr = build.keywords.get("lr", 0.0) * hp.pretrained_lr_mult
        groups = [g for g in (
            {"params": decay},
            {"params": no_decay, "weight_decay": 0.0},
            {"params": pre_decay, "lr": pretrained_lr},
            {"params": pre_no_decay, "weight_decay": 0.0, "lr": pretrained_lr},
        ) if g["params"]]
        optimizer = build(params=groups)
        return with_scheduler(optimizer, hp.scheduler, trainer=self._trainer, time_progress=self.time_progress)


