"""Using a trained student: raw audio in, an emotion distribution and an embedding out.

    from crossmodal import load_student
    model = load_student()                        # the shipped default, or load_student("run/student.safetensors")
    out = model.predict(waveform, sample_rate)    # any rate, mono or multi-channel, any length
    out.probabilities                             # [8], FER+ order (crossmodal.emotions.EMOTIONS), sums to 1
    out.embedding                                 # [D], the student's penultimate layer
    model.predict_file("clip.mp4", window=4.0, hop=2.0)   # whole file + one row per window

What the student cannot judge is refused, naming the input: audio shorter than
:attr:`Student.min_seconds` (:class:`TooShortAudioError`), audio with no speech-like energy, such
as digital silence or a constant DC offset (:class:`SilentAudioError`), and, in
:meth:`Student.predict_file`, a file in which the voice-activity detector finds no speech
(:class:`NoSpeechError`, from :mod:`crossmodal.io.vad`; ``allow_non_speech=True`` answers with a flag).
Windows shorter than the student's minimum, a hop under ``MIN_HOP_SECONDS`` and more than
``MAX_WINDOWS`` windows a file are refused before any work. Files longer than
``STREAM_ABOVE_SECONDS`` are read in blocks and never held whole; their whole-file prediction is
pooled over consecutive stretches of ``POOL_SECONDS`` (see :meth:`Student.predict_file`).

:class:`Student` is an ``nn.Module`` holding the front-end and the network, so ``student(wave)``
(raw 16 kHz waveforms ``[B, samples]``) gives ``(logits, embedding)``; that module is what
:mod:`crossmodal.export` writes as TorchScript or ONNX.

The package, one job per module:
    waveform.py   audio in: 16 kHz mono, refusals (too short, silent), windows and stretches
    student.py    Student, its predictions (Prediction, WindowPrediction, FilePrediction) and load_student
                  (files are read by crossmodal.models.loading, the one loader of teachers and students)
Everything is re-exported here: ``from crossmodal.inference import load_student, Student``.
"""
from __future__ import annotations

from crossmodal.inference.student import (
    POOL_SECONDS,
    STREAM_ABOVE_SECONDS,
    WINDOW_BATCH,
    FilePrediction,
    Prediction,
    Student,
    WindowPrediction,
    load_student,
)
from crossmodal.inference.waveform import (
    MAX_WINDOWS,
    MIN_HOP_SECONDS,
    MIN_SPEECH_SECONDS,
    SILENCE_RMS,
    SilentAudioError,
    StretchCutter,
    TooShortAudioError,
    WindowCutter,
    check_seconds,
    check_signal,
    check_window_count,
    check_windows,
    prepare_waveform,
    window_count,
    window_spans,
)
from crossmodal.io.vad import NoSpeechError, SpeechCheck
from crossmodal.models.loading import DEFAULT_STUDENT, load_student_modules

__all__ = [
    "DEFAULT_STUDENT", "MAX_WINDOWS", "MIN_HOP_SECONDS", "MIN_SPEECH_SECONDS", "POOL_SECONDS", "SILENCE_RMS",
    "STREAM_ABOVE_SECONDS", "WINDOW_BATCH", "FilePrediction", "NoSpeechError", "Prediction", "SilentAudioError",
    "SpeechCheck", "StretchCutter", "Student", "TooShortAudioError", "WindowCutter", "WindowPrediction",
    "check_seconds", "check_signal", "check_window_count", "check_windows", "load_student", "load_student_modules",
    "prepare_waveform", "window_count", "window_spans",
]
