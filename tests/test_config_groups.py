"""Config groups hold one kind of thing; old keys keep their meaning; paper constants are written once;
one optimizer/scheduler shape and builder serves every module."""
from __future__ import annotations

import importlib
import re
from pathlib import Path

import lightning as L
import pytest
import torch
from omegaconf import OmegaConf

from crossmodal import paper
from crossmodal.run import CONF_DIR, _compose
from crossmodal.utils.optim import build_optimizer, build_scheduler, configure

CPU_PREPROCESS = {"channels": 1, "resize": 48, "input_size": 44, "mean": [128.0], "std": [64.0]}
TINY_VGG = {"widths": [8, 8, 8, 8], "depths": [1, 1, 1, 1], "input_size": 44}


def _target(group: str, option: str) -> type:
    cfg = _compose([f"{group}={option}"], [])
    module, _, name = cfg[group]._target_.rpartition(".")
    return getattr(importlib.import_module(module), name)


@pytest.mark.parametrize("group, kind", [("data", "datamodule"), ("prep", "recipe"), ("benchmark", "corpus")])
def test_each_group_holds_one_kind_of_thing(group, kind):
    from crossmodal.pipeline.pairs import PairsConfig
    from crossmodal.pipeline.pseudo_pairs import PseudoPairsConfig
    from crossmodal.tasks.evaluate import BenchmarkConfig
    from crossmodal.tasks.predict import PredictConfig

    options = sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))
    assert options
    for option in options:
        target = _target(group, option)
        if kind == "datamodule":
            assert issubclass(target, L.LightningDataModule), option
        elif kind == "recipe":
            assert target in (PairsConfig, PseudoPairsConfig, PredictConfig), option
        else:
            assert target is BenchmarkConfig, option


@pytest.mark.parametrize("overrides, where, expected", [
    (["experiment=eval_emodb", "data.source=/corpora/emodb", "data.folds=4"], "benchmark",
     {"source": "/corpora/emodb", "folds": 4, "corpus": "emodb"}),
    (["experiment=extract_logits", "data.source=/videos", "data.frames_root=/frames"], "prep",
     {"source": "/videos", "frames_root": "/frames"}),
    (["experiment=pseudo_pairs", "data.source=/emodb", "data.ferplus=/ferplus"], "prep", {"source": "/emodb", "ferplus": "/ferplus"}),
    (["task=predict", "data=predict", "data.source=clip.wav", "data.window=2"], "prep", {"source": "clip.wav", "window": 2}),
    (["experiment=eval_iemocap", "benchmark.source=/iemocap"], "benchmark", {"source": "/iemocap", "classes": ["neu", "hap", "sad", "ang"]}),
])
def test_old_data_keys_mean_the_same_in_their_new_group(overrides, where, expected):
    cfg = _compose(overrides, [])
    node = OmegaConf.to_container(cfg[where], resolve=False)
    assert {k: node[k] for k in expected} == expected
    assert cfg.get("data") is None or where == "prep" and cfg.task == "predict"  # predict keeps the demo's data, unread


def test_eval_experiments_are_one_evaluate_over_a_benchmark():
    for corpus in ("cremad", "emodb", "enterface", "iemocap", "ravdess", "rml"):
        cfg = _compose([f"experiment=eval_{corpus}"], [])
        assert (cfg.task, cfg.name, cfg.benchmark.corpus) == ("evaluate", f"eval_{corpus}", corpus)
        lines = [ln for ln in (CONF_DIR / "experiment" / f"eval_{corpus}.yaml").read_text().splitlines() if not ln.startswith("#")]
        assert len(lines) <= 2


def test_paper_experiments_differ_only_in_their_choice():
    senet, resnet = (_compose([f"experiment=distill_{n}"], []) for n in ("senet", "resnet50"))
    assert OmegaConf.to_container(senet.model) == OmegaConf.to_container(resnet.model)
    assert OmegaConf.to_container(senet.data) == OmegaConf.to_container(resnet.data)
    assert senet.model.loss.temperature == paper.TEMPERATURE and senet.data.window_seconds == paper.WINDOW_SECONDS
    assert senet.data.max_seconds == paper.MAX_SECONDS and senet.data.global_batch_size == paper.STUDENT_BATCH_SIZE
    assert (senet.model.optimizer.lr, senet.model.scheduler.lr_end) == (paper.STUDENT_LR, paper.STUDENT_LR_END)
    t_senet, t_resnet = (_compose([f"experiment=teacher_{n}"], []) for n in ("senet50", "resnet50"))
    assert (t_senet.model.backbone, t_resnet.model.backbone) == ("legacy_seresnet50", "resnet50")
    assert list(t_senet.data.preprocess.mean) == list(paper.FACE_MEAN) and t_senet.trainer.max_epochs == paper.TEACHER_EPOCHS
    assert list(t_senet.model.scheduler.milestones) == list(paper.TEACHER_LR_STEPS)


def test_each_paper_constant_is_written_once():
    """The numbers live in crossmodal/paper.py; no config restates them (they read ${paper:...})."""
    literals = ["4.024", "19.9", "131.0912", "temperature: 2", "lr_end: 1.0e-5", "4.1666"]
    for path in sorted(Path(CONF_DIR).rglob("*.yaml")):
        text = "\n".join(line.split("#", 1)[0] for line in path.read_text().splitlines())  # comments may explain
        for literal in literals:
            assert literal not in text, f"{path}: {literal}"
        assert "method.md" not in path.read_text(), path


