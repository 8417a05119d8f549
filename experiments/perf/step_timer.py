"""A Lightning callback for the benchmarks: the wall-clock time at the end of every training batch
and the peak RSS of the run, written as JSON when training ends.

Added to a real run from the command line (experiments/perf must be on PYTHONPATH):
    python -m crossmodal.run experiment=distill_cpu +callbacks.step_timer._target_=step_timer.StepTimer \
        +callbacks.step_timer.out=/tmp/steps.json
Also the process CPU time (all threads) at the same points. Step k's interval (end of k-1 -> end of k) holds everything the framework does per step: fetching
the batch, hooks, forward/backward/optimiser, logging and the progress bar.
"""
from __future__ import annotations

import json
import resource
import time
from pathlib import Path

import lightning as L


def peak_rss_mb() -> dict[str, float]:
    """Peak resident set size (MB) of this process and of its largest waited-for child (loader workers)."""
    return {
        "self": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "children": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
    }


class StepTimer(L.Callback):
    def __init__(self, out: str) -> None:
        self.out = Path(out)
        self.ends: list[float] = []
        self.cpu: list[float] = []  # process CPU time (all threads): steadier than wall time on a loaded machine
        self.fit_start = 0.0

    def on_fit_start(self, trainer, pl_module) -> None:
        self.fit_start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.ends.append(time.perf_counter())
        self.cpu.append(time.process_time())

    def on_train_end(self, trainer, pl_module) -> None:
        # loader workers have exited by now (the epoch's iterator is done), so their peak is in RUSAGE_CHILDREN
        self.out.write_text(json.dumps({"ends": [t - self.fit_start for t in self.ends], "cpu": self.cpu, "rss_mb": peak_rss_mb()}))
