"""task=evaluate: what a frozen student is worth on an emotional-speech benchmark.

    python -m crossmodal.run experiment=eval_emodb benchmark.source=/data/emodb [ckpt_path=student.safetensors]

1. Read the corpus (crossmodal.io.corpora), keep the benchmark's classes.
2. Run the frozen student on every whole clip (16 kHz, any length): its 8 logits (the paper's
   features) and its embedding (penultimate layer). With `benchmark.student_per_fold` each clip is
   run through the fold's student that never heard its speaker (out-of-fold features).
3. Score a standardised logistic-regression probe (C by inner CV) two ways: the paper's 10-fold
   CV over clips, and speaker-independent folds (leave-one-speaker-out or k folds by speaker);
   features standardised globally or per speaker (`benchmark.per_speaker_norm`).
4. Baselines in the same table, on the same folds: chance (the majority class), the same probe on
   a randomly initialised student of the same architecture, eGeMAPSv02 + LR and MFCC functionals +
   LR (crossmodal.eval.baselines), and zero-shot (the student's own argmax over the FER+ emotions
   the corpus has, no training).
5. Write UA/WA mean +- std to metrics.json, a Markdown report (<run>/evaluation.md), a W&B table,
   confusion matrix PNGs (<run>/plots/) and the features (<run>/features.npz).
"""
from __future__ import annotations

import dataclasses
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig

from crossmodal import paper
from crossmodal.config.checks import ConfigError
from crossmodal.eval.baselines import BASELINE_EXTRACTORS, SPEAKER_NORM, method_title, zero_shot_scores
from crossmodal.eval.metrics import ScoreReport, ScoreRow, format_mean_std
from crossmodal.eval.probe import (
    DEFAULT_CS,
    Fold,
    FoldError,
    auto_speaker_folds,
    clip_folds,
    cross_validate_probe,
    fit_labels_to_folds,
    majority_baseline,
    speaker_folds,
    speaker_zscore,
    stratified_subset,
)
from crossmodal.inference import Student, check_signal, load_student
from crossmodal.io.audio import SAMPLE_RATE
from crossmodal.io.corpora import Clip, CorpusError, corpus_spec, read_corpus, summarise
from crossmodal.utils.atomic import atomic_path, write_text
from crossmodal.utils.figures import markdown_table
from crossmodal.utils.progress import progress

log = logging.getLogger(__name__)

PROTOCOLS = ("clips", "speakers")
PROTOCOL_TITLES = {"clips": "k-fold CV over clips (paper)", "speakers": "speaker-independent"}
BASELINES = ("chance", "random_init", "zero_shot", "egemaps", "mfcc")
FEATURES = ("logits", "embedding")


@dataclass
class BenchmarkConfig:
    """The `benchmark` node of task=evaluate (conf/benchmark/): which corpus, which classes, how to score."""

    corpus: str
    source: str
    # The corpus classes the probe predicts (null: all of them); `merge` folds one class into another
    # first (IEMOCAP's usual 4 classes: merge {exc: hap}).
    classes: list[str] | None = None
    merge: dict[str, str] = field(default_factory=dict)
    # Keep only these speakers (null: all). For a student whose training audio came from this corpus
    # (the CPU pseudo-pair student hears EmoDB), evaluate on its unheard speakers only.
    speakers: list[str] | None = None
    # Leave out the speakers whose audio the student trained on, when its file records them
    # (info["train_speakers"][corpus], e.g. the CPU student's EmoDB pseudo-pairs).
    exclude_student_speakers: bool = True
    # Student outputs used as probe features: logits (the paper's) and/or embedding.
    features: list[str] = field(default_factory=lambda: ["logits", "embedding"])
    folds: int = paper.PROBE_FOLDS
    # A class with fewer clips than `folds`: "shrink" the clip-level folds to its size (at least 2;
    # smaller classes are dropped), "drop" the class, or "error". Every change is named in the report.
    small_classes: str = "shrink"
    # speaker-independent folds: "loso", a number of folds by speaker, or "auto" (loso up to 24 speakers, else 10)
    speaker_folds: Any = "auto"
    Cs: list[float] = field(default_factory=lambda: list(DEFAULT_CS))
    inner_folds: int = 3
    baselines: list[str] = field(default_factory=lambda: list(BASELINES))
    # Every probe's features z-scored per speaker (each speaker's own mean/std) before the global
    # standardisation; the rows say which was used.
    per_speaker_norm: bool = False
    # Out-of-fold student features: {held-out speakers: student file}, e.g. {"03+08": a.safetensors,
    # "09+10": b.safetensors}; each clip is run through the student listed for its speaker (one that
    # never heard it), speakers listed nowhere are left out; ckpt_path is then not used.
    student_per_fold: dict[str, str] | None = None
    # Use at most this many clips (a class-stratified subset; for quick runs and tests).
    max_clips: int | None = None
    seed: int = 0
    confusion_plots: bool = True