def test_gallery_only_in_distillation_runs():
    def has_gallery(experiment: str) -> bool:
        return "sample_gallery" in _compose([f"experiment={experiment}"], []).callbacks

    assert has_gallery("distill_senet") and has_gallery("distill_cpu") and has_gallery("demo")
    assert not any(has_gallery(e) for e in ("teacher_cpu", "supervised_cpu", "eval_emodb", "teacher_senet50"))


def test_old_flat_teacher_keys_on_the_command_line():
    cfg = _compose(["experiment=teacher_cpu", "model.lr=0.5", "model.scheduler=step", "model.step_epochs=[3]", "model.optimizer=adamw"], [])
    assert (cfg.model.optimizer.lr, cfg.model.optimizer.name) == (0.5, "adamw")
    assert (cfg.model.scheduler.name, list(cfg.model.scheduler.milestones)) == ("step", [3])


def test_old_flat_teacher_hparams_load_into_the_nested_shape(caplog):
    """A TeacherFER .ckpt saved before the change holds flat hyper-parameters: they still build the same module."""
    from crossmodal.lit.teacher import TeacherFER

    old = dict(backbone="vgg_small", backbone_kwargs=TINY_VGG, preprocess=CPU_PREPROCESS, optimizer="sgd", lr=0.05,
               momentum=0.8, nesterov=True, weight_decay=1e-3, scheduler="step", step_epochs=[2], step_gamma=0.5)
    with caplog.at_level("WARNING", logger="crossmodal"):
        model = TeacherFER(**old)
    assert "deprecated flat optimisation keys" in caplog.text and "model.lr -> model.optimizer.lr" in caplog.text
    assert model.hparams.optimizer == {"name": "sgd", "lr": 0.05, "momentum": 0.8, "nesterov": True, "weight_decay": 1e-3,
                                       "betas": [0.9, 0.999]}
    assert model.hparams.scheduler["milestones"] == [2] and "lr" not in model.hparams
    again = TeacherFER(**dict(model.hparams))  # the new hparams rebuild it without any translation
    assert again.hparams.optimizer == model.hparams.optimizer
    built = model.configure_optimizers()
    optimizer, scheduler = built["optimizer"], built["lr_scheduler"]["scheduler"]
    assert isinstance(optimizer, torch.optim.SGD) and optimizer.defaults["nesterov"]
    assert {g["weight_decay"] for g in optimizer.param_groups} == {0.0, 1e-3}  # no decay on norms and biases
    for _ in range(2):
        optimizer.step()
        scheduler.step()
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.025)


def _params():
    return [torch.nn.Parameter(torch.zeros(3))]


class _Trainer:
    max_epochs = 10
    estimated_stepping_batches = 100


def test_one_builder_for_every_schedule():
    optimizer = build_optimizer(_params(), {"name": "sgd", "lr": 1e-4})
    entry = build_scheduler(optimizer, {"name": "logspace", "lr_end": 1e-5}, trainer=_Trainer())
    lrs = []
    for _ in range(_Trainer.max_epochs):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        entry["scheduler"].step()
    assert entry["interval"] == "epoch" and lrs[0] == pytest.approx(1e-4) and lrs[-1] == pytest.approx(1e-5)
    assert all(a > b for a, b in zip(lrs, lrs[1:]))  # log-spaced: strictly down
    optimizer = build_optimizer(_params(), {"name": "adamw", "lr": 1e-3})
    assert isinstance(optimizer, torch.optim.AdamW) and optimizer.defaults["weight_decay"] == 1e-2
    entry = build_scheduler(optimizer, {"name": "cosine", "warmup_epochs": 1, "min_lr_ratio": 0.1}, trainer=_Trainer())
    seen = []
    for _ in range(100):
        optimizer.step()
        entry["scheduler"].step()
        seen.append(optimizer.param_groups[0]["lr"])
    assert max(seen) == pytest.approx(1e-3) and seen[-1] == pytest.approx(1e-4) and entry["interval"] == "step"
    assert configure(_params(), {"lr": 0.1}, {"name": "none"}).__class__ is torch.optim.SGD


@pytest.mark.parametrize("optimizer, scheduler, message", [
    ({"name": "rmsprop", "lr": 1}, None, "model.optimizer.name='rmsprop' is not one of sgd, adamw"),
    ({"name": "sgd", "lr": 1, "moment": 0.9}, None, "model.optimizer.moment is not a key"),
    ({"name": "sgd", "lr": 1}, {"name": "plateau"}, "model.scheduler.name='plateau'"),
    ({"name": "sgd", "lr": 1}, {"name": "step", "milestone": [3]}, "model.scheduler.milestone is not a key"),
])
def test_bad_optimisation_config_names_the_key(optimizer, scheduler, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        configure(_params(), optimizer, scheduler, trainer=_Trainer())


def test_task_prepare_builds_the_recipe_of_the_prep_group(tmp_path):
    """experiment=pseudo_pairs task=prepare (old spelling data.source/data.ferplus) builds pair shards only."""
    from crossmodal.tasks.prepare import run
    from crossmodal.tasks.run_folder import RunFolder

    demo = Path(__file__).resolve().parents[1] / "crossmodal" / "assets" / "demo"
    cfg = _compose(["experiment=pseudo_pairs", "task=prepare", f"data.source={demo / 'emodb'}", f"data.ferplus={demo / 'ferplus'}",
                    f"paths.data_dir={tmp_path / 'data'}"], [])
    assert cfg.get("data") is None and cfg.prep.source == str(demo / "emodb")
    run(cfg, RunFolder(cfg, tmp_path / "run"))
    assert len(list((tmp_path / "data" / "pairs").glob("*/manifest.json"))) == 1
    assert not (tmp_path / "data" / "distill").exists()  # no teacher ran
