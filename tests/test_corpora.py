"""Corpus readers on real EmoDB files, and on small RAVDESS/CREMA-D/IEMOCAP/eNTERFACE/RML layouts
built from them (the layout builders are reused by the evaluation and predict tests)."""
from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from crossmodal.emotions import EMOTIONS
from crossmodal.io.corpora import CORPORA, CorpusError, corpus_spec, read_corpus

# EmoDB emotion letter -> the code each other corpus uses for the same emotion.
_RAVDESS_CODE = {"N": "01", "F": "03", "T": "04", "W": "05", "A": "06", "E": "07", "L": "02"}  # L boredom -> calm (stand-in)
_CREMAD_CODE = {"W": "ANG", "E": "DIS", "A": "FEA", "F": "HAP", "N": "NEU", "T": "SAD"}
_IEMOCAP_CODE = {"W": "ang", "F": "hap", "T": "sad", "N": "neu", "L": "fru"}
_SIX_CODE = {"W": ("anger", "an"), "E": ("disgust", "di"), "A": ("fear", "fe"), "F": ("happiness", "ha"), "T": ("sadness", "sa")}


def emodb_files(emodb_root: Path, letters: str, per_speaker: int, speakers: int = 4) -> list[Path]:
    """Up to ``per_speaker`` EmoDB files per emotion letter for each of the first ``speakers`` speakers."""
    chosen: list[Path] = []
    files = sorted((emodb_root / "wav").glob("*.wav"))
    for speaker in sorted({f.name[:2] for f in files})[:speakers]:
        for letter in letters:
            chosen += [f for f in files if f.name[:2] == speaker and f.name[5] == letter][:per_speaker]
    return chosen


def _link(source: Path, target: Path) -> Path:
    target.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(source, target)
    return target


def write_avi(source: Path, target: Path) -> Path:
    """An .avi with a tiny MJPEG video track and the source's audio as PCM (as eNTERFACE/RML ship)."""
    import av

    wave, rate = sf.read(str(source), dtype="float32", always_2d=True)
    target.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(target), "w") as out:
        video = out.add_stream("mjpeg", rate=5)
        video.width, video.height, video.pix_fmt = 16, 16, "yuvj420p"
        audio = out.add_stream("pcm_s16le", rate=rate)
        audio.layout = "mono"
        for _ in range(int(len(wave) / rate * 5) + 1):
            for packet in video.encode(av.VideoFrame.from_ndarray(np.zeros((16, 16, 3), np.uint8), format="rgb24")):
                out.mux(packet)
        for packet in video.encode():
            out.mux(packet)
        frame = av.AudioFrame.from_ndarray((np.clip(wave[:, :1].T, -1, 1) * 32767).astype(np.int16), format="s16", layout="mono")
        frame.sample_rate = rate
        for packet in list(audio.encode(frame)) + list(audio.encode()):
            out.mux(packet)
    return target


def build_ravdess(emodb_root: Path, out: Path, per_speaker: int = 2, speakers: int = 4) -> Path:
    for i, source in enumerate(emodb_files(emodb_root, "NFTWAEL", per_speaker, speakers)):
        actor = int(source.name[:2])
        name = f"03-01-{_RAVDESS_CODE[source.name[5]]}-01-{1 + i % 2:02d}-{1 + i // 2 % 2:02d}-{actor:02d}.wav"
        if (out / f"Actor_{actor:02d}" / name).exists():
            name = name.replace("-01-", "-02-", 1)
        _link(source, out / f"Actor_{actor:02d}" / name)
    return out


def build_cremad(emodb_root: Path, out: Path, per_speaker: int = 2, speakers: int = 4) -> Path:
    sentences = ["DFA", "IEO", "IOM", "ITS"]
    for i, source in enumerate(emodb_files(emodb_root, "WEAFNT", per_speaker, speakers)):
        name = f"{1000 + int(source.name[:2])}_{sentences[i % 4]}_{_CREMAD_CODE[source.name[5]]}_{'XX' if i % 2 else 'HI'}.wav"
        _link(source, out / "AudioWAV" / name)
    return out


