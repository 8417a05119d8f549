"""The benchmarks P1-P5 (P6 is bench_extract.py). Each returns a dict of figures and prints its lines.

Every comparison is measured side by side in one run: the two variants alternate (A B B A ...)
``repeats`` times and medians are reported, because the machine is shared and its load changes
from one second to the next. Sizes come from a :class:`Sizes` (full or ``--quick``).
"""
from __future__ import annotations

import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
CONF_DIR = REPO / "conf"
PY = sys.executable
EXPERIMENT = "distill_cpu"


@dataclass
class Sizes:
    repeats: int = 3
    p1_steps: int = 25           # training steps per P1 run (distill_cpu: batch 32)
    p1_warmup: int = 5           # steps left out of the timing (workers, shuffle buffer, first allocations)
    p2_batches: int = 6          # loader batches timed per worker count (after the prefetch queue drains)
    p2_steps: int = 4            # in-memory training steps timed
    p3_batches: int = 2          # batches per P3 "epoch"
    p3_batch: int = 32
    p3_r50_batch: int = 4        # ResNet-50 online: a smaller batch (the teacher sees ~17 faces per sample)
    p3_resnet50: bool = True     # also the timm ResNet-50 teacher (random weights)
    p4_n: int = 320              # samples in P4's small epoch (10x for the large one)
    p5_batches: int = 3
    p6_segments: int = 16
    p6_repeats: int = 2


QUICK = Sizes(repeats=1, p1_steps=8, p1_warmup=2, p2_batches=2, p2_steps=2, p3_batches=1, p3_batch=16, p3_r50_batch=2,
              p4_n=64, p5_batches=1, p6_segments=4, p6_repeats=1)
TINY = Sizes(repeats=1, p1_steps=4, p1_warmup=1, p2_batches=1, p2_steps=1, p3_batches=1, p3_batch=4, p3_r50_batch=2, p3_resnet50=False,
             p4_n=32, p5_batches=1, p6_segments=2, p6_repeats=1)


# ----------------------------------------------------------------------------------------- helpers


def median(values) -> float:
    return float(statistics.median(values))


def alternate(variants: dict[str, Callable[[], float]], repeats: int) -> dict[str, list[float]]:
    """Run each variant ``repeats`` times, alternating the order each round (A B, B A, ...)."""
    names = list(variants)
    results: dict[str, list[float]] = {name: [] for name in names}
    for round_ in range(repeats):
        for name in names if round_ % 2 == 0 else names[::-1]:
            results[name].append(variants[name]())
    return results


def machine() -> str:
    """The CPU model, core count, GPU and torch thread count, for every benchmark's header line."""
    model = platform.processor() or "?"
    try:
        for line in subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines():
            if line.startswith("Model name:"):
                model = line.split(":", 1)[1].strip()
    except OSError:
        pass
    import torch

    gpu = "no GPU" if not torch.cuda.is_available() else torch.cuda.get_device_name(0)
    return f"{os.cpu_count()} cores ({model}), {gpu}, torch {torch.__version__}, {torch.get_num_threads()} torch threads"


def load_now() -> str:
    return "load average " + " ".join(f"{v:.2f}" for v in os.getloadavg())


def compose(overrides: list[str]):
    """The run config ``python -m crossmodal.run <overrides>`` would use (outside a Hydra run)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from crossmodal.config.schema import register_configs

    register_configs()
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            return hydra_compose(config_name="run", overrides=overrides)
    finally:
        GlobalHydra.instance().clear()


def base_overrides(work: Path, shards: str, extra: list[str] = ()) -> list[str]:
    # The benchmark's shards are made by benchdata, not by distill_cpu's pseudo-pair recipe.
    return [f"experiment={EXPERIMENT}", f"paths.root_dir={work}", f"data.shards={shards}", "data.prepare=null", *extra]


def build(cfg):
    from hydra.utils import instantiate

    return instantiate(cfg.data, _convert_="all"), instantiate(cfg.model, _convert_="all")


def attach_optimizer(module, steps: int, max_epochs: int = 1):
    """The module's own configure_optimizers() (same optimiser and schedule as in the Lightning run)."""
    module.trainer = SimpleNamespace(estimated_stepping_batches=steps, max_epochs=max_epochs)
    config = module.configure_optimizers()
    module._trainer = None
    if isinstance(config, dict):
        return config["optimizer"], config["lr_scheduler"]["scheduler"]
    return config, None


