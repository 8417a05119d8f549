"""The constants of the paper (Albanie, Nagrani, Vedaldi, Zisserman, "Emotion Recognition in Speech
using Cross-Modal Transfer in the Wild", ACM MM 2018), written once.

Python defaults import them from here; the YAML configs read them with the ``${paper:NAME}``
resolver (registered by :func:`crossmodal.config.schema.register_configs`), e.g.
``temperature: ${paper:temperature}``. A leaf module: it imports nothing from the package.
"""
from __future__ import annotations

from typing import Any

# --- the FER+ teachers (resnet50-ferplus, senet50-ferplus) ------------------------------------
# Faces: 224 px, grey replicated to 3 channels, the VGGFace2 mean pixel subtracted (0..255 values, std 1).
FACE_SIZE = 224
FACE_MEAN = (131.0912, 103.8827, 91.4953)
FACE_STD = (1.0,)
TEACHER_BATCH_SIZE = 128
# SGD with the step schedule below; layers initialised from VGGFace2 weights train at PRETRAINED_LR_MULT x the lr.
TEACHER_LR = 1e-2
TEACHER_LR_STEPS = (60, 120)
TEACHER_LR_GAMMA = 0.1
TEACHER_EPOCHS = 150
PRETRAINED_LR_MULT = 0.1
TEACHER_DROPOUT = 0.5  # before the classifier
MOMENTUM = 0.9
WEIGHT_DECAY = 5e-4

# --- the faces of the talking-face videos -----------------------------------------------------
FACE_FRAME_RATE = 25.0 / 6.0  # every 6th frame of 25 fps video

# --- distillation into the speech student (VGGVox) --------------------------------------------
TEMPERATURE = 2.0  # soft cross-entropy on softmax(logits / T), without the T^2 factor
WINDOW_SECONDS = 4.024  # random training window of each utterance
MAX_SECONDS = 19.9  # utterances clamped to this length
STUDENT_BATCH_SIZE = 64
STUDENT_LR = 1e-4  # log-spaced per epoch from STUDENT_LR to STUDENT_LR_END
STUDENT_LR_END = 1e-5
STUDENT_EPOCHS = 300  # mini-epochs ...
EPOCH_FRACTION = 0.05  # ... of 5% of the training segments each

# --- external benchmarks ----------------------------------------------------------------------
PROBE_FOLDS = 10  # k-fold cross-validation over clips of a logistic-regression probe

# ${paper:NAME} is the constant NAME.upper() above (tuples as lists)
PAPER: dict[str, Any] = {name.lower(): list(value) if isinstance(value, tuple) else value
                         for name, value in dict(globals()).items() if name.isupper()}


def paper_value(name: str) -> Any:
    """``${paper:NAME}`` in a config: the paper's value of NAME (a copy, so a config edit cannot change it)."""
    if name not in PAPER:
        raise KeyError(f"${{paper:{name}}}: no such paper constant; known: {', '.join(sorted(PAPER))}")
    value = PAPER[name]
    # a list as a ListConfig: OmegaConf.resolve cannot store a plain list a resolver returns inside a node
    from omegaconf import ListConfig

    return ListConfig(list(value)) if isinstance(value, list) else value
