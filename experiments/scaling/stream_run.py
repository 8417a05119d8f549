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
    """``python -m http.server`` on 127.0.0.1 serving ``folder``; yields its base URL."""
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
        yield f"http://127.0.0.1:{port}"
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


def loader_rate(url: str, workers: int, batches: int, batch_size: int) -> dict[str, Any]:
    from crossmodal.data.distill import DistillDataModule

    dm = DistillDataModule(shards=url, num_workers=workers, batch_size=batch_size, shuffle_buffer=2000,
                           batches_per_epoch=batches + 1)
    started = time.perf_counter()
    dm.prepare_data()
    loader = dm.train_dataloader()
    iterator = iter(loader)
    first = next(iterator)
    latency = time.perf_counter() - started
    tick = time.perf_counter()
    count = sum(int(batch["wave"].shape[0]) for batch in iterator)
    seconds = time.perf_counter() - tick
    rss = tree_rss_kb(os.getpid())
    del iterator, loader
    return {"workers": workers, "batch": batch_size, "batches": batches, "epoch_start_seconds": round(latency, 2),
            "samples_per_s": round(count / seconds, 1), "samples_per_s_per_worker": round(count / seconds / max(1, workers), 1),
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("shards", type=Path, help="a local VoxCeleb-shaped set (served over http from its parent folder)")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--batches", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--no-eval", action="store_true")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    report: dict[str, Any] = {"set": str(args.shards), "load_average": list(os.getloadavg()), "cpus": os.cpu_count()}
    with http_server(args.shards.resolve().parent) as base:
        url = f"{base}/{args.shards.name}"
        report["url"] = url
        report["loader"] = []
        for workers in args.workers:
            row = loader_rate(url, workers, args.batches, args.batch_size)
            print(json.dumps(row), flush=True)
            report["loader"].append(row)
        if not args.no_eval:
            report["eval"] = eval_exactly_once(url, 2, 2)
            print(json.dumps(report["eval"]), flush=True)
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
