"""Speaker-fold cross-validation of the CPU transfer (hparams_search=cpu_transfer_cv): the fold split,
the pseudo-pairs built per fold, the summary's statistics and (slow) a 2-fold sweep end to end, on
the shipped EmoDB voices and FER+ faces."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from crossmodal.io.splits import load_split_file, make_fold_split, save_split

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "crossmodal" / "assets" / "demo"
SPEAKERS = sorted({path.name[:2] for path in (DEMO / "emodb" / "wav").glob("*.flac")})


def _emodb_subset(root: Path, per_speaker: int) -> Path:
    """The first ``per_speaker`` shipped clips of each of EmoDB's 10 speakers, in EmoDB's layout."""
    (root / "wav").mkdir(parents=True)
    for speaker in SPEAKERS:
        for path in sorted((DEMO / "emodb" / "wav").glob(f"{speaker}*.flac"))[:per_speaker]:
            os.symlink(path, root / "wav" / path.name)
    return root


def test_five_folds_of_emodb_speakers(tmp_path: Path) -> None:
    assert SPEAKERS == ["03", "08", "09", "10", "11", "12", "13", "14", "15", "16"]
    splits = [make_fold_split(reversed(SPEAKERS), 5, fold) for fold in range(5)]
    groups = splits[0].folds["groups"]
    assert groups == [SPEAKERS[i : i + 2] for i in range(0, 10, 2)]  # sorted, fixed groups of 2
    for fold, split in enumerate(splits):
        assert split.unheard == set(groups[fold]) and len(split.validation) == 1
        (validation,) = split.validation
        train = set(SPEAKERS) - split.unheard - split.validation
        assert len(train) == 7 and validation not in split.unheard
        assert split.assign(validation, "08a01Ab") == "heard"  # every clip of the validation speaker: model selection
        assert {split.assign(s, "x") for s in train} == {"train"}
        assert {split.assign(s, "x") for s in split.unheard} == {"unheard"}
        record = split.to_dict(SPEAKERS)
        assert record["validation"] == [validation] and record["folds"]["fold"] == fold
        assert record["train"] == sorted(train | {validation})  # every speaker whose audio training or selection used
    assert sorted(s for split in splits for s in split.unheard) == SPEAKERS  # each speaker tested exactly once
    assert len({s for split in splits for s in split.validation}) == 5
    assert make_fold_split(SPEAKERS, 5, 3).to_dict(SPEAKERS) == splits[3].to_dict(SPEAKERS)  # deterministic
    saved = save_split(splits[2], tmp_path / "splits.json", SPEAKERS)
    loaded = load_split_file(saved)
    assert (loaded.unheard, loaded.validation, loaded.folds) == (splits[2].unheard, splits[2].validation, splits[2].folds)
    with pytest.raises(ValueError, match=r"data\.prepare\.fold=5"):
        make_fold_split(SPEAKERS, 5, 5)
    with pytest.raises(ValueError, match=r"data\.prepare\.speaker_folds=1"):
        make_fold_split(SPEAKERS, 1, 0)
    with pytest.raises(ValueError, match=r"2 speakers cannot make 2 folds"):
        make_fold_split(["03", "08"], 2, 0)


def test_pseudo_pairs_of_a_fold(tmp_path: Path) -> None:
    from crossmodal.pipeline.distill_sets import recipe_config
    from crossmodal.pipeline.pseudo_pairs import PseudoPairsConfig, prepare_pseudo_pairs
    from crossmodal.pipeline.shards import iter_shard

    emodb = _emodb_subset(tmp_path / "emodb", per_speaker=1)
    base = dict(source=str(emodb), ferplus=str(DEMO / "ferplus"), data_dir=str(tmp_path / "data"), faces_per_pool=2,
                ferplus_splits=["test"])
    cfg = PseudoPairsConfig(**base, speaker_folds=5, fold=1)
    manifest = prepare_pseudo_pairs(cfg)
    split = json.loads((cfg.pairs_dir / "splits.json").read_text())
    assert split["unheard"] == ["09", "10"] and split["validation"] == ["11"] and split["folds"]["speaker_folds"] == 5
    assert manifest.meta["unheard_speakers"] == ["09", "10"] and manifest.meta["validation_speakers"] == ["11"]
    seen: dict[str, set[str]] = {}
    for path in manifest.paths(""):
        for sample in iter_shard(path):
            meta = json.loads(sample["json"])
            seen.setdefault(meta["split"], set()).add(meta["identity"])
    assert seen == {"unheard": {"09", "10"}, "heard": {"11"}, "train": set(SPEAKERS) - {"09", "10", "11"}}
    # the fold is part of the fingerprint: another fold is another cached set; the default split's is unchanged
    other = PseudoPairsConfig(**base, speaker_folds=5, fold=2)
    assert other.pairs_dir != cfg.pairs_dir
    default = PseudoPairsConfig(**base).fingerprint()
    assert "speaker_folds" not in json.dumps(default) and cfg.fingerprint()["digest"] != default["digest"]
    # through data.prepare, as the experiments pass it
    config, _ = recipe_config({"kind": "pseudo_pairs", "emodb": str(emodb), "ferplus": str(DEMO / "ferplus"),
                               "faces_per_pool": 2, "ferplus_splits": ["test"], "speaker_folds": 5, "fold": 1}, None, tmp_path / "data")
    assert config.pairs_dir == cfg.pairs_dir
    with pytest.raises(ValueError, match=r"data\.prepare\.fold=5: one of 0\.\.4"):
        PseudoPairsConfig(**base, speaker_folds=5, fold=5)
    with pytest.raises(ValueError, match=r"data\.prepare\.split_file=.* and data\.prepare\.speaker_folds=5"):
        PseudoPairsConfig(**base, speaker_folds=5, split_file=str(tmp_path / "splits.json"))


def test_summary_statistics() -> None:
    sys.path.insert(0, str(ROOT / "experiments" / "cpu_transfer"))
    try:
        import cv_summary
    finally:
        sys.path.pop(0)
    from scipy import stats

    from crossmodal.eval.metrics import confusion_counts, t_interval, ua_score

    rng = np.random.default_rng(0)
    truth, predicted = rng.integers(0, 6, 200), rng.integers(0, 6, 200)
    predicted[:80] = truth[:80]
    assert cv_summary.ua_from_confusion(confusion_counts(truth, predicted, 6)) == pytest.approx(ua_score(truth, predicted))
    truth5 = truth.copy()
    truth5[truth5 == 5] = 0  # a class without clips is left out of the mean, as ua_score does
    assert cv_summary.ua_from_confusion(confusion_counts(truth5, predicted, 6)) == pytest.approx(ua_score(truth5, predicted))
    values = [0.41, 0.52, 0.47, 0.55, 0.49]
    mean, low, high = t_interval(values)
    expected = stats.t.interval(0.95, len(values) - 1, loc=np.mean(values), scale=stats.sem(values))
    assert mean == pytest.approx(np.mean(values)) and (low, high) == pytest.approx(expected)
    assert t_interval([0.5, 0.5]) == (0.5, 0.5, 0.5)


@pytest.mark.slow  # 8 training runs (2 folds x 2 seeds x 2 students) and the summary, ~4-5 min on 2 cores
def test_cv_sweep_and_summary(tmp_path: Path) -> None:
    emodb = _emodb_subset(tmp_path / "emodb", per_speaker=6)
    sweep = tmp_path / "sweep"
    env = dict(os.environ, WANDB_MODE="disabled", CROSSMODAL_NO_PROGRESS="1")
    cmd = [sys.executable, "-m", "crossmodal.run", "-m", "hparams_search=cpu_transfer_cv", "data.prepare.fold=0,1", "seed=0,1",
           f"data.emodb={emodb}", f"data.ferplus={DEMO / 'ferplus'}", "data.num_workers=0", "data.batches_per_epoch=2",
           "data.batch_size=8", "data.window_seconds=2.0", "trainer.max_epochs=1", "logger=csv",
           f"paths.data_dir={tmp_path / 'data'}", f"paths.log_dir={tmp_path / 'logs'}", f"hydra.sweep.dir={sweep}"]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    jobs = sorted(p.parent.relative_to(sweep).as_posix() for p in sweep.rglob("metrics.json"))
    assert jobs == [f"{name}/fold{f}-seed{s}" for name in ("distill_cpu", "supervised_cpu") for f in (0, 1) for s in (0, 1)]
    assert len(list((tmp_path / "data" / "pairs").glob("*/manifest.json"))) == 2  # one pseudo-pair set per fold, shared by the seeds and both students

    out = tmp_path / "figures"
    summary = subprocess.run([sys.executable, str(ROOT / "experiments" / "cpu_transfer" / "cv_summary.py"), str(sweep),
                              "--bootstrap", "200", "--out", str(out)], capture_output=True, text=True, cwd=ROOT, env=env, timeout=600)
    assert summary.returncode == 0, summary.stderr[-4000:]
    # the figures folder gets the summary only; the baselines' feature cache stays with the sweep
    assert sorted(p.name for p in out.iterdir()) == ["cv_summary.json", "cv_summary.md", "cv_summary.png"]
    assert (sweep / "cv_features_mfcc.npy").exists()
    result = json.loads((out / "cv_summary.json").read_text())
    assert result["speakers"] == ["03", "08", "09", "10"] and result["folds"] == [0, 1]
    for name, runs in (("distilled", 4), ("supervised", 4), ("mfcc", 2), ("chance", 2), ("distilled_ens", 2), ("supervised_ens", 2)):
        row = result["rows"][name]
        assert row["runs"] == runs and row["t_low"] <= row["mean"] <= row["t_high"], name
        assert row["boot_low"] <= row["pooled"] <= row["boot_high"], name
    assert result["rows"]["chance"]["mean"] <= 1 / 6 + 1e-9  # majority class: 1/6 per fold, 0 when it has no test clip
    assert result["student_check_max_abs_ua_diff"] < 1e-6  # student.safetensors predicts what the test stage scored
    assert result["ratio"]["pairs"] == sum(ua > 0 for ua in result["rows"]["supervised"]["per_run"].values())  # 4 unless one scored 0
    for row in ("distilled student", "supervised student", "MFCC functionals + LR", "chance", "distilled / supervised",
                "distilled student, ensemble of the seeds"):
        assert row in summary.stdout
    assert (out / "cv_summary.png").stat().st_size > 1000


def _fake_sweep(root: Path, uas: dict[int, tuple[float, float]], extra: list[str]) -> Path:
    """A speaker-fold sweep folder as the runs leave it: per fold (unheard UA, validation-speaker UA)."""
    for fold, (unheard, heard) in uas.items():
        job = root / "distill_cpu" / f"fold{fold}-seed0"
        (job / ".hydra").mkdir(parents=True)
        config = {"seed": 0, "data": {"labels_only": False, "prepare": {"speaker_folds": 5, "fold": fold}}}
        (job / "config.yaml").write_text(json.dumps(config))
        (job / ".hydra" / "overrides.yaml").write_text(json.dumps([f"data.prepare.fold={fold}", "seed=0", *extra]))
        (job / "metrics.json").write_text(json.dumps({"test/ua_unheard": unheard, "test/ua_heard": heard}))
    return root


def test_ablation_table(tmp_path: Path) -> None:
    base = _fake_sweep(tmp_path / "a", {0: (0.40, 0.70), 1: (0.60, 0.40), 2: (0.50, 0.50)}, [])
    other = _fake_sweep(tmp_path / "b", {0: (0.55, 0.75), 1: (0.50, 0.30), 2: (0.60, 0.60)}, ["model.frontend.normalize=false"])
    script = ROOT / "experiments" / "cpu_transfer" / "ablation.py"
    proc = subprocess.run([sys.executable, str(script), f"base={base}", f"no norm={other}", "--out", str(tmp_path / "out")],
                          capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    table = json.loads((tmp_path / "out" / "ablation.json").read_text())
    assert [row["name"] for row in table] == ["base", "no norm", "chosen per fold (validation speaker)"]
    assert table[0]["ua_mean"] == pytest.approx(0.5) and "delta" not in table[0]
    assert table[1]["delta"] == pytest.approx(0.05) and table[1]["paired"] == 3
    assert table[1]["validation_delta"] == pytest.approx(0.05 / 3)  # the choice's evidence, paired the same way
    assert table[1]["overrides"] == ["model.frontend.normalize=false"] and table[0]["overrides"] == []
    # nested choice on the validation speakers only: folds 0 and 2 pick "no norm", fold 1 picks "base"
    assert table[2]["chosen"] == {"0": "no norm", "1": "base", "2": "no norm"}
    assert table[2]["ua_mean"] == pytest.approx((0.55 + 0.60 + 0.60) / 3)
    assert "| no norm | distilled | 3 | 0.550 | +0.017 [" in proc.stdout and "| **0.550** |" in proc.stdout
    assert (tmp_path / "out" / "ablation.png").stat().st_size > 1000
