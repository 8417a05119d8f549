"""Training epoch vs the bare forward+backward of the same batches (issue 22, goal 3).

The demo's recipe (experiment=demo = distill_cpu on the shipped data: small_cnn on log-mel, batch 32,
3-s windows, 10 batches an epoch, 1 loader worker, validation every epoch) trained by Lightning as
``python -m crossmodal.run`` builds it (the run's Trainer, callbacks and loggers, a CSV logger instead
of W&B), against a bare loop over the very batches that run trained and validated on, kept in memory:
forward, backward and AdamW for the training batches, a no-grad forward for the validation batches.

Variants alternate (fit, bare, bare, fit, ...) ``--repeats`` times in one process, with the same
torch threads. Per run, the median over epochs 2.. (epoch 1 also starts the loader workers and is
printed on its own). An epoch is the time between two ``on_train_epoch_start`` hooks (the last one
ends at ``on_train_end``): its batches, validation, checkpoints, logging and every hook.

    .venv/bin/python experiments/perf/bench_epoch.py                     # data built in $TMPDIR/crossmodal_perf/demo
    .venv/bin/python experiments/perf/bench_epoch.py --data-dir data --epochs 6 --repeats 3

Prints one line per figure and the ratio ``epoch / bare train fwd+bwd`` against the target (<= 1.5x).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
TARGET = 1.5


def load_now() -> str:
    return "load average " + " ".join(f"{v:.2f}" for v in os.getloadavg())


def tree_cpu_seconds() -> float:
    """CPU time (user + system) of this process and all its descendants (loader workers, the forkserver)."""
    parents: dict[int, int] = {}
    times: dict[int, float] = {}
    tick = os.sysconf("SC_CLK_TCK")
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents[int(entry.name)] = int(fields[1])
        times[int(entry.name)] = (int(fields[11]) + int(fields[12])) / tick
    mine, total = {os.getpid()}, 0.0
    changed = True
    while changed:
        changed = False
        for pid, parent in parents.items():
            if parent in mine and pid not in mine:
                mine.add(pid)
                changed = True
    for pid in mine:
        total += times.get(pid, 0.0)
    return total


def compose(data_dir: Path, run_dir: Path, epochs: int, extra: list[str]):
    from crossmodal.run import _compose

    return _compose(["experiment=demo", f"paths.root_dir={run_dir}", f"paths.data_dir={data_dir}", f"paths.output_dir={run_dir}", "logger=csv",
                     f"trainer.max_epochs={epochs}", *extra], [])


def make_timer():
    import lightning as L

    class EpochTimer(L.Callback):
        """Wall times of the fit's epochs, its batches and validations; keeps the batches it saw."""

        def __init__(self) -> None:
            self.epoch_starts: list[float] = []
            self.cpu_marks: list[float] = []  # CPU seconds of the process tree at each epoch start (and the end)
            self.end = 0.0
            self.fetch: list[float] = []  # per epoch: time spent between batches (waiting for the loader, hooks)
            self.val: list[float] = []
            self.train_batches: list[list[Any]] = []
            self.val_batches: list[Any] = []
            self._last = 0.0
            self._val_start = 0.0

        def on_train_epoch_start(self, trainer, pl_module) -> None:
            self._last = time.perf_counter()
            self.epoch_starts.append(self._last)
            self.cpu_marks.append(tree_cpu_seconds())
            self.fetch.append(0.0)
            self.train_batches.append([])

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
            self.fetch[-1] += time.perf_counter() - self._last
            self.train_batches[-1].append(batch)

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            self._last = time.perf_counter()

        def on_validation_start(self, trainer, pl_module) -> None:
            self._val_start = time.perf_counter()

        def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0) -> None:
            if not trainer.sanity_checking and not self.val:  # the first real validation's batches
                self.val_batches.append(batch)

        def on_validation_end(self, trainer, pl_module) -> None:
            if not trainer.sanity_checking:
                self.val.append(time.perf_counter() - self._val_start)

        def on_train_end(self, trainer, pl_module) -> None:
            self.end = time.perf_counter()
            self.cpu_marks.append(tree_cpu_seconds())

        def epochs(self) -> list[float]:
            marks = self.epoch_starts + [self.end]
            return [b - a for a, b in zip(marks, marks[1:])]

    return EpochTimer()


def fit_run(data_dir: Path, epochs: int, extra: list[str], seed: int) -> dict[str, Any]:
    """One Lightning fit of the demo recipe (no test); per-epoch times and the batches it used."""
    import lightning as L

    from crossmodal.tasks.common import build_datamodule, build_model
    from crossmodal.tasks.run_folder import RunFolder, build_loggers

    with tempfile.TemporaryDirectory(prefix="bench_epoch_") as tmp:
        run_dir = Path(tmp)
        cfg = compose(data_dir, run_dir, epochs, extra)
        L.seed_everything(seed, workers=True, verbose=False)
        datamodule, model = build_datamodule(cfg), build_model(cfg)
        timer = make_timer()
        trainer = RunFolder(cfg, run_dir, build_loggers(cfg, run_dir)).build_trainer(callbacks=[timer])
        start = time.perf_counter()
        trainer.fit(model, datamodule=datamodule)
        total = time.perf_counter() - start
        del trainer
    steady = timer.epochs()[1:]
    return {"epochs": timer.epochs(), "epoch": statistics.median(steady), "first": timer.epochs()[0],
            "cpu": statistics.median(b - a for a, b in list(zip(timer.cpu_marks, timer.cpu_marks[1:]))[1:]),
            "fetch": statistics.median(timer.fetch[1:]), "val": statistics.median(timer.val[1:] or timer.val),
            "fit_total": total, "train_batches": timer.train_batches, "val_batches": timer.val_batches, "cfg": cfg}


