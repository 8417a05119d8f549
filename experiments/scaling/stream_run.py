"""Streaming a VoxCeleb-shaped set over http: loader rate per worker, epoch start, exactly-once evaluation (issue 21, item 3).

    python experiments/scaling/stream_run.py /data/voxshaped-10k --workers 1 2 --batches 30 --json out.json

Serves the set's parent folder with ``python -m http.server`` on 127.0.0.1 and reads it as a user
would (``data.shards=http://127.0.0.1:PORT/<set>``) through ``DistillDataModule``:
- training loader alone (decode FLAC, random 4.024 s window, per-class max of the logits in it; the
  front-end runs on the device, so this is all the loader does): first batch after the loader is
  built (epoch start latency), then samples/s over ``--batches`` batches, per worker count;
- evaluation (heard + unheard + the train_eval_shards training shards): 2 ranks x 2 workers, as
  ``trainer=ddp_cpu`` with ``data.num_workers=2`` reads it: every key once, none missing, against
  the manifest's counts;
- peak RSS of this process and its loader workers;
- ``--initial-compare``: epoch start with the shuffle buffer filled first (before) and now, A B B A;
- ``--train-steps``: a ``trainer=ddp_cpu`` run of ``experiment=distill_senet`` over the same URL (peak
  RSS of its process tree); ``--resume-check``: the same run SIGKILLed mid-epoch and resumed, its final
  weights compared with an uninterrupted run's. Commands and figures: experiments/scaling/README.md.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any


@contextlib.contextmanager
def http_server(folder: Path):
    """``python -m http.server`` on 127.0.0.1 serving ``folder``; yields its base URL and pid."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1", "--directory", str(folder)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
                break
            time.sleep(0.1)
        yield f"http://127.0.0.1:{port}", proc.pid
    finally:
        proc.terminate()
        proc.wait(10)


def tree_rss_kb(pid: int) -> int:
    """RSS of ``pid`` and every descendant (loader workers are forkserver children), kB."""
    out = subprocess.run(["ps", "-e", "-o", "pid=,ppid=,rss="], capture_output=True, text=True).stdout.split("\n")
    rows = [tuple(int(x) for x in line.split()) for line in out if line.strip()]
    children: dict[int, list[int]] = {}
    for p, parent, _ in rows:
        children.setdefault(parent, []).append(p)
    rss = {p: r for p, _, r in rows}
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        total += rss.get(p, 0)
        todo += children.get(p, [])
    return total


def tree_cpu(pid: int, skip: set[int]) -> dict[int, float]:
    """User + system CPU seconds of each of ``pid``'s descendants (not ``pid``, not ``skip``): the loader workers."""
    out = subprocess.run(["ps", "-e", "-o", "pid=,ppid="], capture_output=True, text=True).stdout.split("\n")
    children: dict[int, list[int]] = {}
    for line in filter(str.strip, out):
        p, parent = (int(x) for x in line.split())
        children.setdefault(parent, []).append(p)
    seconds, todo, tick = {}, list(children.get(pid, [])), os.sysconf("SC_CLK_TCK")
    while todo:
        p = todo.pop()
        todo += children.get(p, [])
        if p in skip:
            continue
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            seconds[p] = (int(fields[11]) + int(fields[12])) / tick
    return seconds


def cpu_since(before: dict[int, float], pid: int, skip: set[int]) -> float:
    """CPU seconds the descendants alive now used since ``before`` (a process started since counts from 0;
    one that ended since, e.g. an earlier loader's worker, is left out)."""
    return sum(now - before.get(p, 0.0) for p, now in tree_cpu(pid, skip).items())


def loader_rate(url: str, workers: int, batches: int, batch_size: int, server: int, shuffle_buffer: int = 2000) -> dict[str, Any]:
    from crossmodal.data.distill import DistillDataModule

    dm = DistillDataModule(shards=url, num_workers=workers, batch_size=batch_size, shuffle_buffer=shuffle_buffer,
                           batches_per_epoch=batches + 1)
    started, start_cpu = time.perf_counter(), tree_cpu(os.getpid(), {server})
    dm.prepare_data()
    loader = dm.train_dataloader()
    iterator = iter(loader)
    first = next(iterator)
    latency = time.perf_counter() - started
    start_cpu = cpu_since(start_cpu, os.getpid(), {server})  # worker (and forkserver) CPU until the first batch
    tick, cpu = time.perf_counter(), tree_cpu(os.getpid(), {server})
    count = sum(int(batch["wave"].shape[0]) for batch in iterator)
    seconds, cpu = time.perf_counter() - tick, cpu_since(cpu, os.getpid(), {server})
    rss = tree_rss_kb(os.getpid())
    del iterator, loader
    return {"workers": workers, "batch": batch_size, "batches": batches, "shuffle_buffer": shuffle_buffer,
            "epoch_start_seconds": round(latency, 2), "epoch_start_worker_cpu_seconds": round(start_cpu, 2),
            "samples_per_s": round(count / seconds, 1), "samples_per_s_per_worker": round(count / seconds / max(1, workers), 1),
            "worker_cpu_seconds": round(cpu, 2), "samples_per_worker_cpu_second": round(count / cpu, 1) if cpu > 0 else None,
            "first_batch_samples": int(first["wave"].shape[0]), "tree_rss_mb": round(rss / 1024, 1)}


