"""Few labels (experiment=finetune_cpu): the seeded choice of k clips per emotion, the student file
read through the safe loader as the starting point, and one training step on the shipped demo data."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from crossmodal.data.label_subset import choose_labelled, parse_labels_per_class

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "crossmodal" / "assets" / "demo"
SHIPPED = ROOT / "crossmodal" / "assets" / "student_cpu.safetensors"


def test_choose_labelled_is_seeded_per_emotion_and_order_free() -> None:
    clips = [(s, f"{s}c{i}", e) for s in ("03", "08") for i, e in enumerate(["anger"] * 6 + ["fear"] * 3 + ["neutral"])]
    chosen = choose_labelled(clips, 2, seed=0)
    assert {e: len(m) for e, m in chosen.items()} == {"anger": 2, "fear": 2, "neutral": 2}
    assert chosen == choose_labelled(list(reversed(clips)), 2, seed=0)
    assert any(choose_labelled(clips, 2, seed=s) != chosen for s in range(1, 5))
    assert {e: len(m) for e, m in choose_labelled(clips, 5, seed=0).items()} == {"anger": 5, "fear": 5, "neutral": 2}
    assert sum(len(m) for m in choose_labelled(clips, None, seed=0).values()) == len(clips)  # all
    assert parse_labels_per_class("all") is None and parse_labels_per_class(None) is None and parse_labels_per_class(5) == 5
    for bad in (0, -1, "five", 2.5, True):
        with pytest.raises(ValueError, match=r"labels_per_class=.*positive number"):
            parse_labels_per_class(bad)


def test_init_from_must_fit_the_network() -> None:
    from crossmodal.lit.finetune import FinetuneStudent

    kwargs = dict(student={"name": "small_cnn", "kwargs": {"channels": [16, 32, 64, 128], "first_stride": 2, "embed_dim": 128,
                                                           "dropout": 0.3}},
                  frontend={"features": "logmel", "n_mels": 64, "f_min": 20.0, "f_max": 8000.0, "normalize": False})
    module = FinetuneStudent(**kwargs, init_from=str(SHIPPED))
    from crossmodal.models.loading import load_student_modules

    _, net, _ = load_student_modules(SHIPPED)
    assert all((a == b).all() for a, b in zip(module.net.state_dict().values(), net.state_dict().values()))
    with pytest.raises(ValueError, match=r"init_from=.*its network .* is not the one this run builds"):
        FinetuneStudent(**{**kwargs, "student": {"name": "small_cnn", "kwargs": {"embed_dim": 64}}}, init_from=str(SHIPPED))
    with pytest.raises(ValueError, match=r"init_from=.*its frontend"):
        FinetuneStudent(**{**kwargs, "frontend": {**kwargs["frontend"], "normalize": True}}, init_from=str(SHIPPED))
    with pytest.raises(FileNotFoundError, match=r"init_from=.*no student file"):
        FinetuneStudent(**kwargs, init_from="/nonexistent/student.safetensors")


def test_finetune_cpu_one_step_on_demo_data(tmp_path: Path) -> None:
    emodb = tmp_path / "emodb" / "wav"
    emodb.mkdir(parents=True)
    for speaker in ("03", "08", "10", "12"):
        for path in sorted((DEMO / "emodb" / "wav").glob(f"{speaker}*.flac"))[:12]:
            os.symlink(path, emodb / path.name)
    run = tmp_path / "run"
    env = dict(os.environ, WANDB_MODE="disabled", CROSSMODAL_NO_PROGRESS="1")
    cmd = [sys.executable, "-m", "crossmodal.run", "experiment=finetune_cpu", f"init_from={SHIPPED}",
           "labels_per_class=1", "seed=3", f"data.emodb={emodb.parent}", f"data.ferplus={DEMO / 'ferplus'}",
           "data.prepare.unheard_fraction=0.5", "data.num_workers=0", "data.batches_per_epoch=1", "data.batch_size=4",
           "trainer.max_epochs=1", "logger=csv", "report=false", f"paths.data_dir={tmp_path / 'data'}",
           f"paths.log_dir={tmp_path / 'logs'}", f"hydra.run.dir={run}"]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    subset = json.loads((run / "label_subset.json").read_text())
    assert subset["labels_per_class"] == 1 and subset["subset_seed"] == 3
    assert all(len(clips) == 1 for clips in subset["clips"].values()) and len(subset["clips"]) >= 4
    split = json.loads(next((tmp_path / "data" / "pairs").glob("*/splits.json")).read_text())
    assert {clip.split("/")[0] for clips in subset["clips"].values() for clip in clips} <= set(split["train"])
    metrics = json.loads((run / "metrics.json").read_text())
    assert "test/ua_unheard" in metrics
    from crossmodal.models.loading import load_student_modules

    _, _, info = load_student_modules(run / "student.safetensors")
    provenance = info.get("provenance") or info
    assert provenance["init_from"]["path"].endswith("crossmodal/assets/student_cpu.safetensors") and len(provenance["init_from"]["sha256"]) == 64
    assert provenance["label_subset"]["clips"] == subset["clips"]


@pytest.mark.slow  # 4 one-epoch runs (k = 1, all x fine-tuned, scratch) on 2 folds' worth of demo clips + the summary, ~4 min on 2 cores
def test_label_efficiency_sweep_and_summary(tmp_path: Path) -> None:
    emodb = tmp_path / "emodb" / "wav"
    emodb.mkdir(parents=True)
    for path in sorted((DEMO / "emodb" / "wav").glob("*.flac")):
        if len([p for p in emodb.glob(f"{path.name[:2]}*")]) < 6:
            os.symlink(path, emodb / path.name)
    sweep = tmp_path / "sweep"
    env = dict(os.environ, WANDB_MODE="disabled", CROSSMODAL_NO_PROGRESS="1")
    cmd = [sys.executable, "-m", "crossmodal.run", "-m", "hparams_search=label_efficiency", "extras.distilled_sweep=unused",
           f"extras.students.distilled={SHIPPED}", "seed=0", "data.prepare.fold=0", "labels_per_class=1,all",
           f"data.emodb={emodb.parent}", f"data.ferplus={DEMO / 'ferplus'}", "data.batches_per_epoch=1", "data.batch_size=4",
           "trainer.max_epochs=1", "logger=csv", "report=false", f"paths.data_dir={tmp_path / 'data'}",
           f"paths.log_dir={tmp_path / 'logs'}", f"hydra.sweep.dir={sweep}"]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    jobs = sorted(p.parent.relative_to(sweep).as_posix() for p in sweep.rglob("metrics.json"))
    assert jobs == [f"k{k}/{init}/fold0-seed0" for k in ("1", "all") for init in ("distilled", "scratch")]
    summary = subprocess.run([sys.executable, str(ROOT / "experiments" / "label_efficiency" / "summary.py"), str(sweep),
                              "--expected", "1"], capture_output=True, text=True, cwd=ROOT, env=env, timeout=600)
    assert summary.returncode == 0, summary.stderr[-4000:]
    result = json.loads((sweep / "label_efficiency.json").read_text())
    assert [e["k"] for e in result["table"]] == ["1", "all"] and result["subset_checked_runs"] == 2
    for entry in result["table"]:
        assert {"finetuned", "scratch", "egemaps", "embedding"} <= set(entry) and entry["finetuned_minus_scratch"]["pairs"] == 1
    assert (sweep / "label_efficiency.png").stat().st_size > 1000
