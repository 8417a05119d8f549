"""crossmodal: emotion recognition in speech by cross-modal distillation from faces."""
from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["load_student"]


def __getattr__(name: str) -> Any:
    # The Python API, `from crossmodal import load_student`, imported on first use so that
    # `python -m crossmodal.run --help` and the config tools do not pay for torch.
    if name == "load_student":
        from crossmodal.inference import load_student

        return load_student
    raise AttributeError(f"module 'crossmodal' has no attribute {name!r}")
