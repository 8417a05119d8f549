"""Build step that pyproject.toml cannot declare: ship the top-level conf/ inside the wheel.

conf/ stays at the top of the repository (the project's layout); a wheel copies it to
crossmodal/conf, where ``crossmodal.config_dir()`` finds it once installed. Editable installs
skip the copy: they read conf/ from the checkout.
"""
from __future__ import annotations

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent


class BuildPyWithConf(build_py):
    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False):
            return
        source = ROOT / "conf"
        if not (source / "run.yaml").is_file():
            raise FileNotFoundError(f"{source}/run.yaml is missing: build from a full checkout (or an sdist) of crossmodal")
        target = Path(self.build_lib) / "crossmodal" / "conf"
        if target.exists():
            shutil.rmtree(target)  # no stale configs from an earlier build
        shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))

    def get_outputs(self, include_bytecode: bool = True) -> list[str]:
        outputs = super().get_outputs(include_bytecode)
        target = Path(self.build_lib) / "crossmodal" / "conf"
        return outputs + [str(target / p.relative_to(ROOT / "conf")) for p in (ROOT / "conf").rglob("*.yaml")]


setup(cmdclass={"build_py": BuildPyWithConf})
