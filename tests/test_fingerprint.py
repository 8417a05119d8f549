"""Every cache knows its inputs: fingerprints, fingerprint-named folders, reuse only on a match,
refusal in a folder the user named, strict on cached skips, and one writer per folder."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from crossmodal.data.distill import DistillDataModule
from crossmodal.data.ferplus import FerPlusDataModule
from crossmodal.pipeline.cache import CachedSkips, CacheMismatch
from crossmodal.pipeline.distill_sets import distill_fingerprint
from crossmodal.pipeline.fingerprint import input_fingerprint, shard_folder
from crossmodal.pipeline.shards import load_manifest

TESTS = Path(__file__).resolve().parent
SAMPLE = TESTS / "data" / "ferplus_sample"
DEMO = TESTS.parent / "crossmodal" / "assets" / "demo"


def test_fingerprint_follows_source_listing_settings_and_teacher(tmp_path: Path) -> None:
    source = tmp_path / "videos"
    (source / "id1").mkdir(parents=True)
    (source / "id1" / "a.mp4").write_bytes(b"a" * 10)
    teacher = tmp_path / "teacher.safetensors"
    teacher.write_bytes(b"weights")

    def fp(**settings):
        return input_fingerprint("pairs", sources={"source": source}, settings={"fps": 4, **settings}, teacher=teacher)

    first = fp()
    assert fp()["digest"] == first["digest"]  # stable
    assert first["sources"]["source"] == {**first["sources"]["source"], "files": 1, "bytes": 10, "path": str(source.resolve())}
    assert fp(fps=5)["digest"] != first["digest"]  # a setting
    (source / "id1" / "b.mp4").write_bytes(b"b")
    added = fp()
    assert added["digest"] != first["digest"] and added["sources"]["source"]["files"] == 2  # a new file
    os.utime(source / "id1" / "b.mp4", ns=(1, 1))
    assert fp()["digest"] != added["digest"]  # an mtime (a file replaced in place)
    touched = fp()
    teacher.write_bytes(b"other weights")
    retrained = fp()
    assert retrained["digest"] != touched["digest"] and retrained["teacher"]["sha256"] != touched["teacher"]["sha256"]
    moved = tmp_path / "moved.safetensors"
    shutil.copy(teacher, moved)  # the same teacher bytes elsewhere: the same inputs
    assert input_fingerprint("pairs", sources={"source": source}, settings={"fps": 4}, teacher=moved)["digest"] == retrained["digest"]
    folder = shard_folder(tmp_path / "data", "pairs", "my videos", retrained)
    assert folder == tmp_path / "data" / "pairs" / f"my-videos-{retrained['digest'][:8]}"


def _ferplus_copy(root: Path, keep: int | None = None, missing: bool = False) -> Path:
    """A copy of the shipped FER+ sample: the first ``keep`` rows per split, or one row naming a missing image."""
    shutil.copytree(SAMPLE, root)
    for labels in root.glob("FER2013*/label.csv"):
        rows = labels.read_text().splitlines()
        if keep is not None:
            rows = rows[:keep]
        if missing and labels.parent.name == "FER2013Valid":
            rows.append('fer9999999.png,"(0, 0, 48, 48)",10,0,0,0,0,0,0,0,0,0')
        labels.write_text("\n".join(rows) + "\n")
    return root


def _total(dm: FerPlusDataModule) -> int:
    dm.prepare_data()
    dm.setup()
    return dm.manifest.total


def test_ferplus_other_source_rebuilds_and_a_named_folder_refuses(tmp_path: Path, caplog) -> None:
    """teacher_eval after a run on a small copy: another data.source never reads the small copy's shards."""
    small = _ferplus_copy(tmp_path / "ferplus_small", keep=12)
    data = tmp_path / "data"
    small_dm = FerPlusDataModule(source=str(small), data_dir=str(data), num_workers=0)
    small_total = _total(small_dm)
    (data / "ferplus" / "cntk").mkdir(parents=True)  # an older set without a fingerprint, as earlier versions left
    shutil.copy(small_dm.shard_dir / "manifest.json", data / "ferplus" / "cntk" / "manifest.json")
    manifest = json.loads((data / "ferplus" / "cntk" / "manifest.json").read_text())
    manifest["meta"].pop("fingerprint")
    (data / "ferplus" / "cntk" / "manifest.json").write_text(json.dumps(manifest))
    full_dm = FerPlusDataModule(source=str(SAMPLE), data_dir=str(data), num_workers=0)
    with caplog.at_level("INFO"):
        full_total = _total(full_dm)
    assert small_total < full_total == 83
    assert full_dm.shard_dir != small_dm.shard_dir and full_dm.shard_dir.parent == small_dm.shard_dir.parent
    assert "record no input fingerprint" in caplog.text and "cntk" in caplog.text
    assert _total(FerPlusDataModule(source=str(small), data_dir=str(data), num_workers=0)) == small_total  # reused
    with pytest.raises(CacheMismatch, match=r"(?s)in the folder: ferplus .*this run: +ferplus .*sources\.source\.path.*data\.shard_dir"):
        FerPlusDataModule(source=str(SAMPLE), shard_dir=str(small_dm.shard_dir), num_workers=0).prepare_data()
    # no data.source: two sets of this cleaning -> say which; the set named by data.shard_dir is used as it is
    with pytest.raises(ValueError, match="data.source"):
        FerPlusDataModule(data_dir=str(data), num_workers=0).prepare_data()
    assert _total(FerPlusDataModule(shard_dir=str(small_dm.shard_dir), num_workers=0)) == small_total


