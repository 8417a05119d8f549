"""task=evaluate: what a frozen student is worth on an emotional-speech benchmark.

    python -m crossmodal.run experiment=eval_emodb benchmark.source=/data/emodb [ckpt_path=student.safetensors]

The frozen student's 8 logits (the paper's features) and embedding on every whole clip (with
`benchmark.student_per_fold`, each clip through the fold's student that never heard its speaker) are
scored by the probe of crossmodal.eval.probe under clip-level and speaker-independent folds, beside the
baselines of crossmodal.eval.baselines. Protocol, outputs and results: experiments/external_eval/README.md.
"""
from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import re
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext, suppress
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np
import soundfile
import torch
from omegaconf import DictConfig
from safetensors.numpy import load_file, save_file

from crossmodal import paper
from crossmodal.config.checks import ConfigError
from crossmodal.eval.baselines import (
    BASELINE_EXTRACTORS,
    SPEAKER_NORM,
    baseline_settings,
    method_title,
    zero_shot_scores,
)
from crossmodal.eval.metrics import ScoreReport, ScoreRow, format_mean_std
from crossmodal.eval.probe import (
    DEFAULT_CS,
    Fold,
    FoldError,
    ProbeJob,
    auto_speaker_folds,
    clip_folds,
    majority_baseline,
    run_probes,
    speaker_folds,
    speaker_zscore,
)
from crossmodal.inference import SilentAudioError, Student, TooShortAudioError, check_signal, load_student
from crossmodal.io.audio import SAMPLE_RATE, AudioError, load_audio, probe_audio
from crossmodal.io.corpora import Clip, CorpusError, corpus_spec, read_corpus, summarise
from crossmodal.io.vad import DEFAULT_CHECK, one_thread, package_version
from crossmodal.models.frontend import build_frontend
from crossmodal.models.speech import create_student
from crossmodal.pipeline.cache import MANIFEST, claim, read_manifest
from crossmodal.pipeline.fingerprint import input_fingerprint, shard_folder
from crossmodal.pipeline.lock import folder_lock
from crossmodal.utils.atomic import atomic_path, write_json, write_text
from crossmodal.utils.figures import markdown_table
from crossmodal.utils.progress import progress

log = logging.getLogger(__name__)

PROTOCOLS = ("clips", "speakers")
PROTOCOL_TITLES = {"clips": "k-fold CV over clips (paper)", "speakers": "speaker-independent"}
BASELINES = ("chance", "random_init", "zero_shot", "egemaps", "mfcc")
FEATURES = ("logits", "embedding")


@dataclass
class BenchmarkConfig:
    """The `benchmark` node of task=evaluate; every key is documented in conf/benchmark/corpus.yaml."""

    corpus: str
    source: str
    classes: list[str] | None = None
    merge: dict[str, str] = field(default_factory=dict)
    speakers: list[str] | None = None
    exclude_student_speakers: bool = True
    features: list[str] = field(default_factory=lambda: ["logits", "embedding"])
    folds: int = paper.PROBE_FOLDS
    small_classes: str = "shrink"
    speaker_folds: Any = "auto"
    Cs: list[float] = field(default_factory=lambda: list(DEFAULT_CS))
    inner_folds: int = 3
    baselines: list[str] = field(default_factory=lambda: list(BASELINES))
    per_speaker_norm: bool = False
    student_per_fold: dict[str, str] | None = None
    max_clips: int | None = None
    seed: int = 0
    confusion_plots: bool = True
    feature_cache: bool = True
    workers: int | None = None


