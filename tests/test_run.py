"""The entry point: config composition and checks, a real run, DDP on CPU, resume."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from crossmodal.config.checks import ConfigError, translate_gpus
from crossmodal.run import CONF_DIR, _compose, main

ROOT = Path(__file__).resolve().parents[1]
TOY = ROOT / "tests" / "toy"
sys.path.insert(0, str(TOY))


def _options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))


@pytest.mark.parametrize(
    "group",
    ["trainer", "logger", "callbacks", "paths", "data", "model", "model/optimizer", "model/scheduler", "prep", "benchmark",
     "hparams_search"],
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


def _cfg_job(capsys, *overrides: str) -> str:
    main(["--cfg", "job", *overrides])
    return capsys.readouterr().out


def _refused(capsys, *overrides: str) -> str:
    with pytest.raises(SystemExit) as exit_info:
        main(["--cfg", "job", *overrides])
    assert exit_info.value.code == 2
    return capsys.readouterr().err


def test_gpus_translation_and_conflicts(capsys):
    from omegaconf import OmegaConf

    trainer = OmegaConf.create(_cfg_job(capsys, "trainer.gpus=8")).trainer
    assert (trainer.accelerator, trainer.devices, trainer.strategy) == ("gpu", 8, "ddp")
    assert translate_gpus({"gpus": 0, "accelerator": "gpu"})["accelerator"] == "cpu"
    assert translate_gpus({"gpus": 1, "strategy": "auto"})["strategy"] == "auto"
    assert translate_gpus({"gpus": 2, "num_nodes": 4})["strategy"] == "ddp"
    assert "trainer.gpus=2 asks for GPUs but trainer.accelerator=cpu" in _refused(capsys, "trainer.gpus=2", "trainer.accelerator=cpu")
    assert "disagree" in _refused(capsys, "trainer.gpus=2", "trainer.devices=4")
    with pytest.raises(ConfigError, match="use a number of GPUs per node"):
        translate_gpus({"gpus": -1})


def test_cfg_job_shows_translated_trainer():
    out = subprocess.run(
        [sys.executable, "-m", "crossmodal.run", "--cfg", "job", "trainer.gpus=8"],
        capture_output=True, text=True, cwd=ROOT, check=True,
    ).stdout
    assert "accelerator: gpu" in out and "devices: 8" in out and "strategy: ddp" in out


def test_unknown_key_names_the_closest_valid_key(capsys):
    assert re.search(r"Unknown config key 'trainer.max_epoch'.*Did you mean 'trainer.max_epochs'", _refused(capsys, "trainer.max_epoch=3"))
    proc = subprocess.run([sys.executable, "-m", "crossmodal.run", "trainer.max_epoch=3"], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 2 and "Did you mean 'trainer.max_epochs'" in proc.stderr and "Traceback" not in proc.stderr


def test_wrong_type_fails_before_any_work(capsys):
    assert "trainer.max_epochs='ten' must be a whole number" in _refused(capsys, "trainer.max_epochs=ten")


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


@pytest.mark.parametrize("override, message", [
    ("paths.min_free_gb=1e9", "hydra.run.dir=.* GB free but about 1000000000.00 GB is needed"),
    ("paths.data_dir={blocker}/data", "paths.data_dir={blocker}/data: .*Point paths.data_dir at a writable folder"),
])
def test_full_disk_or_unwritable_output_fails_before_any_work(tmp_path, toy_shards, override, message):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    env = dict(os.environ, PYTHONPATH=str(TOY), WANDB_MODE="disabled")
    cmd = [sys.executable, "-m", "crossmodal.run", "--config-dir", str(TOY / "conf"), "experiment=toy",
           f"data.shard_dir={toy_shards}", f"hydra.run.dir={tmp_path / 'run'}", f"paths.data_dir={tmp_path / 'data'}",
           "logger=csv", override.format(blocker=blocker)]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env, timeout=120)
    assert proc.returncode != 0
    assert re.search(message.format(blocker=blocker), proc.stderr + proc.stdout), proc.stderr[-2000:]
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_a_sweep_job_that_fails_early_says_so(tmp_path):
    """A job that fails inside its task (here: no shards) leaves failed.json with the error, no
    metrics.json that reads as finished, the error in its run.log, a failed status in the sweep
    index, and a non-zero exit code."""
    sweep_dir = tmp_path / "sweep"
    env = dict(os.environ, PYTHONPATH=str(TOY), WANDB_MODE="disabled", CROSSMODAL_NO_PROGRESS="1")
    proc = subprocess.run(
        [sys.executable, "-m", "crossmodal.run", "--config-dir", str(TOY / "conf"), "-m", "experiment=toy",
         f"data.shard_dir={tmp_path / 'no_shards'}", f"hydra.sweep.dir={sweep_dir}"],
        capture_output=True, text=True, cwd=ROOT, env=env, timeout=600,
    )
    assert proc.returncode != 0
    job = sweep_dir / "0"
    assert not (job / "metrics.json").exists()
    failed = json.loads((job / "failed.json").read_text())
    assert failed["error"].startswith("FileNotFoundError: no shard manifest at") and failed["metrics"] == {}
    assert "run failed: FileNotFoundError" in (job / "run.log").read_text()
    assert "failed: FileNotFoundError: no shard manifest" in (sweep_dir / "index.html").read_text()


def test_train_run_writes_run_folder_and_learns(tmp_path, toy_shards):
    run_dir = tmp_path / "run"
    _run(run_dir, toy_shards)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["val/count"] == 60  # every validation sample exactly once
    assert metrics["val/acc"] > 0.75
    assert (run_dir / "config.yaml").exists() and (run_dir / "run.log").exists()
    assert (run_dir / "checkpoints" / "last.ckpt").exists()
    assert (run_dir / "plots" / "curves_loss.png").exists()
    assert 'src="plots/curves_loss.png"' in (run_dir / "report.html").read_text()  # report: true by default
    import csv

    rows = list(csv.DictReader(open(run_dir / "csv" / "metrics.csv")))
    by_epoch = {int(r["epoch"]): float(r["train/loss_epoch"]) for r in rows if r.get("train/loss_epoch") and r.get("epoch")}
    assert sorted(by_epoch) == [0, 1, 2] and by_epoch[2] < by_epoch[0]


@pytest.mark.slow  # over 30 s on 2 cores (make test-full)
def test_same_seed_same_metrics(tmp_path, toy_shards):
    _run(tmp_path / "a", toy_shards, "data.num_workers=2")
    _run(tmp_path / "b", toy_shards, "data.num_workers=2")
    ma = json.loads((tmp_path / "a" / "metrics.json").read_text())
    mb = json.loads((tmp_path / "b" / "metrics.json").read_text())
    assert ma == mb


@pytest.mark.slow  # over 30 s on 2 cores (make test-full)
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


@pytest.mark.slow  # over 30 s on 2 cores (make test-full)
def test_ddp_cpu_training_finishes(tmp_path, toy_shards):
    # 4 val shards over 2 ranks x 2 workers, training epochs fixed per rank: no rank waits on another.
    _run(tmp_path / "ddp", toy_shards, "trainer=ddp_cpu", "trainer.max_epochs=2", "data.num_workers=2", timeout=400)
    assert json.loads((tmp_path / "ddp" / "metrics.json").read_text())["val/count"] == 60


def test_loader_workers_start_once_and_are_never_forked(toy_shards):
    # The DDP hang: workers forked again every epoch while gloo/pin-memory threads held locks. They now
    # come from a forkserver, start once per loader, and still see each new epoch (a new shard draw).
    from toy_lightning import ToyData

    data = ToyData(str(toy_shards), num_workers=2, batches_per_epoch=3)
    data.setup()
    train, val = data.train_dataloader(), data.val_dataloader()
    epochs, pids = [], []
    for epoch in range(2):
        train.set_epoch(epoch)
        epochs.append([b["y"].tolist() for b in train])
        assert sum(len(b["y"]) for b in val) == 60  # exact-once evaluation on every pass
        pids.append([w.pid for loader in (train.loader, val) for w in loader._iterator._workers])
    assert epochs[0] != epochs[1] and pids[0] == pids[1]
    for loader in (train.loader, val):
        assert loader.persistent_workers and loader.multiprocessing_context.get_start_method() in ("forkserver", "spawn")


RESUME_RUN = ["trainer.max_epochs=3", "callbacks.periodic_checkpoint.every_n_train_steps=4", "data.num_workers=2"]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, toy_shards):
    run_dir = tmp_path_factory.mktemp("uninterrupted")
    _run(run_dir, toy_shards, *RESUME_RUN)
    return torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)


@pytest.mark.slow  # over 30 s on 2 cores (make test-full)
@pytest.mark.parametrize("signal_name, returncode, saved_step", [("SIGKILL", -9, 8), ("SIGTERM", 0, 10)])
def test_resume_after_kill_gives_the_same_weights(tmp_path, toy_shards, uninterrupted, signal_name, returncode, saved_step):
    # SIGKILL at step 10 (mid-epoch 1) leaves the periodic last.ckpt of step 8; SIGTERM (SLURM's
    # pre-emption notice) saves last.ckpt at step 10 and exits cleanly. Either way, resuming with
    # ckpt_path=last ends with exactly the weights of the uninterrupted run.
    env = dict(os.environ, PYTHONPATH=str(TOY), WANDB_MODE="disabled")
    stopped = subprocess.run(
        [sys.executable, "-m", "crossmodal.run", "--config-dir", str(TOY / "conf"), "experiment=toy", f"data.shard_dir={toy_shards}",
         f"hydra.run.dir={tmp_path}", "logger=csv", *RESUME_RUN, "+callbacks.kill._target_=toy_lightning.KillAtStep",
         "+callbacks.kill.step=10", f"+callbacks.kill.signal_name={signal_name}"],
        capture_output=True, text=True, cwd=ROOT, env=env, timeout=300,
    )
    assert stopped.returncode == returncode, stopped.stderr[-2000:]
    assert torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=False)["global_step"] == saved_step
    _run(tmp_path, toy_shards, *RESUME_RUN, "ckpt_path=last")
    resumed = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=False)
    assert uninterrupted["global_step"] == resumed["global_step"] == 18
    for key, value in uninterrupted["state_dict"].items():
        assert torch.equal(value, resumed["state_dict"][key]), key


@pytest.mark.slow  # ~20 s, a 2-job sweep (make test-full); keeps make test under 8 min on 2 cores
def test_local_sweep_runs_each_job_as_its_own_wandb_run_in_one_group(tmp_path, toy_shards):
    env = dict(os.environ, PYTHONPATH=str(TOY), WANDB_MODE="offline", CROSSMODAL_NO_PROGRESS="1")
    sweep_dir = tmp_path / "sweep"
    proc = subprocess.run(
        [sys.executable, "-m", "crossmodal.run", "--config-dir", str(TOY / "conf"), "-m", "experiment=toy",
         "hparams_search=toy_grid", f"data.shard_dir={toy_shards}", f"hydra.sweep.dir={sweep_dir}", "trainer.max_epochs=1"],
        capture_output=True, text=True, cwd=ROOT, env=env, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    jobs = sorted(p for p in sweep_dir.iterdir() if p.is_dir())
    assert [p.name for p in jobs] == ["0", "1", "2", "3"]
    runs = [json.loads((job / "wandb_run.json").read_text()) for job in jobs]
    assert len({r["id"] for r in runs}) == 4 and {r["group"] for r in runs} == {"sweep"}
    assert all((job / "metrics.json").exists() and len(list((job / "wandb").glob("offline-run-*"))) == 1 for job in jobs)
    index = (sweep_dir / "index.html").read_text()  # each job rewrites the sweep's index: the last one lists all
    assert all(f'href="{job.name}/report.html"' in index and (job / "report.html").exists() for job in jobs)
    assert {tuple(sorted(t for t in r["tags"] if t.startswith("model."))) for r in runs} == {
        ("model.hidden=8", "model.lr=0.1"), ("model.hidden=16", "model.lr=0.1"),
        ("model.hidden=8", "model.lr=0.05"), ("model.hidden=16", "model.lr=0.05")}
