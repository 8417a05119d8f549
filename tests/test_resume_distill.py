"""Distillation runs are reproducible: the training windows do not depend on the loader's workers,
and a run killed mid-epoch and resumed from its last checkpoint ends with the uninterrupted run's
weights, bit for bit (issue 21).

The fast tests drive the pieces in one process (the stream, the checkpointed random states, a run
stopped by an exception and resumed); the slow one SIGKILLs a real ``experiment=distill_cpu`` run.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
import torch

from crossmodal.callbacks.training import PeriodicCheckpoint
from crossmodal.data.distill import DistillDataModule, DistillDecoder, SpeechCollate
from crossmodal.data.stream import EpochLoader, ShardStream
from crossmodal.lit.distill import DistillationModule
from crossmodal.pipeline.shards import load_manifest

sys.path.insert(0, str(Path(__file__).parent))
from distill_fixtures import write_distill_shards  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TOY = ROOT / "tests" / "toy"


@pytest.fixture(scope="module")
def shard_set(emodb_root, tmp_path_factory) -> Path:
    return write_distill_shards(tmp_path_factory.mktemp("resume") / "distill" / "emodb", emodb_root, per_speaker=3)


def _loader(shards: Path, num_workers: int, decoder: DistillDecoder | None = None, cache_mb: float = 0.0) -> EpochLoader:
    decoder = decoder or DistillDecoder(train=True, window_seconds=1.0)
    stream = ShardStream(load_manifest(shards).paths("train-"), decoder,
                         SpeechCollate(16000), 4, train=True, seed=3, shuffle_buffer=8, cache_mb=cache_mb)
    return EpochLoader(stream, num_workers=num_workers, batches_per_epoch=4)


def _train_batches(shards: Path, num_workers: int, epoch: int = 1, skip: int = 0, loader: EpochLoader | None = None) -> list[dict]:
    loader = loader or _loader(shards, num_workers)
    if skip:
        loader.load_state_dict({"epoch": epoch, "consumed": skip})
    loader.set_epoch(epoch)
    return list(loader)


def test_training_windows_are_the_same_with_any_worker_count_and_after_a_resume(shard_set):
    torch.manual_seed(0)
    inline = _train_batches(shard_set, 0)
    torch.manual_seed(1)  # the process's generator no longer draws the windows
    one = _train_batches(shard_set, 1)
    assert len(inline) == len(one) == 4
    for a, b in zip(inline, one):
        assert a["key"] == b["key"]
        assert torch.equal(a["wave"], b["wave"]) and torch.equal(a["target"], b["target"])
    # a window is a random crop: the same clip gets another window in another epoch
    other_epoch = {key: wave for batch in _train_batches(shard_set, 0, epoch=2) for key, wave in zip(batch["key"], batch["wave"])}
    here = {key: wave for batch in inline for key, wave in zip(batch["key"], batch["wave"])}
    assert any(not torch.equal(here[key], other_epoch[key]) for key in here.keys() & other_epoch.keys())
    # resumed after 2 consumed batches: the rest of the epoch, same windows (batch i comes from the stream
    # of role i % workers, so from 2 workers on the order depends on the worker count, not on a resume)
    resumed = _train_batches(shard_set, 0, skip=2)
    assert [b["key"] for b in resumed] == [b["key"] for b in inline[2:]]
    assert all(torch.equal(a["wave"], b["wave"]) for a, b in zip(resumed, inline[2:]))


def test_training_cache_gives_the_same_batches(shard_set, monkeypatch):
    """data.train_cache_mb: each shard is parsed and each clip decoded once, later epochs replay them from memory,
    same batches; what does not fit the budget is read every time."""
    import crossmodal.data.stream as stream
    import crossmodal.io.audio as audio

    reads, decodes = [], []
    real_read, real_decode = stream.iter_shard, audio.decode_flac
    monkeypatch.setattr(stream, "iter_shard", lambda url, **kw: reads.append(url) or real_read(url, **kw))
    monkeypatch.setattr(audio, "decode_flac", lambda data: decodes.append(1) or real_decode(data))
    plain = [_train_batches(shard_set, 0, epoch=e) for e in (1, 2, 3)]
    plain_reads, plain_decodes = len(reads), len(decodes)
    reads.clear(), decodes.clear()
    decoder = DistillDecoder(train=True, window_seconds=1.0, cache_mb=64)
    loader = _loader(shard_set, 0, decoder, cache_mb=64)
    cached = [_train_batches(shard_set, 0, epoch=e, loader=loader) for e in (1, 2, 3)]
    for a_epoch, b_epoch in zip(plain, cached):
        for a, b in zip(a_epoch, b_epoch):
            assert a["key"] == b["key"] and torch.equal(a["wave"], b["wave"]) and torch.equal(a["target"], b["target"])
    kept = loader.dataset.cache.kept
    assert kept and len(reads) < plain_reads and len(set(reads)) == len(reads)  # a whole shard is parsed once
    assert 0 < len(decodes) < plain_decodes and len(decodes) == sum(what == "wave" for _, _, what in decoder._cache)
    assert decoder._cached_bytes == sum(sum(a.nbytes for a in (v if isinstance(v, tuple) else (v,))) for v in decoder._cache.values())
    tiny = DistillDecoder(train=True, window_seconds=1.0, cache_mb=1e-6)  # nothing fits: nothing kept
    loader = _loader(shard_set, 0, tiny, cache_mb=1e-6)
    _train_batches(shard_set, 0, loader=loader)
    assert not tiny._cache and not loader.dataset.cache.kept and DistillDecoder(train=False, cache_mb=64).cache_bytes == 0


class _StopAtStep(L.Callback):
    """A crash after an optimizer step, in process (the slow test below sends a real SIGKILL)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            raise RuntimeError("stopped")


