"""The package as a user installs it: a wheel built from the repository, installed into a fresh
virtualenv, runs the entry point and `crossmodal predict` from a folder outside the checkout."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# top-level folders that are not part of a build (a clean clone has none of them but conf/, crossmodal/...)
NOT_BUILT = {".git", ".venv", "build", "dist", "outputs", "multirun", "logs", "data", "wandb", ".pytest_cache",
             "tests", "experiments", "crossmodal.egg-info"}


def _source_copy(dest: Path) -> Path:
    """The checkout without its venv, runs and tests: building in place would leave build/ in it."""

    def ignore(folder: str, names: list[str]) -> set[str]:
        top = Path(folder).resolve() == ROOT
        return {n for n in names if (top and n in NOT_BUILT) or n == "__pycache__"}

    shutil.copytree(ROOT, dest, ignore=ignore)
    return dest


def _run(cmd: list[str], cwd: Path, env: dict[str, str], timeout: int) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{' '.join(map(str, cmd))} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


@pytest.mark.slow
def test_wheel_installs_and_runs_outside_the_checkout(tmp_path):
    src = _source_copy(tmp_path / "src")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(WANDB_MODE="disabled", CROSSMODAL_NO_PROGRESS="1")

    # 1. the wheel: built by pip as a user would (isolated build), with no deprecation warning
    build = _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-v", "-w", str(tmp_path / "wheels"), str(src)],
                 cwd=tmp_path, env=env, timeout=900)
    assert "deprecat" not in (build.stdout + build.stderr).lower(), build.stdout[-3000:] + build.stderr[-3000:]
    (wheel,) = (tmp_path / "wheels").glob("crossmodal-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    shipped = {n.split("crossmodal/conf/", 1)[1] for n in names if n.startswith("crossmodal/conf/") and n.endswith(".yaml")}
    assert shipped == {str(p.relative_to(ROOT / "conf")) for p in (ROOT / "conf").rglob("*.yaml")}
    assets = {str(p.relative_to(ROOT)) for p in (ROOT / "crossmodal" / "assets").rglob("*") if p.is_file()}
    assert assets <= set(names), sorted(assets - set(names))[:5]
    templates = {str(p.relative_to(ROOT)) for p in (ROOT / "crossmodal" / "report" / "templates").glob("*.html")}
    assert templates and templates <= set(names), sorted(templates - set(names))  # the report's Jinja2 pages

    # 2. a fresh venv that sees the dev venv's third-party packages (nothing big is downloaded) but
    #    not the editable checkout: a .pth line adds site-packages without running its .pth files
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], cwd=tmp_path, env=env, timeout=300)
    py = venv / "bin" / "python"
    site = Path(_run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                     cwd=tmp_path, env=env, timeout=60).stdout.strip())
    (site / "dev_venv.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    _run([str(py), "-m", "pip", "install", "--no-deps", "--ignore-installed", "--no-index", str(wheel)],
         cwd=tmp_path, env=env, timeout=600)

    outside = tmp_path / "elsewhere"
    outside.mkdir()
    where = _run([str(py), "-c", "import crossmodal; print(crossmodal.__file__); print(crossmodal.config_dir())"],
                 cwd=outside, env=env, timeout=120).stdout.split()
    assert Path(where[0]).is_relative_to(venv) and Path(where[1]) == Path(where[0]).parent / "conf", where

    # 3. the entry point composes from the shipped configs
    job = _run([str(py), "-m", "crossmodal.run", "--cfg", "job"], cwd=outside, env=env, timeout=300).stdout
    assert "task:" in job and "trainer:" in job, job[-2000:]

    # 4. predict with the shipped student on a shipped demo clip
    clip = next((Path(where[0]).parent / "assets" / "demo" / "emodb").rglob("*.flac"))
    out = _run([str(venv / "bin" / "crossmodal"), "predict", str(clip)], cwd=outside, env=env, timeout=600).stdout
    assert "whole file" in out and str(clip) in out, out[-2000:]

    # 5. the report's templates load from the installed package
    run = outside / "run"
    run.mkdir()
    (run / "metrics.json").write_text('{"test/ua_unheard": 0.5}')
    (run / "config.yaml").write_text("name: packaged\n")
    _run([str(venv / "bin" / "crossmodal"), "report", str(run)], cwd=outside, env=env, timeout=300)
    assert "test/ua_unheard" in (run / "report.html").read_text()