def test_strict_fails_on_a_cached_set_with_skips(tmp_path: Path) -> None:
    source = _ferplus_copy(tmp_path / "ferplus_missing", missing=True)
    data = tmp_path / "data"
    lenient = FerPlusDataModule(source=str(source), data_dir=str(data), num_workers=0)
    assert _total(lenient) == 83
    assert lenient.manifest.meta["read_skipped"]["counts"] == {"missing_image": 1}
    strict = FerPlusDataModule(source=str(source), data_dir=str(data), num_workers=0, strict=True)
    with pytest.raises(CachedSkips, match=rf"{lenient.shard_dir.name}.* 1 missing_image .*fer9999999.png"):
        strict.prepare_data()


def _emodb_subset(root: Path, per_speaker: int = 3) -> Path:
    """A small EmoDB (the shipped demo clips of 5 speakers): the pseudo-pair recipe's speech corpus."""
    (root / "wav").mkdir(parents=True)
    for speaker in ("03", "08", "09", "10", "11"):
        for path in sorted((DEMO / "emodb" / "wav").glob(f"{speaker}*.flac"))[:per_speaker]:
            os.symlink(path, root / "wav" / path.name)
    return root


def test_teacher_precision_is_in_the_distillation_fingerprint(monkeypatch) -> None:
    """fp32 and int8 logits never share a set: int8 records its int8 form (teacher, calibration, scheme, onnxruntime
    version); fp32 keeps the fingerprint sets had before precision existed."""
    import onnxruntime

    from crossmodal.models.teacher import DEFAULT_TEACHER
    from crossmodal.models.teacher_int8 import int8_fingerprint

    pairs = {"kind": "pairs", "digest": "p"}
    fp32, int8 = (distill_fingerprint(pairs, None, precision=p) for p in ("fp32", "auto"))
    before = input_fingerprint("distill", teacher=DEFAULT_TEACHER, settings={"logits_dtype": "float16"}, inputs={"pairs": pairs})
    assert fp32["digest"] == before["digest"] and fp32["digest"] != int8["digest"]
    assert int8["settings"] == {"logits_dtype": "float16", "teacher_precision": "int8",
                                "teacher_int8": int8_fingerprint(DEFAULT_TEACHER)["digest"]}
    monkeypatch.setattr(onnxruntime, "__version__", "0.1")
    assert distill_fingerprint(pairs, None)["digest"] != int8["digest"]
    with pytest.raises(ValueError, match="teacher_precision='fp16'"):
        distill_fingerprint(pairs, None, precision="fp16")