def train_step(module, optimizer, scheduler, batch) -> torch.Tensor:
    """What Lightning's automatic optimisation does for one batch, without the framework."""
    optimizer.zero_grad(set_to_none=True)
    parts, _, _ = module.batch_loss(batch)
    parts["loss"].backward()
    optimizer.step()
    if scheduler is not None:
        scheduler.step()
    return parts["loss"].detach()


def per_step(ends: list[float], warmup: int) -> float:
    """Median seconds per step over the steps after ``warmup`` (step k = end of step k-1 -> end of step k).

    The median, not the mean: on a shared machine a run's steps switch between regimes (another
    process becomes runnable and torch's 2 threads wait on each other: 0.2 s -> 1.5 s per step), and
    the median keeps the regime most of the run's steps were in.
    """
    return float(statistics.median(b - a for a, b in zip(ends[warmup - 1:], ends[warmup:])))


def fmt_ratio(value: float, target: str, met: bool | None) -> str:
    verdict = "" if met is None else ("  MET" if met else "  MISSED")
    return f"{value:.2f}x (target {target}){verdict}"


# ----------------------------------------------------------------------------------------- P1


P1_EXTRA = ["trainer.max_epochs=1", "trainer.limit_val_batches=0", "trainer.num_sanity_val_steps=0", "test_after_fit=false",
            "callbacks.model_checkpoint.monitor=null", "logger=csv"]


