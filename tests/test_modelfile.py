"""Model files: every past format version loads forever with the same outputs; the shipped models work.

tests/data/modelfiles/ holds a tiny file of every format version (make_fixtures.py wrote them) and
the outputs they gave when written. Never regenerate the old versions: they are what users have.
"""
from __future__ import annotations

import hashlib
import json
import re
import stat
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from crossmodal.emotions import EMOTIONS
from crossmodal.inference import DEFAULT_STUDENT, load_student
from crossmodal.models import modelfile
from crossmodal.models.loading import load_student_modules, load_teacher
from crossmodal.models.modelfile import (
    FORMAT_VERSION,
    MIGRATIONS,
    ModelFileError,
    read_header,
    read_model_file,
    upgrade_model_file,
    write_model_file,
)
from crossmodal.models.speech import create_student, save_student
from crossmodal.models.teacher import DEFAULT_TEACHER

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "data" / "modelfiles"
EXPECTED = json.loads((FIXTURES / "expected.json").read_text())
DEMO = ROOT / "crossmodal" / "assets" / "demo"

import sys  # noqa: E402

sys.path.insert(0, str(FIXTURES))
from make_fixtures import student_input, teacher_input  # noqa: E402

STUDENT_FILES = ["student_v1.pt", "student_v1_cpu_slice.pt", "student_v2.safetensors"]
TEACHER_FILES = ["teacher_v1.pt", "teacher_v2.safetensors"]


# ----------------------------------------------------------------------------------------- every version, forever


