"""Readers for emotional-speech corpora, as their users download them: one :class:`Clip` per utterance,
parsed from the corpus's own naming (never a third-party label CSV, never opening audio; docs/extending.md,
"A benchmark corpus", says how to add one).

    clips = read_corpus("emodb", "/data/emodb")
    CORPORA["emodb"].unmapped     # ('boredom',): classes without a FER+ counterpart

Any audio extension libsndfile or PyAV reads is accepted; the video corpora (eNTERFACE'05, RML)
also accept their .avi files, whose audio track is decoded by ``crossmodal.io.audio``.
"""
from __future__ import annotations

import logging
import re
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import soundfile as sf

from crossmodal.emotions import EMOTIONS
from crossmodal.registry import Registry

log = logging.getLogger(__name__)

AUDIO_EXTENSIONS: frozenset[str] = frozenset(
    {f".{name.lower()}" for name in sf.available_formats()}
    | {".wav", ".flac", ".ogg", ".oga", ".opus", ".aif", ".aiff", ".mp3", ".m4a", ".aac", ".wma"}
) - {".raw", ".mat4", ".mat5"}
VIDEO_EXTENSIONS: frozenset[str] = frozenset({".avi", ".mp4", ".mpg", ".mpeg", ".mov", ".mkv", ".webm", ".m4v"})


class CorpusError(ValueError):
    """A corpus folder or one of its files cannot be read as the corpus it claims to be."""


@dataclass(frozen=True)
class Clip:
    path: Path
    speaker: str
    corpus_label: str  # the corpus's own class name (one of CorpusSpec.classes)
    emotion: str | None  # the FER+ emotion it maps to; None when it does not map
    corpus: str = ""


@dataclass(frozen=True)
class CorpusSpec:
    """What a corpus holds and how its classes map onto the FER+ emotions."""

    name: str
    title: str
    classes: tuple[str, ...]  # the corpus's own class names, in the corpus's usual order
    to_ferplus: dict[str, str | None]  # corpus class -> FER+ emotion (None: no FER+ counterpart)
    layout: str  # the folder layout the reader expects, for error messages
    reader: Callable[[Path, _Skips], Iterator[Clip]]

    @property
    def unmapped(self) -> tuple[str, ...]:
        """Classes with no FER+ counterpart (zero-shot cannot predict them)."""
        return tuple(label for label in self.classes if self.to_ferplus[label] is None)

    @property
    def shared(self) -> tuple[str, ...]:
        """Classes that map onto a FER+ emotion."""
        return tuple(label for label in self.classes if self.to_ferplus[label] is not None)


def read_corpus(name: str, root: str | Path, strict: bool = True, skipped: list[tuple[str, str]] | None = None) -> list[Clip]:
    """All clips of corpus ``name`` under ``root``, sorted by path.

    With ``strict`` (the default) a file whose name does not parse is an error naming it; without
    it, such files are skipped, counted in a warning and appended to ``skipped`` as (path, reason)
    when a list is given. A folder with no recognisable file is always an error.
    """
    spec = corpus_spec(name)
    root = Path(root).expanduser()
    if not root.is_dir():
        raise CorpusError(f"{spec.title} folder not found: {root} (set data.source to the corpus folder; expected {spec.layout})")
    skips = _Skips(spec.title, root, strict, skipped)
    clips = sorted(spec.reader(root, skips), key=lambda clip: str(clip.path))
    skips.report()
    if not clips:
        raise CorpusError(f"no {spec.title} files found under {root}; expected {spec.layout}")
    for clip in clips:
        assert clip.corpus_label in spec.to_ferplus, clip
    return clips


def corpus_spec(name: str) -> CorpusSpec:
    key = name.lower().replace("-", "").replace("_", "").replace("'05", "")
    key = _ALIASES.get(key, key)
    try:
        return CORPORA.get(key)
    except KeyError as exn:
        raise CorpusError(exn.args[0]) from None


def register_corpus(spec: CorpusSpec) -> CorpusSpec:
    """Add a corpus reader (``benchmark.corpus=<spec.name>``); its classes must map onto FER+ emotions or None."""
    if set(spec.to_ferplus) != set(spec.classes):
        raise ValueError(f"corpus {spec.name!r}: to_ferplus must map every class of {spec.classes} (and nothing else)")
    bad = sorted(str(e) for e in spec.to_ferplus.values() if e is not None and e not in EMOTIONS)
    if bad:
        raise ValueError(f"corpus {spec.name!r}: {', '.join(bad)} not FER+ emotions ({', '.join(EMOTIONS)})")
    return CORPORA.register(spec.name)(spec)