def bare_run(cfg, train_batches: list[list[Any]], val_batches: list[Any], seed: int) -> dict[str, float]:
    """Forward+backward+AdamW over each epoch's training batches, and a no-grad forward over the
    validation batches, on a freshly built module of the same recipe."""
    import lightning as L
    import torch
    from perfkit import attach_optimizer, train_step

    from crossmodal.tasks.common import build_model

    L.seed_everything(seed, verbose=False)
    model = build_model(cfg)
    # the module's own optimiser and schedule (AdamW + one-cycle), stepped as Lightning would
    optimizer, scheduler = attach_optimizer(model, sum(len(b) for b in train_batches), len(train_batches))
    per_epoch, cpu = [], []
    for batches in train_batches:
        model.train()
        start, start_cpu = time.perf_counter(), time.process_time()
        for batch in batches:
            train_step(model, optimizer, scheduler, batch)
        per_epoch.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    model.eval()
    start = time.perf_counter()
    with torch.no_grad():
        for batch in val_batches:
            model(batch["wave"], batch["lengths"])
    val = time.perf_counter() - start
    return {"train": statistics.median(per_epoch[1:] or per_epoch), "cpu": statistics.median(cpu[1:] or cpu), "val": val}


def build_data(data_dir: Path) -> None:
    """The demo's distillation shards (pseudo-pairs + the shipped teacher's logits), built once."""
    from crossmodal.tasks.common import build_datamodule

    cfg = compose(data_dir, data_dir / "_unused_run", 1, [])
    build_datamodule(cfg).prepare_data()


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", type=Path, default=Path(tempfile.gettempdir()) / "crossmodal_perf" / "demo",
                        help="paths.data_dir holding (or to hold) the demo's shards")
    parser.add_argument("--epochs", type=int, default=5, help="epochs per fit (the first is reported apart)")
    parser.add_argument("--repeats", type=int, default=3, help="fits and bare runs each, alternated")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--json", type=Path, help="write the figures here")
    parser.add_argument("--flush-denormal", action="store_true", help="torch.set_flush_denormal(True) for fit and bare alike")
    parser.add_argument("overrides", nargs="*", help="extra run overrides (key=value) for the fit, e.g. data.num_workers=0")
    args = parser.parse_args(argv)
    import torch

    if args.flush_denormal:
        torch.set_flush_denormal(True)
    os.environ.setdefault("WANDB_MODE", "disabled")
    print(f"bench_epoch: torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} cpus; "
          f"data {args.data_dir}; overrides {args.overrides or 'none'}; flush denormals {args.flush_denormal}; {load_now()}", flush=True)
    build_data(args.data_dir)
    fits: list[dict[str, Any]] = []
    bares: list[dict[str, float]] = []
    last: dict[str, Any] | None = None
    for round_ in range(args.repeats):
        order = ("fit", "bare") if round_ % 2 == 0 else ("bare", "fit")
        for name in order:
            if name == "fit" or last is None:
                last = fit_run(args.data_dir, args.epochs, args.overrides, args.seed)
                fits.append({k: v for k, v in last.items() if k not in ("train_batches", "val_batches", "cfg")})
                print(f"  fit  {len(fits)}: epochs " + " ".join(f"{t:.2f}" for t in last["epochs"])
                      + f" s (CPU {last['cpu']:.2f} s an epoch); between batches {last['fetch']:.2f} s, validation {last['val']:.2f} s an epoch; {load_now()}", flush=True)
                if name == "bare":  # the bare run needs a fit's batches first
                    continue
            if name == "bare":
                bares.append(bare_run(last["cfg"], last["train_batches"], last["val_batches"], args.seed))
                print(f"  bare {len(bares)}: train fwd+bwd {bares[-1]['train']:.2f} s (CPU {bares[-1]['cpu']:.2f} s), validation forward "
                      f"{bares[-1]['val']:.2f} s an epoch; {load_now()}", flush=True)
    epoch = statistics.median(f["epoch"] for f in fits)
    bare_train = statistics.median(b["train"] for b in bares)
    bare_val = statistics.median(b["val"] for b in bares)
    result = {
        "epoch_s": epoch, "first_epoch_s": statistics.median(f["first"] for f in fits),
        "between_batches_s": statistics.median(f["fetch"] for f in fits), "validation_s": statistics.median(f["val"] for f in fits),
        "bare_train_s": bare_train, "bare_val_s": bare_val, "ratio": epoch / bare_train,
        "epoch_cpu_s": statistics.median(f["cpu"] for f in fits), "bare_train_cpu_s": statistics.median(b["cpu"] for b in bares),
        "ratio_with_val": epoch / (bare_train + bare_val), "fits": len(fits), "bares": len(bares), "load": os.getloadavg(),
        "overrides": args.overrides,
    }
    met = "met" if result["ratio"] <= TARGET else "NOT met"
    print(f"epoch (Lightning, validation included) {epoch:.2f} s vs bare train fwd+bwd of the same batches {bare_train:.2f} s "
          f"-> {result['ratio']:.2f}x (target <= {TARGET}x: {met}); vs bare train + validation forward "
          f"{bare_train + bare_val:.2f} s -> {result['ratio_with_val']:.2f}x", flush=True)
    print(f"  CPU seconds an epoch (process tree: main + loader workers) {result['epoch_cpu_s']:.2f} vs bare train "
          f"{result['bare_train_cpu_s']:.2f} -> {result['epoch_cpu_s'] / result['bare_train_cpu_s']:.2f}x", flush=True)
    print(f"  per epoch: between batches {result['between_batches_s']:.2f} s, validation {result['validation_s']:.2f} s "
          f"(bare forward {bare_val:.2f} s); first epoch {result['first_epoch_s']:.2f} s; {load_now()}", flush=True)
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
