"""docs/extending.md, carried out: each example's files are applied to a temporary copy of the checkout
and its command runs there on the shipped demo data (with test-sized overrides), so the guide is
tested as a user would follow it."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import soundfile as sf

ROOT = Path(__file__).resolve().parents[1]
GUIDE = ROOT / "docs" / "extending.md"
DEMO = ROOT / "crossmodal" / "assets" / "demo"
FERPLUS_SAMPLE = ROOT / "tests" / "data" / "ferplus_sample"
BLOCK = re.compile(r"<!-- extend: (append|new|run) (\S+) -->\n```\w*\n(.*?)```", re.S)


def guide_blocks() -> list[tuple[str, str, str]]:
    blocks = BLOCK.findall(GUIDE.read_text(encoding="utf-8"))
    assert blocks, f"no <!-- extend: ... --> blocks in {GUIDE}"
    return blocks


def test_guide_names_every_file_it_touches() -> None:
    text = GUIDE.read_text(encoding="utf-8")
    for action, target, _ in guide_blocks():
        if action != "run":
            assert f"`{target}`" in text, f"{target} is changed by an example but not listed in its 'Files:' line"


@pytest.fixture(scope="module")
def extended(tmp_path_factory) -> Path:
    """A copy of the package and its configs with every example's files applied."""
    copy = tmp_path_factory.mktemp("extended")
    shutil.copytree(ROOT / "crossmodal", copy / "crossmodal", ignore=shutil.ignore_patterns("__pycache__", "demo"))
    (copy / "crossmodal" / "assets" / "demo").symlink_to(DEMO)
    shutil.copytree(ROOT / "conf", copy / "conf")
    shutil.copy(ROOT / "pyproject.toml", copy)  # a checkout: crossmodal.config_dir() reads conf/ beside the package
    for action, target, body in guide_blocks():
        path = copy / target
        if action == "append":
            assert path.is_file(), f"the guide appends to {target}, which does not exist"
            path.write_text(path.read_text(encoding="utf-8") + body, encoding="utf-8")
        elif action == "new":
            assert not (ROOT / target).exists(), f"the guide creates {target}, which the checkout already has"
            path.write_text(body, encoding="utf-8")
    return copy


def _command(name: str) -> list[str]:
    (command,) = [body.strip() for action, target, body in guide_blocks() if action == "run" and target == name]
    words = command.split()
    assert words[:3] == ["python", "-m", "crossmodal.run"], command
    return [sys.executable, *words[1:]]


def _run(copy: Path, name: str, *overrides: str, replace: dict[str, str] | None = None) -> Path:
    command = _command(name)
    for key, value in (replace or {}).items():  # the guide's example paths -> the test's data
        command = [f"{key}={value}" if word.startswith(f"{key}=") else word for word in command]
    run_dir = copy / "runs" / name
    env = dict(os.environ, WANDB_MODE="disabled", CROSSMODAL_NO_PROGRESS="1", PYTHONPATH=str(copy))
    common = ["logger=csv", "report=false", f"paths.data_dir={copy / 'data'}", f"paths.log_dir={copy / 'logs'}",
              f"hydra.run.dir={run_dir}"]
    proc = subprocess.run([*command, *common, *overrides], capture_output=True, text=True, cwd=copy, env=env, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "crossmodal" in proc.stderr + proc.stdout
    return run_dir


def test_a_new_student_trains_and_is_saved_by_name(extended: Path, tmp_path: Path) -> None:
    emodb = tmp_path / "emodb" / "wav"
    emodb.mkdir(parents=True)
    for speaker in ("03", "08", "10", "12"):
        for path in sorted((DEMO / "emodb" / "wav").glob(f"{speaker}*.flac"))[:10]:
            os.symlink(path, emodb / path.name)
    run = _run(extended, "student", f"data.emodb={emodb.parent}", f"data.ferplus={DEMO / 'ferplus'}",
               "data.prepare.unheard_fraction=0.5", "data.num_workers=0", "data.batches_per_epoch=1", "data.batch_size=4",
               "trainer.max_epochs=1")
    metrics = json.loads((run / "metrics.json").read_text())
    assert "test/ua_unheard" in metrics
    check = ("from crossmodal.models.loading import load_student_modules; import sys; "
             "_, net, info = load_student_modules(sys.argv[1]); print(info['net_name'], type(net).__name__)")
    out = subprocess.run([sys.executable, "-c", check, str(run / "student.safetensors")], capture_output=True, text=True,
                         cwd=extended, env=dict(os.environ, PYTHONPATH=str(extended)), check=True).stdout
    assert out.split() == ["tiny_gru", "TinyGRU"]


def test_a_new_corpus_is_read_and_evaluated(extended: Path, tmp_path: Path) -> None:
    corpus = tmp_path / "toycorp"
    # 6 clips: 3 speakers x angry/sad, cut from real EmoDB speech (W anger, T sadness) to 1.5 s
    sources = {"angry": "W", "sad": "T"}
    for speaker, emodb_speaker in (("spk1", "03"), ("spk2", "08"), ("spk3", "10")):
        (corpus / speaker).mkdir(parents=True)
        for label, letter in sources.items():
            source = sorted((DEMO / "emodb" / "wav").glob(f"{emodb_speaker}???{letter}?.flac"))[0]
            audio, rate = sf.read(source)
            sf.write(corpus / speaker / f"{label}_01.wav", audio[: int(1.5 * rate)], rate)
    (corpus / "spk1" / "notes.wav").write_bytes(b"")  # a name the reader cannot parse: a counted skip
    run = _run(extended, "corpus", "strict=false", "benchmark.folds=2", "benchmark.inner_folds=2", "benchmark.Cs=[1.0]",
               "benchmark.baselines=[chance,zero_shot,mfcc]",
               replace={"benchmark.source": str(corpus), "ckpt_path": str(ROOT / "crossmodal" / "assets" / "student_cpu.safetensors")})
    report = (run / "evaluation.md").read_text()
    assert "ToyCorp" in report
    metrics = json.loads((run / "metrics.json").read_text())
    assert any(key.startswith("eval/") or "ua" in key for key in metrics), sorted(metrics)[:20]


def test_a_timm_backbone_is_a_teacher_by_name(extended: Path) -> None:
    run = _run(extended, "teacher", "data.batch_size=8", "data.eval_batch_size=16", "data.num_workers=0",
               "data.batches_per_epoch=1", "trainer.max_epochs=1", "trainer.max_time=null", "trainer.precision=32-true",
               replace={"data.source": str(FERPLUS_SAMPLE)})
    checkpoints = sorted((run / "checkpoints").glob("*.ckpt"))
    assert checkpoints, sorted(p.name for p in run.iterdir())
    import torch

    hparams = torch.load(checkpoints[-1], map_location="cpu", weights_only=True)["hyper_parameters"]
    assert "mobilenetv3_small_050" in json.dumps(hparams, default=str)
