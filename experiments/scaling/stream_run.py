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
- peak RSS of this process and its loader workers.
The training run itself (``trainer=ddp_cpu`` over the same URL, RSS, resume) is a
``python -m crossmodal.run`` command; see experiments/scaling/README.md.
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


def tree_cpu_seconds(pid: int, skip: set[int]) -> float:
    """User + system CPU seconds of ``pid``'s descendants (not ``pid``, not ``skip``): the loader workers."""
    out = subprocess.run(["ps", "-e", "-o", "pid=,ppid="], capture_output=True, text=True).stdout.split("\n")
    children: dict[int, list[int]] = {}
    for line in filter(str.strip, out):
        p, parent = (int(x) for x in line.split())
        children.setdefault(parent, []).append(p)
    total, todo, tick = 0.0, list(children.get(pid, [])), os.sysconf("SC_CLK_TCK")
    while todo:
        p = todo.pop()
        todo += children.get(p, [])
        if p in skip:
            continue
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick
    return total


def loader_rate(url: str, workers: int, batches: int, batch_size: int, server: int, shuffle_buffer: int = 2000) -> dict[str, Any]:
    from crossmodal.data.distill import DistillDataModule

    dm = DistillDataModule(shards=url, num_workers=workers, batch_size=batch_size, shuffle_buffer=shuffle_buffer,
                           batches_per_epoch=batches + 1)
    started, start_cpu = time.perf_counter(), tree_cpu_seconds(os.getpid(), {server})
    dm.prepare_data()
    loader = dm.train_dataloader()
    iterator = iter(loader)
    first = next(iterator)
    latency = time.perf_counter() - started
    start_cpu = tree_cpu_seconds(os.getpid(), {server}) - start_cpu  # worker (and forkserver) CPU until the first batch
    tick, cpu = time.perf_counter(), tree_cpu_seconds(os.getpid(), {server})
    count = sum(int(batch["wave"].shape[0]) for batch in iterator)
    seconds, cpu = time.perf_counter() - tick, tree_cpu_seconds(os.getpid(), {server}) - cpu
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


def train_run(url: str, run_dir: Path, steps: int, batch_size: int, workers: int, extra: list[str]) -> dict[str, Any]:
    """``experiment=distill_senet trainer=ddp_cpu`` over ``url`` for ``steps`` steps per rank (plus a
    validation of 2 batches per rank); peak RSS of the whole process tree (2 ranks + their loader
    workers), sampled every second, and its CPU seconds."""
    cmd = [sys.executable, "-m", "crossmodal.run", "experiment=distill_senet", f"data.shards={url}", "trainer=ddp_cpu",
           f"data.num_workers={workers}", "data.global_batch_size=null", f"data.batch_size={batch_size}",
           "data.epoch_fraction=null", f"data.batches_per_epoch={steps}", "trainer.max_epochs=1",
           "trainer.limit_val_batches=2", "trainer.num_sanity_val_steps=0", "test_after_fit=false", "report=false",
           "logger=csv", f"hydra.run.dir={run_dir}", *extra]
    env = dict(os.environ, WANDB_MODE="disabled", CROSSMODAL_NO_PROGRESS="1")
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    peak = 0
    while proc.poll() is None:
        peak = max(peak, tree_rss_kb(proc.pid))
        time.sleep(1.0)
    metrics = run_dir / "metrics.json"
    return {"command": "python " + " ".join(cmd[1:]), "exit": proc.returncode, "wall_seconds": round(time.perf_counter() - started, 1),
            "peak_tree_rss_mb": round(peak / 1024, 1),
            "val_loss": json.loads(metrics.read_text()).get("val/loss") if metrics.exists() else None}


def make_view(src: Path, dst: Path, copies: int) -> Path:
    """A ``copies``-times larger set made of symlinks: each shard of ``src`` under ``copies`` names
    (split-NNNNNN renumbered), with a manifest listing them all. Its samples repeat, so it is for the
    costs that grow with the set's size (manifest, shard lists, memory), never for exactly-once checks."""
    from crossmodal.pipeline.shards import load_manifest, write_json

    manifest = load_manifest(src)
    dst.mkdir(parents=True, exist_ok=True)
    shards, counters = [], Counter()
    for copy in range(copies):
        for shard in manifest.shards:
            split = shard["name"].split("-", 1)[0]
            name = f"{split}-{counters[split]:06d}.tar"
            counters[split] += 1
            link = dst / name
            if not link.exists():
                link.symlink_to((src / shard["name"]).resolve())
            shards.append({"name": name, "count": shard["count"], "copy_of": shard["name"], "copy": copy})
    meta = dict(manifest.meta, view={"of": str(src), "copies": copies})
    write_json(dst / "manifest.json", {"meta": meta, "shards": shards, "skipped": manifest.skipped})
    return dst


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
    parser.add_argument("--view-copies", type=int, default=0,
                        help="first write <shards>-x<k>: a k-times larger view of the set (symlinks), and read that")
    args = parser.parse_args(argv)
    if args.view_copies:
        args.shards = make_view(args.shards, args.shards.with_name(f"{args.shards.name}-x{args.view_copies}"), args.view_copies)
    report: dict[str, Any] = {"set": str(args.shards), "load_average": list(os.getloadavg()), "cpus": os.cpu_count()}
    with http_server(args.shards.resolve().parent) as (base, server):
        url = f"{base}/{args.shards.name}"
        report["url"] = url
        report["loader"] = []
        for workers in args.workers:
            row = loader_rate(url, workers, args.batches, args.batch_size, server, args.shuffle_buffer)
            print(json.dumps(row), flush=True)
            report["loader"].append(row)
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
