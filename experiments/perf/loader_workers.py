"""What the loader-worker change (issue 12 §9) costs per epoch: old vs new side by side.

old: workers forked again at every epoch (``multiprocessing_context="fork"``, not persistent),
     which could hang a DDP run when a worker was forked while another thread held a lock;
new: the default since the fix: forkserver workers (torch & co. preloaded in the server),
     started once per loader and told the epoch through shared memory.

Each variant runs in its own fresh process (the forkserver's start-up is part of the cost):
E epochs of B training batches (EpochLoader) plus one exact-once pass over the eval shards
(eval_loader) per epoch, on shards of the shipped EmoDB demo voices (crossmodal/assets/demo).

    .venv/bin/python experiments/perf/loader_workers.py [--epochs 4] [--batches 12] [--workers 2]
"""
from __future__ import annotations

import argparse
import io
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

REPO = Path(__file__).resolve().parents[2]
CLIPS = REPO / "crossmodal" / "assets" / "demo" / "emodb" / "wav"
SECONDS = 2.0


def decode(sample: dict) -> dict:
    wave, rate = sf.read(io.BytesIO(sample["flac"]), dtype="float32")
    n = int(SECONDS * rate)
    wave = np.pad(wave[:n], (0, max(0, n - len(wave))))
    return {"wave": torch.from_numpy(wave), "key": sample["__key__"]}


def collate(batch: list[dict]) -> dict:
    return {"wave": torch.stack([b["wave"] for b in batch]), "keys": [b["key"] for b in batch]}


def write_shards(out: Path) -> None:
    from crossmodal.pipeline.shards import ShardJob, write_shard_set

    clips = sorted(CLIPS.glob("*.flac"))
    items = [{"__key__": p.stem, "flac": p.read_bytes()} for p in clips]
    jobs = [ShardJob(f"train-{k:06d}", items[i:i + 8]) for k, i in enumerate(range(0, len(items), 8))]
    jobs += [ShardJob(f"val-{k:06d}", items[k::4][:8]) for k in range(4)]
    write_shard_set(out, jobs, lambda job, skips: iter(job.items), meta={"bench": "loader_workers"})


def one_variant(shard_dir: str, variant: str, epochs: int, batches: int, workers: int) -> dict:
    from crossmodal.data.stream import EpochLoader, ShardStream, eval_loader

    old = {"multiprocessing_context": "fork", "persistent_workers": False} if variant == "old" else {}
    paths = sorted(str(p) for p in Path(shard_dir).glob("*.tar"))
    train = [p for p in paths if "/train-" in p]
    val = [p for p in paths if "/val-" in p]
    loader = EpochLoader(ShardStream(train, decode, collate, 8, train=True, seed=0, shuffle_buffer=16),
                         workers, batches, **old)
    evaluator = eval_loader(ShardStream(val, decode, collate, 8, train=False), workers, **old)
    times, seen = [], []
    for epoch in range(epochs):
        started = time.perf_counter()
        loader.set_epoch(epoch)
        n = sum(1 for _ in loader)
        keys = [k for batch in evaluator for k in batch["keys"]]
        times.append(time.perf_counter() - started)
        seen.append((n, len(keys), len(set(keys))))
    return {"times": times, "seen": seen}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--batches", type=int, default=12)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--variant", choices=["old", "new"], help=argparse.SUPPRESS)
    parser.add_argument("--shards", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.variant:
        print(json.dumps(one_variant(args.shards, args.variant, args.epochs, args.batches, args.workers)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        write_shards(Path(tmp))
        results = {}
        for variant in ("old", "new"):
            cmd = [sys.executable, __file__, "--variant", variant, "--shards", tmp, "--epochs", str(args.epochs),
                   "--batches", str(args.batches), "--workers", str(args.workers)]
            started = time.perf_counter()
            out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
            results[variant] = json.loads(out.strip().splitlines()[-1])
            results[variant]["process"] = time.perf_counter() - started
    print(f"{args.epochs} epochs x ({args.batches} train batches of 8 + one eval pass), {args.workers} workers, "
          f"{len(list(CLIPS.glob('*.flac')))} EmoDB demo clips")
    print(f"{'epoch':>8} {'old (fork/epoch) s':>20} {'new (forkserver, persistent) s':>32}")
    for epoch in range(args.epochs):
        print(f"{epoch:>8} {results['old']['times'][epoch]:>20.2f} {results['new']['times'][epoch]:>32.2f}")
    for name, pick in (("epochs 1+ (mean)", lambda r: float(np.mean(r["times"][1:]))),
                       ("all epochs", lambda r: sum(r["times"])), ("whole process", lambda r: r["process"])):
        print(f"{name:>16} {pick(results['old']):>12.2f} {pick(results['new']):>32.2f}")
    assert results["old"]["seen"] == results["new"]["seen"], results  # same batches counted, exact-once eval


if __name__ == "__main__":
    main()
