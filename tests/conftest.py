"""Shared fixtures: real data from ../shared/data when it is there, a clear skip when it is not."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("CROSSMODAL_SHARED_DATA", ROOT.parent / "shared" / "data"))

os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("CROSSMODAL_NO_PROGRESS", "1")


def _shared(name: str) -> Path:
    path = SHARED_DATA / name
    if not path.exists():
        pytest.skip(f"needs the real {name} data at {path} (../shared/data beside the clone, or set CROSSMODAL_SHARED_DATA)")
    return path


@pytest.fixture(scope="session")
def ferplus_root() -> Path:
    return _shared("ferplus")


@pytest.fixture(scope="session")
def emodb_root() -> Path:
    return _shared("emodb")


@pytest.fixture(scope="session")
def grid_root() -> Path:
    return _shared("grid")


@pytest.fixture(scope="session")
def voxceleb1_root() -> Path:
    return _shared("voxceleb1")
