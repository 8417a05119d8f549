"""Fine-tuning a student model file with true labels (``experiment=finetune_cpu init_from=STUDENT``).

:class:`FinetuneStudent` is :class:`~crossmodal.lit.student.StudentSpeech` whose network starts from a student
file's weights (read safely: :func:`crossmodal.models.loading.load_student_modules`). The file's network and
front-end must be the ones the config builds (``student``, ``model.frontend``), else an error names both;
``init_from: null`` trains the same network from scratch. The student file records ``init_from`` (and sha256).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from crossmodal.lit.student import StudentSpeech
from crossmodal.models.modelfile import plain

# front-end settings that act in training only (SpecAugment, dither): a file and a run may differ in them
TRAINING_ONLY = ("freq_mask", "time_mask", "n_freq_masks", "n_time_masks", "dither")


class FinetuneStudent(StudentSpeech):
    def __init__(self, *, init_from: str | None = None, **settings: Any) -> None:
        super().__init__(**settings)  # SpeechModuleBase records init_from with the other hyper-parameters
        self.init_from = str(init_from) if init_from else None
        self.init_digest: str | None = None
        if self.init_from:
            self._load_initial(Path(self.init_from))

    def _load_initial(self, path: Path) -> None:
        from crossmodal.models.loading import load_student_modules
        from crossmodal.pipeline.fingerprint import file_sha256

        if not path.exists():
            raise FileNotFoundError(f"init_from={path}: no student file there; give a student.safetensors "
                                    "(a run folder's, or crossmodal/assets/student_cpu.safetensors)")
        _, net, info = load_student_modules(path)
        def features(cfg: dict[str, Any]) -> dict[str, Any]:  # what the network sees; augmentation may differ
            return {k: v for k, v in cfg.items() if k not in TRAINING_ONLY}

        ours = {"network": (self.student_name, plain(self.student_kwargs)), "frontend": features(self.frontend.frontend_config())}
        theirs = {"network": (info["net_name"], plain(info["net_kwargs"])), "frontend": features(dict(info["frontend"]))}
        for what in ("network", "frontend"):
            if ours[what] != theirs[what]:
                raise ValueError(f"init_from={path}: its {what} {theirs[what]} is not the one this run builds {ours[what]}; "
                                 "set student= / model.frontend.* to match the file")
        self.net.load_state_dict(net.state_dict())
        self.init_digest = file_sha256(path)

    def student_provenance(self) -> dict[str, Any]:
        provenance = super().student_provenance()
        provenance["init_from"] = {"path": str(Path(self.init_from).resolve()), "sha256": self.init_digest} if self.init_from else None
        return provenance