def build_iemocap(emodb_root: Path, out: Path, per_speaker: int = 2) -> Path:
    """Two sessions, two speakers each (F/M utterances), with EmoEvaluation files."""
    files = emodb_files(emodb_root, "WFTNL", per_speaker, speakers=4)
    by_speaker: dict[str, list[Path]] = {}
    for f in files:
        by_speaker.setdefault(f.name[:2], []).append(f)
    for index, (_speaker, sources) in enumerate(sorted(by_speaker.items())):
        session, sex = f"Ses0{1 + index // 2}", "FM"[index % 2]
        dialog = f"{session}F_impro01"
        lines = ["% [START_TIME - END_TIME] TURN_NAME EMOTION [V, A, D]", ""]
        for n, source in enumerate(sources):
            utterance = f"{dialog}_{sex}{n:03d}"
            _link(source, out / f"Session{1 + index // 2}" / "sentences" / "wav" / dialog / f"{utterance}.wav")
            lines += [f"[{n * 5.0:.4f} - {n * 5.0 + 2.5:.4f}]\t{utterance}\t{_IEMOCAP_CODE[source.name[5]]}\t[2.5000, 3.0000, 3.0000]", "C-E1:\tNeutral;\t()", ""]
        evaluation = out / f"Session{1 + index // 2}" / "dialog" / "EmoEvaluation" / f"{dialog}_{sex}.txt"
        evaluation.parent.mkdir(parents=True, exist_ok=True)
        evaluation.write_text("\n".join(lines))
    return out


def build_enterface(emodb_root: Path, out: Path, per_speaker: int = 1, speakers: int = 3) -> Path:
    for i, source in enumerate(emodb_files(emodb_root, "WEAFT", per_speaker, speakers)):
        subject = int(source.name[:2])
        emotion, code = _SIX_CODE[source.name[5]]
        write_avi(source, out / f"subject {subject}" / emotion / f"sentence {1 + i % 5}" / f"s{subject}_{code}_{1 + i % 5}.avi")
    return out


def build_rml(emodb_root: Path, out: Path, per_speaker: int = 1, speakers: int = 3) -> Path:
    for i, source in enumerate(emodb_files(emodb_root, "WEAFT", per_speaker, speakers)):
        speaker = 1 + sorted({f.name[:2] for f in (emodb_root / "wav").glob("*.wav")}).index(source.name[:2])
        write_avi(source, out / "rml-1" / f"s{speaker}" / f"{_SIX_CODE[source.name[5]][1]}{1 + i}.avi")
    return out


# ----------------------------------------------------------------------------- tests


EMODB_COUNTS = {"anger": 127, "boredom": 81, "disgust": 46, "fear": 69, "happiness": 71, "sadness": 62, "neutral": 79}


def test_emodb_labels_come_from_the_file_name(emodb_root):
    """The shipped clips in EmoDB's layout: all 454 demo voices plus 8 boredom clips (tests/data/emodb)."""
    clips = read_corpus("emodb", emodb_root)
    assert len(clips) == 462
    assert len({c.speaker for c in clips}) == 10
    counts = Counter(c.corpus_label for c in clips)
    assert counts == {**EMODB_COUNTS, "boredom": 8}  # the demo ships every clip whose emotion FER+ has
    by_name = {c.path.stem: c for c in clips}
    assert by_name["03a01Wa"].emotion == "anger" and by_name["03a01Wa"].speaker == "03"
    assert by_name["03a01Fa"].emotion == "happiness"  # F is Freude (happiness), never disgust
    assert by_name["03a02Ta"].emotion == "sadness"
    assert by_name["03a04Lc"].corpus_label == "boredom"
    assert all(c.emotion is None for c in clips if c.corpus_label == "boredom")
    # The corpus root or its wav/ folder both work, and so does the shipped demo folder (FLAC files).
    assert len(read_corpus("emodb", emodb_root / "wav")) == 462
    shipped = read_corpus("emodb", Path(__file__).resolve().parents[1] / "crossmodal" / "assets" / "demo" / "emodb")
    assert len(shipped) == 454 and {c.path.suffix for c in shipped} == {".flac"}


def test_full_emodb_counts(emodb_full_root):
    clips = read_corpus("emodb", emodb_full_root)
    assert len(clips) == 535 and len({c.speaker for c in clips}) == 10
    assert Counter(c.corpus_label for c in clips) == EMODB_COUNTS


