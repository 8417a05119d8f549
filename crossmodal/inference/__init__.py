"""Using a trained student: raw audio in, an emotion distribution and an embedding out.

    from crossmodal import load_student
    model = load_student()                        # the shipped default, or load_student("run/student.safetensors")
    out = model.predict(waveform, sample_rate)    # any rate, mono or multi-channel, any length
    out.probabilities                             # [8], FER+ order (crossmodal.emotions.EMOTIONS), sums to 1
    out.embedding                                 # [D], the student's penultimate layer
    model.predict_file("clip.mp4", window=4.0, hop=2.0)   # whole file + one row per window

What the student cannot judge is refused, naming the input: audio shorter than
:attr:`Student.min_seconds` (:class:`TooShortAudioError`) and audio with no speech-like energy, such
as digital silence or a constant DC offset (:class:`SilentAudioError`). Files longer than
``STREAM_ABOVE_SECONDS`` are read in blocks and never held whole; their whole-file prediction is
pooled over consecutive stretches of ``POOL_SECONDS`` (see :meth:`Student.predict_file`).

:class:`Student` is an ``nn.Module`` holding the front-end and the network, so ``student(wave)``
(raw 16 kHz waveforms ``[B, samples]``) gives ``(logits, embedding)``; that module is what
:mod:`crossmodal.export` writes as TorchScript or ONNX.

The package, one job per module:
    waveform.py   audio in: 16 kHz mono, refusals (too short, silent), windows and stretches
    student.py    Student and its predictions (Prediction, WindowPrediction, FilePrediction)
    loading.py    load_student / load_student_modules: model files and Lightning checkpoints
Everything is re-exported here: ``from crossmodal.inference import load_student, Student``.
"""
from __future__ import annotations

from crossmodal.inference.loading import DEFAULT_STUDENT, load_student, load_student_modules
from crossmodal.inference.student import (
    POOL_SECONDS,
    STREAM_ABOVE_SECONDS,
    WINDOW_BATCH,
    FilePrediction,
    Prediction,
    Student,
    WindowPrediction,
)
from crossmodal.inference.waveform import (
    MIN_SPEECH_SECONDS,
    SILENCE_RMS,
    SilentAudioError,
    StretchCutter,
    TooShortAudioError,
    WindowCutter,
    check_seconds,
    check_signal,
    prepare_waveform,
    window_spans,
)

__all__ = [
    "DEFAULT_STUDENT", "MIN_SPEECH_SECONDS", "POOL_SECONDS", "SILENCE_RMS", "STREAM_ABOVE_SECONDS", "WINDOW_BATCH",
    "FilePrediction", "Prediction", "SilentAudioError", "StretchCutter", "Student", "TooShortAudioError",
    "WindowCutter", "WindowPrediction", "check_seconds", "check_signal", "load_student", "load_student_modules",
    "prepare_waveform", "window_spans",
]
