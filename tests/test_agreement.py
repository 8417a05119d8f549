"""Face-voice agreement of the pseudo-pairs (``prep.agreement: p``), on the shipped demo voices and faces:
p = 1 is the set it always was, p < 1 gives exactly round(p x clips) agreeing clips per speaker,
stratified by emotion, the others with faces of another emotion drawn from the in-the-wild prior."""
from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path

import pytest

from crossmodal.pipeline.pseudo_pairs import (
    IN_THE_WILD_PRIOR,
    PseudoItem,
    PseudoPairsConfig,
    agreement_plan,
    prepare_pseudo_pairs,
)

SPEAKERS = ("10", "12")  # 30 demo clips each, every emotion of the six


def read_samples(manifest) -> list[dict]:
    from crossmodal.pipeline.shards import iter_shard

    return [json.loads(s["json"]) for p in manifest.paths() for s in iter_shard(p)]


@pytest.fixture(scope="module")
def two_speakers(emodb_root: Path, tmp_path_factory) -> Path:
    corpus = tmp_path_factory.mktemp("agreement_emodb")
    (corpus / "wav").mkdir()
    for wav in sorted((emodb_root / "wav").glob("*.wav")):
        if wav.stem[:2] in SPEAKERS:
            os.symlink(wav, corpus / "wav" / wav.name)
    return corpus


def config(corpus: Path, ferplus: Path, data_dir: Path, **kw) -> PseudoPairsConfig:
    return PseudoPairsConfig(source=str(corpus), ferplus=str(ferplus), data_dir=str(data_dir), unheard_fraction=0.5,
                             heard_fraction=0.0, faces_per_pool=3, **kw)


def test_plan_is_exact_per_speaker_stratified_and_seeded() -> None:
    items = [PseudoItem(s, f"{s}c{i:02d}", "", e, e) for s in ("a", "b")
             for i, e in enumerate(["neutral"] * 7 + ["anger"] * 5 + ["fear"] * 3 + [None])]
    prior = PseudoPairsConfig().prior
    plan = agreement_plan(items, 0.5, prior, seed=0)
    label = {(i.speaker, i.clip): i.label for i in items}
    assert len(plan) == 30  # unmapped clips (label None) take no part
    for speaker in ("a", "b"):
        agree = Counter(label[k] for k, e in plan.items() if k[0] == speaker and e == label[k])
        assert sum(agree.values()) == 8  # round(0.5 x 15)
        assert all(abs(agree[e] - 0.5 * n) < 1 for e, n in (("neutral", 7), ("anger", 5), ("fear", 3)))
    # the disagreeing clips never get their own emotion, and mostly neutral faces when they are not neutral
    assert all(e in prior for e in plan.values())
    assert plan == agreement_plan(list(reversed(items)), 0.5, prior, seed=0)  # deterministic, order-free
    assert plan != agreement_plan(items, 0.5, prior, seed=1)
    assert all(plan_e == label[k] for k, plan_e in agreement_plan(items, 1.0, prior, 0).items())
    assert not any(plan_e == label[k] for k, plan_e in agreement_plan(items, 0.0, prior, 0).items())


def test_agreement_half_on_demo_voices_and_faces(two_speakers: Path, ferplus_root: Path, tmp_path: Path) -> None:
    from crossmodal.emotions import EMOTIONS
    from crossmodal.io.ferplus import read_ferplus

    full = prepare_pseudo_pairs(config(two_speakers, ferplus_root, tmp_path / "data"))
    half_cfg = config(two_speakers, ferplus_root, tmp_path / "data", agreement=0.5)
    half = prepare_pseudo_pairs(half_cfg)
    assert half_cfg.pairs_dir != config(two_speakers, ferplus_root, tmp_path / "data").pairs_dir  # its own cached set
    assert full.meta["agreement"] == 1.0 and "agreement_prior" not in full.meta
    assert half.meta["agreement"] == 0.5 and half.meta["agreement_prior"] == half_cfg.prior
    assert half.meta["agreeing_clips"] == {"10": {"clips": 30, "agreeing": 15}, "12": {"clips": 30, "agreeing": 15}}
    majority = {f"{f.split}/{f.name}": EMOTIONS[f.majority] for f in read_ferplus(ferplus_root, splits=["val", "test"])}
    full_faces = {}
    for meta in read_samples(full):
        assert not {"agreement", "face_emotion", "faces_agree"} & set(meta)  # p = 1: the samples as they always were
        assert {majority[f] for f in meta["faces"]} == {meta["label"]}
        full_faces[meta["video"]] = meta["faces"]
    agreeing: Counter = Counter()
    for meta in read_samples(half):
        assert meta["agreement"] == 0.5 and meta["faces_agree"] == (meta["face_emotion"] == meta["label"])
        assert {majority[f] for f in meta["faces"]} == {meta["face_emotion"]}  # one emotion per clip
        if meta["faces_agree"]:
            agreeing[meta["identity"]] += 1
            assert meta["faces"] == full_faces[meta["video"]]  # the agreeing clips keep the p = 1 faces
    assert agreeing == {"10": 15, "12": 15}


def test_agreement_in_the_fingerprint_only_below_one(two_speakers: Path, ferplus_root: Path, tmp_path: Path) -> None:
    base = config(two_speakers, ferplus_root, tmp_path)
    assert config(two_speakers, ferplus_root, tmp_path, agreement=1).fingerprint() == base.fingerprint()
    assert "agreement" not in base.fingerprint()["settings"]
    prints = [config(two_speakers, ferplus_root, tmp_path, agreement=p).fingerprint() for p in (0.75, 0.5, 0.2)]
    assert [f["settings"]["agreement"] for f in prints] == [0.75, 0.5, 0.2]
    assert prints[1]["settings"]["agreement_prior"]["neutral"] == pytest.approx(IN_THE_WILD_PRIOR["neutral"], abs=1e-6)
    neutral_happy = config(two_speakers, ferplus_root, tmp_path, agreement=0.5, agreement_prior={"neutral": 3, "happiness": 2})
    assert neutral_happy.prior == {"neutral": 0.6, "happiness": 0.4}
    assert neutral_happy.fingerprint() != prints[1]