def eval_exactly_once(url: str, ranks: int, workers: int) -> dict[str, Any]:
    """Every rank's evaluation loader, one after another (RANK/WORLD_SIZE as a launcher sets them)."""
    from crossmodal.data.distill import DistillDataModule

    keys: Counter[str] = Counter()
    started = time.perf_counter()
    expected = None
    for rank in range(ranks):
        os.environ.update(RANK=str(rank), WORLD_SIZE=str(ranks))
        try:
            dm = DistillDataModule(shards=url, num_workers=workers, eval_batch_size=32, train_eval_shards=2)
            dm.prepare_data()
            manifest = dm.manifest()
            expected = sum(s["count"] for s in manifest.shards
                           if s["name"].startswith(("heard-", "unheard-"))) + sum(
                s["count"] for s in [s for s in manifest.shards if s["name"].startswith("train-")][:2])
            for batch in dm.val_dataloader():
                keys.update(batch["key"])
        finally:
            os.environ.pop("RANK"), os.environ.pop("WORLD_SIZE")
    return {"ranks": ranks, "workers": workers, "expected": expected, "seen": sum(keys.values()), "distinct": len(keys),
            "duplicates": sum(1 for n in keys.values() if n > 1), "seconds": round(time.perf_counter() - started, 1)}


def train_run(url: str, run_dir: Path, steps: int, batch_size: int, workers: int, extra: list[str], epochs: int = 1,
              env_extra: dict[str, str] | None = None) -> dict[str, Any]:
    """``experiment=distill_senet`` over ``url`` (``trainer=ddp_cpu`` unless ``extra`` says otherwise) for
    ``epochs`` of ``steps`` steps per rank (plus a validation of 2 batches per rank); peak RSS of the whole
    process tree (2 ranks + their loader workers), sampled every second."""
    cmd = [sys.executable, "-m", "crossmodal.run", "experiment=distill_senet", f"data.shards={url}", "trainer=ddp_cpu",
           f"data.num_workers={workers}", "data.global_batch_size=null", f"data.batch_size={batch_size}",
           "data.epoch_fraction=null", f"data.batches_per_epoch={steps}", f"trainer.max_epochs={epochs}",
           "trainer.limit_val_batches=2", "trainer.num_sanity_val_steps=0", "test_after_fit=false", "report=false",
           "logger=csv", f"hydra.run.dir={run_dir}", *extra]
    env = dict(os.environ, WANDB_MODE="disabled", CROSSMODAL_NO_PROGRESS="1", **(env_extra or {}))
    started = time.perf_counter()
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    with open(run_dir.parent / f"{run_dir.name}.log", "a") as log:
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=log)
        peak = 0
        while proc.poll() is None:
            peak = max(peak, tree_rss_kb(proc.pid))
            time.sleep(1.0)
    metrics = run_dir / "metrics.json"
    return {"command": "python " + " ".join(cmd[1:]), "exit": proc.returncode, "wall_seconds": round(time.perf_counter() - started, 1),
            "peak_tree_rss_mb": round(peak / 1024, 1),
            "val_loss": json.loads(metrics.read_text()).get("val/loss") if metrics.exists() else None}


def resume_check(url: str, run_dir: Path, batch_size: int, extra: list[str], steps: int = 4, kill_at: int = 7) -> dict[str, Any]:
    """Run A uninterrupted (2 epochs of ``steps``, last.ckpt every 2 steps); run B SIGKILLed after step
    ``kill_at`` (mid-epoch), then resumed from its last.ckpt; compare the final weights tensor by tensor."""
    import torch

    common = [*extra, "callbacks.periodic_checkpoint.every_n_train_steps=2", "trainer.limit_val_batches=1"]
    kill = ["+callbacks.kill._target_=toy_lightning.KillAtStep", f"+callbacks.kill.step={kill_at}", "+callbacks.kill.signal_name=SIGKILL"]
    toy = {"PYTHONPATH": str(Path(__file__).resolve().parents[2] / "tests" / "toy")}
    a, b = run_dir / "A", run_dir / "B"
    runs = {"A": train_run(url, a, steps, batch_size, 2, common, epochs=2),
            "B_killed": train_run(url, b, steps, batch_size, 2, common + kill, epochs=2, env_extra=toy)}
    saved = torch.load(b / "checkpoints" / "last.ckpt", weights_only=True)["global_step"]
    runs["B_resumed"] = train_run(url, b, steps, batch_size, 2, common + [f"ckpt_path={b / 'checkpoints' / 'last.ckpt'}"], epochs=2)
    first, second = (torch.load(d / "checkpoints" / "last.ckpt", weights_only=True) for d in (a, b))
    differ = [k for k, v in first["state_dict"].items() if not torch.equal(v, second["state_dict"][k])]
    return {"runs": runs, "killed_exit": runs["B_killed"]["exit"], "resumed_from_step": saved,
            "steps": [first["global_step"], second["global_step"]], "tensors": len(first["state_dict"]),
            "tensors_differing": differ, "identical": not differ}


