"""crossmodal: emotion recognition in speech by cross-modal distillation from faces."""
from __future__ import annotations

from pathlib import Path
from typing import Any

__version__ = "0.1.0"
__all__ = ["config_dir", "load_student"]


def config_dir() -> Path:
    """The Hydra config folder: ``conf/`` at the top of a source checkout (editable install, the
    one you edit), else ``crossmodal/conf`` inside an installed wheel (setup.py copies it there)."""
    package = Path(__file__).resolve().parent
    checkout = package.parent
    candidates = [checkout / "conf"] if (checkout / "pyproject.toml").is_file() else []
    candidates.append(package / "conf")
    for folder in candidates:
        if (folder / "run.yaml").is_file():
            return folder
    raise FileNotFoundError(
        f"crossmodal's configs (run.yaml) are in none of {[str(c) for c in candidates]}. Reinstall the package "
        "(pip install crossmodal-*.whl ships them as crossmodal/conf) or run from a checkout with conf/ beside crossmodal/"
    )


def __getattr__(name: str) -> Any:
    # The Python API, `from crossmodal import load_student`, imported on first use so that
    # `python -m crossmodal.run --help` and the config tools do not pay for torch.
    if name == "load_student":
        from crossmodal.inference import load_student

        return load_student
    raise AttributeError(f"module 'crossmodal' has no attribute {name!r}")