def run(cfg: DictConfig, ctx) -> dict[str, Any]:
    bench = benchmark_config(cfg)
    strict = bool(cfg.get("strict", False))
    spec = corpus_spec(bench.corpus)
    unparsed: list[tuple[str, str]] = []
    clips = read_corpus(spec.name, bench.source, strict=strict, skipped=unparsed)
    clips = select_speakers(clips, bench)
    student: Student | dict[str, Student]
    if bench.student_per_fold:
        student, student_label = fold_students(bench.student_per_fold, spec.name)
        clips, heard_note = keep_fold_speakers(clips, student)
        template = next(iter(student.values()))
    else:
        template = student = load_student(cfg.get("ckpt_path"))
        clips, heard_note = drop_student_speakers(clips, student.info, spec.name, bench.exclude_student_speakers)
        student_label = f"{student.info.get('net_name', 'student')} ({student.info.get('path', '')})"
    log.info("student: %s", student_label)
    clips, class_names = select_classes(clips, bench)
    clips = subsample(clips, bench.max_clips, bench.seed)
    log.info("%s at %s: %s", spec.title, bench.source, summarise(clips))
    wanted = ["logits", "embedding"] if "embedding" in bench.features else ["logits"]
    students = [student]
    if "random_init" in bench.baselines:
        students.append(random_init_student(template, bench.seed))
    names = [name for name in BASELINE_EXTRACTORS if name in bench.baselines]
    workers = worker_count(bench.workers)
    data_dir = (cfg.get("paths") or {}).get("data_dir") if bench.feature_cache else None
    if bench.feature_cache and not data_dir:
        log.info("paths.data_dir is not set: the eGeMAPS/MFCC features are not cached")
    with baseline_feature_set(data_dir, spec.name, bench.source, clips, names) as cached:
        baselines = "+".join({"egemaps": "eGeMAPS", "mfcc": "MFCC"}[name] for name in names)
        work = "decode" + (f", {baselines} from cache" if names and len(cached.rows) == len(clips) else f" + {baselines}" if names else "")
        runs = "student" + (" + random-init twin" if len(students) > 1 else "")
        desc = f"{spec.title}: {work} ({workers} process{'es' if workers > 1 else ''}), {runs} in batches"
        outputs, kept, failures, reasons = extract_features(students, clips, strict=strict, desc=desc, baselines=names, cached=cached.rows,
                                                            workers=workers)
        if not kept:
            raise CorpusError(f"{spec.title}: none of the {len(clips)} clips under {bench.source} could be used; first problem: {failures[0][1]}")
        cached.save(clips, kept, outputs[0], names)
    clips = [clips[i] for i in kept]
    keep, class_names, folds, small_note = fit_classes_to_folds(clips, class_names, bench)
    bench = dataclasses.replace(bench, folds=folds)
    clips = [clips[i] for i in keep]
    feature_sets = {f"probe_{name}": outputs[0][name][keep] for name in wanted}
    if len(outputs) > 1:
        feature_sets.update({f"random_init_{name}": outputs[1][name][keep] for name in wanted})
    feature_sets.update({name: outputs[0][name][keep] for name in names})
    report = evaluate_features(clips, class_names, feature_sets, outputs[0]["logits"][keep], bench, spec_name=spec.name, workers=workers)
    report.failures = unparsed + failures
    reasons = Counter({"unparseable name": len(unparsed)}) + reasons
    if reasons:
        report.notes.append("skipped files by reason: " + ", ".join(f"{n} {reason}" for reason, n in sorted(reasons.items(), key=lambda kv: (-kv[1], kv[0]))))
    report.notes.append(f"speech presence: a clip with fewer than {100 * DEFAULT_CHECK.min_fraction:.0f} % of its 32-ms frames voiced "
                        f"(Silero VAD {package_version()}, p >= {DEFAULT_CHECK.threshold:g}) is skipped as 'no speech' (strict=true: an error)")
    report.notes[:0] = [note for note in (heard_note, small_note, cached.note()) if note]
    report.student = student_label
    save_features(ctx.run_dir / "features.npz", clips, class_names, feature_sets)
    write_outputs(report, bench, ctx)
    return report.metrics() | {f"eval/skipped_{re.sub('[^a-z]+', '_', reason)}": n for reason, n in reasons.items()}


def worker_count(workers: int | None) -> int:
    """``benchmark.workers``, or the cores this process may use."""
    if workers is None:
        return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1))
    if int(workers) < 1:
        raise ConfigError(f"benchmark.workers={workers}: need at least 1 (or null for the usable cores)")
    return int(workers)


def benchmark_config(cfg: DictConfig) -> BenchmarkConfig:
    from hydra.utils import instantiate

    node = cfg.get("benchmark") or cfg.get("data")  # a `data` node: how callers of this function spelt it before
    if not node or not node.get("corpus"):
        raise ConfigError("task=evaluate needs a corpus: experiment=eval_emodb (or eval_ravdess, ...) benchmark.source=/path/to/corpus")
    if not node.get("source"):
        raise ConfigError(f"benchmark.source is empty: set benchmark.source=/path/to/{node.corpus}")
    bench = instantiate(node, _convert_="all") if node.get("_target_") else BenchmarkConfig(**dict(node.items()))
    if not isinstance(bench, BenchmarkConfig):
        raise ConfigError(f"benchmark._target_ of task=evaluate must be {BenchmarkConfig.__module__}.BenchmarkConfig")
    if not set(bench.features) <= set(FEATURES) or "logits" not in bench.features:
        raise ConfigError(f"benchmark.features={bench.features}: must include 'logits' and may add 'embedding'")
    unknown = set(bench.baselines) - set(BASELINES)
    if unknown:
        raise ConfigError(f"benchmark.baselines has unknown {sorted(unknown)}; choose among {', '.join(BASELINES)}")
    return bench


def select_speakers(clips: list[Clip], bench: BenchmarkConfig) -> list[Clip]:
    if bench.speakers is None:
        return clips
    wanted = {_speaker_key(s) for s in bench.speakers}
    present = sorted({c.speaker for c in clips})
    missing = sorted(wanted - {_speaker_key(s) for s in present})
    if missing:
        raise ConfigError(f"benchmark.speakers: no clip of speaker(s) {', '.join(missing)} under {bench.source}; speakers there: {', '.join(present)}")
    return [c for c in clips if _speaker_key(c.speaker) in wanted]


