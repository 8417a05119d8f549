"""Config values are checked before any work, through the real entry point (crossmodal.run.main):
out-of-range values name their key, and a misspelt key gets the nearest valid one, one level deeper too."""
from __future__ import annotations

from pathlib import Path

import pytest

from crossmodal.config.checks import VALUE_RULES, ConfigError, check_values, closest_key, rule_for
from crossmodal.run import CONF_DIR, _compose, main

EXPERIMENTS = sorted(p.stem for p in (CONF_DIR / "experiment").glob("*.yaml"))


def _fails(capsys, *overrides: str) -> str:
    with pytest.raises(SystemExit) as exit_info:
        main([*overrides, "--cfg", "job"])
    assert exit_info.value.code == 2
    return capsys.readouterr().err


@pytest.mark.parametrize("experiment, overrides", [
    ("distill_cpu", {
        "data.batch_size=-1": "data.batch_size=-1 must be a whole number >= 1",
        "data.eval_batch_size=2.5": "data.eval_batch_size=2.5 must be a whole number >= 1",
        "model.optimizer.lr=-0.001": "model.optimizer.lr=-0.001 must be a finite number > 0",
        "model.loss.temperature=0": "model.loss.temperature=0 must be a finite number > 0",
        "data.window_seconds=0": "data.window_seconds=0 must be a finite number > 0",
        "trainer.max_epochs=-5": "trainer.max_epochs=-5 must be a whole number of epochs >= 0",
        "data.num_workers=-1": "data.num_workers=-1 must be a whole number >= 0",
    }),
    ("teacher_cpu", {
        "data.batch_size=0": "data.batch_size=0 must be a whole number >= 1",
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


def test_old_flat_teacher_key_is_checked_under_its_new_name_and_named_as_typed(capsys):
    err = _fails(capsys, "experiment=teacher_cpu", "model.lr=-0.1")
    assert "model.optimizer.lr=-0.1 must be a finite number > 0" in err and "model.lr=-0.1 was read as model.optimizer.lr=-0.1" in err


def test_every_bad_value_is_named_at_once_and_nothing_is_written(capsys, tmp_path):
    with pytest.raises(SystemExit) as exit_info:
        main(["experiment=distill_cpu", "data.batch_size=-1", "model.optimizer.lr=-1", f"hydra.run.dir={tmp_path / 'run'}",
              f"paths.data_dir={tmp_path / 'data'}"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "data.batch_size=-1" in err and "model.optimizer.lr=-1" in err
    assert not (tmp_path / "run").exists() and not (tmp_path / "data").exists()  # no run folder, no data: no work


def test_predict_window_values(capsys, tmp_path):
    clip = str(Path(__file__).resolve().parents[1] / "crossmodal" / "assets" / "demo" / "emodb" / "wav" / "03a01Fa.flac")
    err = _fails(capsys, "task=predict", "data=predict", f"data.source={clip}", "data.window=nan", "data.hop=0")
    # data=predict data.window=... (the older spelling) is read as prep=predict prep.window=..., and the message says so
    assert "prep.window=nan must be a finite number of seconds > 0, or 0 / null" in err and "prep.hop=0 must be a finite number > 0" in err
    assert "data.window=nan was read as prep.window=nan" in err


def test_good_values_compose(capsys):
    main(["experiment=distill_cpu", "data.batch_size=8", "model.optimizer.lr=0.01", "trainer.max_epochs=-1", "--cfg", "job"])
    out = capsys.readouterr().out
    assert "batch_size: 8" in out and "max_epochs: -1" in out


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_shipped_experiment_is_in_range(experiment):
    cfg = _compose([f"experiment={experiment}"], [])
    check_values(cfg)  # raises ConfigError naming the key otherwise


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


def test_rules_table_covers_the_keys_the_issue_names():
    for key in ("data.batch_size", "data.eval_batch_size", "model.optimizer.lr", "model.lr", "model.loss.temperature",
                "trainer.max_epochs", "data.window_seconds", "prep.window", "prep.hop", "model.teacher_batch_size"):
        assert rule_for(key) is not None, key
    assert rule_for("model.label_classes") is None and all(isinstance(p, str) for p in VALUE_RULES)
    with pytest.raises(ConfigError, match=r"trainer.max_epochs=True must be"):
        from omegaconf import OmegaConf

        check_values(OmegaConf.create({"trainer": {"max_epochs": True}}))