@pytest.mark.parametrize("bad", [-0.1, 1.5, True, "half", None])
def test_bad_agreement_is_a_clear_error(bad) -> None:
    with pytest.raises(ValueError, match=r"prep\.agreement=.*a number in \[0, 1\]"):
        PseudoPairsConfig(agreement=bad)


def test_bad_prior_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match=r"prep\.agreement_prior=.*at least two of them positive"):
        PseudoPairsConfig(agreement=0.5, agreement_prior={"neutral": 1.0})
    with pytest.raises(ValueError, match=r"prep\.agreement_prior="):
        PseudoPairsConfig(agreement=0.5, agreement_prior={"calm": 1.0, "neutral": 1.0})


def test_agreement_key_composes_with_the_distill_experiment(emodb_root: Path, ferplus_root: Path) -> None:
    from omegaconf import OmegaConf

    from crossmodal.pipeline.distill_sets import recipe_config
    from crossmodal.run import _compose

    cfg = _compose(["experiment=distill_cpu", "hparams_search=agreement_curve", "data.prepare.agreement=0.35"], [])
    recipe = OmegaConf.to_container(cfg.data.prepare)  # data_dir and teacher interpolate the run's folders
    recipe.pop("data_dir"), recipe.pop("teacher")
    recipe.update(emodb=str(emodb_root), ferplus=str(ferplus_root))
    assert recipe["agreement"] == 0.35
    config, _ = recipe_config(recipe, None, "data")
    assert config.agreement == 0.35 and config.fingerprint()["settings"]["agreement"] == 0.35


@pytest.mark.slow  # 2 one-epoch distill runs (p = 1, 0.5; fold 0, seed 0) on 6 demo clips per speaker + the summary, ~3 min on 2 cores
def test_agreement_sweep_and_summary(tmp_path: Path) -> None:
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    demo = root / "crossmodal" / "assets" / "demo"
    emodb = tmp_path / "emodb" / "wav"
    emodb.mkdir(parents=True)
    for path in sorted((demo / "emodb" / "wav").glob("*.flac")):
        if len(list(emodb.glob(f"{path.name[:2]}*"))) < 6:
            os.symlink(path, emodb / path.name)
    sweep = tmp_path / "sweep"
    env = dict(os.environ, WANDB_MODE="disabled", CROSSMODAL_NO_PROGRESS="1")
    cmd = [sys.executable, "-m", "crossmodal.run", "-m", "hparams_search=agreement_curve", "seed=0", "data.prepare.fold=0",
           "data.prepare.agreement=1,0.5", f"data.emodb={emodb.parent}", f"data.ferplus={demo / 'ferplus'}",
           "data.batches_per_epoch=2", "data.batch_size=8", "data.window_seconds=2.0", "trainer.max_epochs=1", "logger=csv",
           "report=false", f"paths.data_dir={tmp_path / 'data'}", f"paths.log_dir={tmp_path / 'logs'}", f"hydra.sweep.dir={sweep}"]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=root, env=env, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    jobs = sorted(p.parent.relative_to(sweep).as_posix() for p in sweep.rglob("metrics.json"))
    assert jobs == ["agreement0.5/fold0-seed0", "agreement1/fold0-seed0"]
    manifests = [json.loads(p.read_text()) for p in (tmp_path / "data" / "pairs").glob("*/manifest.json")]
    assert sorted(m["meta"]["agreement"] for m in manifests) == [0.5, 1.0]
    summary = subprocess.run([sys.executable, str(root / "experiments" / "agreement" / "summary.py"), str(sweep), "--bootstrap", "100"],
                             capture_output=True, text=True, cwd=root, env=env, timeout=600)
    assert summary.returncode == 0, summary.stderr[-4000:]
    result = json.loads((sweep / "agreement.json").read_text())
    assert [pt["agreement"] for pt in result["points"]] == [1.0, 0.5] and not result["complete"]
    assert result["points"][1]["paired"] == 1 and result["baselines"]["chance"]["runs"] == 1
    assert "PARTIAL: 2 of 50 runs" in summary.stdout and (sweep / "agreement.png").stat().st_size > 1000


@pytest.mark.parametrize("option, window, normalize, masks", [("baseline", 3.0, False, 2), ("utterance_norm", 3.0, True, 2),
                                                              ("short_windows", 1.5, False, 2), ("more_augment", 3.0, False, 3),
                                                              ("short_windows_norm", 1.5, True, 2)])
def test_embedding_options_set_one_knob_each_on_the_recipe(option: str, window: float, normalize: bool, masks: int) -> None:
    from omegaconf import OmegaConf

    from crossmodal.run import _compose

    recipe = _compose(["experiment=distill_cpu"], [])
    cfg = _compose(["experiment=distill_cpu", "hparams_search=embedding_options", f"extras.option={option}"], [])
    frontend = OmegaConf.to_container(cfg.model.frontend, resolve=True)
    assert cfg.data.window_seconds == window and frontend["normalize"] is normalize
    assert frontend["n_freq_masks"] == frontend["n_time_masks"] == masks
    if option == "baseline":  # the baseline is the recipe itself
        assert frontend == OmegaConf.to_container(recipe.model.frontend, resolve=True)
        assert cfg.data.window_seconds == recipe.data.window_seconds
