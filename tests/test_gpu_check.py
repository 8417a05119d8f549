"""`make gpu-check` (experiments/scaling/gpu_check.py): its CPU path, as a machine without a GPU runs it."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "experiments" / "scaling" / "gpu_check.py"


def _gpu_check(tmp_path: Path, *args: str, timeout: int) -> dict:
    out = tmp_path / "gpu_check.json"
    env = dict(os.environ, WANDB_MODE="disabled", CROSSMODAL_NO_PROGRESS="1")
    proc = subprocess.run([sys.executable, str(SCRIPT), "--cpu", "--work", str(tmp_path / "work"), "--out", str(out), *args],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    assert "NO GPU visible" in proc.stdout  # it says so
    return json.loads(out.read_text())


def _check_run(run: dict, precision: str) -> None:
    assert run["ok"], run.get("error")
    assert run["device"] == "cpu" and run["precision"] == precision and run["steps"] == 3
    assert run["steps_per_s"] > 0 and run["step_samples_per_s"] > 0 and run["loader_wait_seconds_median"] >= 0
    assert run["peak_gpu_memory_bytes"] is None
    assert run["command"].startswith("python -m crossmodal.run experiment=")


def test_paper_teacher_experiments_build_their_model_config():
    """${paper:face_mean} (a list) inside data.preprocess, reached through model.preprocess: resolving
    it is what instantiate does; it failed for every paper teacher until gpu-check ran one."""
    from omegaconf import OmegaConf

    from crossmodal.run import _compose

    for experiment in ("teacher_senet50", "teacher_resnet50", "teacher_paper"):
        cfg = _compose([f"experiment={experiment}", "data.source=/data/ferplus"], [])
        OmegaConf.resolve(cfg.model)
        assert list(cfg.model.preprocess.mean) == pytest.approx([131.0912, 103.8827, 91.4953])


def test_gpu_check_cpu_path_writes_its_json(tmp_path):
    """The CPU path, one distillation run (fp32) on a tiny VoxCeleb-shaped set built on first use,
    then the loader alone: the JSON says no GPU and holds the step and loader figures."""
    result = _gpu_check(tmp_path, "--only", "distill_senet_32-true", timeout=400)
    assert result["gpu"] is False and result["mode"].startswith("cpu-tiny") and result["ok"]
    _check_run(result["runs"]["distill_senet_32-true"], "32-true")
    assert result["distill_loader"]["samples_per_s"] > 0
    assert result["loader_workers_needed_per_device"] > 0
    manifest = json.loads((Path(result["voxshaped"]) / "manifest.json").read_text())
    assert manifest["meta"]["synthetic"] is True


@pytest.mark.slow  # the teacher and both precisions: several minutes on 2 shared cores (bf16 is emulated on this CPU)
def test_gpu_check_cpu_path_runs_every_run(tmp_path):
    result = _gpu_check(tmp_path, timeout=1500)
    assert result["ok"]
    _check_run(result["runs"]["teacher_senet50"], "bf16-mixed")
    _check_run(result["runs"]["distill_senet_bf16-mixed"], "bf16-mixed")
    _check_run(result["runs"]["distill_senet_32-true"], "32-true")
