"""A small classifier on shards the test writes: exercises the real entry point, shard streams,
DDP splitting, checkpoints and resume without the cost of a real model."""
from __future__ import annotations

import lightning as L
import numpy as np
import torch
import torchmetrics
from torch import nn

from crossmodal.data.stream import EpochLoader, ShardStream, eval_loader
from crossmodal.pipeline.shards import load_manifest, load_npy, stack_field


def write_toy_shards(out_dir, n_train=192, n_val=60, per_shard=16, seed=0):
    """Two Gaussian blobs in 8-D, labelled 0/1, as train-/val- shards."""
    from crossmodal.pipeline.shards import ShardJob, write_shard_set

    rng = np.random.default_rng(seed)

    def samples(split, n):
        labels = rng.integers(0, 2, n)
        x = rng.normal(size=(n, 8)).astype(np.float32) + labels[:, None].astype(np.float32) * 1.5
        return [{"__key__": f"{split}{i:05d}", "x.npy": x[i], "cls": int(labels[i])} for i in range(n)]

    jobs = []
    for split, n in (("train", n_train), ("val", n_val)):
        items = samples(split, n)
        jobs += [ShardJob(f"{split}-{k:06d}", items[i : i + per_shard]) for k, i in enumerate(range(0, n, per_shard))]
    return write_shard_set(out_dir, jobs, lambda job, skips: iter(job.items), meta={"toy": True})[0]


def decode(sample):
    return {"x": load_npy(sample["x.npy"]), "y": int(sample["cls"])}


def collate(batch):
    return {"x": stack_field(batch, "x"), "y": stack_field(batch, "y")}


class ToyData(L.LightningDataModule):
    def __init__(self, shard_dir: str, batch_size: int = 16, num_workers: int = 0, batches_per_epoch: int = 6, seed: int = 0):
        super().__init__()
        self.shard_dir = shard_dir
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.batches_per_epoch = batches_per_epoch
        self.seed = seed

    def setup(self, stage=None):
        self.manifest = load_manifest(self.shard_dir)

    def train_dataloader(self):
        stream = ShardStream(self.manifest.paths("train"), decode, collate, self.batch_size, train=True, seed=self.seed, shuffle_buffer=32)
        return EpochLoader(stream, self.num_workers, self.batches_per_epoch)

    def val_dataloader(self):
        return eval_loader(ShardStream(self.manifest.paths("val"), decode, collate, self.batch_size, train=False), self.num_workers)

    def test_dataloader(self):  # the toy has no separate test split
        return self.val_dataloader()


class ToyClassifier(L.LightningModule):
    def __init__(self, lr: float = 0.1, hidden: int = 16):
        super().__init__()
        self.save_hyperparameters()
        self.net = nn.Sequential(nn.Linear(8, hidden), nn.ReLU(), nn.Linear(hidden, 2))
        self.val_acc = torchmetrics.classification.MulticlassAccuracy(num_classes=2, average="micro")
        self.val_loss = torchmetrics.MeanMetric()
        self.val_count = torchmetrics.SumMetric()
        self.first_losses: list[float] = []

    def training_step(self, batch, batch_idx):
        loss = nn.functional.cross_entropy(self.net(batch["x"]), batch["y"])
        self.log("train/loss", loss, on_step=True, on_epoch=True, prog_bar=True)
        return loss

    def validation_step(self, batch, batch_idx, stage="val"):
        logits = self.net(batch["x"])
        self.val_loss.update(nn.functional.cross_entropy(logits, batch["y"], reduction="none"))
        self.val_acc.update(logits, batch["y"])
        self.val_count.update(torch.tensor(float(len(batch["y"]))))
        self.log(f"{stage}/loss", self.val_loss, on_epoch=True)
        self.log(f"{stage}/acc", self.val_acc, on_epoch=True)
        self.log(f"{stage}/count", self.val_count, on_epoch=True)

    def test_step(self, batch, batch_idx):
        self.validation_step(batch, batch_idx, stage="test")

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.hparams.lr)


class KillAtStep(L.Callback):
    """Send a signal to this process after a given optimizer step: SIGKILL is a crash with no
    chance to clean up, SIGTERM is what SLURM sends before pre-emption."""

    def __init__(self, step: int, signal_name: str = "SIGKILL"):
        self.step = step
        self.signal_name = signal_name

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step == self.step:
            import os
            import signal

            os.kill(os.getpid(), getattr(signal, self.signal_name))