def epoch_start(url: str, workers: int, batch_size: int, shuffle_buffer: int, initial: int | None, server: int) -> dict[str, Any]:
    """Latency (wall) and loader-worker CPU seconds to the first batch of epoch 0 (workers starting) and
    of epoch 1 (persistent workers: the stream restarts, its shuffle buffer refills) with
    ``wds.shuffle``'s ``initial`` (None: the project's default)."""
    from crossmodal.data.distill import DistillDataModule

    dm = DistillDataModule(shards=url, num_workers=workers, batch_size=batch_size, shuffle_buffer=shuffle_buffer, batches_per_epoch=1)
    dm.prepare_data()
    loader = dm.train_dataloader()
    if initial is not None:
        loader.dataset.shuffle_initial = initial
    row: dict[str, Any] = {"workers": workers, "batch": batch_size, "shuffle_buffer": shuffle_buffer,
                           "initial": loader.dataset.shuffle_initial, "load_average": list(os.getloadavg())}
    for epoch in (0, 1):
        loader.set_epoch(epoch)
        started, cpu = time.perf_counter(), tree_cpu(os.getpid(), {server})
        for _ in loader:
            pass
        row[f"epoch{epoch}_first_batch_seconds"] = round(time.perf_counter() - started, 2)
        row[f"epoch{epoch}_worker_cpu_seconds"] = round(cpu_since(cpu, os.getpid(), {server}), 2)
    del loader
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("shards", type=Path, help="a local VoxCeleb-shaped set (served over http from its parent folder)")
    parser.add_argument("--workers", type=int, nargs="*", default=[1, 2], help="loader-alone runs (none: --workers)")
    parser.add_argument("--batches", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--shuffle-buffer", type=int, default=2000, help="data.shuffle_buffer (distill_paper: 2000)")
    parser.add_argument("--no-eval", action="store_true")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--train-steps", type=int, default=0, help="also a trainer=ddp_cpu run of this many steps per rank")
    parser.add_argument("--train-batch", type=int, default=8)
    parser.add_argument("--train-extra", nargs="*", default=[], help="more overrides of the training run")
    parser.add_argument("--run-dir", type=Path, default=Path("logs/stream_run"))
    parser.add_argument("--resume-check", action="store_true", help="also A / B killed / B resumed, weights compared")
    parser.add_argument("--initial-compare", type=int, default=0, metavar="ROUNDS",
                        help="also epoch start with wds.shuffle initial=buffer (before) and the default (after), A B B A x ROUNDS")
    args = parser.parse_args(argv)
    report: dict[str, Any] = {"set": str(args.shards), "load_average": list(os.getloadavg()), "cpus": os.cpu_count()}
    with http_server(args.shards.resolve().parent) as (base, server):
        url = f"{base}/{args.shards.name}"
        report["url"] = url
        report["loader"] = []
        for workers in args.workers:
            row = loader_rate(url, workers, args.batches, args.batch_size, server, args.shuffle_buffer)
            print(json.dumps(row), flush=True)
            report["loader"].append(row)
        if args.initial_compare:
            report["epoch_start"] = []
            for _ in range(args.initial_compare):
                for initial in (args.shuffle_buffer, None, None, args.shuffle_buffer):  # A B B A
                    row = epoch_start(url, 1, args.batch_size, args.shuffle_buffer, initial, server)
                    print(json.dumps(row), flush=True)
                    report["epoch_start"].append(row)
        if args.resume_check:
            report["resume"] = resume_check(url, args.run_dir / "resume", args.train_batch, args.train_extra)
            print(json.dumps(report["resume"]), flush=True)
        if args.train_steps:
            report["train"] = train_run(url, args.run_dir, args.train_steps, args.train_batch, 2, args.train_extra)
            print(json.dumps(report["train"]), flush=True)
        if not args.no_eval:
            report["eval"] = eval_exactly_once(url, 2, 2)
            print(json.dumps(report["eval"]), flush=True)
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
