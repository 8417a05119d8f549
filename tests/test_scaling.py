"""Distillation under DDP on CPU (2 gloo processes), run as subprocesses of the real entry point:
the synced test metrics equal a single process's, and uneven shards do not hang training."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from distill_fixtures import write_distill_shards

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def shards(emodb_root, tmp_path_factory):
    # train/heard/unheard: one shard each, so the 3 evaluation shards split 2 + 1 over 2 ranks
    return write_distill_shards(tmp_path_factory.mktemp("scaling") / "distill", emodb_root, per_speaker=6)


def _run(run_dir: Path, shards: Path, *overrides: str, timeout: int = 420, prepare: bool = False) -> dict:
    env = dict(os.environ, WANDB_MODE="disabled", CROSSMODAL_NO_PROGRESS="1")
    cmd = [sys.executable, "-m", "crossmodal.run", "experiment=distill_cpu", f"data.shards={shards}",
           *([] if prepare else ["data.prepare=null"]),
           "data.num_workers=1", "data.batches_per_epoch=3", "data.batch_size=8", "data.window_seconds=2.0",
           "logger=csv", f"hydra.run.dir={run_dir}", *overrides]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads((run_dir / "metrics.json").read_text())


@pytest.mark.slow
def test_ddp_distillation_metrics_equal_single_process(shards, tmp_path):
    _run(tmp_path / "train", shards, "trainer.max_epochs=1", "test_after_fit=false")
    ckpt = tmp_path / "train" / "checkpoints" / "last.ckpt"
    one = _run(tmp_path / "one", shards, "task=test", f"ckpt_path={ckpt}")
    two = _run(tmp_path / "two", shards, "task=test", f"ckpt_path={ckpt}", "trainer=ddp_cpu")
    compared = [k for k in one if k.startswith("test/") and isinstance(one[k], float)]
    assert {"test/auc_unheard/mean", "test/ua_unheard", "test/loss"} <= set(compared)
    for key in compared:
        assert two[key] == pytest.approx(one[key], rel=1e-4, abs=1e-6), key


@pytest.mark.slow
def test_ddp_distillation_training_with_uneven_shards_finishes(shards, tmp_path):
    metrics = _run(tmp_path / "ddp", shards, "trainer=ddp_cpu", "trainer.max_epochs=2", "test_after_fit=false", timeout=400)
    assert metrics["val/auc_unheard/mean"] is not None


@pytest.mark.slow  # over 30 s on 2 cores (make test-full)
def test_ddp_builds_missing_shards_on_first_use_without_deadlock(tmp_path):
    """Lightning runs prepare_data on one process per node while the others wait in its own
    barrier, so building the pseudo-pairs and the teacher logits there must use no collective.
    Runs on the shipped demo data (no ../shared needed)."""
    assets = ROOT / "crossmodal" / "assets" / "demo"
    metrics = _run(
        tmp_path / "run", tmp_path / "data" / "distill" / "demo",
        f"data.emodb={assets / 'emodb'}", f"data.ferplus={assets / 'ferplus'}", f"paths.data_dir={tmp_path / 'data'}",
        "trainer=ddp_cpu", "trainer.max_epochs=1", "test_after_fit=false", "data.batches_per_epoch=2", timeout=420, prepare=True,
    )
    assert metrics["val/auc_unheard/mean"] is not None
    assert (tmp_path / "data" / "distill" / "demo" / "manifest.json").exists()


@pytest.mark.slow
def test_compiled_student_trains_and_writes_a_loadable_student_file(shards, tmp_path):
    from crossmodal import load_student

    metrics = _run(tmp_path / "compiled", shards, "model.compile_student=true", "trainer.max_epochs=1", timeout=600)
    assert metrics["test/loss"] > 0
    student = load_student(tmp_path / "compiled" / "student.safetensors")  # no torch.compile prefixes in the keys
    assert not any("_orig_mod" in key for key in student.state_dict())


# ------------------------------------------------------------------ the VoxCeleb-shaped generator (issue 21)


def test_voxshaped_set_is_distillation_shards_of_real_material(tmp_path):
    """experiments/scaling/make_voxshaped.py on the shipped demo data: the shard format task=extract
    writes (the DataModule reads it), marked synthetic, segments 4..19.9 s with frames at 25/6 fps,
    no two segments alike, identities split so that no unheard identity trains; a re-run reuses it."""
    import math
    import sys

    import numpy as np

    sys.path.insert(0, str(ROOT / "experiments" / "scaling"))
    from make_voxshaped import make_voxshaped

    from crossmodal.data.distill import DistillDataModule
    from crossmodal.pipeline.extract import iter_distill
    from crossmodal.pipeline.shards import load_manifest

    demo = ROOT / "crossmodal" / "assets" / "demo"
    out = tmp_path / "vs"
    kwargs = dict(speech=[demo / "emodb" / "wav"], ferplus=demo / "ferplus", max_files=12, identities=5, samples_per_shard=4,
                  max_faces=64)
    summary = make_voxshaped(out, 30, **kwargs)
    manifest = load_manifest(out)
    assert manifest.meta["synthetic"] is True and manifest.meta["kind"] == "distill" and manifest.total == 30
    assert summary["segments"] == 30 and summary["identities"] == 5
    samples = list(iter_distill(manifest.paths()))
    assert len({s["flac"] for s in samples}) == 30  # no two segments identical
    splits = json.loads((out / "splits.json").read_text())
    for sample in samples:
        meta = sample["meta"]
        assert meta["synthetic"] is True and 4.0 <= meta["duration"] <= 19.9
        assert len(sample["logits"]) == len(sample["times"]) == math.ceil(meta["duration"] * 25 / 6 - 1e-9)
        assert np.allclose(np.diff(sample["times"]), 6 / 25, atol=1e-5) and np.isfinite(sample["logits"]).all()
        assert meta["split"] != "train" or meta["identity"] not in splits["unheard"]
    dm = DistillDataModule(shards=str(out), num_workers=0, batch_size=4, shuffle_buffer=8)
    dm.prepare_data()
    batch = next(iter(dm.train_dataloader()))
    assert batch["wave"].shape == (4, 64384) and batch["target"].shape == (4, 8)
    built = {k: v for k, v in summary.items() if k != "build_seconds"}  # the build's timing is not in the manifest
    assert make_voxshaped(out, 30, **kwargs) == built  # reused, not rebuilt


@pytest.mark.slow  # a minute or more: a shard of real GRID video through both stages
def test_grid_s1_clips_through_both_stages(tmp_path):
    """experiments/scaling/bench_grid.py on the first 64 GRID s1 clips (TVR28/LipNet data/s1, fetched
    outside the repository; $CROSSMODAL_GRID_S1 or ../grid_s1/data/s1): every stage runs, faces are
    found, the figures are there."""
    import sys

    source = Path(os.environ.get("CROSSMODAL_GRID_S1", ROOT.parent / "grid_s1" / "data" / "s1"))
    if not source.is_dir():
        pytest.skip(f"needs the GRID s1 clips at {source} (git archive of TVR28/LipNet data/s1; or set CROSSMODAL_GRID_S1)")
    sys.path.insert(0, str(ROOT / "experiments" / "scaling"))
    from bench_grid import bench

    result = bench(source, tmp_path, clips=64)
    assert result["clips"] == 64 and result["face_share"] > 0.9
    assert result["pairs"]["video_seconds_per_core_second"] > 0 and result["extract"]["video_seconds_per_core_second"] > 0
    assert result["pairs_mb_per_hour"] > 0 and result["distill_mb_per_hour"] > 0


@pytest.mark.parametrize("overrides, fails", [
    (["trainer=ddp_cpu"], True),
    (["trainer=ddp_cpu", "trainer.sync_batchnorm=false"], False),
    (["trainer=ddp"], False),          # GPUs: SyncBatchNorm is the paper's batch of 64 over the devices
    (["trainer.gpus=8"], False),
    ([], False),                       # one CPU process: Lightning syncs nothing
])
def test_sync_batchnorm_on_cpu_ddp_fails_before_any_work_naming_the_key(overrides, fails):
    from crossmodal.config.checks import ConfigError
    from crossmodal.config.schema import check_config
    from crossmodal.run import _compose

    cfg = _compose(["experiment=distill_senet", *overrides], [])
    if not fails:
        check_config(cfg, "distill_senet", signatures=False, require_values=False)
        return
    with pytest.raises(ConfigError, match=r"trainer.sync_batchnorm=true needs GPUs.*add trainer.sync_batchnorm=false"):
        check_config(cfg, "distill_senet", signatures=False, require_values=False)
