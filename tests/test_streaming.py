"""Streaming shard sets from where a cluster keeps them: an HTTP server and a pipe: command.

A small real distillation set (shipped EmoDB demo voices, constructed teacher logits) is served by
``python -m http.server`` on 127.0.0.1 in a subprocess; reading it over HTTP must give exactly what
reading the same files on disk gives: the same samples, the same training batches, the same
skipped-sample count and the same test metrics.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import lightning as L
import pytest
import torch

from crossmodal.data.distill import DistillDataModule, DistillDecoder, SpeechCollate
from crossmodal.data.stream import EpochLoader, ShardStream, eval_loader
from crossmodal.pipeline.cache import CacheMismatch
from crossmodal.pipeline.shards import iter_shard, load_manifest

sys.path.insert(0, str(Path(__file__).parent))
from distill_fixtures import write_distill_shards  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SHARED = ["neutral", "happiness", "sadness", "anger", "disgust", "fear"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def local_set(emodb_root, tmp_path_factory) -> Path:
    return write_distill_shards(tmp_path_factory.mktemp("served") / "distill" / "emodb", emodb_root, per_speaker=3)


@pytest.fixture(scope="module")
def served(local_set):
    """The parent folder of ``local_set`` over HTTP; yields the set's URL."""
    port = _free_port()
    server = subprocess.Popen([sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1",
                               "--directory", str(local_set.parent.parent)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/distill/{local_set.name}"
    try:
        for _ in range(100):  # until it answers
            try:
                urllib.request.urlopen(f"{url}/manifest.json", timeout=1).read()
                break
            except OSError:
                time.sleep(0.05)
        yield url
    finally:
        server.terminate()
        server.wait(timeout=10)


def _eval_keys(location: str, num_workers: int) -> list[tuple[str, list[float], float]]:
    """(key, teacher target, audio sum) of every evaluation sample, in a canonical order."""
    stream = ShardStream(load_manifest(location).paths(), DistillDecoder(train=False), SpeechCollate(), 8, train=False)
    rows = []
    for batch in eval_loader(stream, num_workers):
        rows += [(key, target.tolist(), float(wave.abs().sum()))
                 for key, target, wave in zip(batch["key"], batch["target"], batch["wave"])]
    return sorted(rows)


def test_http_and_pipe_locations_give_the_local_samples(local_set, served):
    manifest = load_manifest(served)
    assert manifest.paths("unheard-") == [f"{served}/unheard-000000.tar"]
    assert manifest.count("train-") == load_manifest(local_set).count("train-") > 0
    local = _eval_keys(str(local_set), 0)
    assert len(local) == load_manifest(local_set).total and len({k for k, *_ in local}) == len(local)
    assert _eval_keys(served, 0) == local  # same samples, same bytes (2 workers over HTTP: the next test)
    assert _eval_keys(f"pipe:cat {local_set}/{{name}}", 0) == local
    # one tar reader for every location: the same members
    name = "heard-000000.tar"
    assert [sorted(s) for s in iter_shard(f"{served}/{name}")] == [sorted(s) for s in iter_shard(str(local_set / name))]


def test_training_batches_over_http_equal_local_ones(local_set, served):
    def batches(location):
        stream = ShardStream(load_manifest(location).paths("train-"), DistillDecoder(train=False), SpeechCollate(), 4,
                             train=True, seed=5, shuffle_buffer=8)
        loader = EpochLoader(stream, num_workers=2, batches_per_epoch=5)
        loader.set_epoch(1)
        return [batch["key"] for batch in loader]

    local = batches(str(local_set))
    assert len(local) == 5 and all(len(keys) == 4 for keys in local)
    assert batches(served) == local


def test_remote_location_is_read_only_and_errors_name_the_key(served, tmp_path):
    missing = DistillDataModule(f"{served}/nothere", data_dir=str(tmp_path))
    with pytest.raises(FileNotFoundError, match=r"no shard manifest at http://127\.0\.0\.1:\d+/distill/.*nothere/manifest\.json.*data\.shards"):
        missing.prepare_data()
    assert not list(tmp_path.iterdir())  # nothing built, nothing written
    # with a prepare recipe, a remote set made from other inputs (here: none recorded) is refused, not rebuilt
    demo = ROOT / "crossmodal" / "assets" / "demo"
    recipe = DistillDataModule(served, prepare={"kind": "pseudo_pairs", "teacher": None, "data_dir": str(tmp_path)},
                               emodb=str(demo / "emodb"), ferplus=str(demo / "ferplus"), data_dir=str(tmp_path))
    with pytest.raises(CacheMismatch, match=r"(?s)http://127\.0\.0\.1:\d+/distill/emodb .*point data\.shards at another"):
        recipe.prepare_data()
    assert not list(tmp_path.iterdir())
    with pytest.raises(ValueError, match=r"data\.shards=s3://bucket/set: .*pipe:aws s3 cp s3://bucket/set/\{name\} -"):
        DistillDataModule("s3://bucket/set").prepare_data()
    with pytest.raises(ValueError, match=r"data\.shards=pipe:cat x: .*\{name\}"):
        DistillDataModule("pipe:cat x").prepare_data()


def _quietest_but_one(local_set: Path) -> float:
    """A silence threshold between the two quietest training clips: the quietest is skipped as silent."""
    from crossmodal.io.audio import decode_flac

    rms = []
    for sample in iter_shard(str(local_set / "train-000000.tar")):
        wave = decode_flac(sample["flac"])[0]
        rms.append(float(((wave - wave.mean()) ** 2).mean() ** 0.5))
    rms.sort()
    return (rms[0] + rms[1]) / 2


def _fit_and_test(shards: str, run_dir: Path, silence_rms: float) -> tuple[float, dict[str, float]]:
    from crossmodal.lit.distill import DistillationModule

    L.seed_everything(0)
    dm = DistillDataModule(shards, batch_size=8, eval_batch_size=8, num_workers=0, batches_per_epoch=2, window_seconds=1.5,
                           silence_rms=silence_rms, shuffle_buffer=16, train_eval_shards=0, data_dir=str(run_dir / "data"))
    model = DistillationModule(
        student={"name": "small_cnn", "kwargs": {"channels": [8, 8, 16, 16], "first_stride": 2}},
        frontend={"features": "logmel", "n_mels": 32},
        optimizer={"_target_": "torch.optim.AdamW", "_partial_": True, "lr": 3e-3}, scheduler=None, label_classes=SHARED,
    )
    trainer = L.Trainer(max_epochs=1, accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, default_root_dir=run_dir, num_sanity_val_steps=0, limit_val_batches=0)
    trainer.fit(model, datamodule=dm)
    skipped = float(trainer.callback_metrics["data/skipped"])
    tested = trainer.test(model, datamodule=dm, verbose=False)[0]
    return skipped, {k: float(v) for k, v in tested.items()}


def test_training_and_test_over_http_give_the_local_metrics(local_set, served, tmp_path):
    torch.set_num_threads(1)  # identical arithmetic in both runs
    silence = _quietest_but_one(local_set)  # a real skip in every epoch's count (data/skipped)
    local_skipped, local = _fit_and_test(str(local_set), tmp_path / "local", silence)
    http_skipped, remote = _fit_and_test(served, tmp_path / "http", silence)
    assert local_skipped > 0 and http_skipped == local_skipped
    assert {"test/loss", "test/auc_unheard/mean", "test/ua_unheard"} <= set(local)
    assert remote == pytest.approx(local, rel=1e-5, abs=1e-6)


@pytest.mark.slow  # two entry-point runs, ~20 s each on 2 cores
def test_distill_cpu_entry_point_over_http_writes_the_local_metrics(local_set, served, tmp_path):
    def run(shards: str, run_dir: Path) -> dict:
        env = dict(os.environ, WANDB_MODE="disabled", CROSSMODAL_NO_PROGRESS="1")
        cmd = [sys.executable, "-m", "crossmodal.run", "experiment=distill_cpu", f"data.shards={shards}", "data.prepare=null",
               "data.num_workers=1", "data.batches_per_epoch=2", "data.batch_size=8", "data.window_seconds=2.0",
               "trainer.max_epochs=1", "logger=csv", f"paths.data_dir={tmp_path / 'data'}", f"hydra.run.dir={run_dir}"]
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env, timeout=400)
        assert proc.returncode == 0, proc.stderr[-4000:]
        return json.loads((run_dir / "metrics.json").read_text())

    local = run(str(local_set), tmp_path / "local")
    remote = run(served, tmp_path / "http")
    compared = [k for k in local if k.startswith(("test/", "data/")) and isinstance(local[k], float)]
    assert {"test/loss", "test/auc_unheard/mean", "data/skipped"} <= set(compared)
    for key in compared:
        assert remote[key] == pytest.approx(local[key], rel=1e-4, abs=1e-6), key


def test_ferplus_shards_through_a_pipe_command(tmp_path):
    from crossmodal.data.ferplus import FerPlusDataModule
    from crossmodal.pipeline.ferplus import prepare_ferplus

    local = tmp_path / "ferplus"
    prepare_ferplus(ROOT / "tests" / "data" / "ferplus_sample", local, samples_per_shard=20)

    def val_keys(shard_dir: str) -> list[str]:
        dm = FerPlusDataModule(shard_dir=shard_dir, eval_batch_size=8, num_workers=0, data_dir=str(tmp_path / "data"))
        dm.prepare_data()  # a remote set: checked, nothing built
        dm.setup("fit")
        return [key for batch in dm.val_dataloader() for key in batch["key"]]

    keys = val_keys(str(local))
    assert len(keys) == len(set(keys)) == 16
    assert val_keys(f"pipe:cat {local}/{{name}}") == keys
    assert not (tmp_path / "data").exists()


def test_evaluation_batches_are_replayed_after_a_complete_pass_that_fits_the_budget():
    from crossmodal.data.stream import ReplayedPasses, batch_nbytes

    reads = []

    class Loader:
        def __iter__(self):
            reads.append(1)
            for i in range(3):
                yield {"wave": torch.full((2, 4), float(i)), "key": [f"a{i}", f"b{i}"]}

    replayed = ReplayedPasses(Loader(), budget_bytes=3 * 2 * 4 * 4)
    for _ in replayed:  # a pass cut short (Lightning's sanity check) keeps nothing
        break
    first = list(replayed)
    again = list(replayed)
    assert len(reads) == 2  # the cut pass and the first complete one; the third pass replays
    assert [b["key"] for b in again] == [b["key"] for b in first] and all(torch.equal(a["wave"], b["wave"]) for a, b in zip(first, again))
    assert batch_nbytes(first) == 3 * 2 * 4 * 4

    reads.clear()
    too_big = ReplayedPasses(Loader(), budget_bytes=2 * 2 * 4 * 4)  # over the budget: read on every pass
    assert [len(list(too_big)) for _ in range(2)] == [3, 3] and len(reads) == 2
    reads.clear()
    assert [len(list(ReplayedPasses(Loader(), budget_bytes=0))) for _ in range(2)] == [3, 3] and len(reads) == 2