def _speaker_key(speaker: Any) -> str:
    # Hydra reads benchmark.speakers=[03,08] as numbers: match "03" and 3 alike.
    text = str(speaker).strip()
    return str(int(text)) if text.isdigit() else text


def heard_speakers(info: dict[str, Any], corpus: str) -> set[str]:
    """The speakers of ``corpus`` whose audio a student trained on (its file's ``train_speakers``)."""
    heard: set[str] = set()
    for name, speakers in (info.get("train_speakers") or {}).items():
        with suppress(CorpusError):  # a corpus crossmodal has no reader for is not this one
            if corpus_spec(str(name)).name == corpus:
                heard |= {str(s) for s in speakers or []}
    return heard


def fold_students(mapping: dict[str, str], corpus: str) -> tuple[dict[str, Student], str]:
    """``benchmark.student_per_fold`` -> {speaker key: the student that never heard that speaker}, and a
    line naming them. A student whose file says it trained on a speaker it is listed for is refused."""
    by_speaker: dict[str, Student] = {}
    described = []
    for group, path in mapping.items():
        speakers = [s for s in re.split(r"[+,;\s]+", str(group)) if s]
        if not speakers or not path:
            raise ConfigError(f"benchmark.student_per_fold: entry {group!r}: {path!r} needs held-out speakers as the key (e.g. \"03+08\") and a student file as the value")
        student = load_student(path)
        heard = {_speaker_key(s) for s in heard_speakers(student.info, corpus)}
        clash = [s for s in speakers if _speaker_key(s) in heard]
        if clash:
            raise ConfigError(f"benchmark.student_per_fold[{group!r}]: {path} trained on speaker(s) {', '.join(clash)} (its train_speakers); list each student under the speakers it never heard")
        for speaker in speakers:
            if _speaker_key(speaker) in by_speaker:
                raise ConfigError(f"benchmark.student_per_fold: speaker {speaker} is listed under two students; each speaker needs exactly one")
            by_speaker[_speaker_key(speaker)] = student
        described.append(f"{'+'.join(speakers)}: {student.info.get('net_name', 'student')} ({path})")
    return by_speaker, "out-of-fold students, held-out speakers -> file: " + "; ".join(described)


def keep_fold_speakers(clips: list[Clip], by_speaker: dict[str, Student]) -> tuple[list[Clip], str]:
    """Keep the clips whose speaker has a fold student; name the speakers left out."""
    missing = sorted({c.speaker for c in clips if _speaker_key(c.speaker) not in by_speaker})
    kept = [c for c in clips if _speaker_key(c.speaker) in by_speaker]
    if not kept:
        raise ConfigError(f"benchmark.student_per_fold names none of the speakers present ({', '.join(missing)})")
    note = "out-of-fold features: each clip's logits/embedding come from the student that never heard its speaker"
    if missing:
        note += f"; speakers {', '.join(missing)} have no student in benchmark.student_per_fold and are left out"
    return kept, note


def drop_student_speakers(clips: list[Clip], info: dict[str, Any], corpus: str, exclude: bool) -> tuple[list[Clip], str]:
    """Leave out (or flag) the speakers of this corpus whose audio the student was trained on."""
    heard = heard_speakers(info, corpus)
    overlap = sorted(heard & {c.speaker for c in clips})
    if not overlap:
        return clips, ""
    if not exclude:
        note = f"WARNING: the student trained on audio of speakers {', '.join(overlap)} of this corpus; their scores are optimistic"
        log.warning("%s", note)
        return clips, note
    kept = [c for c in clips if c.speaker not in heard]
    if not kept:
        raise CorpusError(f"every speaker here ({', '.join(overlap)}) was in the student's training audio; set benchmark.exclude_student_speakers=false to score them anyway")
    scored = sorted({c.speaker for c in kept})
    note = (f"scored only speakers {', '.join(scored)}, which the student never heard; left out speakers {', '.join(overlap)}: "
            "the student trained on their audio (benchmark.exclude_student_speakers=false keeps them)")
    log.info("%s", note)
    return kept, note


