"""crossmodal: emotion recognition in speech by cross-modal distillation from faces."""
__version__ = "0.1.0"
from crossmodal.inference import load_student  # noqa: E402,F401  (the Python API: load_student().predict(wave, rate))