# ----------------------------------------------------------------------------- the task


def run(cfg: DictConfig, ctx) -> dict[str, Any]:
    bench = benchmark_config(cfg)
    strict = bool(cfg.get("strict", False))
    spec = corpus_spec(bench.corpus)
    unparsed: list[tuple[str, str]] = []
    clips = read_corpus(spec.name, bench.source, strict=strict, skipped=unparsed)
    clips = select_speakers(clips, bench)
    if bench.student_per_fold:
        per_speaker_student, students_note = fold_students(bench.student_per_fold, spec.name)
        clips, heard_note = keep_fold_speakers(clips, per_speaker_student)
        student: Student | dict[str, Student] = per_speaker_student
        template = next(iter(per_speaker_student.values()))
        student_label = students_note
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
    extractors = {name: BASELINE_EXTRACTORS[name]() for name in BASELINE_EXTRACTORS if name in bench.baselines}
    outputs, kept, failures = extract_features(students, clips, strict=strict, desc=f"student on {spec.title}", extractors=extractors)
    if not kept:
        raise CorpusError(f"{spec.title}: none of the {len(clips)} clips under {bench.source} could be used; first problem: {failures[0][1]}")
    clips = [clips[i] for i in kept]
    keep, class_names, folds, small_note = fit_classes_to_folds(clips, class_names, bench)
    bench = dataclasses.replace(bench, folds=folds)
    clips = [clips[i] for i in keep]
    feature_sets = {f"probe_{name}": outputs[0][name][keep] for name in wanted}
    if len(outputs) > 1:
        feature_sets.update({f"random_init_{name}": outputs[1][name][keep] for name in wanted})
    feature_sets.update({name: outputs[0][name][keep] for name in extractors})
    features = {"logits": outputs[0]["logits"][keep]}

    report = evaluate_features(clips, class_names, feature_sets, features["logits"], bench, spec_name=spec.name)
    report.failures = unparsed + failures
    for note in (small_note, heard_note):
        if note:
            report.notes.insert(0, note)
    report.student = student_label
    save_features(ctx.run_dir / "features.npz", clips, class_names, feature_sets)
    write_outputs(report, bench, ctx)
    return report.metrics()


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
    unknown = set(bench.features) - set(FEATURES)
    if unknown or "logits" not in bench.features:
        raise ConfigError(f"benchmark.features={bench.features}: must include 'logits' and may add 'embedding'")
    unknown = set(bench.baselines) - set(BASELINES)
    if unknown:
        raise ConfigError(f"benchmark.baselines has unknown {sorted(unknown)}; choose among {', '.join(BASELINES)}")
    return bench


def select_speakers(clips: list[Clip], bench: BenchmarkConfig) -> list[Clip]:
    if bench.speakers is None:
        return clips
    key = _speaker_key
    wanted = {key(s) for s in bench.speakers}
    present = sorted({c.speaker for c in clips})
    missing = sorted(wanted - {key(s) for s in present})
    if missing:
        raise ConfigError(f"benchmark.speakers: no clip of speaker(s) {', '.join(missing)} under {bench.source}; speakers there: {', '.join(present)}")
    return [c for c in clips if key(c.speaker) in wanted]


def _speaker_key(speaker: Any) -> str:
    # Hydra reads benchmark.speakers=[03,08] as numbers: match "03" and 3 alike.
    text = str(speaker).strip()
    return str(int(text)) if text.isdigit() else text


def heard_speakers(info: dict[str, Any], corpus: str) -> set[str]:
    """The speakers of ``corpus`` whose audio a student trained on (its file's ``train_speakers``)."""
    heard: set[str] = set()
    for name, speakers in (info.get("train_speakers") or {}).items():
        try:
            same = corpus_spec(str(name)).name == corpus
        except CorpusError:
            same = False
        if same:
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
    for source, target in bench.merge.items():
        for label, key in ((source, "benchmark.merge"), (target, "benchmark.merge")):
            if label not in spec.classes:
                raise ConfigError(f"{key}: {label!r} is not a {spec.title} class ({', '.join(spec.classes)})")
    merged = [clip if clip.corpus_label not in bench.merge else _relabel(clip, bench.merge[clip.corpus_label]) for clip in clips]
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
    """``benchmark.small_classes`` applied to the clip-level folds (crossmodal.eval.probe.fit_classes_to_folds)."""
    if bench.small_classes not in ("shrink", "drop", "error"):
        raise ConfigError(f"benchmark.small_classes={bench.small_classes!r}: choose shrink, drop or error")
    fitted = fit_labels_to_folds([c.corpus_label for c in clips], class_names, bench.folds, bench.small_classes, where=f"{bench.corpus} under {bench.source}")
    if fitted[3]:
        log.warning("%s under %s: %s", bench.corpus, bench.source, fitted[3])
    return fitted


def _relabel(clip: Clip, label: str) -> Clip:
    # The FER+ emotion stays the clip's own (zero-shot scores against it).
    return Clip(clip.path, clip.speaker, label, clip.emotion, clip.corpus)