def select_classes(clips: list[Clip], bench: BenchmarkConfig) -> tuple[list[Clip], tuple[str, ...]]:
    """Apply ``merge`` then keep ``classes`` (all classes present when null); return clips + class order."""
    spec = corpus_spec(bench.corpus)
    for label in [*bench.merge, *bench.merge.values()]:
        if label not in spec.classes:
            raise ConfigError(f"benchmark.merge: {label!r} is not a {spec.title} class ({', '.join(spec.classes)})")
    # a merged clip keeps its own FER+ emotion (zero-shot scores against it)
    merged = [dataclasses.replace(clip, corpus_label=bench.merge.get(clip.corpus_label, clip.corpus_label)) for clip in clips]
    present = [label for label in spec.classes if any(c.corpus_label == label for c in merged)]
    if bench.classes is None:
        class_names = tuple(present)
    else:
        for label in bench.classes:
            if label not in spec.classes:
                raise ConfigError(f"benchmark.classes: {label!r} is not a {spec.title} class ({', '.join(spec.classes)})")
            if label not in present:
                raise CorpusError(f"benchmark.classes: no {spec.title} clip of class {label!r} under {bench.source}")
        class_names = tuple(bench.classes)
    kept = [clip for clip in merged if clip.corpus_label in class_names]
    if len(class_names) < 2:
        raise CorpusError(f"{spec.title} under {bench.source}: only class {class_names} is present; a probe needs at least two")
    return kept, class_names


def fit_classes_to_folds(clips: Sequence[Clip], class_names: tuple[str, ...], bench: BenchmarkConfig) -> tuple[list[int], tuple[str, ...], int, str]:
    """``benchmark.small_classes`` applied to the clip-level folds: a class with fewer clips than
    ``bench.folds`` shrinks the folds to its size (``shrink``; classes under 2 clips are dropped), is
    dropped (``drop``), or is left for clip_folds to refuse, naming it (``error``).

    Returns the indices of the clips to keep, the classes left, the number of clip-level folds to
    use, and a note naming what changed ("" when nothing did).
    """
    if bench.small_classes not in ("shrink", "drop", "error"):
        raise ConfigError(f"benchmark.small_classes={bench.small_classes!r}: choose shrink, drop or error")
    labels, n_folds = [c.corpus_label for c in clips], bench.folds
    counts = {name: labels.count(name) for name in class_names}
    small = [name for name in class_names if counts[name] < n_folds]
    if not small or bench.small_classes == "error":
        return list(range(len(labels))), class_names, n_folds, ""
    dropped = [name for name in small if counts[name] < (n_folds if bench.small_classes == "drop" else 2)]
    left = tuple(name for name in class_names if name not in dropped)
    if len(left) < 2:
        listed = ", ".join(f"{name} ({counts[name]} clips)" for name in class_names)
        raise FoldError(f"{bench.corpus} under {bench.source}: too few clips per class for {n_folds} folds ({listed}); lower benchmark.folds")
    folds = min([n_folds] + [counts[name] for name in left])
    notes = []
    if folds < n_folds:
        notes.append(f"clip-level folds lowered from {n_folds} to {folds}: class {min(left, key=counts.get)} has only {folds} clips")
    if dropped:
        notes.append("dropped classes with too few clips: " + ", ".join(f"{name} ({counts[name]} clips)" for name in dropped))
    note = "; ".join(notes) + " (benchmark.small_classes=error refuses instead)"
    log.warning("%s under %s: %s", bench.corpus, bench.source, note)
    return [i for i, label in enumerate(labels) if label in left], left, folds, note


def subsample(clips: list[Clip], max_clips: int | None, seed: int) -> list[Clip]:
    """A class-stratified subset of at most about ``max_clips`` clips, in their order (all of them when None)."""
    if not max_clips or len(clips) <= max_clips:
        return clips
    labels = np.array([c.corpus_label for c in clips])
    rng = np.random.default_rng(seed)
    chosen: list[int] = []
    for label in sorted(set(labels.tolist())):
        members = np.flatnonzero(labels == label)
        take = max(1, round(len(members) * max_clips / len(labels)))
        chosen += rng.choice(members, size=min(take, len(members)), replace=False).tolist()
    return [clips[i] for i in sorted(chosen)]


BATCH_CLIPS = 32  # most clips in one student forward pass (clips of equal frame counts, see extract_features)
FEATURE_SET_KIND = "eval_features"
FEATURE_SET_FORMAT = 1  # bump when the cached baseline-feature set's layout or computation changes
FEATURE_FILE = "features.safetensors"


@dataclass
class ClipRead:
    """One clip as :func:`read_clip` hands it back: its 16 kHz waveform and baseline features, or
    why it is skipped (``problem``: a one-line message naming the file; ``reason``: its kind, counted)."""

    index: int
    wave: np.ndarray | None = None
    features: dict[str, np.ndarray] = field(default_factory=dict)
    problem: str = ""
    reason: str = ""


_EXTRACTORS: dict[str, Any] = {}  # per process, built on first use (an opensmile.Smile is not sent between processes)


