"""Shard I/O: round trip, exact-once reading across ranks x workers, atomic writes, corrupt members."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import numpy as np
import pytest

from crossmodal.data.stream import EpochLoader, ShardStream, eval_loader
from crossmodal.io.skips import BadSampleError
from crossmodal.pipeline.shards import ShardJob, load_manifest, load_npy, stack_field, write_shard_set


def _decode(sample):
    return {"key": sample["__key__"], "x": load_npy(sample["x.npy"])}


def _collate(batch):
    return {"keys": [b["key"] for b in batch], "x": stack_field(batch, "x")}


def _write(out_dir, n=50, per_shard=6):
    items = [{"__key__": f"s{i:04d}", "x.npy": np.full(3, i, np.float32), "json": {"i": i}} for i in range(n)]
    jobs = [ShardJob(f"val-{k:06d}", items[i : i + per_shard]) for k, i in enumerate(range(0, n, per_shard))]
    return write_shard_set(out_dir, jobs, lambda job, skips: iter(job.items), meta={"what": "test"})


def test_round_trip_and_manifest(tmp_path):
    manifest, stats = _write(tmp_path)
    assert stats == {"written": 9, "reused": 0}
    assert manifest.total == 50 and len(manifest.paths("val")) == 9
    again, stats = _write(tmp_path)  # a re-run reuses every finished shard
    assert stats == {"written": 0, "reused": 9} and again.total == 50
    loaded = load_manifest(tmp_path)
    assert loaded.meta == {"what": "test"} and loaded.total == 50
    keys = [k for b in eval_loader(ShardStream(loaded.paths(), _decode, _collate, 4, train=False), 0) for k in b["keys"]]
    assert sorted(keys) == [f"s{i:04d}" for i in range(50)]


@pytest.mark.parametrize("world", [1, 2])
def test_exactly_once_across_ranks_and_workers(tmp_path, monkeypatch, world):
    manifest, _ = _write(tmp_path)
    seen = []
    for rank in range(world):
        monkeypatch.setenv("RANK", str(rank))
        monkeypatch.setenv("WORLD_SIZE", str(world))
        stream = ShardStream(manifest.paths(), _decode, _collate, 4, train=False)
        for batch in eval_loader(stream, num_workers=2):
            seen += batch["keys"]
    assert len(seen) == 50 and len(set(seen)) == 50  # nothing lost, nothing duplicated or padded


def test_too_few_shards_for_ranks_times_workers(tmp_path, monkeypatch):
    manifest, _ = _write(tmp_path, n=12, per_shard=6)  # 2 shards
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(Exception, match=r"2 shards cannot be read exactly once by 2 ranks x 2 loader workers"):
        list(eval_loader(ShardStream(manifest.paths(), _decode, _collate, 4, train=False), num_workers=2))


def test_training_stream_is_endless_and_resumable(tmp_path):
    manifest, _ = _write(tmp_path)
    stream = ShardStream(manifest.paths(), _decode, _collate, 4, train=True, seed=3, shuffle_buffer=8)
    loader = EpochLoader(stream, num_workers=2, batches_per_epoch=7)
    loader.set_epoch(0)
    full = [b["keys"] for b in loader]
    assert len(full) == 7
    # resume after 3 consumed batches: the rest of the epoch is exactly what the uninterrupted run saw
    resumed = EpochLoader(ShardStream(manifest.paths(), _decode, _collate, 4, train=True, seed=3, shuffle_buffer=8), 2, 7)
    resumed.load_state_dict({"epoch": 0, "consumed": 3})
    resumed.set_epoch(0)
    assert [b["keys"] for b in resumed] == full[3:]
    loader.set_epoch(1)
    assert [b["keys"] for b in loader] != full  # a new epoch draws a new order


def test_every_rank_runs_the_same_batches_per_epoch_on_uneven_shards(tmp_path, monkeypatch):
    # rank 0 reads two shards (12 samples), rank 1 one (6): neither runs out, both run the same batches
    manifest, _ = _write(tmp_path)
    counts = []
    for rank in range(2):
        monkeypatch.setenv("RANK", str(rank))
        monkeypatch.setenv("WORLD_SIZE", "2")
        stream = ShardStream(manifest.paths()[rank::2][:2 - rank], _decode, _collate, 4, train=True, seed=1, shuffle_buffer=4)
        loader = EpochLoader(stream, num_workers=0, batches_per_epoch=9)
        for epoch in range(2):
            loader.set_epoch(epoch)
            counts.append([len(b["keys"]) for b in loader])
    assert counts == [[4] * 9] * 4  # 9 full batches per epoch on both ranks, whatever their shards hold


_ORPHANED_WORKERS = """
import os, sys, time
sys.path.insert(0, sys.argv[2])
from test_shards import _decode, _collate
from crossmodal.data.stream import EpochLoader, ShardStream
from crossmodal.pipeline.shards import load_manifest
loader = EpochLoader(ShardStream(load_manifest(sys.argv[1]).paths(), _decode, _collate, 4, train=True), 2, 3)
next(iter(loader))
print(" ".join(str(w.pid) for w in loader.loader._iterator._workers), flush=True)
time.sleep(60)
"""


def test_loader_workers_exit_when_the_main_process_is_killed(tmp_path):
    # forkserver workers' parent is the server, not the run: the pidfd watchdog ends them instead
    manifest, _ = _write(tmp_path)
    main = subprocess.Popen([sys.executable, "-c", _ORPHANED_WORKERS, str(tmp_path), str(Path(__file__).parent)],
                            stdout=subprocess.PIPE, text=True)
    try:
        pids = [int(pid) for pid in main.stdout.readline().split()]
    finally:
        main.kill()
        main.wait()
    assert len(pids) == 2
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and any(Path(f"/proc/{pid}").exists() for pid in pids):
        time.sleep(0.1)
    alive = [pid for pid in pids if Path(f"/proc/{pid}").exists()]
    for pid in alive:  # do not leave them running when the test fails
        os.kill(pid, signal.SIGKILL)
    assert not alive, "loader workers outlived the killed main process"


_KILLED_WRITER = """
import os, sys, numpy as np
from crossmodal.pipeline.shards import ShardJob, write_shard_set
def make(job, skips):
    for i, item in enumerate(job.items):
        if job.name == "val-000002" and i == 3:
            os.kill(os.getpid(), 9)  # killed mid-shard
        yield item
