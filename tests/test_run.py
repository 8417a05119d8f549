"""The entry point: config composition and checks, a real run, DDP on CPU, resume."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from crossmodal.config.checks import ConfigError, translate_gpus
from crossmodal.run import CONF_DIR, _compose, preflight

ROOT = Path(__file__).resolve().parents[1]
TOY = ROOT / "tests" / "toy"
sys.path.insert(0, str(TOY))


def _options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))


@pytest.mark.parametrize(
    "group",
    ["trainer", "logger", "callbacks", "paths", "data", "model", "hparams_search"],
)
def test_every_group_option_composes(group):
    for option in _options(group):
        overrides = [f"{group}={option}"]
        cfg = _compose(overrides, [])
        assert cfg is not None, overrides


@pytest.mark.parametrize("experiment", _options("experiment"))
def test_every_experiment_composes(experiment):
    cfg = _compose([f"experiment={experiment}"], [])
    assert cfg.task in {"train", "test", "prepare", "extract", "evaluate", "predict", "demo"}


def test_logger_combination_composes():
    cfg = _compose(["logger=[wandb,csv]"], [])
    assert set(cfg.logger) == {"wandb", "csv"}


def test_gpus_translation_and_conflicts():
    argv = preflight(["trainer.gpus=8", "--cfg", "job"])
    assert argv == ["trainer.gpus=8", "trainer.accelerator=gpu", "trainer.devices=8", "trainer.strategy=ddp", "--cfg", "job"]
    assert translate_gpus({"gpus": 0, "accelerator": "gpu"})["accelerator"] == "cpu"
    assert translate_gpus({"gpus": 1, "strategy": "auto"})["strategy"] == "auto"
    assert translate_gpus({"gpus": 2, "num_nodes": 4})["strategy"] == "ddp"
    with pytest.raises(ConfigError, match="trainer.gpus=2 asks for GPUs but trainer.accelerator=cpu"):
        preflight(["trainer.gpus=2", "trainer.accelerator=cpu"])
    with pytest.raises(ConfigError, match="disagree"):
        preflight(["trainer.gpus=2", "trainer.devices=4"])


def test_cfg_job_shows_translated_trainer():
    out = subprocess.run(
        [sys.executable, "-m", "crossmodal.run", "--cfg", "job", "trainer.gpus=8"],
        capture_output=True, text=True, cwd=ROOT, check=True,
    ).stdout
    assert "accelerator: gpu" in out and "devices: 8" in out and "strategy: ddp" in out


def test_unknown_key_names_the_closest_valid_key():
    with pytest.raises(ConfigError, match=r"Unknown config key 'trainer.max_epoch'.*Did you mean 'trainer.max_epochs'"):
        preflight(["trainer.max_epoch=3"])
    proc = subprocess.run([sys.executable, "-m", "crossmodal.run", "trainer.max_epoch=3"], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 2 and "Did you mean 'trainer.max_epochs'" in proc.stderr


def test_wrong_type_fails_at_composition():
    with pytest.raises(ConfigError, match="max_epochs"):
        preflight(["trainer.max_epochs=ten"])


def _run(run_dir: Path, shard_dir: Path, *overrides: str, timeout: int = 300) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(TOY), WANDB_MODE="disabled", CROSSMODAL_NO_PROGRESS="1")
    cmd = [sys.executable, "-m", "crossmodal.run", "--config-dir", str(TOY / "conf"), "experiment=toy",
           f"data.shard_dir={shard_dir}", f"hydra.run.dir={run_dir}", "logger=csv", *overrides]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


@pytest.fixture(scope="module")
def toy_shards(tmp_path_factory):
    from toy_lightning import write_toy_shards

    path = tmp_path_factory.mktemp("toy_shards")
    write_toy_shards(path)
    return path


def test_missing_value_names_key_and_experiment(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(TOY), WANDB_MODE="disabled")
    proc = subprocess.run(
        [sys.executable, "-m", "crossmodal.run", "--config-dir", str(TOY / "conf"), "experiment=toy", f"hydra.run.dir={tmp_path}"],
        capture_output=True, text=True, cwd=ROOT, env=env,
    )
    assert proc.returncode != 0
    assert "experiment=toy needs a value for data.shard_dir" in proc.stderr + proc.stdout


def test_train_run_writes_run_folder_and_learns(tmp_path, toy_shards):
    run_dir = tmp_path / "run"
    _run(run_dir, toy_shards)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["val/count"] == 60  # every validation sample exactly once
    assert metrics["val/acc"] > 0.75
    assert (run_dir / "config.yaml").exists() and (run_dir / "run.log").exists()
    assert (run_dir / "checkpoints" / "last.ckpt").exists()
    assert (run_dir / "plots" / "curves_loss.png").exists()
    import csv

    rows = list(csv.DictReader(open(run_dir / "csv" / "metrics.csv")))
    losses = [float(r["train/loss_epoch"]) for r in rows if r.get("train/loss_epoch")]
    assert len(losses) == 3 and losses[-1] < losses[0]


def test_same_seed_same_metrics(tmp_path, toy_shards):
    a = _run(tmp_path / "a", toy_shards, "data.num_workers=2")
    b = _run(tmp_path / "b", toy_shards, "data.num_workers=2")
    ma = json.loads((tmp_path / "a" / "metrics.json").read_text())
    mb = json.loads((tmp_path / "b" / "metrics.json").read_text())
    assert ma == mb


def test_ddp_cpu_matches_single_process(tmp_path, toy_shards):
    # One trained model, evaluated by 1 process and by 2 DDP processes (gloo): every sample is seen
    # exactly once across ranks and the synced metrics are equal.
    _run(tmp_path / "train", toy_shards, "trainer.max_epochs=1", "test_after_fit=false")
    ckpt = tmp_path / "train" / "checkpoints" / "last.ckpt"
    _run(tmp_path / "one", toy_shards, "task=test", f"ckpt_path={ckpt}")
    _run(tmp_path / "two", toy_shards, "task=test", f"ckpt_path={ckpt}", "trainer=ddp_cpu", "data.num_workers=1", timeout=400)
    m1 = json.loads((tmp_path / "one" / "metrics.json").read_text())
    m2 = json.loads((tmp_path / "two" / "metrics.json").read_text())
    assert m2["test/count"] == m1["test/count"] == 60
    assert m2["test/acc"] == pytest.approx(m1["test/acc"])
    assert m2["test/loss"] == pytest.approx(m1["test/loss"], rel=1e-5)


def test_ddp_cpu_training_finishes(tmp_path, toy_shards):
    # 4 val shards over 2 ranks x 2 workers, training epochs fixed per rank: no rank waits on another.
    _run(tmp_path / "ddp", toy_shards, "trainer=ddp_cpu", "trainer.max_epochs=2", "data.num_workers=2", timeout=400)
    assert json.loads((tmp_path / "ddp" / "metrics.json").read_text())["val/count"] == 60


def test_resume_gives_the_same_weights(tmp_path, toy_shards):
    common = ["trainer.max_epochs=3", "callbacks.periodic_checkpoint.every_n_train_steps=4", "data.num_workers=2"]
    _run(tmp_path / "full", toy_shards, *common)
    # the same run, SIGKILLed at step 10 (mid-epoch 1; last.ckpt was written at step 8), then resumed
    env = dict(os.environ, PYTHONPATH=str(TOY), WANDB_MODE="disabled")
    killed = subprocess.run(
        [sys.executable, "-m", "crossmodal.run", "--config-dir", str(TOY / "conf"), "experiment=toy", f"data.shard_dir={toy_shards}",
         f"hydra.run.dir={tmp_path / 'cut'}", "logger=csv", *common, "+callbacks.kill._target_=toy_lightning.KillAtStep",
         "+callbacks.kill.step=10"],
        capture_output=True, text=True, cwd=ROOT, env=env, timeout=300,
    )
    assert killed.returncode == -9, killed.stderr[-2000:]
    assert torch.load(tmp_path / "cut" / "checkpoints" / "last.ckpt", weights_only=False)["global_step"] == 8
    _run(tmp_path / "cut", toy_shards, *common, "ckpt_path=last")
    full = torch.load(tmp_path / "full" / "checkpoints" / "last.ckpt", weights_only=False)
    cut = torch.load(tmp_path / "cut" / "checkpoints" / "last.ckpt", weights_only=False)
    assert full["global_step"] == cut["global_step"] == 18
    for key, value in full["state_dict"].items():
        assert torch.equal(value, cut["state_dict"][key]), key