def read_clip(index: int, path: str, baselines: Sequence[str] = ()) -> ClipRead:
    """Decode one clip, refuse what the student cannot judge (unreadable, silent, no speech), and
    compute the named baseline features (``BASELINE_EXTRACTORS``). Runs in a worker process."""
    try:
        wave = load_audio(path, SAMPLE_RATE)
        check_signal(wave, path)
    except AudioError as exn:
        return ClipRead(index, problem=str(exn), reason="unreadable")
    except (SilentAudioError, TooShortAudioError) as exn:
        return ClipRead(index, problem=str(exn), reason="silent" if isinstance(exn, SilentAudioError) else "too short")
    except ValueError as exn:  # NaN or infinite samples
        return ClipRead(index, problem=str(exn), reason="unusable samples")
    problem = no_speech(wave, path)
    if problem:
        return ClipRead(index, problem=problem, reason="no speech")
    features = {}
    for name in baselines:
        if name not in _EXTRACTORS:
            _EXTRACTORS[name] = BASELINE_EXTRACTORS[name]()
        features[name] = _EXTRACTORS[name](wave, SAMPLE_RATE, where=path)
    return ClipRead(index, wave, features)


def no_speech(wave: np.ndarray, where: str) -> str | None:
    """The speech-presence check (crossmodal.io.vad, Silero VAD): None when the 16 kHz ``wave`` holds
    speech, else a one-line reason naming ``where`` ("no speech found in X: 3 % of frames voiced")."""
    return DEFAULT_CHECK.problem(wave, SAMPLE_RATE, where)


def extract_features(
    students: Sequence[Student | dict[str, Student]],
    clips: Sequence[Clip],
    strict: bool,
    desc: str,
    baselines: Sequence[str] = (),
    *,
    cached: dict[int, dict[str, np.ndarray]] | None = None,
    workers: int = 1,
    batch_clips: int = BATCH_CLIPS,
) -> tuple[list[dict[str, np.ndarray]], list[int], list[tuple[str, str]], Counter]:
    """Each student's logits and embedding on each whole clip, and the ``baselines`` features in the first dict.

    Clips are decoded once, checked and featurised in ``workers`` processes (:func:`read_clip`; ``cached``
    rows, by clip index, are reused), in order of length, while the main process runs the students on
    batches of up to ``batch_clips`` clips with the same number of front-end frames (padded, with their
    lengths): each clip's network input is what it would be alone, so batched outputs equal per-clip ones
    up to float rounding. A student may be a {speaker key: Student} dict (out-of-fold features). Unusable
    clips are skipped and reported as (path, reason), or fail when ``strict``. Returns one dict per student,
    the kept clip indices and the failures (both in clip order), and the skip count per reason.
    """
    from joblib import Parallel, delayed

    cached = cached or {}
    n = len(clips)
    outputs: list[dict[str, list[Any]]] = [{"logits": [None] * n, "embedding": [None] * n} for _ in students]
    outputs[0].update({name: [None] * n for name in baselines})
    for index, rows in cached.items():
        for name in baselines:
            outputs[0][name][index] = rows[name]
    batcher = _StudentBatcher(students, outputs, batch_clips)
    order = sorted(range(n), key=lambda i: (batcher.group(clips[i]), _header_samples(clips[i].path)))
    failures: dict[int, tuple[str, str]] = {}
    reasons: Counter = Counter()
    kept: list[int] = []
    jobs = (delayed(read_clip)(i, str(clips[i].path), () if i in cached else tuple(baselines)) for i in order)
    # Each worker process gets one torch/BLAS thread: two processes already fill two cores.
    options = {"n_jobs": workers, "return_as": "generator"} | ({"backend": "loky", "inner_max_num_threads": 1} if workers > 1 else {})
    with torch.inference_mode(), one_thread() if workers > 1 else nullcontext():
        for read in progress(Parallel(**options)(jobs), desc=desc, unit="clip", total=n):
            clip = clips[read.index]
            if read.problem:
                if strict:
                    raise CorpusError(f"{read.problem} (strict=true; set strict=false to skip such clips)")
                failures[read.index] = (str(clip.path), read.problem)
                reasons[read.reason] += 1
                log.warning("skipping %s", read.problem)
                continue
            for name, row in read.features.items():
                outputs[0][name][read.index] = row
            batcher.add(read.index, clip, read.wave)
            kept.append(read.index)
        batcher.finish()
    kept.sort()
    failed = [failures[i] for i in sorted(failures)]
    if failed:
        counts = ", ".join(f"{count} {reason}" for reason, count in reasons.most_common())
        log.warning("%s: skipped %d of %d clips (%s); e.g. %s", desc, len(failed), n, counts, failed[0][1])
    stacked = [{name: np.stack([values[i] for i in kept]) if kept else np.zeros((0, 0), np.float32) for name, values in out.items()}
               for out in outputs]
    return stacked, kept, failed, reasons