def test_a_recipe_run_takes_the_teacher_precision_from_the_run_config(tmp_path: Path) -> None:
    """teacher_precision (conf/run.yaml) reaches a data.prepare recipe's distillation set: fp32 names another set."""
    from hydra.utils import instantiate

    from crossmodal.run import _compose

    sets = {}
    for precision in ("auto", "fp32"):
        cfg = _compose(["experiment=demo", f"teacher_precision={precision}", f"paths.root_dir={tmp_path}", f"paths.data_dir={tmp_path}"])
        dm = instantiate(cfg.data)
        sets[precision] = (dm.shard_dir, dm._fingerprint["settings"].get("teacher_precision", "fp32"))
    assert sets["auto"][1] == "int8" and sets["fp32"][1] == "fp32" and sets["auto"][0] != sets["fp32"][0]


def test_distill_with_another_teacher_rebuilds_and_a_named_folder_refuses(tmp_path: Path, monkeypatch) -> None:
    """distill_cpu-style recipe: teacher_ckpt=OTHER gets its own logits, never the first teacher's."""
    from crossmodal.models.loading import load_teacher
    from crossmodal.models.teacher import DEFAULT_TEACHER, save_teacher
    from crossmodal.models.teacher_int8 import CACHE_ENV

    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))  # OTHER's int8 form is built there

    other = save_teacher(load_teacher(), tmp_path / f"other{DEFAULT_TEACHER.suffix}", half=False)  # the same net, other bytes
    emodb, data = _emodb_subset(tmp_path / "emodb"), tmp_path / "data"

    def module(teacher, shards=None, strict=False):
        recipe = {"kind": "pseudo_pairs", "teacher": teacher, "data_dir": str(data), "unheard_fraction": 0.2, "heard_fraction": 0.1}
        return DistillDataModule(shards=shards, prepare=recipe, emodb=str(emodb), ferplus=str(DEMO / "ferplus"),
                                 num_workers=0, data_dir=str(data), strict=strict)

    shipped = module(None)
    shipped.prepare_data()
    first = shipped.manifest()
    fingerprint = first.meta["fingerprint"]
    assert fingerprint["teacher"]["sha256"] and fingerprint["inputs"]["pairs"]["sources"]["source"]["path"] == str(emodb.resolve())
    retrained = module(str(other))
    retrained.prepare_data()
    second = retrained.manifest()
    assert second.root != first.root and second.meta["fingerprint"]["teacher"] != fingerprint["teacher"]
    assert len(list((data / "pairs").glob("*/manifest.json"))) == 1  # the pseudo-pairs were reused
    assert second.total == first.total
    again = module(None)
    again.prepare_data()
    assert again.shard_dir == first.root and again.manifest().meta["fingerprint"] == fingerprint  # reused
    with pytest.raises(CacheMismatch, match=r"(?s)in the folder: distill .*this run: +distill .*teacher\.sha256.*data\.shards"):
        module(str(other), shards=str(first.root)).prepare_data()
    # a recipe run over another corpus listing (one clip more) does not reuse the set either
    extra = next(p for p in sorted((DEMO / "emodb" / "wav").glob("03*.flac")) if not (emodb / "wav" / p.name).exists())
    os.symlink(extra, emodb / "wav" / extra.name)
    assert module(None).shard_dir != first.root
    assert distill_fingerprint(fingerprint["inputs"]["pairs"], None)["digest"] == fingerprint["digest"]


LOCK_SCRIPT = """
import json, logging, sys
logging.basicConfig(level=logging.INFO, stream=sys.stderr)
import torch
class StandInTeacher(torch.nn.Module):  # a fixed face net with the teacher API (the logits' values do not matter here)
    def preprocess(self, images):
        return images.float().flatten(1)[:, :8] / 255.0
    def forward(self, x):
        return x
from crossmodal.pipeline.distill_sets import distill_fingerprint, distill_folder
from crossmodal.pipeline.pairs import PairsConfig, prepare_pairs
from crossmodal.pipeline.extract import extract_logits
pairs = prepare_pairs(PairsConfig(source={source!r}, data_dir={data!r}, videos_per_shard=1, unheard_fraction=0.5))
fingerprint = distill_fingerprint(pairs.meta["fingerprint"], {teacher!r}, precision="fp32")
out = distill_folder({data!r}, pairs.meta["name"], {teacher!r}, fingerprint)
manifest, work = extract_logits(pairs, out, StandInTeacher(), teacher_name="T", batch_size=2,
                                fingerprint=fingerprint, named_by=None)
print(json.dumps({{"root": str(manifest.root), "written": work["written"], "reused": work["reused"], "total": manifest.total}}))
"""