@pytest.mark.parametrize("name", STUDENT_FILES)
def test_every_student_version_gives_its_recorded_outputs(name):
    student = load_student(FIXTURES / name)
    assert student.info["version"] == FORMAT_VERSION and student.info["net_name"] == "small_cnn"
    assert "cpu_slice" not in student.info["frontend"]
    assert student.info["train_speakers"] == {"emodb": ["03"]}  # what evaluate reads to leave speakers out
    with torch.no_grad():
        logits, embedding = student(student_input())
    torch.testing.assert_close(logits[0], torch.tensor(EXPECTED["student"]["logits"]), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(embedding[0], torch.tensor(EXPECTED["student"]["embedding"]), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", TEACHER_FILES)
def test_every_teacher_version_gives_its_recorded_outputs(name):
    teacher = load_teacher(FIXTURES / name)
    assert teacher.tta_flip and teacher.input_size == 44 and teacher.meta["test/acc"] == 0.5
    with torch.no_grad():
        logits = teacher(teacher.preprocess(teacher_input()))
    torch.testing.assert_close(logits, torch.tensor(EXPECTED["teacher"]["logits"]), atol=1e-5, rtol=1e-5)


def test_every_version_below_the_current_one_has_a_migration_and_a_fixture():
    assert sorted(MIGRATIONS) == list(range(1, FORMAT_VERSION))
    for version in range(1, FORMAT_VERSION + 1):
        for kind in ("student", "teacher"):
            assert list(FIXTURES.glob(f"{kind}_v{version}*")), f"no {kind} fixture of format version {version}"
    for path in FIXTURES.iterdir():
        if path.suffix in (".pt", ".safetensors"):
            assert path.stat().st_size < 300_000, path


@pytest.mark.parametrize("name", STUDENT_FILES + TEACHER_FILES)
def test_headers_migrate_to_the_current_version(name):
    header = read_header(FIXTURES / name)
    assert header["format"] == "crossmodal-model" and header["format_version"] == FORMAT_VERSION
    assert header["kind"] == name.split("_")[0] and header["emotions"] == list(EMOTIONS)
    assert header["architecture"]["name"] in ("small_cnn", "vgg_small")
    if header["kind"] == "student":
        assert "cpu_slice" not in header["frontend"] and header["frontend"]["n_mels"] == 32
        assert header["provenance"]["data"] == "fixture" and header["provenance"]["metrics"] == {"test/ua_unheard": 0.5}
    else:
        assert header["preprocess"]["input_size"] == 44 and header["tta_flip"] is True
        assert header["provenance"]["metrics"] == {"test/acc": 0.5}
    _, tensors = read_model_file(FIXTURES / name)
    if header["kind"] == "teacher":  # fp16, under the backbone's own names in every version
        assert all(not k.startswith("teacher.") for k in tensors) and tensors["features.0.0.weight"].dtype == torch.float16


def test_read_header_reads_no_weights(tmp_path, monkeypatch):
    import safetensors.torch

    def no_weights(*args, **kwargs):
        raise AssertionError("read_header loaded the weights")

    monkeypatch.setattr(safetensors.torch, "load_file", no_weights)
    header = read_header(FIXTURES / "student_v2.safetensors")
    assert header["architecture"]["kwargs"]["channels"] == [4, 8, 8, 8]


# ----------------------------------------------------------------------------------------- writing and errors


def test_student_file_is_safetensors_with_provenance_and_written_atomically(tmp_path):
    torch.manual_seed(0)
    net = create_student("small_cnn", n_freq=32, channels=[4, 4, 4, 4], embed_dim=8)
    path = save_student(tmp_path / "s.safetensors", "small_cnn", {"n_freq": 32, "channels": [4, 4, 4, 4], "embed_dim": 8},
                        {"features": "logmel", "n_mels": 32}, net.state_dict(), extra={"label_classes": ["neutral"]},
                        provenance={"data": "/data/x", "teacher_digest": "sha1:abc", "metrics": {"test/ua": 0.4}})
    assert path.read_bytes()[8:9] == b"{"  # a safetensors file, not a pickle
    assert [p.name for p in tmp_path.iterdir()] == ["s.safetensors"]  # no temporary file left
    assert stat.S_IMODE(path.stat().st_mode) & 0o044  # readable by others, like any package file
    header = read_header(path)
    provenance = header["provenance"]
    assert provenance["data"] == "x" and provenance["teacher_digest"] == "sha1:abc" and provenance["metrics"]["test/ua"] == 0.4
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", provenance["date"]) and "git_commit" in provenance
    assert header["info"] == {"label_classes": ["neutral"]}
    _, loaded, info = load_student_modules(path)
    assert info["provenance"]["data"] == "x" and info["metrics"] == {"test/ua": 0.4}
    for key, value in net.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key


def test_bad_model_files_are_refused_naming_the_file(tmp_path):
    good = FIXTURES / "student_v2.safetensors"
    header, tensors = read_model_file(good)
    future = dict(header, format_version=FORMAT_VERSION + 1)
    with pytest.raises(ModelFileError, match="future.safetensors: not a valid"):
        write_model_file(tmp_path / "future.safetensors", future, tensors)
    from safetensors.torch import save_file

    save_file(tensors, str(tmp_path / "future.safetensors"), metadata={"crossmodal": json.dumps(future)})
    with pytest.raises(ModelFileError, match=rf"future.safetensors is model-file format version {FORMAT_VERSION + 1}.*upgrade crossmodal"):
        load_student(tmp_path / "future.safetensors")
    save_file(tensors, str(tmp_path / "bare.safetensors"))
    with pytest.raises(ModelFileError, match="bare.safetensors is a safetensors file without a crossmodal header"):
        load_student(tmp_path / "bare.safetensors")
    with pytest.raises(ModelFileError, match="teacher_v2.safetensors is a teacher model file, not a student"):
        load_student(FIXTURES / "teacher_v2.safetensors")
    with pytest.raises(ModelFileError, match="student_v2.safetensors is a student model file, not a teacher"):
        load_teacher(FIXTURES / "student_v2.safetensors")
    # A front-end key that no migration knows still fails, naming the file and the key.
    legacy = torch.load(FIXTURES / "student_v1.pt", weights_only=True)
    legacy["frontend"]["warp_factor"] = 1.1
    torch.save(legacy, tmp_path / "odd.pt")
    with pytest.raises(ModelFileError, match="odd.pt: bad frontend config.*warp_factor"):
        load_student(tmp_path / "odd.pt")
    (tmp_path / "cut.safetensors").write_bytes(good.read_bytes()[:-100])
    with pytest.raises(ModelFileError, match="cut.safetensors"):
        load_student(tmp_path / "cut.safetensors")


def test_upgrade_keeps_the_tensors_and_records_the_source(tmp_path):
    out = upgrade_model_file(FIXTURES / "student_v1_cpu_slice.pt", tmp_path / "up.safetensors", provenance={"note": "x"})
    header, tensors = read_model_file(out)
    _, old = read_model_file(FIXTURES / "student_v1_cpu_slice.pt")
    assert all(torch.equal(tensors[k], old[k]) for k in old) and set(tensors) == set(old)
    source = header["provenance"]["upgraded_from"]
    assert source["file"] == "student_v1_cpu_slice.pt" and source["format_version"] == 1
    assert source["sha256"] == modelfile.file_digest(FIXTURES / "student_v1_cpu_slice.pt") and header["provenance"]["note"] == "x"


# ----------------------------------------------------------------------------------------- the shipped models


def test_shipped_files_are_model_files_pointing_at_their_records():
    assert DEFAULT_STUDENT.name == "student_cpu.safetensors" and DEFAULT_TEACHER.name == "teacher_cpu.safetensors"
    assert not list((ROOT / "crossmodal" / "assets").glob("*.pt"))
    student, teacher = read_header(DEFAULT_STUDENT), read_header(DEFAULT_TEACHER)
    assert student["kind"] == "student" and teacher["kind"] == "teacher"
    # the student was distilled from the shipped teacher file itself (trained by the current code, not upgraded)
    assert student["provenance"]["teacher_digest"] == "sha256:" + hashlib.sha256(DEFAULT_TEACHER.read_bytes()).hexdigest()
    assert "upgraded_from" not in student["provenance"]
    assert teacher["provenance"]["upgraded_from"]["file"] == "teacher_cpu.pt"
    recorded = json.loads((ROOT / "crossmodal" / "assets" / "recorded.json").read_text())
    assert recorded["teacher_cpu"]["file"] == "crossmodal/assets/teacher_cpu.safetensors"
    assert recorded["teacher_cpu"]["ferplus_test_acc"] == round(teacher["provenance"]["metrics"]["test/acc"], 4)
    assert recorded["student_cpu"]["file"] == "crossmodal/assets/student_cpu.safetensors"
    assert recorded["student_cpu"]["ua_unheard"] == round(student["provenance"]["metrics"]["test/ua_unheard"], 4)


SHIPPED_EXPECTED = json.loads((FIXTURES / "shipped_expected.json").read_text())


def test_shipped_student_predicts_demo_clips_as_recorded():
    """load_student().predict on shipped EmoDB clips gives the outputs recorded when the file was shipped."""
    model = load_student()
    assert model.info["path"] == str(DEFAULT_STUDENT)
    for name, expected in SHIPPED_EXPECTED["student"].items():
        wave, rate = sf.read(DEMO / "emodb" / "wav" / name, dtype="float32")
        prediction = model.predict(wave, rate)
        assert prediction.probabilities.shape == (8,) and abs(prediction.probabilities.sum() - 1) < 1e-5
        np.testing.assert_allclose(prediction.logits, expected["logits"], atol=1e-5, rtol=1e-5)
        np.testing.assert_allclose(prediction.embedding, expected["embedding"], atol=1e-5, rtol=1e-5)


def test_shipped_teacher_labels_demo_faces_as_the_old_file_did():
    from PIL import Image

    teacher = load_teacher()
    assert teacher.tta_flip and teacher.header["provenance"]["metrics"]["test/acc"] == pytest.approx(0.8664, abs=1e-4)
    expected = SHIPPED_EXPECTED["teacher"]
    faces = torch.from_numpy(np.stack([np.array(Image.open(DEMO / "ferplus" / "FER2013Test" / name).convert("L"))
                                       for name in expected["faces"]]))
    with torch.no_grad():
        logits = teacher(teacher.preprocess(faces))
    torch.testing.assert_close(logits, torch.tensor(expected["logits"]), atol=1e-5, rtol=1e-5)


@pytest.mark.slow  # 60 clips: ~5 s on an idle 2-core machine, 30 s on a busy one
def test_shipped_student_predicts_demo_emodb_clips_at_its_recorded_ua():
    """load_student().predict on the shipped EmoDB clips of the unheard speakers 10 and 12: the recorded UA."""
    model = load_student()
    assert model.info["path"] == str(DEFAULT_STUDENT)
    codes = {"W": "anger", "E": "disgust", "A": "fear", "F": "happiness", "T": "sadness", "N": "neutral"}
    shared = [EMOTIONS.index(e) for e in codes.values()]  # the student file's label classes
    assert [EMOTIONS.index(e) for e in model.info["label_classes"]] == sorted(shared)
    recall: dict[str, list[bool]] = {}
    for path in sorted((DEMO / "emodb" / "wav").glob("1[02]*.flac")):
        emotion = codes.get(path.stem[5])
        if emotion is None:
            continue
        wave, rate = sf.read(path, dtype="float32")
        prediction = model.predict(wave, rate)
        assert prediction.probabilities.shape == (8,) and abs(prediction.probabilities.sum() - 1) < 1e-5
        assert prediction.embedding.shape == (128,) and np.isfinite(prediction.embedding).all()
        guess = EMOTIONS[shared[int(np.argmax(prediction.logits[shared]))]]
        recall.setdefault(emotion, []).append(guess == emotion)
    assert sum(len(v) for v in recall.values()) == 60
    ua = float(np.mean([np.mean(v) for v in recall.values()]))
    assert ua == pytest.approx(read_header(DEFAULT_STUDENT)["provenance"]["metrics"]["test/ua_unheard"], abs=1e-4)


@pytest.mark.slow  # 260 faces with flip TTA: ~15 s on a busy machine
def test_shipped_teacher_on_demo_ferplus_faces():
    from crossmodal.io.ferplus import load_ferplus_image, read_ferplus

    teacher = load_teacher()
    items = read_ferplus(DEMO / "ferplus", splits=("test",))
    faces = torch.from_numpy(np.stack([load_ferplus_image(i) for i in items]))
    labels = torch.tensor([i.majority for i in items])
    with torch.no_grad():
        logits = teacher(teacher.preprocess(faces))
    accuracy = (logits.argmax(-1) == labels).float().mean().item()
    assert len(items) == 260 and accuracy == pytest.approx(0.7731, abs=0.002)  # measured 2026-12-01 (v1 and v2 files alike)
