"""Teacher-logit extraction: shapes, timestamps against the audio, resume after a kill, reuse, the task."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from crossmodal.emotions import EMOTIONS
from crossmodal.io.audio import decode_flac
from crossmodal.models.teacher import DEFAULT_TEACHER as SHIPPED_TEACHER
from crossmodal.pipeline.extract import extract_logits, iter_distill, summarise
from crossmodal.pipeline.pairs import PairsConfig, prepare_pairs
from crossmodal.pipeline.shards import load_manifest

pytest.importorskip("cv2")

TESTS = Path(__file__).resolve().parent


class StandInTeacher(torch.nn.Module):
    """A fixed (non-random) face network with the teacher API: preprocess(uint8) -> forward -> [N, 8]."""

    def __init__(self, delay: float = 0.0) -> None:
        super().__init__()
        self.proj = torch.nn.Linear(16 * 16, 8)
        with torch.no_grad():
            grid = torch.arange(8 * 256, dtype=torch.float32).reshape(8, 256)
            self.proj.weight.copy_(torch.sin(grid) / 16)
            self.proj.bias.copy_(torch.linspace(-1, 1, 8))
        self.delay = delay
        self.eval()

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        x = images.float()
        if x.ndim == 4:
            x = x.mean(-1)
        return (F.interpolate(x[:, None], size=(16, 16), mode="area") - 128.0) / 64.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.delay:
            time.sleep(self.delay)
        return self.proj(x.flatten(1))


@pytest.fixture(scope="module")
def grid_pairs(grid_root: Path, tmp_path_factory: pytest.TempPathFactory):
    source = tmp_path_factory.mktemp("grid")
    for clip in ("bbaf2n.mpg", "brbk7n.mpg", "swiz3n.mpg", "lbax4n.mpg"):
        os.symlink(grid_root / clip, source / clip)
    cfg = PairsConfig(source=str(source), data_dir=str(tmp_path_factory.mktemp("data")), videos_per_shard=1, unheard_fraction=0.25)
    return prepare_pairs(cfg)


def read_all(manifest) -> dict[str, dict]:
    return {s["__key__"]: s for s in iter_distill(manifest.paths())}


def test_logit_shapes_and_times_line_up_with_audio(grid_pairs, tmp_path: Path) -> None:
    manifest, work = extract_logits(grid_pairs, tmp_path / "distill", StandInTeacher(), teacher_name="standin", batch_size=7)
    assert [s["name"] for s in manifest.shards] == [s["name"] for s in grid_pairs.shards]  # 1 out shard per in shard
    assert work["frames"] == 52 and work["segments"] == 4 and work["written"] == 4
    assert manifest.meta["teacher"] == "standin" and manifest.meta["emotions"] == list(EMOTIONS)
    assert manifest.meta["split_file"] == grid_pairs.meta["split_file"]
    samples = read_all(manifest)
    for _key, sample in samples.items():
        logits, times, meta = sample["logits"], sample["times"], sample["meta"]
        assert logits.dtype == np.float16 and logits.shape == (len(times), 8) == (meta["n_frames"], 8)
        wave, rate = decode_flac(sample["flac"])
        assert np.all(np.diff(times) > 0) and times[0] >= 0 and times[-1] < len(wave) / rate
        assert meta["teacher"] == "standin" and meta["split"] in sample["__url__"] and "frame_rate" in meta


def test_logits_are_the_teachers_on_the_pair_frames(grid_pairs, tmp_path: Path) -> None:
    from crossmodal.pipeline.extract import _read_pair_shard

    manifest, _ = extract_logits(grid_pairs, tmp_path / "d32", StandInTeacher(), teacher_name="standin", logits_dtype="float32")
    samples = read_all(manifest)
    teacher = StandInTeacher()
    pair_samples, events = _read_pair_shard(grid_pairs.paths()[0], strict=True)
    assert not events
    for pair in pair_samples:
        with torch.no_grad():
            expected = teacher(teacher.preprocess(torch.from_numpy(pair["frames"]))).numpy()
        got = samples[pair["key"]]
        assert got["logits"].dtype == np.float32
        np.testing.assert_allclose(got["logits"], expected, rtol=1e-5, atol=1e-5)
        np.testing.assert_array_equal(got["times"], pair["times"])
        assert got["flac"] == pair["flac"]


RESUME_SCRIPT = """
import sys
sys.path.insert(0, {tests!r})
from test_extract import StandInTeacher
from crossmodal.pipeline.shards import load_manifest
from crossmodal.pipeline.extract import extract_logits
extract_logits(load_manifest({pairs!r}), {out!r}, StandInTeacher(delay=0.6), teacher_name="standin", batch_size=4)
"""


def test_resume_after_kill_equals_uninterrupted_run(grid_pairs, tmp_path: Path) -> None:
    reference, _ = extract_logits(grid_pairs, tmp_path / "whole", StandInTeacher(), teacher_name="standin", batch_size=4)
    out = tmp_path / "killed"
    script = RESUME_SCRIPT.format(tests=str(TESTS), pairs=str(grid_pairs.root), out=str(out))
    env = dict(os.environ, CROSSMODAL_NO_PROGRESS="1")
    proc = subprocess.Popen([sys.executable, "-c", script], env=env, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while not list(out.glob("*.json")) or not [p for p in out.glob("*-0*.json")]:
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        assert time.time() < deadline, "the extraction never finished a shard"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)  # mid-run: at least one shard finished, the next one half-done
    proc.wait()
    finished = sorted(p.stem for p in out.glob("*-0*.json"))
    assert 1 <= len(finished) < 4 and not (out / "manifest.json").exists()
    before = {name: os.stat(out / f"{name}.tar").st_mtime_ns for name in finished}
    resumed, work = extract_logits(grid_pairs, out, StandInTeacher(), teacher_name="standin", batch_size=4)
    assert work["reused"] == len(finished) and work["written"] == 4 - len(finished)
    assert {name: os.stat(out / f"{name}.tar").st_mtime_ns for name in finished} == before
    assert not list(out.glob(".*.tmp-*"))  # the killed writer's partial shard was cleaned up
    whole, again = read_all(reference), read_all(resumed)
    assert sorted(whole) == sorted(again)
    for key in whole:
        np.testing.assert_array_equal(whole[key]["logits"], again[key]["logits"])
        np.testing.assert_array_equal(whole[key]["times"], again[key]["times"])
        assert whole[key]["meta"] == again[key]["meta"] and whole[key]["flac"] == again[key]["flac"]
    assert [s["count"] for s in resumed.shards] == [s["count"] for s in reference.shards]


def test_other_teacher_in_same_folder_is_refused(grid_pairs, tmp_path: Path) -> None:
    extract_logits(grid_pairs, tmp_path / "d", StandInTeacher(), teacher_name="standin")
    with pytest.raises(ValueError, match='(?s)in the folder: distill .*this run: .*settings.teacher: "standin" -> "another"'):
        extract_logits(grid_pairs, tmp_path / "d", StandInTeacher(), teacher_name="another")


def test_ranks_split_the_shards(grid_pairs, tmp_path: Path) -> None:
    out = tmp_path / "ddp"
    none, rank1 = extract_logits(grid_pairs, out, StandInTeacher(), teacher_name="standin", rank=1, world_size=2)
    assert none is None and rank1["written"] == 2
    manifest, rank0 = extract_logits(grid_pairs, out, StandInTeacher(), teacher_name="standin", rank=0, world_size=2)
    assert rank0["written"] == 2 and manifest.total == 4


def test_worker_processes_give_the_same_shards(grid_pairs, tmp_path: Path) -> None:
    serial, _ = extract_logits(grid_pairs, tmp_path / "w0", StandInTeacher(), teacher_name="standin")
    parallel, _ = extract_logits(grid_pairs, tmp_path / "w2", StandInTeacher(), teacher_name="standin", num_workers=2)
    a, b = read_all(serial), read_all(parallel)
    assert sorted(a) == sorted(b) and all(np.array_equal(a[k]["logits"], b[k]["logits"]) for k in a)
    summary = summarise(parallel)
    assert summary["segments"] == 4 and summary["frames"] == 52 and sum(summary["dominant"].values()) == 4


@pytest.mark.skipif(not SHIPPED_TEACHER.exists(), reason=f"the shipped teacher {SHIPPED_TEACHER} is not there")
def test_shipped_teacher(grid_pairs, tmp_path: Path) -> None:
    from crossmodal.models.loading import load_teacher

    manifest, work = extract_logits(grid_pairs, tmp_path / "shipped", load_teacher(), teacher_name="teacher_cpu", batch_size=32)
    for sample in read_all(manifest).values():
        assert sample["logits"].shape == (len(sample["times"]), 8) and np.isfinite(sample["logits"].astype(np.float32)).all()
    assert work["frames"] == 52


@pytest.mark.skipif(not SHIPPED_TEACHER.exists(), reason=f"the shipped teacher {SHIPPED_TEACHER} is not there")
def test_int8_teacher_extracts_into_its_own_set(grid_pairs, tmp_path: Path) -> None:
    """The CPU default: the int8 teacher, recorded in the manifest and the fingerprint; never under an fp32 fingerprint."""
    from crossmodal.models.loading import load_teacher
    from crossmodal.pipeline.distill_sets import distill_fingerprint

    fingerprints = {p: distill_fingerprint(grid_pairs.meta["fingerprint"], None, precision=p) for p in ("fp32", "auto")}
    int8 = load_teacher(precision="int8")
    manifest, _ = extract_logits(grid_pairs, tmp_path / "int8", int8, teacher_name="teacher_cpu", fingerprint=fingerprints["auto"])
    assert manifest.meta["teacher_precision"] == "int8" and manifest.meta["fingerprint"]["settings"]["teacher_precision"] == "int8"
    fp32, _ = extract_logits(grid_pairs, tmp_path / "fp32", load_teacher(), teacher_name="teacher_cpu", fingerprint=fingerprints["fp32"])
    a, b = read_all(manifest), read_all(fp32)
    top = [np.argmax(a[k]["logits"], 1) == np.argmax(b[k]["logits"], 1) for k in a]
    assert fp32.meta["teacher_precision"] == "fp32" and np.concatenate(top).mean() >= 0.9
    with pytest.raises(ValueError, match="the teacher runs in fp32 but the distillation set's fingerprint is for int8"):
        extract_logits(grid_pairs, tmp_path / "mixed", load_teacher(), teacher_name="teacher_cpu", fingerprint=fingerprints["auto"])


@pytest.mark.slow
@pytest.mark.skipif(not SHIPPED_TEACHER.exists(), reason=f"the shipped teacher {SHIPPED_TEACHER} is not there")
def test_extract_task_end_to_end(grid_full_root: Path, tmp_path: Path) -> None:
    command = [
        sys.executable, "-m", "crossmodal.run", "experiment=extract_logits", f"prep.source={grid_full_root}",
        f"hydra.run.dir={tmp_path / 'run'}", f"paths.data_dir={tmp_path / 'data'}", "logger=csv",
    ]
    first = subprocess.run(command, capture_output=True, text=True, cwd=TESTS.parent, timeout=600)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "frames/s" in first.stdout and "(teacher in int8)" in first.stdout  # the CPU default
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["extract/segments"] == 11 and metrics["extract/frames"] == 143 and metrics["pairs/skipped"] == 0
    assert (tmp_path / "run" / "plots" / "extract_dominant_emotion.png").exists()
    assert len(list((tmp_path / "data" / "distill").glob("grid-teacher_cpu-*"))) == 1
    second = subprocess.run(command, capture_output=True, text=True, cwd=TESTS.parent, timeout=600)
    assert second.returncode == 0 and "reused" in second.stdout
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["extract/shards_written"] == 0 and metrics["extract/segments"] == 11


@pytest.mark.slow  # two gloo processes, ~25 s; the DDP tests run under make test-full
@pytest.mark.skipif(not SHIPPED_TEACHER.exists(), reason=f"the shipped teacher {SHIPPED_TEACHER} is not there")
def test_extract_task_under_ddp_equals_one_process(grid_root: Path, tmp_path: Path) -> None:
    """trainer=ddp_cpu: 2 processes build the pair shards and extract one shard each; the result
    equals a single process's extraction of the same pairs."""
    from crossmodal.models.loading import load_teacher

    command = [
        sys.executable, "-m", "crossmodal.run", "experiment=extract_logits", f"prep.source={grid_root}", "trainer=ddp_cpu",
        f"hydra.run.dir={tmp_path / 'run'}", f"paths.data_dir={tmp_path / 'data'}", "logger=csv",
    ]
    env = dict(os.environ, WANDB_MODE="disabled", CROSSMODAL_NO_PROGRESS="1")
    proc = subprocess.run(command, capture_output=True, text=True, cwd=TESTS.parent, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "(rank 0)" in proc.stdout + proc.stderr and "(rank 1)" in proc.stdout + proc.stderr
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["extract/frames_this_run"] == metrics["extract/frames"] == 52  # both ranks' work (4 GRID clips)
    (pairs_dir,) = (tmp_path / "data" / "pairs").glob("grid-*")
    pairs = load_manifest(pairs_dir)
    (distilled,) = (tmp_path / "data" / "distill").glob("grid-teacher_cpu-*")
    alone, _ = extract_logits(pairs, tmp_path / "alone", load_teacher(precision="int8"), teacher_name="teacher_cpu")
    ddp, one = read_all(load_manifest(distilled)), read_all(alone)
    assert sorted(ddp) == sorted(one) and len(one) == 4
    assert all(np.array_equal(ddp[k]["logits"], one[k]["logits"]) for k in one)


class DroppingTeacher(StandInTeacher):
    """A broken teacher that loses a frame of every batch."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x)[1:]


def test_bad_pairs_and_logit_mismatches_are_counted(tmp_path: Path) -> None:
    from crossmodal.io.skips import BadSampleError
    from crossmodal.pipeline.pairs import make_pair_sample
    from crossmodal.pipeline.shards import ShardJob, write_shard_set

    rng = np.random.default_rng(0)

    def sample(key: str, n: int) -> dict:
        frames = [rng.integers(0, 255, (48, 48), dtype=np.uint8) for _ in range(n)]
        return make_pair_sample(key, rng.normal(0, 0.1, 16000).astype(np.float32), 16000, frames,
                                np.arange(n, dtype=np.float32) / 4, {"identity": "a", "split": "train"}, image_format="png")

    def make(job, skips):
        good, bad = sample("good", 4), sample("bad", 4)
        bad["f001.png"] = b"not a png"
        short = sample("short", 4)
        del short["f003.png"]  # 3 frames, 4 timestamps
        yield from (good, bad, short)

    pairs, _ = write_shard_set(tmp_path / "pairs", [ShardJob("train-000000", [0])], make)
    manifest, work = extract_logits(pairs, tmp_path / "out", StandInTeacher(), teacher_name="standin")
    assert manifest.total == 1 and work["frames"] == 4
    assert manifest.skipped["counts"] == {"corrupt_pair_sample": 1, "frames_times_mismatch": 1}
    assert any(path.endswith(":bad") for path in manifest.skipped["examples"]["corrupt_pair_sample"])
    broken, _ = extract_logits(pairs, tmp_path / "broken", DroppingTeacher(), teacher_name="dropping")
    assert broken.total == 0 and broken.skipped["counts"]["logits_frames_mismatch"] == 1
    with pytest.raises(BadSampleError, match="f001.png"):
        extract_logits(pairs, tmp_path / "strict", StandInTeacher(), teacher_name="standin", strict=True)


def test_another_teacher_file_is_not_mixed_in(grid_pairs, tmp_path: Path) -> None:
    from crossmodal.models.loading import teacher_digest

    (tmp_path / "a.pt").write_bytes(b"weights a")
    (tmp_path / "b.pt").write_bytes(b"weights b")
    assert teacher_digest(str(tmp_path / "a.pt")) != teacher_digest(str(tmp_path / "b.pt"))
    extract_logits(grid_pairs, tmp_path / "d", StandInTeacher(), teacher_name="t", teacher_id=teacher_digest(str(tmp_path / "a.pt")))
    with pytest.raises(ValueError, match="settings.teacher_id"):
        extract_logits(grid_pairs, tmp_path / "d", StandInTeacher(), teacher_name="t", teacher_id=teacher_digest(str(tmp_path / "b.pt")))