class _StudentBatcher:
    """Collects decoded clips into buckets of equal front-end frame counts (and, for out-of-fold
    students, one student), and runs every student on a bucket when it is full or done."""

    def __init__(self, students: Sequence[Student | dict[str, Student]], outputs: list[dict[str, list[Any]]], batch_clips: int) -> None:
        self.students, self.outputs, self.batch_clips = list(students), outputs, max(1, int(batch_clips))
        self.per_speaker = any(isinstance(s, dict) for s in self.students)
        self.buckets: dict[tuple, list[tuple[int, np.ndarray]]] = {}

    def group(self, clip: Clip) -> str:
        return _speaker_key(clip.speaker) if self.per_speaker else ""

    def _students(self, group: str) -> list[Student]:
        return [student[group] if isinstance(student, dict) else student for student in self.students]

    def add(self, index: int, clip: Clip, wave: np.ndarray) -> None:
        group = self.group(clip)
        counters = [getattr(student.frontend, "num_frames", None) for student in self._students(group)]
        key = (group, *(int(count(torch.tensor([len(wave)]))[0]) if count else len(wave) for count in counters))
        for other in [k for k in self.buckets if k[0] != group]:  # clips come in order of (group, length)
            self._run(other)
        bucket = self.buckets.setdefault(key, [])
        bucket.append((index, wave))
        if len(bucket) >= self.batch_clips:
            self._run(key)

    def finish(self) -> None:
        for key in list(self.buckets):
            self._run(key)

    def _run(self, key: tuple) -> None:
        bucket = self.buckets.pop(key)
        lengths = torch.tensor([len(wave) for _, wave in bucket])
        batch = torch.zeros(len(bucket), int(lengths.max()))
        for row, (_, wave) in enumerate(bucket):
            batch[row, : len(wave)] = torch.from_numpy(wave)
        for student, out in zip(self._students(key[0]), self.outputs):
            logits, embedding = student(batch, lengths)
            for row, (index, _) in enumerate(bucket):
                out["logits"][index] = logits[row].float().numpy()
                out["embedding"][index] = embedding[row].float().numpy()


def _header_samples(path: Path) -> int:
    """A clip's length in 16 kHz samples from its header (0 when unreadable: the worker says why)."""
    try:
        duration = probe_audio(path).duration
    except (AudioError, OSError, ValueError):
        return 0
    return round((duration or 0.0) * SAMPLE_RATE)


@dataclass
class BaselineSet:
    """The eGeMAPS/MFCC features of a corpus listing, kept in ``<paths.data_dir>/eval_features/<corpus>-<digest>``
    (features.safetensors + manifest.json with the fingerprint), so that a second evaluation of the same
    clips reuses them. ``rows``: clip index -> {name: features} taken from the set; ``reused``: whether
    the set was there; ``folder`` None: no cache (``benchmark.feature_cache=false``, no data_dir, no baselines)."""

    folder: Path | None
    fingerprint: dict[str, Any] | None
    source: str
    rows: dict[int, dict[str, np.ndarray]] = field(default_factory=dict)
    reused: bool = False

    def note(self) -> str:
        if self.folder is None:
            return ""
        return f"eGeMAPS/MFCC features {'reused from' if self.reused else 'computed and cached in'} {self.folder} (fingerprint {self.fingerprint['digest'][:8]})"

    def save(self, clips: Sequence[Clip], kept: Sequence[int], features: dict[str, np.ndarray], names: Sequence[str]) -> None:
        """Write the set built in this run (atomic: the features, then the manifest that makes it a set)."""
        if self.folder is None or self.reused or not names:
            return
        arrays = {name: np.ascontiguousarray(features[name], dtype=np.float64) for name in names}
        with atomic_path(self.folder / FEATURE_FILE) as tmp:
            save_file(arrays, str(tmp))
        manifest = {"meta": {"fingerprint": self.fingerprint, "created": time.strftime("%Y-%m-%d %H:%M:%S")},
                    "clips": [_relative(clips[i].path, self.source) for i in kept], "features": {name: int(arrays[name].shape[1]) for name in names}}
        write_json(self.folder / MANIFEST, manifest)
        log.info("%s", self.note())


