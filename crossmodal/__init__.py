"""crossmodal: emotion recognition in speech by cross-modal distillation from faces."""
__version__ = "0.1.0"