@pytest.mark.slow  # ~20 s idle, ~55 s on a loaded 2-core machine (two fresh interpreters importing torch)
def test_two_extract_runs_into_one_data_dir_wait_and_reuse(grid_root: Path, tmp_path: Path) -> None:
    pytest.importorskip("cv2")
    source, data = tmp_path / "grid", tmp_path / "data"
    source.mkdir()
    for clip in sorted(grid_root.glob("*.mpg"))[:2]:
        os.symlink(clip, source / clip.name)
    teacher = tmp_path / "T.bin"
    teacher.write_bytes(b"the teacher's bytes")  # only its digest names the set; StandInTeacher computes the logits
    script = LOCK_SCRIPT.format(source=str(source), data=str(data), teacher=str(teacher))
    env = dict(os.environ, CROSSMODAL_NO_PROGRESS="1")
    # Both start at once: whichever takes the pair folder first builds, the other waits and then reuses.
    runs = [subprocess.Popen([sys.executable, "-c", script], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for _ in range(2)]
    outputs = [run.communicate(timeout=300) for run in runs]
    for run, (_, err) in zip(runs, outputs):
        assert run.returncode == 0, err[-3000:]
    results = [json.loads(out.strip().splitlines()[-1]) for out, _ in outputs]
    waited = [i for i, (_, err) in enumerate(outputs) if "waiting for it to finish" in err]
    assert len(waited) == 1, [err[-2000:] for _, err in outputs]
    waiter, builder = waited[0], 1 - waited[0]
    assert f"pid {runs[builder].pid}" in outputs[waiter][1]  # it said for whom it waits
    a, b = results[builder], results[waiter]
    assert a["root"] == b["root"] and a["total"] == b["total"] > 0
    assert a["written"] == 2 and b["written"] == 0 and b["reused"] == 2
    err_a, err_b = outputs[0][1], outputs[1][1]
    assert "Traceback" not in err_a + err_b and not list(Path(a["root"]).glob(".*.tmp-*"))
    assert load_manifest(a["root"]).meta["fingerprint"]["teacher"]["sha256"]


def test_a_second_writer_waits_for_the_folder_and_says_for_whom(tmp_path: Path, caplog) -> None:
    """The fast check of the lock (the two-process run above is slow): a second holder blocks until
    the first lets go, logging whose work it waits for."""
    import threading

    from crossmodal.pipeline.lock import folder_lock

    order = []
    with caplog.at_level("INFO"):
        with folder_lock(tmp_path / "set", "test set"):
            waiter = threading.Thread(target=lambda: (folder_lock(tmp_path / "set", "test set").__enter__(), order.append("second")))
            waiter.start()
            deadline = time.time() + 10
            while "waiting for it to finish" not in caplog.text:
                assert time.time() < deadline, "the second writer did not report that it waits"
                time.sleep(0.02)
            order.append("first done")
        waiter.join(10)
    assert order == ["first done", "second"]
    assert f"pid {os.getpid()}" in caplog.text


def test_find_distill_set_picks_the_run_precision_of_several(tmp_path):
    """fp32 and int8 sets of one teacher side by side: the run's teacher_precision chooses; two of one precision
    still ask which, naming both."""
    from crossmodal.models.loading import teacher_digest
    from crossmodal.pipeline.distill_sets import find_distill_set

    def made(name: str, settings: dict) -> Path:
        fp = {"kind": "distill", "teacher": {"sha256": teacher_digest(None)}, "settings": settings}
        (tmp_path / "distill" / name).mkdir(parents=True)
        (tmp_path / "distill" / name / "manifest.json").write_text(json.dumps({"meta": {"fingerprint": fp}}))
        return tmp_path / "distill" / name

    fp32, int8 = made("a", {}), made("b", {"teacher_precision": "int8"})
    assert find_distill_set(tmp_path, None, None, "int8") == int8 and find_distill_set(tmp_path, None, None, "auto") == int8
    assert find_distill_set(tmp_path, None, None, "fp32") == fp32
    made("c", {})
    with pytest.raises(ValueError, match="3 distillation sets of teacher"):
        find_distill_set(tmp_path, None, None, "fp32")
