"""A timeline's result: per window the student's logits, the teacher's aggregated logits (or no face), and
what follows from them: distributions, the distillation loss as agreement, the JSON/CSV rows, the summary row."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from crossmodal.emotions import EMOTIONS
from crossmodal.models.losses import kl_divergence, soft_cross_entropy


@dataclass
class TimelineWindow:
    start: float  # seconds of video time
    end: float
    student_logits: np.ndarray  # [8]
    teacher_logits: np.ndarray | None = None  # [8], the window's aggregated frame logits; None: no face
    face_frames: int = 0
    sampled_frames: int = 0
    speech: bool = True  # the detector finds speech in the window's audio (False: no student distribution)
    voiced_fraction: float | None = None  # share of the window's 32-ms frames judged voiced

    @property
    def face(self) -> bool:
        return self.teacher_logits is not None


@dataclass
class Timeline:
    path: str
    duration: float
    windows: list[TimelineWindow]
    settings: dict[str, Any]
    emotions: tuple[str, ...] = EMOTIONS
    thumbnails: list[tuple[float, np.ndarray]] = field(default_factory=list)
    frames_sampled: int = 0
    frames_with_face: int = 0

    @property
    def temperature(self) -> float:
        return float(self.settings["temperature"])

    def student_probabilities(self) -> np.ndarray:
        """[windows, 8]: the student's softmax, as ``crossmodal predict`` reports it; NaN rows without speech."""
        out = torch.softmax(torch.from_numpy(np.stack([w.student_logits for w in self.windows])).float(), -1).numpy()
        out[[not w.speech for w in self.windows]] = np.nan
        return out

    def teacher_probabilities(self) -> np.ndarray:
        """[windows, 8]: softmax(teacher target / T), the distillation target; NaN rows without a face."""
        out = np.full((len(self.windows), len(self.emotions)), np.nan, np.float32)
        for i, window in enumerate(self.windows):
            if window.face:
                out[i] = torch.softmax(torch.from_numpy(window.teacher_logits).float() / self.temperature, -1).numpy()
        return out

    def agreement(self) -> list[dict[str, Any] | None]:
        """Per window: the distillation loss (soft_ce, the paper's), its KL form and top-match; None without a face or speech."""
        out: list[dict[str, Any] | None] = []
        for window in self.windows:
            if not window.face or not window.speech:
                out.append(None)
                continue
            student, teacher = torch.from_numpy(window.student_logits)[None], torch.from_numpy(window.teacher_logits)[None]
            out.append({
                "soft_ce": float(soft_cross_entropy(student, teacher, self.temperature)[0]),
                "kl": float(kl_divergence(student, teacher, self.temperature)[0]),
                "top_match": bool(int(np.argmax(window.student_logits)) == int(np.argmax(window.teacher_logits))),
            })
        return out

    def rows(self) -> list[dict[str, Any]]:
        """One flat row per window (the CSV's and the JSON's)."""
        student, teacher, agreement = self.student_probabilities(), self.teacher_probabilities(), self.agreement()
        rows = []
        for i, window in enumerate(self.windows):
            agree = agreement[i] or {}
            row: dict[str, Any] = {
                "start": round(window.start, 3), "end": round(window.end, 3), "face": window.face,
                "face_frames": window.face_frames, "sampled_frames": window.sampled_frames,
                "speech": window.speech, "voiced_fraction": _round(window.voiced_fraction, 4),
                "teacher_top": self.emotions[int(np.argmax(teacher[i]))] if window.face else None,
                "student_top": self.emotions[int(np.argmax(student[i]))] if window.speech else None,
                "top_match": agree.get("top_match"),
                "soft_ce": _round(agree.get("soft_ce")), "kl": _round(agree.get("kl")),
            }
            row.update({f"teacher_{name}": (_round(float(teacher[i, k])) if window.face else None) for k, name in enumerate(self.emotions)})
            row.update({f"student_{name}": (_round(float(student[i, k])) if window.speech else None) for k, name in enumerate(self.emotions)})
            rows.append(row)
        return rows

    def summary(self) -> dict[str, Any]:
        """One row for the whole video (the folder summary's row)."""
        agreement = [a for a in self.agreement() if a is not None]
        teacher = self.teacher_probabilities()
        face = ~np.isnan(teacher).any(axis=1)
        student = self.student_probabilities()
        speech = ~np.isnan(student).any(axis=1)
        return {
            "video": self.path, "duration": round(self.duration, 3), "windows": len(self.windows),
            "windows_with_face": int(face.sum()), "windows_with_speech": int(speech.sum()),
            "voiced_fraction": self.settings.get("voiced_fraction"),
            "frames_sampled": self.frames_sampled, "frames_with_face": self.frames_with_face,
            "teacher_top": self.emotions[int(np.argmax(teacher[face].mean(0)))] if face.any() else None,
            "student_top": self.emotions[int(np.argmax(student[speech].mean(0)))] if speech.any() else None,
            "top_match_rate": _round(float(np.mean([a["top_match"] for a in agreement]))) if agreement else None,
            "mean_soft_ce": _round(float(np.mean([a["soft_ce"] for a in agreement]))) if agreement else None,
            "mean_kl": _round(float(np.mean([a["kl"] for a in agreement]))) if agreement else None,
            "error": None,
        }

    def as_dict(self) -> dict[str, Any]:
        return {"video": self.path, "duration": round(self.duration, 3), "emotions": list(self.emotions),
                "settings": self.settings, "summary": self.summary(), "windows": self.rows()}


def _round(value: float | None, digits: int = 5) -> float | None:
    return None if value is None else round(float(value), digits)
