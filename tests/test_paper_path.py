"""The README's paper path, as printed, with no path key in between:

    python -m crossmodal.run experiment=extract_logits prep.source=V teacher_ckpt=T
    python -m crossmodal.run experiment=distill_senet teacher_ckpt=T

run on real GRID talking-face clips with overrides that only shrink the work. The data folder is
the default one (``<CROSSMODAL_ROOT>/data``), as for a user in their project folder.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from crossmodal.data.distill import DistillDataModule
from crossmodal.pipeline.shards import load_manifest

ROOT = Path(__file__).resolve().parents[1]
SHRINK_DISTILL = [  # the paper's schedule, shrunk: 1 epoch of 2 batches of 4, VGGVox unchanged
    "trainer.max_epochs=1", "data.epoch_fraction=null", "data.batches_per_epoch=2", "data.global_batch_size=4",
    "data.eval_batch_size=4", "data.num_workers=0", "data.shuffle_buffer=8",
]

pytest.importorskip("cv2")


def _run(workdir: Path, run_name: str, *args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    env = dict(os.environ, WANDB_MODE="disabled", CROSSMODAL_NO_PROGRESS="1", CROSSMODAL_ROOT=str(workdir))
    command = [sys.executable, "-m", "crossmodal.run", *args, "logger=csv", f"hydra.run.dir={workdir / 'runs' / run_name}"]
    proc = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, env=env, timeout=timeout)
    assert proc.returncode == 0, f"{' '.join(args)}\n{proc.stderr[-4000:]}"
    return proc


def _teacher_copy(workdir: Path) -> Path:
    """T: the shipped teacher under a user's own file name (whatever the shipped file format is)."""
    from crossmodal.models.teacher import DEFAULT_TEACHER

    teacher = workdir / f"my_teacher{DEFAULT_TEACHER.suffix}"
    shutil.copy(DEFAULT_TEACHER, teacher)
    return teacher


def _videos(grid_root: Path, workdir: Path, clips: int) -> Path:
    videos = workdir / "grid"
    videos.mkdir(parents=True)
    for clip in sorted(grid_root.glob("*.mpg"))[:clips]:
        os.symlink(clip, videos / clip.name)
    return videos


def test_extract_then_distill_finds_the_set_by_teacher(grid_root: Path, tmp_path: Path) -> None:
    """Fast variant: the extract command as printed on two GRID clips, then what distill_senet's
    DataModule resolves with teacher_ckpt=T alone (and the errors that guide a user otherwise)."""
    videos, teacher = _videos(grid_root, tmp_path, 2), _teacher_copy(tmp_path)
    _run(tmp_path, "extract", "experiment=extract_logits", f"prep.source={videos}", f"teacher_ckpt={teacher}")
    (written,) = (tmp_path / "data" / "distill").glob("grid-my_teacher-*")
    found = DistillDataModule(data_dir=str(tmp_path / "data"), teacher=str(teacher), num_workers=0)
    found.prepare_data()
    assert found.shard_dir == written and found.manifest().total == load_manifest(written).total > 0
    assert found.student_info()["data"] == str(written)
    # another teacher: nothing extracted with it -> the command that would
    other = tmp_path / f"other{teacher.suffix}"
    other.write_bytes(teacher.read_bytes() + b" ")
    with pytest.raises(FileNotFoundError, match=rf"experiment=extract_logits .*teacher_ckpt={other}"):
        DistillDataModule(data_dir=str(tmp_path / "data"), teacher=str(other), num_workers=0).prepare_data()
    # the same teacher on two sets of videos -> say which with data.source
    shutil.copytree(written, tmp_path / "data" / "distill" / "elsewhere-my_teacher-00000000")
    manifest_path = tmp_path / "data" / "distill" / "elsewhere-my_teacher-00000000" / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["meta"]["fingerprint"]["inputs"]["pairs"]["sources"]["source"]["path"] = "/data/elsewhere"
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match=r"(?s)2 distillation sets .*data\.source=/data/elsewhere.*Say which with data\.source"):
        DistillDataModule(data_dir=str(tmp_path / "data"), teacher=str(teacher), num_workers=0).prepare_data()
    chosen = DistillDataModule(data_dir=str(tmp_path / "data"), teacher=str(teacher), source=str(videos), num_workers=0)
    assert chosen.shard_dir == written
    # new videos since the extraction: extract again, rather than train on the old set
    os.symlink(sorted(grid_root.glob("*.mpg"))[2], videos / "new.mpg")
    with pytest.raises(ValueError, match="Extract again"):
        DistillDataModule(data_dir=str(tmp_path / "data"), teacher=str(teacher), source=str(videos), num_workers=0).prepare_data()


@pytest.mark.slow
def test_readme_paper_path_runs_as_printed(grid_root: Path, tmp_path: Path) -> None:
    """The two README commands on the GRID clips, the paper's student (VGGVox) for one tiny epoch."""
    videos, teacher = _videos(grid_root, tmp_path, 4), _teacher_copy(tmp_path)
    extract = _run(tmp_path, "extract", "experiment=extract_logits", f"prep.source={videos}", f"teacher_ckpt={teacher}")
    assert "frames/s" in extract.stdout + extract.stderr
    (written,) = (tmp_path / "data" / "distill").glob("grid-my_teacher-*")
    distill = _run(tmp_path, "distill", "experiment=distill_senet", f"teacher_ckpt={teacher}", *SHRINK_DISTILL)
    assert str(written) in distill.stdout + distill.stderr  # it found the set extract wrote, by the teacher alone
    metrics = json.loads((tmp_path / "runs" / "distill" / "metrics.json").read_text())
    assert metrics["test/loss"] > 0 and "test/loss_unheard" in metrics and metrics["data/skipped"] == 0
    config = (tmp_path / "runs" / "distill" / "config.yaml").read_text()
    assert "shards: null" in config  # no path key was needed