@contextmanager
def baseline_feature_set(data_dir: str | Path | None, corpus: str, source: str, clips: Sequence[Clip], names: Sequence[str]) -> Iterator[BaselineSet]:
    """The fingerprinted baseline-feature set of these clips, held under a folder lock while the
    run computes what it lacks (a second run of the same clips waits, then reuses it)."""
    if data_dir is None or not names:
        yield BaselineSet(None, None, source)
        return
    # what the features depend on: the corpus folder's listing (names, sizes, mtimes), which of its clips
    # are used, the feature settings and the decoder and feature libraries' versions
    relative = sorted(_relative(clip.path, source) for clip in clips)
    settings = {
        "clips": {"count": len(relative), "sha256": hashlib.sha256("\n".join(relative).encode()).hexdigest()},
        "sample_rate": SAMPLE_RATE,
        "decoder": {"soundfile": version("soundfile"), "libsndfile": soundfile.__libsndfile_version__, "av": version("av"),
                    "torchaudio": version("torchaudio").split("+")[0]},
        "features": baseline_settings(names),
    }
    fingerprint = input_fingerprint(FEATURE_SET_KIND, sources={"corpus": source}, settings=settings, format_version=FEATURE_SET_FORMAT)
    folder = shard_folder(data_dir, FEATURE_SET_KIND, corpus, fingerprint)
    with folder_lock(folder, what="baseline feature set"):
        cache = BaselineSet(folder, fingerprint, source)
        if claim(folder, fingerprint, what="baseline feature set"):
            stored = load_file(str(folder / FEATURE_FILE))
            where = {name: row for row, name in enumerate(read_manifest(folder)["clips"])}
            for index, clip in enumerate(clips):
                row = where.get(_relative(clip.path, source))
                if row is not None:
                    cache.rows[index] = {name: stored[name][row] for name in names}
            cache.reused = True
            log.info("%s (%d of %d clips)", cache.note(), len(cache.rows), len(clips))
        yield cache


def _relative(path: Path, source: str) -> str:
    return os.path.relpath(os.path.abspath(path), os.path.abspath(source))


def random_init_student(student: Student, seed: int) -> Student:
    """The same architecture and front-end with fresh random weights (the 'is it the architecture?' baseline)."""
    info = student.info
    if not info.get("net_name"):
        raise ValueError("the student does not record its network name; cannot build a random-init twin")
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        net = create_student(info["net_name"], **dict(info.get("net_kwargs") or {}))
    frontend = build_frontend(info.get("frontend") or student.frontend.frontend_config())
    return Student(frontend, net, {**info, "path": "random init"}).eval()


def evaluate_features(
    clips: Sequence[Clip],
    class_names: Sequence[str],
    feature_sets: dict[str, np.ndarray],
    student_logits: np.ndarray,
    bench: BenchmarkConfig,
    spec_name: str,
    workers: int = 1,
) -> ScoreReport:
    """Probe every feature set and the baselines under both protocols (no model needed: testable
    on planted features); the probes' folds are fitted in ``workers`` processes."""
    spec = corpus_spec(spec_name)
    where = f"{spec.title} under {bench.source}"
    labels = np.array([class_names.index(c.corpus_label) for c in clips])
    speakers = np.array([c.speaker for c in clips])
    report = ScoreReport(spec.title, tuple(class_names), len(clips), len(set(speakers.tolist())),
                         class_counts={name: int(np.sum(labels == i)) for i, name in enumerate(class_names)})
    named = np.array([c.corpus_label for c in clips])  # class names, so that fold errors name the class
    folds: dict[str, list[Fold]] = {"clips": clip_folds(named, bench.folds, bench.seed, where=where)}
    n_speaker_folds = auto_speaker_folds(report.speakers) if bench.speaker_folds == "auto" else bench.speaker_folds
    try:
        folds["speakers"] = speaker_folds(speakers, named, n_speaker_folds, bench.seed, where=where)
        kind = "leave-one-speaker-out" if n_speaker_folds == "loso" else f"{n_speaker_folds} folds by speaker"
        report.notes.append(f"speaker-independent protocol: {kind} ({len(folds['speakers'])} folds)")
    except FoldError as exn:
        log.warning("%s; reporting the clip-level protocol only", exn)
        report.notes.append(f"no speaker-independent protocol: {exn}")
    jobs = {(protocol, method): ProbeJob(features, labels, protocol_folds, class_names, groups=speakers if protocol == "speakers" else None,
                                         Cs=bench.Cs, inner_folds=bench.inner_folds, seed=bench.seed, speakers=speakers, per_speaker=bench.per_speaker_norm)
            for protocol, protocol_folds in folds.items() for method, features in feature_sets.items()}
    desc = f"probes: logistic regression on {len(feature_sets)} feature sets x {len(folds)} protocols ({workers} process{'es' if workers > 1 else ''})"
    results = run_probes(jobs, workers, watch=lambda fitted, total: progress(fitted, desc=desc, unit="fold", total=total))
    for protocol, protocol_folds in folds.items():
        for method in feature_sets:
            result = results[(protocol, method)]
            chosen = ", ".join(f"{c:g}" for c in sorted(set(result.chosen_C)))
            name = method + (SPEAKER_NORM if bench.per_speaker_norm else "")
            report.rows.append(ScoreRow(name, protocol, result.scores, note=f"C in {{{chosen}}}"))
        if "chance" in bench.baselines:
            report.rows.append(ScoreRow("chance", protocol, majority_baseline(labels, protocol_folds, class_names)))
        if "zero_shot" in bench.baselines:
            # per-speaker norm: each speaker's logits z-scored with its own statistics before the argmax
            logits = speaker_zscore(student_logits, speakers) if bench.per_speaker_norm else student_logits
            row = zero_shot_row(clips, logits, protocol_folds, protocol, SPEAKER_NORM if bench.per_speaker_norm else "")
            if row is not None:
                report.rows.append(row)
    return report