def summarise(clips: list[Clip]) -> str:
    """One line: clip, speaker and per-class counts (for logs and error messages)."""
    counts = Counter(clip.corpus_label for clip in clips)
    speakers = len({clip.speaker for clip in clips})
    per_class = ", ".join(f"{label} {n}" for label, n in sorted(counts.items()))
    return f"{len(clips)} clips, {speakers} speakers ({per_class})"


def _media_files(root: Path, extensions: frozenset[str]) -> Iterator[Path]:
    """Files under ``root`` with one of ``extensions``, skipping hidden files (macOS ``._x``)."""
    for path in root.rglob("*"):
        if path.name.startswith(".") or path.suffix.lower() not in extensions:
            continue
        if any(part.startswith(".") for part in path.relative_to(root).parts[:-1]):
            continue
        if path.is_file():
            yield path


class _Skips:
    """Unparseable files: an error at once (strict) or a count in one warning at the end, and
    (path, reason) pairs in ``collected`` when the caller passes a list."""

    def __init__(self, corpus: str, root: Path, strict: bool, collected: list[tuple[str, str]] | None = None) -> None:
        self.corpus, self.root, self.strict, self.collected = corpus, root, strict, collected
        self.examples: list[str] = []

    def bad(self, path: Path, why: str) -> None:
        message = f"{self.corpus}: cannot parse {path}: {why}"
        if self.strict:
            raise CorpusError(message + " (rename or remove the file, or pass strict=False to skip such files)")
        self.examples.append(message)
        if self.collected is not None:
            self.collected.append((str(path), f"name does not parse: {why}"))

    def report(self) -> None:
        if self.examples:
            log.warning("%s: skipped %d unparseable files under %s, e.g. %s", self.corpus, len(self.examples), self.root, self.examples[0])


def _clip(spec_name: str, path: Path, speaker: str, label: str) -> Clip:
    return Clip(path=path, speaker=speaker, corpus_label=label, emotion=CORPORA[spec_name].to_ferplus[label], corpus=spec_name)


# SSTTTEV: speaker (2 digits), text code (letter + 2 digits), emotion letter, version letter.
_EMODB_NAME = re.compile(r"^(\d\d)([a-z]\d\d)([A-Z])([a-z])$")
_EMODB_CODES = {"W": "anger", "L": "boredom", "E": "disgust", "A": "fear", "F": "happiness", "T": "sadness", "N": "neutral"}


def _read_emodb(root: Path, skips: _Skips) -> Iterator[Clip]:
    folder = root / "wav" if (root / "wav").is_dir() else root
    for path in _media_files(folder, AUDIO_EXTENSIONS):
        match = _EMODB_NAME.match(path.stem)
        if not match:
            skips.bad(path, "EmoDB names are SSTTTEV, e.g. 03a01Wa (speaker 03, text a01, emotion W, version a)")
            continue
        speaker, _text, code, _version = match.groups()
        if code not in _EMODB_CODES:
            skips.bad(path, f"emotion letter {code!r} is not one of {', '.join(_EMODB_CODES)} (W anger, L boredom, E disgust, A fear, F happiness, T sadness, N neutral)")
            continue
        yield _clip("emodb", path, speaker, _EMODB_CODES[code])


# modality-channel-emotion-intensity-statement-repetition-actor, e.g. 03-01-05-02-01-01-12
_RAVDESS_NAME = re.compile(r"^(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)$")
_RAVDESS_EMOTIONS = {"01": "neutral", "02": "calm", "03": "happy", "04": "sad", "05": "angry", "06": "fearful", "07": "disgust", "08": "surprised"}


def _read_ravdess(root: Path, skips: _Skips) -> Iterator[Clip]:
    # Audio-only files (modality 03) and full audio-visual videos (01); video-only (02) has no sound.
    for path in _media_files(root, AUDIO_EXTENSIONS | VIDEO_EXTENSIONS):
        match = _RAVDESS_NAME.match(path.stem)
        if not match:
            skips.bad(path, "RAVDESS names are MM-VV-EE-II-SS-RR-AA, e.g. 03-01-05-02-01-01-12.wav")
            continue
        modality, _channel, emotion, _intensity, _statement, _repetition, actor = match.groups()
        if modality == "02":
            continue  # video-only: no audio track by design
        if emotion not in _RAVDESS_EMOTIONS:
            skips.bad(path, f"emotion code {emotion} is not 01..08")
            continue
        yield _clip("ravdess", path, f"Actor_{actor}", _RAVDESS_EMOTIONS[emotion])


