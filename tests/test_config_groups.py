"""Config groups hold one kind of thing; paper constants are written once; optimisers and schedulers
are `_target_` + `_partial_` configs (conf/model/optimizer/, conf/model/scheduler/) built by the modules."""
from __future__ import annotations

import importlib
from pathlib import Path

import lightning as L
import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from crossmodal import paper
from crossmodal.run import CONF_DIR, _compose
from crossmodal.utils.optim import with_scheduler

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
    (["experiment=eval_emodb", "benchmark.source=/corpora/emodb", "benchmark.folds=4"], "benchmark",
     {"source": "/corpora/emodb", "folds": 4, "corpus": "emodb"}),
    (["experiment=extract_logits", "prep.source=/videos", "prep.frames_root=/frames"], "prep",
     {"source": "/videos", "frames_root": "/frames"}),
    (["task=predict", "prep=predict", "prep.source=clip.wav", "prep.window=2"], "prep", {"source": "clip.wav", "window": 2}),
    (["experiment=eval_iemocap", "benchmark.source=/iemocap"], "benchmark", {"source": "/iemocap", "classes": ["neu", "hap", "sad", "ang"]}),
])
def test_keys_land_in_their_group(overrides, where, expected):
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


def _params():
    return [torch.nn.Parameter(torch.zeros(3))]


class _Trainer:
    max_epochs = 10
    estimated_stepping_batches = 100


def _node(overrides: list[str], key: str) -> dict:
    return OmegaConf.to_container(OmegaConf.select(_compose(overrides, []), key), resolve=True)


def test_optimisers_and_schedulers_are_partial_targets_from_their_groups():
    cpu = _compose(["experiment=distill_cpu"], []).model
    assert (cpu.optimizer._target_, cpu.optimizer.lr, cpu.optimizer.weight_decay) == ("torch.optim.AdamW", 3e-3, 1e-2)
    assert (cpu.scheduler._target_, cpu.scheduler.pct_start) == ("crossmodal.utils.optim.onecycle", 0.3)
    teacher = _compose(["experiment=teacher_cpu"], []).model
    assert (teacher.optimizer._target_, teacher.optimizer.nesterov, teacher.scheduler._target_) == (
        "torch.optim.SGD", True, "crossmodal.utils.optim.cosine")
    assert "milestones" not in teacher.scheduler  # switching the group replaces the node: no key of the old one is left
    switched = _compose(["experiment=distill_paper", "model/optimizer=adamw", "~model/scheduler"], []).model
    assert switched.optimizer._target_ == "torch.optim.AdamW" and switched.optimizer.lr == paper.STUDENT_LR
    assert "scheduler" not in switched and "momentum" not in switched.optimizer


def test_the_teacher_builds_its_optimiser_from_the_config():
    """TeacherFER from its composed config: SGD (Nesterov) over groups without decay on norms, the paper's steps."""
    model_cfg = _compose(["experiment=teacher_paper", "model.scheduler.milestones=[2]", "model.scheduler.gamma=0.5",
                          "model.optimizer.lr=0.05", "model.optimizer.nesterov=true"], []).model
    for key, value in {"backbone": "vgg_small", "backbone_kwargs": TINY_VGG, "preprocess": CPU_PREPROCESS}.items():
        model_cfg[key] = value  # a tiny network: the optimiser is what is tested
    model = instantiate(model_cfg, _convert_="all")
    assert model.hparams.optimizer["_target_"] == "torch.optim.SGD"  # a plain config in the hparams (checkpoint-safe)
    built = model.configure_optimizers()
    optimizer, scheduler = built["optimizer"], built["lr_scheduler"]["scheduler"]
    assert isinstance(optimizer, torch.optim.SGD) and optimizer.defaults["nesterov"]
    assert {g["weight_decay"] for g in optimizer.param_groups} == {0.0, paper.WEIGHT_DECAY}  # no decay on norms and biases
    for _ in range(2):
        optimizer.step()
        scheduler.step()
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.025)


@pytest.mark.parametrize("option", sorted(p.stem for p in (CONF_DIR / "model" / "scheduler").glob("*.yaml")))
def test_every_schedule_builds_from_its_config(option):
    optimizer = instantiate(_node([f"model/scheduler={option}"], "model.optimizer"))(params=_params())
    built = with_scheduler(optimizer, _node([f"model/scheduler={option}"], "model.scheduler"), trainer=_Trainer())
    assert built["optimizer"] is optimizer and built["lr_scheduler"]["interval"] in ("epoch", "step")


def test_schedules_follow_their_formulas():
    optimizer = torch.optim.SGD(_params(), lr=1e-4)
    built = with_scheduler(optimizer, {"_target_": "crossmodal.utils.optim.logspace", "_partial_": True, "lr_end": 1e-5},
                           trainer=_Trainer())
    entry, lrs = built["lr_scheduler"], []
    for _ in range(_Trainer.max_epochs):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        entry["scheduler"].step()
    assert entry["interval"] == "epoch" and lrs[0] == pytest.approx(1e-4) and lrs[-1] == pytest.approx(1e-5)
    assert all(a > b for a, b in zip(lrs, lrs[1:]))  # log-spaced: strictly down
    optimizer = torch.optim.AdamW(_params(), lr=1e-3)
    entry = with_scheduler(optimizer, {"_target_": "crossmodal.utils.optim.cosine", "_partial_": True, "warmup_epochs": 1,
                                       "min_lr_ratio": 0.1}, trainer=_Trainer())["lr_scheduler"]
    seen = []
    for _ in range(100):
        optimizer.step()
        entry["scheduler"].step()
        seen.append(optimizer.param_groups[0]["lr"])
    assert max(seen) == pytest.approx(1e-3) and seen[-1] == pytest.approx(1e-4) and entry["interval"] == "step"
    assert with_scheduler(optimizer, None) is optimizer


def test_task_prepare_builds_the_recipe_of_the_prep_group(tmp_path):
    """experiment=pseudo_pairs task=prepare builds pair shards only."""
    from crossmodal.tasks.prepare import run
    from crossmodal.tasks.run_folder import RunFolder

    demo = Path(__file__).resolve().parents[1] / "crossmodal" / "assets" / "demo"
    cfg = _compose(["experiment=pseudo_pairs", "task=prepare", f"prep.source={demo / 'emodb'}", f"prep.ferplus={demo / 'ferplus'}",
                    f"paths.data_dir={tmp_path / 'data'}"], [])
    assert cfg.get("data") is None and cfg.prep.source == str(demo / "emodb")
    run(cfg, RunFolder(cfg, tmp_path / "run"))
    assert len(list((tmp_path / "data" / "pairs").glob("*/manifest.json"))) == 1
    assert not (tmp_path / "data" / "distill").exists()  # no teacher ran