def zero_shot_row(clips: Sequence[Clip], logits: np.ndarray, folds: Sequence[Fold], protocol: str, suffix: str = "") -> ScoreRow | None:
    """The student's own argmax over the FER+ emotions the clips' classes map to (eval.baselines)."""
    result = zero_shot_scores([c.emotion for c in clips], logits, folds)
    return None if result is None else ScoreRow("zero_shot" + suffix, protocol, *result)


def table_rows(report: ScoreReport) -> tuple[list[str], list[list[Any]]]:
    columns = ["method", "protocol", "UA % (mean ± std)", "WA % (mean ± std)", "folds", "note"]
    rows = []
    for row in report.rows:
        s = row.scores.summary()
        rows.append([method_title(row.method), PROTOCOL_TITLES[row.protocol],
                     format_mean_std(s["ua_mean"], s["ua_std"]), format_mean_std(s["wa_mean"], s["wa_std"]), row.scores.folds, row.note])
    return columns, rows


def markdown_report(report: ScoreReport, bench: BenchmarkConfig) -> str:
    columns, rows = table_rows(report)
    lines = [
        f"# {report.corpus}: external evaluation",
        "",
        f"- corpus: `{bench.source}`; {report.clips} clips, {report.speakers} speakers, {len(report.class_names)} classes"
        + (f" (speakers {', '.join(map(str, bench.speakers))} only)" if bench.speakers else ""),
        "- classes: " + ", ".join(f"{name} ({report.class_counts.get(name, 0)})" for name in report.class_names),
        f"- student: {report.student}",
        f"- features: {', '.join(bench.features)}; probe: multinomial logistic regression on features standardised "
        + ("per speaker, then globally" if bench.per_speaker_norm else "globally (training part)") + f", C in {{{', '.join(f'{c:g}' for c in bench.Cs)}}} by {bench.inner_folds}-fold inner CV",
        *[f"- {note}" for note in report.notes],
        f"- skipped files (unparseable name, unreadable, silent or no speech): {len(report.failures)}",
        "",
        markdown_table(columns, rows),
        "",
        "UA = mean per-class recall; WA = accuracy over clips. Mean ± std over folds.",
    ]
    main = [row for row in report.rows if row.method.removesuffix(SPEAKER_NORM) == "probe_logits"]
    if main:
        recall_columns = ["protocol", *report.class_names]
        recall_rows = [[PROTOCOL_TITLES[row.protocol], *(f"{100 * row.scores.per_class_recall().get(n, float('nan')):.1f}" for n in report.class_names)] for row in main]
        lines += ["", "Per-class recall % of the probe on student logits:", "", markdown_table(recall_columns, recall_rows)]
    if report.failures:
        lines += ["", "Skipped files:", ""] + [f"- `{path}`: {reason}" for path, reason in report.failures[:50]]
    return "\n".join(lines) + "\n"


def write_outputs(report: ScoreReport, bench: BenchmarkConfig, ctx) -> None:
    from crossmodal.utils.plots import confusion_matrix_figure

    columns, rows = table_rows(report)
    ctx.log_table("eval/results", columns, rows)
    path = Path(ctx.run_dir) / "evaluation.md"
    write_text(path, markdown_report(report, bench))
    log.info("evaluation table: %s\n%s", path, markdown_table(columns, rows))
    # every fold's scores, in the folds' (deterministic) order: two runs on one corpus pair fold by fold
    folds = {f"{row.method}/{row.protocol}": {"ua": row.scores.ua, "wa": row.scores.wa} for row in report.rows}
    write_json(Path(ctx.run_dir) / "fold_scores.json", folds)
    if not bench.confusion_plots:
        return
    for row in report.rows:
        # the paper's probe, the classic baseline and zero-shot (each PNG costs ~0.5 s)
        if row.method.removesuffix(SPEAKER_NORM) in ("probe_logits", "egemaps", "zero_shot") and row.scores.confusion is not None:
            title = f"{report.corpus}: {method_title(row.method)}\n{PROTOCOL_TITLES[row.protocol]}, UA {100 * row.scores.summary()['ua_mean']:.1f}%"
            fig = confusion_matrix_figure(row.scores.confusion, row.scores.class_names, title=title)
            ctx.save_figure(f"eval/confusion_{row.method}_{row.protocol}", fig)


def save_features(path: Path, clips: Sequence[Clip], class_names: Sequence[str], feature_sets: dict[str, np.ndarray]) -> None:
    arrays = {"paths": np.array([str(c.path) for c in clips]), "speakers": np.array([c.speaker for c in clips]),
              "labels": np.array([c.corpus_label for c in clips]), "class_names": np.array(list(class_names)), **feature_sets}
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez_compressed(f, **arrays)