# ActorID_Sentence_Emotion_Level, e.g. 1001_DFA_ANG_XX
_CREMAD_NAME = re.compile(r"^(\d{4})_([A-Z]{3})_([A-Z]{3})_([A-Z]{2})$")
_CREMAD_EMOTIONS = ("ANG", "DIS", "FEA", "HAP", "NEU", "SAD")


def _read_cremad(root: Path, skips: _Skips) -> Iterator[Clip]:
    folder = root / "AudioWAV" if (root / "AudioWAV").is_dir() else root
    for path in _media_files(folder, AUDIO_EXTENSIONS):
        match = _CREMAD_NAME.match(path.stem)
        if not match:
            skips.bad(path, "CREMA-D names are ID_SEN_EMO_LVL, e.g. 1001_DFA_ANG_XX.wav")
            continue
        actor, _sentence, emotion, _level = match.groups()
        if emotion not in _CREMAD_EMOTIONS:
            skips.bad(path, f"emotion {emotion!r} is not one of {', '.join(_CREMAD_EMOTIONS)}")
            continue
        yield _clip("cremad", path, actor, emotion)


# EmoEvaluation line: "[6.2901 - 8.2357]<TAB>Ses01F_impro01_F000<TAB>neu<TAB>[2.5000, 2.5000, 2.5000]"
_IEMOCAP_LINE = re.compile(r"^\[\s*[\d.]+\s*-\s*[\d.]+\s*\]\s+(\S+)\s+(\S+)\s+\[")
_IEMOCAP_UTTERANCE = re.compile(r"^(Ses\d\d)[FM]_.*_([FM])\d+$")
_IEMOCAP_EMOTIONS = ("neu", "hap", "exc", "sad", "ang", "sur", "fea", "dis", "fru", "oth", "xxx")


