"""Shared fixtures: the real data every clone has, and the whole corpora for the few tests that need one.

The fast fixtures (``emodb_root``, ``ferplus_root``, ``grid_root``, ``voxceleb1_root``) always use
the data the repository ships (``crossmodal/assets/demo``, ``tests/data``), so a user's fresh clone
and CI run the same tests on the same files. The ``*_full_root`` fixtures point at the whole corpora
in ../shared/data (or ``$CROSSMODAL_SHARED_DATA``) and skip, naming the corpus, when they are absent.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "crossmodal" / "assets" / "demo"
TEST_DATA = ROOT / "tests" / "data"
SHARED_DATA = Path(os.environ.get("CROSSMODAL_SHARED_DATA", ROOT.parent / "shared" / "data"))

os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("CROSSMODAL_NO_PROGRESS", "1")


def _shared(name: str, needs: str) -> Path:
    path = SHARED_DATA / name
    if not path.exists():
        pytest.skip(f"needs {needs} at {path} (../shared/data beside the clone, or set CROSSMODAL_SHARED_DATA)")
    return path


# ------------------------------------------------------------------------------ shipped data (fast tests)


def build_emodb_layout(out: Path) -> Path:
    """EmoDB in its own layout (``wav/SSTTTEV.wav``) from the shipped clips: the 454 demo voices
    (``crossmodal/assets/demo/emodb``) plus the 8 boredom clips in ``tests/data/emodb`` (the demo
    leaves boredom out), all real EmoDB recordings at the corpus' original 16 kHz, decoded from
    FLAC to 16-bit PCM wav (lossless)."""
    import soundfile as sf

    wav = out / "wav"
    wav.mkdir(parents=True, exist_ok=True)
    sources = sorted((DEMO / "emodb" / "wav").glob("*.flac")) + sorted((TEST_DATA / "emodb" / "wav").glob("*.flac"))
    for source in sources:
        data, rate = sf.read(str(source), dtype="int16")
        sf.write(str(wav / f"{source.stem}.wav"), data, rate, subtype="PCM_16")
    return out


@pytest.fixture(scope="session")
def emodb_root(tmp_path_factory) -> Path:
    """EmoDB's layout (``<root>/wav/03a01Wa.wav``, 16 kHz) built from the shipped real clips: 462 clips, 10 speakers."""
    return build_emodb_layout(tmp_path_factory.mktemp("emodb"))


@pytest.fixture(scope="session")
def ferplus_root(tmp_path_factory) -> Path:
    """FER+ in its folder layout: ``FER2013Valid``/``FER2013Test`` from the shipped demo faces (548),
    ``FER2013Train`` from ``tests/data/ferplus_sample`` (60 real training faces), each with its label.csv."""
    root = tmp_path_factory.mktemp("ferplus")
    os.symlink(TEST_DATA / "ferplus_sample" / "FER2013Train", root / "FER2013Train", target_is_directory=True)
    for folder in ("FER2013Valid", "FER2013Test"):
        os.symlink(DEMO / "ferplus" / folder, root / folder, target_is_directory=True)
    return root


@pytest.fixture(scope="session")
def grid_root() -> Path:
    """Four real GRID talking-face clips (``tests/data/grid``: bbaf2n, brbk7n, lbax4n, swiz3n; MPEG-1 + MP2 audio)."""
    return TEST_DATA / "grid"


@pytest.fixture(scope="session")
def voxceleb1_root() -> Path:
    """The three real VoxCeleb1 utterances (``tests/data/voxceleb1/testfiles/{ident,verif}/*.wav``)."""
    return TEST_DATA / "voxceleb1"


# ------------------------------------------------------------------------- whole corpora (slow tests, studies)


@pytest.fixture(scope="session")
def ferplus_full_root() -> Path:
    return _shared("ferplus", "the full FER+ corpus (all 35,710 faces, training set included)")


@pytest.fixture(scope="session")
def emodb_full_root() -> Path:
    return _shared("emodb", "the full EmoDB corpus (all 535 clips)")


@pytest.fixture(scope="session")
def grid_full_root() -> Path:
    return _shared("grid", "the 11 GRID sample clips")