def _fit(shards: Path, run_dir: Path, stop_at: int | None = None, ckpt_path: str | None = None) -> dict[str, torch.Tensor]:
    L.seed_everything(0)
    dm = DistillDataModule(str(shards), batch_size=4, eval_batch_size=8, num_workers=0, batches_per_epoch=3, window_seconds=1.0,
                           shuffle_buffer=8, train_eval_shards=0, data_dir=str(run_dir / "data"))
    model = DistillationModule(  # dither and SpecAugment: the training step draws from the process's generator
        student={"name": "small_cnn", "kwargs": {"channels": [4, 4, 8, 8], "first_stride": 2}},
        frontend={"features": "logmel", "n_mels": 16, "dither": 1e-3, "time_mask": 5, "freq_mask": 3},
        optimizer={"_target_": "torch.optim.AdamW", "_partial_": True, "lr": 3e-3}, scheduler=None, roc_figures=False,
    )
    callbacks = [PeriodicCheckpoint(every_n_train_steps=2)] + ([_StopAtStep(stop_at)] if stop_at else [])
    trainer = L.Trainer(max_epochs=2, accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, default_root_dir=run_dir, num_sanity_val_steps=0, limit_val_batches=1,
                        callbacks=callbacks)
    if stop_at:
        with pytest.raises(RuntimeError, match="stopped"):
            trainer.fit(model, datamodule=dm)
        return {}
    trainer.fit(model, datamodule=dm, ckpt_path=ckpt_path)
    assert trainer.global_step == 6
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_a_run_stopped_mid_epoch_and_resumed_ends_with_the_same_weights(shard_set, tmp_path):
    torch.set_num_threads(1)  # identical arithmetic in every run
    uninterrupted = _fit(shard_set, tmp_path / "a")
    _fit(shard_set, tmp_path / "b", stop_at=5)  # epoch 1, after its first batch: last.ckpt is step 4
    last = tmp_path / "b" / "checkpoints" / "last.ckpt"
    checkpoint = torch.load(last, weights_only=True)  # the random states load without pickle
    assert checkpoint["global_step"] == 4 and len(checkpoint["rng_states"]) == 1
    resumed = _fit(shard_set, tmp_path / "b", ckpt_path=str(last))
    assert uninterrupted.keys() == resumed.keys()
    differ = [k for k in uninterrupted if not torch.equal(uninterrupted[k], resumed[k])]
    assert not differ


@pytest.mark.slow  # three entry-point runs, ~20 s each on 2 cores
def test_distill_cpu_killed_mid_epoch_resumes_to_the_same_weights(shard_set, tmp_path):
    env = dict(os.environ, PYTHONPATH=str(TOY), WANDB_MODE="disabled", CROSSMODAL_NO_PROGRESS="1")
    common = ["experiment=distill_cpu", f"data.shards={shard_set}", "data.prepare=null", "data.num_workers=1",
              "data.batches_per_epoch=3", "data.batch_size=8", "data.window_seconds=1.0", "trainer.max_epochs=2",
              "trainer.num_sanity_val_steps=0", "trainer.limit_val_batches=1", "test_after_fit=false",
              "callbacks.periodic_checkpoint.every_n_train_steps=2", "model.frontend.dither=1e-3", "logger=csv",
              f"paths.data_dir={tmp_path / 'data'}"]

    def run(run_dir: Path, *extra: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "crossmodal.run", *common, f"hydra.run.dir={run_dir}", *extra],
                              capture_output=True, text=True, cwd=ROOT, env=env, timeout=600)

    assert (done := run(tmp_path / "a")).returncode == 0, done.stderr[-3000:]
    killed = run(tmp_path / "b", "+callbacks.kill._target_=toy_lightning.KillAtStep", "+callbacks.kill.step=5",
                 "+callbacks.kill.signal_name=SIGKILL")
    assert killed.returncode == -9, killed.stderr[-3000:]
    last = tmp_path / "b" / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=True)["global_step"] == 4
    assert (resumed := run(tmp_path / "b", f"ckpt_path={last}")).returncode == 0, resumed.stderr[-3000:]
    a = torch.load(tmp_path / "a" / "checkpoints" / "last.ckpt", weights_only=True)
    b = torch.load(last, weights_only=True)
    assert a["global_step"] == b["global_step"] == 6
    assert [k for k, v in a["state_dict"].items() if not torch.equal(v, b["state_dict"][k])] == []