def subsample(clips: list[Clip], max_clips: int | None, seed: int) -> list[Clip]:
    """A class-stratified subset of at most ``max_clips`` clips (all of them when None)."""
    return [clips[i] for i in stratified_subset([c.corpus_label for c in clips], max_clips, seed)]


# ----------------------------------------------------------------------------- features


def extract_features(
    students: Sequence[Student | dict[str, Student]], clips: Sequence[Clip], strict: bool, desc: str, extractors: dict[str, Any] | None = None
) -> tuple[list[dict[str, np.ndarray]], list[int], list[tuple[str, str]]]:
    """Each student's logits and embedding on each whole clip (each clip decoded once), and the
    baseline features (``extractors``: name -> callable(wave, rate, where)) in the first dict.

    A student may be a {speaker key: Student} dict (out-of-fold features). Unusable clips
    (unreadable, silent) are skipped and reported as (path, reason), or fail when ``strict``.
    Returns one ``{"logits", "embedding", ...}`` dict per student, the kept clip indices and the failures.
    """
    from crossmodal.io.audio import AudioError, load_audio

    extractors = extractors or {}
    outputs: list[dict[str, list[np.ndarray]]] = [{"logits": [], "embedding": []} for _ in students]
    outputs[0].update({name: [] for name in extractors})
    kept, failures = [], []
    with torch.inference_mode():
        for index, clip in enumerate(progress(clips, desc=desc, unit="clip")):
            try:
                wave = load_audio(clip.path, SAMPLE_RATE)
                check_signal(wave, str(clip.path))
            except (AudioError, ValueError) as exn:
                if strict:
                    raise CorpusError(f"{exn} (strict=true; set strict=false to skip such clips)") from exn
                failures.append((str(clip.path), str(exn)))
                log.warning("skipping %s", exn)
                continue
            batch = torch.from_numpy(wave)[None]
            for name, extractor in extractors.items():
                outputs[0][name].append(extractor(wave, SAMPLE_RATE, where=str(clip.path)))
            for student, out in zip(students, outputs):
                if isinstance(student, dict):
                    student = student[_speaker_key(clip.speaker)]
                logits, embedding = student(batch)
                out["logits"].append(logits[0].float().numpy())
                out["embedding"].append(embedding[0].float().numpy())
            kept.append(index)
    if failures:
        log.warning("%s: skipped %d of %d clips (unreadable or silent); e.g. %s", desc, len(failures), len(clips), failures[0][1])
    stacked = [{name: np.stack(values) if values else np.zeros((0, 0), np.float32) for name, values in out.items()} for out in outputs]
    return stacked, kept, failures


def random_init_student(student: Student, seed: int) -> Student:
    """The same architecture and front-end with fresh random weights (the 'is it the architecture?' baseline)."""
    from crossmodal.models.frontend import build_frontend
    from crossmodal.models.speech import create_student

    info = student.info
    if not info.get("net_name"):
        raise ValueError("the student does not record its network name; cannot build a random-init twin")
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        net = create_student(info["net_name"], **dict(info.get("net_kwargs") or {}))
    frontend = build_frontend(info.get("frontend") or student.frontend.frontend_config())
    return Student(frontend, net, {**info, "path": "random init"}).eval()


# ----------------------------------------------------------------------------- scoring


def evaluate_features(
    clips: Sequence[Clip],
    class_names: Sequence[str],
    feature_sets: dict[str, np.ndarray],
    student_logits: np.ndarray,
    bench: BenchmarkConfig,
    spec_name: str,
) -> ScoreReport:
    """Probe every feature set and the baselines under both protocols (no model needed: testable
    on planted features)."""
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
    for protocol, protocol_folds in folds.items():
        groups = speakers if protocol == "speakers" else None
        for method, features in feature_sets.items():
            result = cross_validate_probe(features, labels, protocol_folds, class_names, groups=groups, Cs=bench.Cs, inner_folds=bench.inner_folds,
                                          seed=bench.seed, speakers=speakers, per_speaker=bench.per_speaker_norm)
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
                report.zero_shot_classes = row.scores.class_names
    return report


def zero_shot_row(clips: Sequence[Clip], logits: np.ndarray, folds: Sequence[Fold], protocol: str, suffix: str = "") -> ScoreRow | None:
    """The student's own argmax over the FER+ emotions the clips' classes map to (eval.baselines)."""
    result = zero_shot_scores([c.emotion for c in clips], logits, folds)
    return None if result is None else ScoreRow("zero_shot" + suffix, protocol, *result)


# ----------------------------------------------------------------------------- outputs


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
        + ("per speaker, then globally" if bench.per_speaker_norm else "globally (training part)") + f", C by {bench.inner_folds}-fold inner CV",
        *[f"- {note}" for note in report.notes],
        f"- skipped files (unparseable name, unreadable or silent): {len(report.failures)}",
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