items = [{"__key__": f"s{i:04d}", "x.npy": np.zeros(2, np.float32)} for i in range(30)]
jobs = [ShardJob(f"val-{k:06d}", items[i:i+6]) for k, i in enumerate(range(0, 30, 6))]
write_shard_set(sys.argv[1], jobs, make)
"""


def test_killed_writer_leaves_no_shard_that_looks_whole(tmp_path):
    proc = subprocess.run([sys.executable, "-c", _KILLED_WRITER, str(tmp_path)], capture_output=True)
    assert proc.returncode == -signal.SIGKILL
    assert not (tmp_path / "manifest.json").exists()
    assert sorted(p.name for p in tmp_path.glob("*.tar")) == ["val-000000.tar", "val-000001.tar"]
    assert not (tmp_path / "val-000002.json").exists()
    # re-running finishes the work: finished shards are reused, the partial one is redone
    items = [{"__key__": f"s{i:04d}", "x.npy": np.zeros(2, np.float32)} for i in range(30)]
    jobs = [ShardJob(f"val-{k:06d}", items[i : i + 6]) for k, i in enumerate(range(0, 30, 6))]
    manifest, stats = write_shard_set(tmp_path, jobs, lambda job, skips: iter(job.items))
    assert stats == {"written": 3, "reused": 2} and manifest.total == 30
    assert not list(tmp_path.glob(".*tmp*"))


def _corrupt_one(tmp_path):
    manifest, _ = _write(tmp_path, n=12, per_shard=12)
    path = Path(manifest.paths()[0])
    with tarfile.open(path) as tar:
        members = [(m, tar.extractfile(m).read()) for m in tar.getmembers()]
    with tarfile.open(path, "w") as tar:
        for member, data in members:
            if member.name == "s0005.x.npy":
                data = b"not a numpy file"
                member.size = len(data)
            import io

            tar.addfile(member, io.BytesIO(data))
    return manifest


def test_corrupt_member_is_counted_or_fails_in_strict_mode(tmp_path):
    manifest = _corrupt_one(tmp_path)
    batches = list(eval_loader(ShardStream(manifest.paths(), _decode, _collate, 4, train=False), 0))
    assert sum(len(b["keys"]) for b in batches) == 11
    assert int(sum(b["skipped"] for b in batches)) == 1
    with pytest.raises(BadSampleError, match="s0005"):
        list(eval_loader(ShardStream(manifest.paths(), _decode, _collate, 4, train=False, strict=True), 0))


def test_skips_reported_by_writer_reach_the_manifest(tmp_path):
    def make(job, skips):
        for item in job.items:
            if item["__key__"].endswith("3"):
                skips.skip("unreadable", f"/data/{item['__key__']}.wav")
                continue
            yield item

    items = [{"__key__": f"s{i:04d}", "txt": "x"} for i in range(20)]
    manifest, _ = write_shard_set(tmp_path, [ShardJob("train-000000", items)], make)
    assert manifest.total == 18
    assert manifest.skipped["counts"] == {"unreadable": 2}
    assert json.loads((tmp_path / "manifest.json").read_text())["skipped"]["examples"]["unreadable"][0] == "/data/s0003.wav"
    with pytest.raises(BadSampleError, match="s0003.wav"):
        write_shard_set(tmp_path / "strict", [ShardJob("train-000000", items)], make, strict=True)