def _read_iemocap(root: Path, skips: _Skips) -> Iterator[Clip]:
    evaluations = sorted(
        path
        for path in root.rglob("*.txt")
        if path.parent.name == "EmoEvaluation" and not path.name.startswith(".")
    )
    if not evaluations:
        return
    audio = {path.stem: path for path in _media_files(root, AUDIO_EXTENSIONS) if "sentences" in path.parts}
    missing: list[str] = []
    for evaluation in evaluations:
        for number, line in enumerate(evaluation.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
            match = _IEMOCAP_LINE.match(line)
            if not match:
                continue
            utterance, label = match.groups()
            where = f"{evaluation}:{number}"
            name = _IEMOCAP_UTTERANCE.match(utterance)
            if not name:
                skips.bad(Path(where), f"utterance name {utterance!r} is not SesNN[FM]_<dialog>_[FM]NNN")
                continue
            if label not in _IEMOCAP_EMOTIONS:
                skips.bad(Path(where), f"emotion {label!r} is not one of {', '.join(_IEMOCAP_EMOTIONS)}")
                continue
            if utterance not in audio:
                missing.append(utterance)
                continue
            session, speaker_sex = name.groups()
            # The speaker is the one whose turn it is (suffix F/M), not the dialog's marker wearer.
            yield _clip("iemocap", audio[utterance], f"{session}{speaker_sex}", label)
    if missing:
        log.warning("IEMOCAP: %d labelled utterances have no audio file under %s/Session*/sentences/wav (e.g. %s)", len(missing), root, missing[0])


_SIX = ("anger", "disgust", "fear", "happiness", "sadness", "surprise")  # their classes, FER+'s names
_SIX_CODES = {label[:2]: label for label in _SIX}  # an, di, fe, ha, sa, su in file names
_SUBJECT_FOLDER = re.compile(r"^subject[\s_-]*(\d+)$", re.IGNORECASE)
_ENTERFACE_NAME = re.compile(r"^s_?(\d+)[_ -]([a-z]{2})", re.IGNORECASE)
_RML_SPEAKER = re.compile(r"^s(\d+)$", re.IGNORECASE)


def _read_enterface(root: Path, skips: _Skips) -> Iterator[Clip]:
    for path in _media_files(root, VIDEO_EXTENSIONS | AUDIO_EXTENSIONS):
        folders = path.relative_to(root).parts[:-1]
        name = _ENTERFACE_NAME.match(path.stem)
        # The folders are the corpus's own labelling; the file name (sNN_em_K) is the fallback.
        subject = next((m.group(1) for m in map(_SUBJECT_FOLDER.match, reversed(folders)) if m), None)
        subject = subject or (name.group(1) if name else None)
        emotion = next((f.lower() for f in reversed(folders) if f.lower() in _SIX), None)
        if emotion is None and name:
            emotion = _SIX_CODES.get(name.group(2).lower())
        if subject is None or emotion is None:
            skips.bad(path, "expected 'subject N/<emotion>/sentence K/sN_em_K.avi' (emotion folders anger, disgust, fear, happiness, sadness, surprise)")
            continue
        yield _clip("enterface", path, f"subject{int(subject):02d}", emotion)


def _read_rml(root: Path, skips: _Skips) -> Iterator[Clip]:
    for path in _media_files(root, VIDEO_EXTENSIONS | AUDIO_EXTENSIONS):
        folders = path.relative_to(root).parts[:-1]
        # rml-1/s1/an1.avi or s1/<language>/an1.avi: the speaker is the sN folder, else the top folder.
        speaker = next((f"s{int(m.group(1))}" for m in map(_RML_SPEAKER.match, reversed(folders)) if m), None)
        if speaker is None and folders:
            speaker = folders[0]
        code = path.stem[:2].lower()
        if speaker is None or code not in _SIX_CODES:
            skips.bad(path, "expected speaker folders (s1 ... s8) holding clips named by emotion code, e.g. s1/an1.avi (an, di, fe, ha, sa, su)")
            continue
        yield _clip("rml", path, speaker, _SIX_CODES[code])


CORPORA = Registry("corpus")
for _spec in (
    CorpusSpec(
        name="emodb", title="EmoDB", classes=("anger", "boredom", "disgust", "fear", "happiness", "sadness", "neutral"),
        to_ferplus={"anger": "anger", "boredom": None, "disgust": "disgust", "fear": "fear", "happiness": "happiness", "sadness": "sadness", "neutral": "neutral"},
        layout="wav/SSTTTEV.wav (e.g. wav/03a01Wa.wav; emotion letter W L E A F T N)", reader=_read_emodb,
    ),
    CorpusSpec(
        name="ravdess", title="RAVDESS", classes=tuple(_RAVDESS_EMOTIONS.values()),
        to_ferplus={"neutral": "neutral", "calm": None, "happy": "happiness", "sad": "sadness", "angry": "anger", "fearful": "fear", "disgust": "disgust", "surprised": "surprise"},
        layout="Actor_XX/03-01-EE-II-SS-RR-AA.wav", reader=_read_ravdess,
    ),
    CorpusSpec(
        name="cremad", title="CREMA-D", classes=_CREMAD_EMOTIONS,
        to_ferplus={"ANG": "anger", "DIS": "disgust", "FEA": "fear", "HAP": "happiness", "NEU": "neutral", "SAD": "sadness"},
        layout="AudioWAV/ID_SEN_EMO_LVL.wav (e.g. AudioWAV/1001_DFA_ANG_XX.wav)", reader=_read_cremad,
    ),
    CorpusSpec(
        name="iemocap", title="IEMOCAP", classes=_IEMOCAP_EMOTIONS,
        # 'exc' (excited) is merged into happiness, as the usual 4-class protocol does; frustration,
        # 'other' and 'xxx' (no majority among annotators) have no FER+ counterpart.
        to_ferplus={"neu": "neutral", "hap": "happiness", "exc": "happiness", "sad": "sadness", "ang": "anger", "sur": "surprise", "fea": "fear", "dis": "disgust", "fru": None, "oth": None, "xxx": None},
        layout="SessionN/dialog/EmoEvaluation/*.txt and SessionN/sentences/wav/<dialog>/<utterance>.wav",
        reader=_read_iemocap,
    ),
    CorpusSpec(
        name="enterface", title="eNTERFACE'05", classes=_SIX,
        to_ferplus={label: label for label in _SIX},
        layout="subject N/<emotion>/sentence K/sN_em_K.avi", reader=_read_enterface,
    ),
    CorpusSpec(
        name="rml", title="RML", classes=_SIX,
        to_ferplus={label: label for label in _SIX},
        layout="speaker folders sN/ of clips named by emotion code (an1.avi, di2.avi, ...)", reader=_read_rml,
    ),
):
    register_corpus(_spec)

_ALIASES = {"berlin": "emodb", "crema": "cremad", "enterface05": "enterface"}
