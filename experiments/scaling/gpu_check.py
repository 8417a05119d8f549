"""`make gpu-check`: is this GPU machine ready for the paper's run? One command, one JSON (issue 21, item 5).

    make gpu-check        # = python experiments/scaling/gpu_check.py -> data/gpu_check/gpu_check.json
    python experiments/scaling/gpu_check.py --out gpu_check.json --voxshaped /data/voxshaped-10k

What it runs, each as a user types it (`python -m crossmodal.run ...` in a subprocess, csv logger):
  1. a short `experiment=teacher_senet50` fit on FER+ faces shipped with the clone (the demo's
     validation/test faces and the test suite's training sample), `trainer=gpu`;
  2. `experiment=distill_senet` on a VoxCeleb-shaped set (experiments/scaling/make_voxshaped.py;
     10,000 segments, built on first use into data/voxshaped-10k unless --voxshaped names one) with
     `trainer.gpus=1`, bf16 mixed precision on and off, and with all visible GPUs when there are several;
  3. the same runs on the CPU at tiny sizes, for the side-by-side figures;
  4. the distillation loader alone (decode, crop, aggregate; the front-end runs on the device) with
     the run's loader workers, so the JSON says whether the loader or the step is the bottleneck.

Each training run carries a callback (:class:`StepTimer`) that times the step itself (device
synchronised before and after) apart from the wait for the next batch, and reads the peak GPU memory.
The JSON: per run steps/s, step samples/s, end-to-end samples/s, loader wait per step, peak GPU memory,
and the loader's samples/s. Without a GPU everything runs on the CPU at tiny sizes and the JSON says
``"gpu": false`` (that path is what tests/test_gpu_check.py runs).

Why a script here and not in the package: it drives the checkout's entry point and data (the test
sample of FER+ training faces, the generator of experiments/scaling) and writes a report for the
people setting the machine up; a user of the installed package trains through `crossmodal.run`.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import lightning as L

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
DEMO = ROOT / "crossmodal" / "assets" / "demo"
WARMUP_STEPS = 2  # steps left out of the step timing (cudnn autotune, allocator growth, first compile)


# ----------------------------------------------------------------------------- the callback


class StepTimer(L.Callback):
    """Times each training step (device synchronised) and the wait for its batch; writes ``out`` at fit end.

    Added to a run with ``+callbacks.gpu_check._target_=gpu_check.StepTimer +callbacks.gpu_check.out=FILE``
    (``experiments/scaling`` on PYTHONPATH). Rank r>0 writes ``FILE.rank<r>``.
    """

    def __init__(self, out: str) -> None:
        self.out = out
        self.steps: list[float] = []
        self.waits: list[float] = []
        self.samples: list[int] = []
        self._batch_end: float | None = None
        self._start = 0.0
        self._first: float | None = None
        self._last = 0.0

    @staticmethod
    def _sync(pl_module: L.LightningModule) -> None:
        import torch

        if pl_module.device.type == "cuda":
            torch.cuda.synchronize(pl_module.device)

    def on_train_start(self, trainer, pl_module) -> None:
        import torch

        if pl_module.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(pl_module.device)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._sync(pl_module)
        self._start = time.perf_counter()
        if self._batch_end is not None:
            self.waits.append(self._start - self._batch_end)
        if self._first is None:
            self._first = self._start

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._sync(pl_module)
        now = time.perf_counter()
        self.steps.append(now - self._start)
        self.samples.append(_batch_size(batch))
        self._batch_end = self._last = now

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self._batch_end = None  # validation between epochs is not a loader wait

    def on_fit_end(self, trainer, pl_module) -> None:
        import torch

        timed = self.steps[WARMUP_STEPS:] or self.steps
        sizes = self.samples[WARMUP_STEPS:] or self.samples
        waits = self.waits[WARMUP_STEPS:] or self.waits
        step = statistics.median(timed) if timed else float("nan")
        batch = statistics.median(sizes) if sizes else 0
        wait = statistics.median(waits) if waits else 0.0
        cuda = pl_module.device.type == "cuda"
        result = {
            "device": str(pl_module.device), "world_size": trainer.world_size, "precision": str(trainer.precision),
            "steps": len(self.steps), "timed_steps": len(timed), "batch_per_device": batch,
            "step_seconds_median": step, "steps_per_s": 1.0 / step if step else None,
            "step_samples_per_s": batch / step * trainer.world_size if step else None,
            "loader_wait_seconds_median": wait,
            "end_to_end_samples_per_s": (batch * trainer.world_size / (step + wait)) if step else None,
            "peak_gpu_memory_bytes": int(torch.cuda.max_memory_allocated(pl_module.device)) if cuda else None,
        }
        path = Path(self.out if trainer.global_rank == 0 else f"{self.out}.rank{trainer.global_rank}")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(result, indent=1))


def _batch_size(batch: Any) -> int:
    if isinstance(batch, dict):
        for key in ("wave", "image"):
            if key in batch:
                return int(batch[key].shape[0])
        batch = next(v for v in batch.values() if hasattr(v, "shape"))
    if isinstance(batch, (list, tuple)):
        batch = batch[0]
    return int(batch.shape[0])


# ----------------------------------------------------------------------------- the runs


def ferplus_root(work: Path) -> Path:
    """FER+ faces a clone has: the demo's FER2013Valid/Test and the test sample's FER2013Train."""
    root = work / "ferplus"
    root.mkdir(parents=True, exist_ok=True)
    for folder, source in (("FER2013Train", ROOT / "tests" / "data" / "ferplus_sample" / "FER2013Train"),
                           ("FER2013Valid", DEMO / "ferplus" / "FER2013Valid"), ("FER2013Test", DEMO / "ferplus" / "FER2013Test")):
        if not source.is_dir():
            raise FileNotFoundError(f"{source} is missing: gpu-check runs from a clone of the repository")
        if not (root / folder).exists():
            os.symlink(source, root / folder, target_is_directory=True)
    return root


def run(name: str, overrides: list[str], work: Path, timeout: float) -> dict[str, Any]:
    """One `python -m crossmodal.run` job with the step timer; its timings, wall time and exit status."""
    out = work / "timings" / f"{name}.json"
    run_dir = work / "runs" / name
    env = dict(os.environ, WANDB_MODE="disabled", CROSSMODAL_NO_PROGRESS="1",
               PYTHONPATH=os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep))
    cmd = [sys.executable, "-m", "crossmodal.run", *overrides, "logger=csv", "report=false", "test_after_fit=false",
           f"hydra.run.dir={run_dir}", f"paths.data_dir={work / 'data'}",
           "+callbacks.gpu_check._target_=gpu_check.StepTimer", f"+callbacks.gpu_check.out={out}"]
    print(f"gpu-check: {name}: {' '.join(cmd[1:])}", flush=True)
    started = time.perf_counter()
    try:
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
        status, tail = proc.returncode, (proc.stderr or proc.stdout)[-3000:]
    except subprocess.TimeoutExpired:
        status, tail = "timeout", f"no result within {timeout:.0f} s"
    result: dict[str, Any] = {"command": "python " + " ".join(cmd[1:]), "wall_seconds": round(time.perf_counter() - started, 1),
                              "ok": status == 0}
    if out.exists() and status == 0:
        result.update(json.loads(out.read_text()))
    else:
        result["error"] = tail
    print(f"gpu-check: {name}: {'ok' if result['ok'] else 'FAILED'} in {result['wall_seconds']} s"
          + (f", {result.get('steps_per_s', 0):.2f} steps/s" if result.get("steps_per_s") else ""), flush=True)
    return result


def loader_rate(shards: Path, workers: int, batch: int, batches: int) -> dict[str, Any]:
    """The distillation training loader alone: samples/s over ``batches`` batches after the first."""
    from crossmodal.data.distill import DistillDataModule

    dm = DistillDataModule(shards=str(shards), num_workers=workers, batch_size=batch, shuffle_buffer=max(2 * batch, 64),
                           batches_per_epoch=batches + 1)
    dm.prepare_data()
    loader = dm.train_dataloader()
    started = time.perf_counter()
    iterator = iter(loader)
    next(iterator)
    first = time.perf_counter()
    count = sum(int(b["wave"].shape[0]) for b in iterator)
    seconds = time.perf_counter() - first
    return {"workers": workers, "batch": batch, "batches": batches, "first_batch_seconds": round(first - started, 3),
            "samples_per_s": round(count / seconds, 1), "samples_per_s_per_worker": round(count / seconds / max(1, workers), 1)}


RUNS = ("teacher_senet50", "distill_senet_bf16-mixed", "distill_senet_32-true")


def check(out: Path, work: Path, voxshaped: Path | None, *, force_cpu: bool = False, timeout: float = 1800,
          only: list[str] | None = None) -> dict[str, Any]:
    import torch

    gpus = 0 if force_cpu else torch.cuda.device_count()
    tiny = gpus == 0
    work.mkdir(parents=True, exist_ok=True)
    if tiny:
        print("gpu-check: NO GPU visible (torch.cuda.device_count() == 0): running the same path on the CPU at tiny "
              "sizes; the figures say nothing about a GPU", flush=True)
    ferplus = ferplus_root(work)
    n = 48 if tiny else 10_000
    if voxshaped is None:
        voxshaped = work / "data" / f"voxshaped-{n}"
        sys.path.insert(0, str(HERE))
        from make_voxshaped import make_voxshaped

        print(f"gpu-check: VoxCeleb-shaped set of {n} segments in {voxshaped} (built on first use)", flush=True)
        kwargs = dict(max_files=24, identities=6, samples_per_shard=8, max_faces=256) if tiny else dict(workers=os.cpu_count() or 1)
        make_voxshaped(voxshaped, n, speech=[DEMO / "emodb" / "wav"] if tiny else None,
                       ferplus=DEMO / "ferplus" if tiny else None, **kwargs)

    if tiny:  # every size small enough for a test on 2 CPU cores; the same experiments and keys
        steps, workers = 3, 1
        teacher = ["data.batch_size=4", "data.eval_batch_size=8", "data.preprocess.resize=64", "data.preprocess.input_size=64",
                   "data.num_workers=0"]
        distill = ["data.global_batch_size=null", "data.batch_size=4", "data.eval_batch_size=4", f"data.num_workers={workers}",
                   "data.shuffle_buffer=16", "data.window_seconds=1.0", "data.max_seconds=2.0"]
    else:
        steps, workers = 50, 6
        teacher, distill = ["data.num_workers=6"], ["data.num_workers=6"]
    common = ["trainer.max_epochs=1", "trainer.limit_val_batches=1", "trainer.num_sanity_val_steps=0"]
    teacher_run = ["experiment=teacher_senet50", f"data.source={ferplus}", *common, *teacher]
    distill_run = ["experiment=distill_senet", f"data.shards={voxshaped}", "data.epoch_fraction=null", *common, *distill]
    device = ["trainer.gpus=1"] if gpus else ["trainer=default"]
    per_epoch = f"data.batches_per_epoch={steps}"
    wanted = set(only or RUNS)
    runs: dict[str, Any] = {}
    if "teacher_senet50" in wanted:
        runs["teacher_senet50"] = run("teacher_senet50", [*teacher_run, per_epoch, *device, "trainer.precision=bf16-mixed"],
                                      work, timeout)
    for precision in ("bf16-mixed", "32-true"):
        if f"distill_senet_{precision}" in wanted:
            runs[f"distill_senet_{precision}"] = run(f"distill_senet_{precision}", [
                *distill_run, per_epoch, *device, f"trainer.precision={precision}"], work, timeout)
    if gpus > 1:
        runs[f"distill_senet_bf16-mixed_{gpus}gpus"] = run(f"distill_senet_bf16-mixed_{gpus}gpus", [
            *distill_run, per_epoch, f"trainer.gpus={gpus}", "trainer.precision=bf16-mixed"], work, timeout)
    cpu: dict[str, Any] = {}
    if not tiny:  # the CPU figures of the same runs, a few steps each
        few = ["data.batches_per_epoch=3", "trainer=default"]
        cpu["teacher_senet50"] = run("cpu_teacher_senet50", [*teacher_run, *few, "data.batch_size=16"], work, timeout)
        cpu["distill_senet_32-true"] = run("cpu_distill_senet", [*distill_run, *few, "data.global_batch_size=null",
                                                                 "data.batch_size=16"], work, timeout)
    loader = loader_rate(voxshaped, workers, 4 if tiny else 64, 4 if tiny else 40)
    result = {
        "gpu": bool(gpus), "gpus": gpus,
        "gpu_names": [torch.cuda.get_device_name(i) for i in range(gpus)],
        "mode": "cpu-tiny: no GPU here; the same path at tiny sizes, figures meaningless for a GPU" if tiny else "gpu",
        "runs_asked": sorted(wanted),
        "torch": torch.__version__, "cuda": torch.version.cuda, "lightning": L.__version__,
        "host": platform.node(), "cpus": os.cpu_count(), "load_average": list(os.getloadavg()),
        "date": time.strftime("%Y-%m-%d %H:%M:%S"), "voxshaped": str(voxshaped),
        "runs": runs, "cpu_runs": cpu if cpu else "the runs above are the CPU runs", "distill_loader": loader,
    }
    step_rate = (runs.get("distill_senet_bf16-mixed") or runs.get("distill_senet_32-true") or {}).get("step_samples_per_s")
    if step_rate:
        result["loader_workers_needed_per_device"] = round(step_rate / max(1e-9, loader["samples_per_s_per_worker"]), 2)
    result["ok"] = all(r.get("ok") for r in [*runs.values(), *(cpu.values() if cpu else [])])
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    print(f"gpu-check: {'all runs ok' if result['ok'] else 'SOME RUNS FAILED'}; results in {out}", flush=True)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "data" / "gpu_check" / "gpu_check.json")
    parser.add_argument("--work", type=Path, default=ROOT / "data" / "gpu_check", help="run folders, FER+ links, shards")
    parser.add_argument("--voxshaped", type=Path, default=None, help="an existing VoxCeleb-shaped set (default: build one)")
    parser.add_argument("--cpu", action="store_true", help="ignore the GPUs: the tiny CPU path")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds per run")
    parser.add_argument("--only", nargs="+", choices=RUNS, default=None, help="run only these (default: all)")
    args = parser.parse_args(argv)
    result = check(args.out, args.work, args.voxshaped, force_cpu=args.cpu, timeout=args.timeout, only=args.only)
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
