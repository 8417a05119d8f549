"""Config values are checked before any work, through the real entry point (crossmodal.run.main):
out-of-range values name their key, a misspelt key or option gets the nearest valid one, and the
`_target_` nodes are checked against what they name (crossmodal.config.schema.check_config)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from crossmodal.config.checks import ConfigError, closest_key
from crossmodal.config.schema import BOUNDS, MAX_BATCH, bound_for, check_config
from crossmodal.run import CONF_DIR, _compose, main

ROOT = Path(__file__).resolve().parents[1]
EXPERIMENTS = sorted(p.stem for p in (CONF_DIR / "experiment").glob("*.yaml"))


def _fails(capsys, *overrides: str) -> str:
    with pytest.raises(SystemExit) as exit_info:
        main([*overrides, "--cfg", "job"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err  # one line, no traceback
    return err


@pytest.mark.parametrize("experiment, overrides", [
    ("distill_cpu", {
        "data.batch_size=-1": "data.batch_size=-1 must be a whole number in [1, 4096]",
        "data.eval_batch_size=2.5": "data.eval_batch_size=2.5 must be a whole number in [1, 4096]",
        "model.optimizer.lr=-0.001": "model.optimizer.lr=-0.001 must be a finite number > 0",
        "model.loss.temperature=0": "model.loss.temperature=0 must be a finite number > 0",
        "data.window_seconds=0": "data.window_seconds=0 must be a finite number > 0",
        "trainer.max_epochs=-5": "trainer.max_epochs=-5 must be a whole number of epochs >= 0",
        "data.num_workers=-1": "data.num_workers=-1 must be a whole number >= 0",
    }),
    ("teacher_cpu", {
        "data.batch_size=0": "data.batch_size=0 must be a whole number in [1, 4096]",
        "model.optimizer.lr=-0.1": "model.optimizer.lr=-0.1 must be a finite number > 0",
        "model.optimizer.momentum=1.5": "model.optimizer.momentum=1.5 must be a number in [0, 1)",
        "trainer.limit_train_batches=1.5": "trainer.limit_train_batches=1.5 must be a whole number of batches",
    }),
])
def test_out_of_range_values_fail_at_composition_naming_each_key(capsys, experiment, overrides):
    err = _fails(capsys, f"experiment={experiment}", *overrides)
    assert "Config value out of range" in err
    for message in overrides.values():
        assert message in err, err
    for key in overrides:  # and one at a time, so no message leans on another
        if key.startswith("model.loss.temperature"):
            assert overrides[key] in _fails(capsys, f"experiment={experiment}", key)


def test_absurd_batch_size_is_refused_naming_the_bound(capsys):
    err = _fails(capsys, "experiment=distill_cpu", "data.batch_size=1000000000")
    assert f"data.batch_size=1000000000 must be a whole number in [1, {MAX_BATCH}] (per process)" in err


def test_removed_spellings_name_their_new_key(capsys):
    """Only trainer.gpus=N is still translated; the older spellings fail naming the key to type now."""
    assert "Did you mean 'model.optimizer.lr'?" in _fails(capsys, "experiment=teacher_cpu", "model.lr=-0.1")
    assert "Did you mean 'benchmark.source'?" in _fails(capsys, "experiment=eval_emodb", "data.source=/corpora/emodb")
    assert "Did you mean 'prep.source'?" in _fails(capsys, "experiment=extract_logits", "data.source=/videos")


@pytest.mark.parametrize("option, message", [
    ("experiment=no_such_name", "experiment=no_such_name: no such option in conf/experiment/. Choose one of: demo, "),
    ("experiment=distil_cpu", "Did you mean experiment=distill_cpu?"),
    ("model/optimizer=adamx", "Did you mean model/optimizer=adamw? Choose one of: adamw, sgd"),
])
def test_unknown_option_is_one_line_listing_the_options(capsys, option, message):
    assert message in _fails(capsys, option)


def test_every_bad_value_is_named_at_once_and_nothing_is_written(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "crossmodal.run", "experiment=distill_cpu", "data.batch_size=-1", "model.optimizer.lr=-1",
         f"hydra.run.dir={tmp_path / 'run'}", f"paths.data_dir={tmp_path / 'data'}"],
        capture_output=True, text=True, cwd=ROOT, env=dict(os.environ, WANDB_MODE="disabled"), timeout=300)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "data.batch_size=-1" in proc.stderr and "model.optimizer.lr=-1" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "run").exists() and not (tmp_path / "data").exists()  # no run folder, no data: no work


def test_run_folder_blocked_by_a_file_names_hydra_run_dir(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    proc = subprocess.run([sys.executable, "-m", "crossmodal.run", "experiment=distill_cpu", f"hydra.run.dir={blocker}/run"],
                          capture_output=True, text=True, cwd=ROOT, env=dict(os.environ, WANDB_MODE="disabled"), timeout=300)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert f"hydra.run.dir={blocker}/run: " in proc.stderr and "Point hydra.run.dir at a writable folder" in proc.stderr


def test_predict_window_values(capsys):
    clip = str(Path(__file__).resolve().parents[1] / "crossmodal" / "assets" / "demo" / "emodb" / "wav" / "03a01Fa.flac")
    err = _fails(capsys, "task=predict", "prep=predict", f"prep.source={clip}", "prep.window=nan", "prep.hop=0")
    assert "prep.window=nan must be a finite number of seconds > 0, or 0 / null" in err and "prep.hop=0 must be a finite number > 0" in err


def test_good_values_compose(capsys):
    main(["experiment=distill_cpu", "data.batch_size=8", "model.optimizer.lr=0.01", "trainer.max_epochs=-1", "--cfg", "job"])
    out = capsys.readouterr().out
    assert "batch_size: 8" in out and "max_epochs: -1" in out


def test_cfg_job_resolve_shows_resolved_values(capsys):
    main(["--cfg", "job", "--resolve", "experiment=distill_paper"])
    cfg = OmegaConf.create(capsys.readouterr().out)
    assert cfg.model.loss.temperature == 2  # ${paper:temperature}, resolved
    assert cfg.paths.output_dir.startswith(cfg.paths.log_dir + "/distill_paper/runs/")  # the run folder it would use
    assert cfg.model.optimizer._target_ == "torch.optim.SGD" and cfg.model.optimizer._partial_


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_shipped_experiment_passes_every_check(experiment):
    cfg = _compose([f"experiment={experiment}"], [])
    check_config(cfg, experiment, require_values=False)  # ranges and `_target_` signatures; raises naming the key


def test_target_nodes_are_checked_against_what_they_name():
    cfg = _compose(["experiment=distill_cpu", "+data.batch_sise=3", "+model.optimizer.betaz=[0.9,0.99]"], [])
    with pytest.raises(ConfigError) as info:
        check_config(cfg, "distill_cpu", require_values=False)
    assert "Unknown config key 'data.batch_sise': crossmodal.data.distill.DistillDataModule has no argument 'batch_sise'. " \
           "Did you mean 'data.batch_size'?" in str(info.value)
    assert "torch.optim.AdamW has no argument 'betaz'. Did you mean 'model.optimizer.betas'?" in str(info.value)
    cfg = _compose(["experiment=distill_cpu", "data.reduce=[1]"], [])
    with pytest.raises(ConfigError, match=r"data.reduce=\[1\] has the wrong type for crossmodal.data.distill.DistillDataModule"):
        check_config(cfg, "distill_cpu", require_values=False)


def test_misspelt_key_suggests_one_level_deeper(capsys):
    err = _fails(capsys, "experiment=distill_cpu", "model.temprature=3")
    assert "Unknown config key 'model.temprature'" in err and "Did you mean 'model.loss.temperature'?" in err
    err = _fails(capsys, "experiment=distill_cpu", "data.batch_sise=3")
    assert "Did you mean 'data.batch_size'?" in err  # a sibling still wins


def test_closest_key_prefers_siblings_then_one_level_down():
    keys = ["model.teacher", "model.loss", "model.loss.temperature", "model.loss.kind", "model.optimizer", "model.optimizer.lr",
            "data.batch_size", "trainer.max_epochs"]
    assert closest_key("model.temprature", keys) == "model.loss.temperature"
    assert closest_key("model.optimiser", keys) == "model.optimizer"
    assert closest_key("model.teachr", keys) == "model.teacher"
    assert closest_key("trainer.max_epoch", keys) == "trainer.max_epochs"
    assert closest_key("model.zzz", keys) is None


def test_bounds_cover_the_keys_the_issues_name():
    for key in ("data.batch_size", "data.eval_batch_size", "model.optimizer.lr", "model.loss.temperature", "trainer.max_epochs",
                "data.window_seconds", "prep.window", "prep.hop", "model.teacher_batch_size", "model.scheduler.lr_end"):
        assert bound_for(key) is not None, key
    assert bound_for("model.label_classes") is None and all(isinstance(p, str) for p in BOUNDS)
    with pytest.raises(ConfigError, match=r"trainer.max_epochs=True must be"):
        check_config(OmegaConf.create({"trainer": {"max_epochs": True}}))
