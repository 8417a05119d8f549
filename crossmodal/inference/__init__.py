"""Using a trained student: raw audio in, an emotion distribution and an embedding out.

    from crossmodal import load_student
    model = load_student()                        # the shipped default, or load_student("run/student.safetensors")
    out = model.predict(waveform, sample_rate)    # any rate, mono or multi-channel, any length
    out.probabilities                             # [8], FER+ order (crossmodal.emotions.EMOTIONS), sums to 1
    out.embedding                                 # [D], the student's penultimate layer
    model.predict_file("clip.mp4", window=4.0, hop=2.0)   # whole file + one row per window

Audio the student cannot judge is refused, naming the input (:class:`TooShortAudioError`,
:class:`SilentAudioError`, :class:`NoSpeechError`); :class:`Student` (``student.py``; its audio checks
and windows in ``waveform.py``) says when, and how long files are streamed.
"""
from __future__ import annotations

from crossmodal.inference.student import FilePrediction, Prediction, Student, WindowPrediction, load_student
from crossmodal.inference.waveform import (
    MIN_SPEECH_SECONDS,
    SILENCE_RMS,
    SilentAudioError,
    TooShortAudioError,
    WindowCutter,
    check_seconds,
    check_signal,
    window_spans,
)
from crossmodal.io.vad import NoSpeechError, SpeechCheck
from crossmodal.models.loading import DEFAULT_STUDENT

__all__ = [
    "DEFAULT_STUDENT", "MIN_SPEECH_SECONDS", "SILENCE_RMS", "FilePrediction", "NoSpeechError", "Prediction",
    "SilentAudioError", "SpeechCheck", "Student", "TooShortAudioError", "WindowCutter", "WindowPrediction",
    "check_seconds", "check_signal", "load_student", "window_spans",
]
