"""A run reproduces itself whether or not its prepared data existed (issue 25).

Building the pseudo-pairs and the teacher's logits inside a run must not move the random stream that
training then draws from. Fast: the DataModule's prepare_data, building then reusing the set, leaves
the same random state behind. Slow: the same short distillation, first with the cache built in the
run, then reusing it, gives identical metrics.
"""
from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from crossmodal.utils.seeding import isolated_rng

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "crossmodal" / "assets" / "demo"


def _emodb_subset(out: Path, per_speaker: int) -> Path:
    """A few shipped EmoDB clips of every speaker (EmoDB's layout: ``<root>/wav/SSTTTEV.flac``)."""
    wav = out / "wav"
    wav.mkdir(parents=True)
    by_speaker: dict[str, list[Path]] = {}
    for path in sorted((DEMO / "emodb" / "wav").glob("*.flac")):
        by_speaker.setdefault(path.name[:2], []).append(path)
    for clips in by_speaker.values():
        for path in clips[:: max(1, len(clips) // per_speaker)][:per_speaker]:
            shutil.copy(path, wav / path.name)
    return out


def _draws() -> tuple[float, float, float]:
    return float(torch.rand(())), float(np.random.rand()), random.random()


def test_isolated_rng_leaves_every_stream_where_it_was():
    torch.manual_seed(3), np.random.seed(3), random.seed(3)
    expected = _draws()
    torch.manual_seed(3), np.random.seed(3), random.seed(3)
    with isolated_rng():
        torch.nn.Linear(100, 100)  # initialising a network draws from the global streams
        _draws()
        torch.manual_seed(99)  # so does reseeding
    assert _draws() == expected


def test_preparing_the_set_or_reusing_it_leaves_the_same_random_state(tmp_path):
    from crossmodal.data.distill import DistillDataModule

    emodb = _emodb_subset(tmp_path / "emodb", per_speaker=1)
    prepare = {"kind": "pseudo_pairs", "teacher": None, "data_dir": str(tmp_path / "data"), "seed": 0, "name": "seeding",
               "unheard_fraction": 0.2, "heard_fraction": 0.1}
    after = []
    for _ in ("built", "reused"):
        module = DistillDataModule(prepare=prepare, emodb=str(emodb), ferplus=str(DEMO / "ferplus"), data_dir=str(tmp_path / "data"))
        torch.manual_seed(42), np.random.seed(42), random.seed(42)
        module.prepare_data()
        after.append(_draws())
    assert (Path(module.shard_dir) / "manifest.json").exists()
    assert after[0] == after[1]


def _demo_run(run_dir: Path, data_dir: Path, emodb: Path) -> tuple[dict, str]:
    env = dict(os.environ, WANDB_MODE="disabled", CROSSMODAL_NO_PROGRESS="1")
    cmd = [sys.executable, "-m", "crossmodal.run", f"hydra.run.dir={run_dir}", f"paths.data_dir={data_dir}",
           f"data.emodb={emodb}", "trainer.max_epochs=2", "data.batches_per_epoch=2", "data.num_workers=1",
           "logger=csv", "report=false"]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads((run_dir / "metrics.json").read_text()), (run_dir / "run.log").read_text()


@pytest.mark.slow  # two short demo runs, the first extracting teacher logits (~1 min on 2 idle cores)
def test_a_run_reproduces_itself_whether_its_cache_was_built_or_reused(tmp_path):
    emodb = _emodb_subset(tmp_path / "emodb", per_speaker=3)
    data_dir = tmp_path / "data"
    built, built_log = _demo_run(tmp_path / "built", data_dir, emodb)
    assert "extracting teacher logits" in built_log  # the first run built the cache ...
    reused, reused_log = _demo_run(tmp_path / "reused", data_dir, emodb)
    assert "extracting teacher logits" not in reused_log  # ... the second reused it
    figures = {k: v for k, v in built.items() if k.startswith(("train/", "val/", "test/"))}
    assert any(k.startswith("test/ua") for k in figures) and any(k.startswith("val/") for k in figures)
    assert figures == {k: reused.get(k) for k in figures}
