"""Random streams per stage: preparing data must not move the numbers training draws.

A run seeds its process once; building a cached input (pseudo-pairs, teacher logits, FER+ shards) in
the run would consume numbers from that stream (a network initialised before its weights load, a
loader's worker seed), so a run that built its cache would train on other numbers than one that reused it.
"""
from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
from lightning.fabric.utilities.seed import _collect_rng_states, _set_rng_states
from lightning.pytorch.utilities.seed import isolate_rng

log = logging.getLogger(__name__)
_SEED_ENV = ("PL_GLOBAL_SEED", "PL_SEED_WORKERS")  # what Lightning's seed_everything records for the workers


@contextmanager
def isolated_rng() -> Iterator[None]:
    """Run the block without moving this process's random streams: Lightning's ``isolate_rng`` (Python,
    NumPy, torch CPU and CUDA) plus the seed Lightning recorded for loader workers in the environment."""
    env = {key: os.environ.get(key) for key in _SEED_ENV}
    try:
        with isolate_rng():
            yield
    finally:
        for key, value in env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def rng_states() -> dict:
    """This process's torch (CPU, CUDA), NumPy and Python random states, as Lightning collects them, with
    NumPy's key array as a tensor so that a checkpoint holding them loads with ``weights_only=True``."""
    state = _collect_rng_states(include_cuda=torch.cuda.is_available())
    kind, keys, *rest = state["numpy"]
    state["numpy"] = [kind, torch.from_numpy(keys.astype(np.int64)), *rest]
    return state


def set_rng_states(state: dict) -> None:
    """Put back what :func:`rng_states` took."""
    kind, keys, *rest = state["numpy"]
    _set_rng_states({**state, "numpy": (kind, keys.numpy().astype(np.uint32), *rest)})


class ResumedRng:
    """LightningModule mixin: a checkpoint keeps every process's random states, and a resumed run puts them back
    right before its first training step, so that the step's draws (dropout, dither, SpecAugment, mixup) continue
    where they stopped; whatever drew numbers since the checkpoint was loaded (loaders, a sanity check) cannot move
    them. A module with its own checkpoint hooks calls these through ``super()``."""

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        state = rng_states()
        states: list[Any] = [state]  # every process's, by rank (all ranks save: the gather is collective)
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            states = [None] * torch.distributed.get_world_size()
            torch.distributed.all_gather_object(states, state)
        checkpoint["rng_states"] = states

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self._resumed_rng = checkpoint.get("rng_states")

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        if getattr(self, "_resumed_rng", None):
            states, self._resumed_rng = self._resumed_rng, None
            if len(states) != self.trainer.world_size:
                log.warning("the checkpoint holds the random states of %d processes, this run has %d: not restored",
                            len(states), self.trainer.world_size)
                return
            set_rng_states(states[self.trainer.global_rank])