def p1_lightning_run(work: Path, shards: str, steps: int, tag: str) -> dict[str, Any]:
    """One `python -m crossmodal.run` training run of ``steps`` steps; the StepTimer callback times its steps."""
    run_dir = work / "p1" / tag
    out = run_dir / "steps.json"
    run_dir.mkdir(parents=True, exist_ok=True)
    overrides = base_overrides(work, shards, P1_EXTRA + [f"data.batches_per_epoch={steps}", f"hydra.run.dir={run_dir}",
                                                          "+callbacks.step_timer._target_=step_timer.StepTimer",
                                                          f"+callbacks.step_timer.out={out}"])
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]), WANDB_MODE="disabled")
    started = time.perf_counter()
    proc = subprocess.run([PY, "-m", "crossmodal.run", *overrides], cwd=REPO, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if proc.returncode != 0 or not out.exists():
        raise RuntimeError(f"P1 Lightning run failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    data = json.loads(out.read_text())
    data["wall"] = wall
    return data


def p1_bare_run(work: Path, shards: str, steps: int, out: Path) -> None:
    """Child process: the same config's DataModule and module, trained by a plain PyTorch loop."""
    import lightning as L

    cfg = compose(base_overrides(work, shards, [o for o in P1_EXTRA if not o.startswith("logger")] + [f"data.batches_per_epoch={steps}"]))
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    started = time.perf_counter()
    datamodule, module = build(cfg)
    optimizer, scheduler = attach_optimizer(module, steps, max_epochs=1)
    module.train()
    ends, cpu = [], []
    for batch in datamodule.train_dataloader():
        train_step(module, optimizer, scheduler, batch)
        ends.append(time.perf_counter() - started)
        cpu.append(time.process_time())
    out.write_text(json.dumps({"ends": ends, "cpu": cpu, "rss_mb": {"self": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}}))


def p1(work: Path, data: dict[str, Any], sizes: Sizes) -> dict[str, Any]:
    shards = data["distill"]
    steps, warmup = sizes.p1_steps, sizes.p1_warmup
    runs: dict[str, list[dict[str, Any]]] = {"lightning": [], "bare": []}
    counter = iter(range(1000))

    def lightning() -> float:
        result = p1_lightning_run(work, shards, steps, f"lightning-{next(counter)}")
        runs["lightning"].append(result)
        return per_step(result["ends"], warmup)

    def cpu_per_step(kind: str) -> list[float]:
        return [per_step(r["cpu"], warmup) for r in runs[kind]]

    def bare() -> float:
        out = work / "p1" / f"bare-{next(counter)}.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        started = time.perf_counter()
        proc = subprocess.run([PY, str(HERE / "run_all.py"), "--child", "p1_bare", "--work-dir", str(work), "--shards", shards,
                               "--steps", str(steps), "--out", str(out)], cwd=REPO, capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"P1 bare loop failed:\n{proc.stderr[-3000:]}")
        result = json.loads(out.read_text())
        result["wall"] = time.perf_counter() - started
        runs["bare"].append(result)
        return per_step(result["ends"], warmup)

    times = alternate({"lightning": lightning, "bare": bare}, sizes.repeats)
    paired = [a / b for a, b in zip(times["lightning"], times["bare"])]
    ratio = median(paired)
    cpu = {kind: cpu_per_step(kind) for kind in runs}
    cpu_ratio = median([a / b for a, b in zip(cpu["lightning"], cpu["bare"])])
    out = {
        "steps": steps, "warmup": warmup, "batch_size": 32,
        "lightning_s_per_step": [round(t, 4) for t in times["lightning"]],
        "bare_s_per_step": [round(t, 4) for t in times["bare"]],
        "paired_ratios": [round(r, 3) for r in paired],
        "ratio": round(ratio, 3),
        "ratio_of_medians": round(median(times["lightning"]) / median(times["bare"]), 3),
        "lightning_cpu_s_per_step": [round(t, 4) for t in cpu["lightning"]],
        "bare_cpu_s_per_step": [round(t, 4) for t in cpu["bare"]],
        "cpu_ratio": round(cpu_ratio, 3),
        "lightning_wall_s": [round(r["wall"], 1) for r in runs["lightning"]],
        "bare_wall_s": [round(r["wall"], 1) for r in runs["bare"]],
        "target": 1.05, "met": ratio <= 1.05, "load": load_now(),
    }
    print(f"P1 framework overhead: python -m crossmodal.run (Lightning+Hydra+csv logger) vs bare PyTorch loop, "
          f"{EXPERIMENT} student, batch 32, median of {steps - warmup} timed steps, {sizes.repeats} runs each: "
          f"{median(times['lightning']) * 1000:.0f} vs {median(times['bare']) * 1000:.0f} ms/step -> "
          f"{fmt_ratio(ratio, '<= 1.05x', out['met'])}; main-process CPU time per step {median(cpu['lightning']) * 1000:.0f} vs "
          f"{median(cpu['bare']) * 1000:.0f} ms -> {cpu_ratio:.2f}x; start-up (process wall) {median(out['lightning_wall_s']):.1f} s vs "
          f"{median(out['bare_wall_s']):.1f} s")
    return out


# ----------------------------------------------------------------------------------------- P2


# shuffle_buffer=64: the buffer only delays the first batch (it fills before anything is yielded); the rate after is the same
P2_DATA = ["data.batch_size=64", "data.window_seconds=4.024", "data.shuffle_buffer=64"]


def step_flops(module, batch) -> float:
    """FLOPs of one training step (forward + backward) on ``batch``, from torch's FlopCounterMode."""
    from torch.utils.flop_counter import FlopCounterMode

    module.train()
    with FlopCounterMode(display=False) as counter:
        parts, _, _ = module.batch_loss(batch)
        parts["loss"].backward()
    module.zero_grad(set_to_none=True)
    return float(counter.get_total_flops())


def p2(work: Path, data: dict[str, Any], sizes: Sizes) -> dict[str, Any]:
    import lightning as L

    cfg = compose(base_overrides(work, data["distill"], P2_DATA))
    L.seed_everything(0, verbose=False)
    batch_size = int(cfg.data.batch_size)
    _, module = build(cfg)

    from hydra.utils import instantiate

    data_cfgs = {w: compose(base_overrides(work, data["distill"], P2_DATA + [f"data.num_workers={w}", "data.batches_per_epoch=1000"])).data
                 for w in (0, 1, 2)}

    def loader(workers: int):
        return instantiate(data_cfgs[workers], _convert_="all").train_dataloader()

    # the in-memory batches the step is timed on
    memory = []
    for batch in loader(0):
        memory.append(batch)
        if len(memory) == 2:
            break
    optimizer, scheduler = attach_optimizer(module, 10_000)
    module.train()
    train_step(module, optimizer, scheduler, memory[0])  # warm-up

    def loader_rate(workers: int) -> Callable[[], float]:
        def run() -> float:
            # Skip the batches the workers prefetched while the first one was made; then time production.
            skip = 2 * workers + 1
            ticks = []
            for index, _ in enumerate(loader(workers)):
                ticks.append(time.perf_counter())
                if index + 1 == skip + sizes.p2_batches:
                    break
            return sizes.p2_batches * batch_size / (ticks[-1] - ticks[skip - 1])
        return run

    def step_rate() -> float:
        started = time.perf_counter()
        for index in range(sizes.p2_steps):
            train_step(module, optimizer, scheduler, memory[index % len(memory)])
        return sizes.p2_steps * batch_size / (time.perf_counter() - started)

    def fed_rate(workers: int) -> Callable[[], float]:
        def run() -> float:
            skip = 2 * workers + 1
            ticks = []
            for index, batch in enumerate(loader(workers)):
                train_step(module, optimizer, scheduler, batch)
                ticks.append(time.perf_counter())
                if index + 1 == skip + sizes.p2_steps:
                    break
            return sizes.p2_steps * batch_size / (ticks[-1] - ticks[skip - 1])
        return run

    variants: dict[str, Callable[[], float]] = {"step": step_rate}
    for workers in (0, 1, 2):
        variants[f"loader_w{workers}"] = loader_rate(workers)
    variants["fed_w1"] = fed_rate(1)
    rates = alternate(variants, sizes.repeats)
    step = median(rates["step"])
    out: dict[str, Any] = {"batch_size": batch_size, "window_s": float(cfg.data.window_seconds), "step_samples_per_s": round(step, 1),
                           "rates": {k: [round(v, 1) for v in vs] for k, vs in rates.items()}, "load": load_now()}
    lines = []
    for workers in (0, 1, 2):
        loader_med = median(rates[f"loader_w{workers}"])
        ratio = median([a / b for a, b in zip(rates[f"loader_w{workers}"], rates["step"])])
        out[f"workers_{workers}"] = {"loader_samples_per_s": round(loader_med, 1), "step_samples_per_s": round(step, 1),
                                     "loader_over_step": round(ratio, 3)}
        lines.append(f"  workers={workers}: loader {loader_med:.0f} samples/s vs training step {step:.0f} samples/s -> loader/step {ratio:.2f}x")
    fed_ratio = median([a / b for a, b in zip(rates["fed_w1"], rates["step"])])
    out["workers_1"].update(fed_step_samples_per_s=round(median(rates["fed_w1"]), 1), fed_over_memory=round(fed_ratio, 3))
    lines.append(f"  training fed by 1 worker: {median(rates['fed_w1']):.0f} samples/s = {fed_ratio:.2f}x the in-memory step rate "
                 "(the worker shares the 2 cores with the step's 2 threads)")
    w1 = out["workers_1"]
    out["met"] = w1["loader_over_step"] >= 1.0
    # On paper: the FLOPs of one step -> the step time a GPU would take -> the loader rate it would need.
    flops_small = step_flops(module, memory[0])
    vgg_cfg = compose(base_overrides(work, data["distill"], P2_DATA + ["student=vggvox"]))
    _, vgg = build(vgg_cfg)
    two = {k: (v[:2] if isinstance(v, list) or (isinstance(v, torch.Tensor) and v.dim()) else v) for k, v in memory[0].items()}
    flops_vgg = step_flops(vgg, two) * batch_size / 2
    out["flops_per_step"] = {EXPERIMENT: flops_small, "vggvox": flops_vgg}
    gpu = {}
    loader_w1 = w1["loader_samples_per_s"]
    for name, flops in out["flops_per_step"].items():
        # a V100-class GPU sustaining ~10 TFLOP/s fp32 on convolutions; no step is faster than ~5 ms (launch latency)
        step_s = max(flops / 10e12, 0.005)
        need = batch_size / step_s
        gpu[name] = {"gflops_per_step": round(flops / 1e9, 1), "gpu_step_ms": round(step_s * 1000, 1), "samples_per_s_needed": round(need),
                     "needed_over_1_worker": round(need / loader_w1, 1)}
    out["gpu_on_paper"] = gpu
    print(f"P2 input pipeline (FLAC decode, {out['window_s']:g} s crop, logit max, collate) vs {EXPERIMENT} student training step, "
          f"batch {batch_size}, CPU:")
    for line in lines:
        print(line)
    print(f"  target: 1 worker keeps up with the step (loader/step >= 1x): "
          f"{'MET' if out['met'] else 'MISSED'}")
    for name, g in gpu.items():
        print(f"  on paper, GPU: {name} step = {g['gflops_per_step']} GFLOP (fwd+bwd, FlopCounterMode; STFT not counted) -> "
              f"~{g['gpu_step_ms']} ms at 10 TFLOP/s -> needs {g['samples_per_s_needed']} samples/s = "
              f"{g['needed_over_1_worker']}x one CPU worker here")
    return out


# ----------------------------------------------------------------------------------------- P3


def resnet50_teacher():
    """A timm ResNet-50 with random weights (no download) behind the paper's 224 px, 3-channel preprocessing."""
    from crossmodal.models.face import PreprocessSpec, create_face_backbone
    from crossmodal.models.teacher import FaceTeacher

    spec = PreprocessSpec.from_config({"channels": 3, "resize": 224, "input_size": 224, "mean": [128.0], "std": [64.0]})
    net = create_face_backbone("resnet50", pretrained=None, in_chans=3)
    return FaceTeacher(net, spec, name="resnet50(random)").eval()


def p3(work: Path, data: dict[str, Any], sizes: Sizes) -> dict[str, Any]:
    import lightning as L

    from crossmodal.models.loading import load_teacher

    def epoch(mode: str, teacher, batch_size: int) -> Callable[[], float]:
        shards = data["distill"] if mode == "cached" else data["pairs"]
        extra = [f"data.mode={mode}", f"data.batch_size={batch_size}", "data.num_workers=0", "data.window_seconds=4.024",
                 f"data.batches_per_epoch={sizes.p3_batches}", "data.shuffle_buffer=0"]
        cfg = compose(base_overrides(work, shards, extra))
        _, module = build(cfg)
        if teacher is not None:
            module.set_teacher(teacher)
        optimizer, scheduler = attach_optimizer(module, 10_000)
        module.train()

        def run() -> float:
            L.seed_everything(0, verbose=False)
            datamodule, _ = build(cfg)
            started = time.perf_counter()
            count = 0
            for batch in datamodule.train_dataloader():
                train_step(module, optimizer, scheduler, batch)
                count += len(batch["wave"])
            return count / (time.perf_counter() - started)
        return run

    results = {}
    teachers = [("teacher_cpu (shipped)", load_teacher, sizes.p3_batch)]
    if sizes.p3_resnet50:
        teachers.append(("resnet50 (timm, random weights)", resnet50_teacher, sizes.p3_r50_batch))
    for teacher_name, make_teacher, batch_size in teachers:
        teacher = make_teacher()
        cached, online = epoch("cached", None, batch_size), epoch("online", teacher, batch_size)
        cached(), online()  # warm-up
        rates = alternate({"cached": cached, "online": online}, sizes.repeats)
        ratio = median([c / o for c, o in zip(rates["cached"], rates["online"])])
        results[teacher_name] = {"batch_size": batch_size, "batches": sizes.p3_batches, "cached_samples_per_s": round(median(rates["cached"]), 2),
                                 "online_samples_per_s": round(median(rates["online"]), 2), "ratio": round(ratio, 1),
                                 "rates": {k: [round(v, 2) for v in vs] for k, vs in rates.items()}}
        print(f"P3 teacher cache, {teacher_name}: cached-logit epoch {median(rates['cached']):.1f} samples/s vs online teacher "
              f"{median(rates['online']):.2f} samples/s ({sizes.p3_batches} batches of {batch_size}, ~{4.024 * 25 / 6:.0f} faces per "
              f"sample) -> cached is {ratio:.1f}x faster (expected well over 10x with a ResNet-50 teacher)")
    results["load"] = load_now()
    return results


# ----------------------------------------------------------------------------------------- P4


def p4_run(work: Path, shards: str, samples: int, tag: str) -> dict[str, Any]:
    """A fresh `python -m crossmodal.run` training epoch over ``samples`` samples, inside a wrapper
    process whose RUSAGE_CHILDREN gives the peak RSS of the whole tree (run + loader workers)."""
    run_dir = work / "p4" / tag
    run_dir.mkdir(parents=True, exist_ok=True)
    out = run_dir / "steps.json"
    batches = max(1, samples // 32)
    overrides = base_overrides(work, shards, P1_EXTRA + [f"data.batches_per_epoch={batches}", f"hydra.run.dir={run_dir}",
                                                          "+callbacks.step_timer._target_=step_timer.StepTimer",
                                                          f"+callbacks.step_timer.out={out}"])
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]), WANDB_MODE="disabled")
    wrapper = ("import resource, subprocess, sys; p = subprocess.run(sys.argv[1:]); "
               "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); sys.exit(p.returncode)")
    proc = subprocess.run([PY, "-c", wrapper, PY, "-m", "crossmodal.run", *overrides], cwd=REPO, env=env, capture_output=True, text=True)
    if proc.returncode != 0 or not out.exists():
        raise RuntimeError(f"P4 run failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    result = json.loads(out.read_text())
    tree_kb = int(proc.stdout.strip().splitlines()[-1])
    return {"samples": batches * 32, "tree_mb": tree_kb / 1024, "main_mb": result["rss_mb"]["self"], "steps": len(result["ends"])}


def p4(work: Path, data: dict[str, Any], sizes: Sizes) -> dict[str, Any]:
    from benchdata import replicate_shards

    small_n = sizes.p4_n
    big = replicate_shards(Path(data["distill"]), work / "distill_x10", 10)
    counter = iter(range(1000))
    runs: dict[str, list[dict[str, Any]]] = {"N": [], "10N": []}

    def measure(key: str, shards: str, samples: int) -> Callable[[], float]:
        def run() -> float:
            result = p4_run(work, shards, samples, f"{key}-{next(counter)}")
            runs[key].append(result)
            return result["tree_mb"]
        return run

    peaks = alternate({"N": measure("N", data["distill"], small_n), "10N": measure("10N", str(big), 10 * small_n)}, max(1, sizes.repeats - 1))
    main_n = median([r["main_mb"] for r in runs["N"]])
    main_10n = median([r["main_mb"] for r in runs["10N"]])
    ratio = median(peaks["10N"]) / median(peaks["N"])
    out = {"N": runs["N"][0]["samples"], "10N": runs["10N"][0]["samples"], "peak_tree_mb": {k: [round(v) for v in vs] for k, vs in peaks.items()},
           "peak_main_mb": {"N": round(main_n), "10N": round(main_10n)}, "ratio": round(ratio, 3),
           "ratio_main": round(main_10n / main_n, 3), "target": 1.1, "met": ratio <= 1.1, "load": load_now(),
           "shards": {"N": data["distill"], "10N": str(big)}}
    print(f"P4 streaming memory: peak RSS of a `python -m crossmodal.run experiment={EXPERIMENT}` training epoch (fresh process each, "
          f"1 loader worker) over N={out['N']} vs 10N={out['10N']} samples: {median(peaks['N']):.0f} vs {median(peaks['10N']):.0f} MB "
          f"(main process {main_n:.0f} vs {main_10n:.0f} MB) -> {fmt_ratio(ratio, '<= 1.1x', out['met'])}")
    return out


# ----------------------------------------------------------------------------------------- P5


def p5(work: Path, data: dict[str, Any], sizes: Sizes) -> dict[str, Any]:
    """The student's front-end (distill_cpu: log-mel; and the paper's 512-bin spectrogram) run on a
    collated batch vs once per sample, as a loader that made features would."""
    from crossmodal.models.frontend import build_frontend

    cfg = compose(base_overrides(work, data["distill"], P2_DATA + ["data.num_workers=0", "data.batches_per_epoch=100"]))
    datamodule, _ = build(cfg)
    batches = []
    for batch in datamodule.train_dataloader():
        batches.append(batch)
        if len(batches) == sizes.p5_batches:
            break
    samples = sum(len(b["wave"]) for b in batches)
    out: dict[str, Any] = {"batch_size": len(batches[0]["wave"]), "samples": samples}
    vgg_frontend = dict(compose(base_overrides(work, data["distill"], ["student=vggvox"])).model.frontend)
    for name, config in ((f"{EXPERIMENT} log-mel", dict(cfg.model.frontend)), ("vggvox 512-bin spectrogram", vgg_frontend)):
        frontend = build_frontend(config).train()

        threads = torch.get_num_threads()
        one = [(wave[:length].unsqueeze(0)) for batch in batches for wave, length in zip(batch["wave"], batch["lengths"])][:64]

        @torch.no_grad()
        def batched(n_threads: int) -> float:
            torch.set_num_threads(n_threads)
            try:
                started = time.perf_counter()
                for batch in batches:
                    frontend(batch["wave"], batch["lengths"])
                return samples / (time.perf_counter() - started)
            finally:
                torch.set_num_threads(threads)

        @torch.no_grad()
        def chunked(size: int = 8) -> float:
            # the fix proposed for SpeechFrontend on CPU: the same batch in slices that stay in cache
            started = time.perf_counter()
            for batch in batches:
                for start in range(0, len(batch["wave"]), size):
                    frontend(batch["wave"][start:start + size], batch["lengths"][start:start + size])
            return samples / (time.perf_counter() - started)

        @torch.no_grad()
        def per_sample() -> float:
            # as a loader worker would: one clip at a time, 1 torch thread (DataLoader workers run with 1)
            torch.set_num_threads(1)
            try:
                started = time.perf_counter()
                for wave in one:
                    frontend(wave)
                return len(one) / (time.perf_counter() - started)
            finally:
                torch.set_num_threads(threads)

        batched(threads), per_sample()
        rates = alternate({"batched": lambda: batched(threads), "batched_1thread": lambda: batched(1), "per_sample": per_sample,
                           "chunked8": chunked}, sizes.repeats)
        ratio = median([a / b for a, b in zip(rates["batched"], rates["per_sample"])])
        ratio1 = median([a / b for a, b in zip(rates["batched_1thread"], rates["per_sample"])])
        out[name] = {"batched_samples_per_s": round(median(rates["batched"])), "batched_1thread_samples_per_s": round(median(rates["batched_1thread"])),
                     "per_sample_samples_per_s": round(median(rates["per_sample"])), "ratio": round(ratio, 2), "ratio_1thread": round(ratio1, 2),
                     "chunked8_samples_per_s": round(median(rates["chunked8"]))}
        print(f"P5 front-end ({name}, {cfg.data.window_seconds:g} s windows): batched [{out['batch_size']}, samples] on the device "
              f"{median(rates['batched']):.0f} samples/s ({threads} threads; {median(rates['batched_1thread']):.0f} with 1) vs per sample "
              f"in a loader worker (1 thread) {median(rates['per_sample']):.0f} samples/s -> batched {ratio:.1f}x ({ratio1:.1f}x thread for thread); "
              f"batch in slices of 8 on the device: {median(rates['chunked8']):.0f} samples/s")
    out["load"] = load_now()
    return out