def test_every_corpus_maps_onto_ferplus():
    for spec in CORPORA.values():
        assert set(spec.shared) | set(spec.unmapped) == set(spec.classes)
        assert all(spec.to_ferplus[label] in EMOTIONS for label in spec.shared)
    assert CORPORA["emodb"].unmapped == ("boredom",)
    assert CORPORA["ravdess"].unmapped == ("calm",)
    assert CORPORA["cremad"].unmapped == ()
    assert set(CORPORA["iemocap"].unmapped) == {"fru", "oth", "xxx"}
    assert corpus_spec("eNTERFACE'05") is CORPORA["enterface"] and corpus_spec("CREMA-D") is CORPORA["cremad"]


def test_ravdess_reader(emodb_root, tmp_path):
    root = build_ravdess(emodb_root, tmp_path / "ravdess")
    clips = read_corpus("ravdess", root)
    assert len(clips) == len(emodb_files(emodb_root, "NFTWAEL", 2))
    assert {c.speaker for c in clips} == {"Actor_03", "Actor_08", "Actor_09", "Actor_10"}
    by_label = {c.corpus_label: c.emotion for c in clips}
    assert by_label == {"neutral": "neutral", "calm": None, "happy": "happiness", "sad": "sadness", "angry": "anger", "fearful": "fear", "disgust": "disgust"}


def test_cremad_reader(emodb_root, tmp_path):
    clips = read_corpus("cremad", build_cremad(emodb_root, tmp_path / "cremad"))
    assert len(clips) == len(emodb_files(emodb_root, "WEAFNT", 2))
    assert {c.speaker for c in clips} == {"1003", "1008", "1009", "1010"}
    assert {c.corpus_label: c.emotion for c in clips}["HAP"] == "happiness"


def test_iemocap_reader(emodb_root, tmp_path):
    clips = read_corpus("iemocap", build_iemocap(emodb_root, tmp_path / "iemocap"))
    assert len(clips) == len(emodb_files(emodb_root, "WFTNL", 2))
    assert {c.speaker for c in clips} == {"Ses01F", "Ses01M", "Ses02F", "Ses02M"}
    assert {c.corpus_label for c in clips} == {"ang", "hap", "sad", "neu", "fru"}
    assert all(c.emotion is None for c in clips if c.corpus_label == "fru")
    assert all(c.path.exists() for c in clips)


def test_enterface_and_rml_readers_take_avi(emodb_root, tmp_path):
    enterface = read_corpus("enterface", build_enterface(emodb_root, tmp_path / "enterface"))
    assert len(enterface) == len(emodb_files(emodb_root, "WEAFT", 1, 3))
    assert {c.speaker for c in enterface} == {"subject03", "subject08", "subject09"}
    assert {c.emotion for c in enterface} == {"anger", "disgust", "fear", "happiness", "sadness"}
    assert all(c.path.suffix == ".avi" for c in enterface)
    rml = read_corpus("rml", build_rml(emodb_root, tmp_path / "rml"))
    assert len(rml) == len(enterface) and {c.speaker for c in rml} == {"s1", "s2", "s3"}
    assert {c.corpus_label for c in rml if c.path.name.startswith("ha")} == {"happiness"}


def test_bad_corpus_folders_name_the_problem(emodb_root, tmp_path):
    with pytest.raises(CorpusError, match="folder not found"):
        read_corpus("emodb", tmp_path / "missing")
    (tmp_path / "empty" / "wav").mkdir(parents=True)
    (tmp_path / "empty" / "wav" / "notes.txt").write_text("not audio")
    with pytest.raises(CorpusError, match=r"no EmoDB files found under .*empty.*03a01Wa"):
        read_corpus("emodb", tmp_path / "empty")
    with pytest.raises(CorpusError, match="unknown corpus 'savee'"):
        read_corpus("savee", tmp_path)
    # An unparseable name: an error naming the file, or skipped when not strict.
    folder = tmp_path / "odd" / "wav"
    _link(emodb_root / "wav" / "03a01Wa.wav", folder / "03a01Wa.wav")
    _link(emodb_root / "wav" / "03a01Fa.wav", folder / "my_recording.wav")
    with pytest.raises(CorpusError, match="my_recording.wav"):
        read_corpus("emodb", tmp_path / "odd")
    assert [c.path.name for c in read_corpus("emodb", tmp_path / "odd", strict=False)] == ["03a01Wa.wav"]
    _link(emodb_root / "wav" / "03a01Wa.wav", tmp_path / "rav" / "Actor_01" / "03-01-09-01-01-01-01.wav")
    with pytest.raises(CorpusError, match="03-01-09-01-01-01-01.wav: emotion code 09"):
        read_corpus("ravdess", tmp_path / "rav")
