"""The README, walked: every command its code blocks show runs here and its output is checked.

README.md is parsed at test time, so a command added to it runs in the suite (and fails the suite
when no rule below says how to give it data on this machine). The commands run as printed, plus:
- overrides that shrink them (epochs, batches, speakers) and send their output to a temporary folder;
- the data a user would have (``/data/emodb``, ``/data/ferplus``, ``teacher.ckpt``, ...) replaced by
  the real data the repository ships (``DATA`` below, built by the conftest fixtures);
- on a machine without GPUs, GPU counts become CPU (``trainer.gpus=N`` -> ``trainer.gpus=0``,
  ``trainer=gpu`` -> ``trainer.accelerator=cpu``). Multi-node and SLURM commands cannot run on one
  machine; they, and ``--cfg``, stop at the composed config, which is checked.
Runs over ~30 s are ``slow`` (``SLOW``); ``make test`` keeps the fast ones.
"""
from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DEMO = ROOT / "crossmodal" / "assets" / "demo"

# A line of a text block (the demo's printed output) that is a command a user would type.
_COMMAND = re.compile(r"^(?:\$\s+)?((?:make \w|python -m crossmodal\.run\b|python experiments/|crossmodal (?:predict|export|run)\b).*)$")


def readme_commands() -> list[str]:
    """Every command in README.md's code blocks, in order, without comments: all lines of ``bash``
    blocks, and the command lines (``$ make demo``, the demo's ``Next:`` list) of other blocks;
    plus inline ``from crossmodal import ...`` snippets."""
    text = README.read_text()
    commands: list[str] = []
    for lang, body in re.findall(r"^```(\w*)\n(.*?)^```", text, flags=re.S | re.M):
        for raw in body.splitlines():
            line = raw.strip()
            if lang != "bash":
                match = _COMMAND.match(line)
                if not match:
                    continue
                line = match.group(1)
            tokens = shlex.split(line, comments=True)
            if tokens:
                commands.append(shlex.join(tokens))
    commands += re.findall(r"`(from crossmodal import [^`]+)`", text)
    return list(dict.fromkeys(commands))


def _argv(command: str) -> list[str]:
    return shlex.split(command)


def _experiment(argv: list[str]) -> str | None:
    return next((a.split("=", 1)[1] for a in argv if a.startswith("experiment=")), None)


def kind(command: str) -> str:
    """What a README command is: the key of its runner below."""
    argv = _argv(command)
    if argv[0] == "make":
        return f"make {argv[1]}"
    if argv[0] == "crossmodal":
        return f"crossmodal {argv[1]}"
    if argv[:2] == ["python", "-m"] and argv[2] == "crossmodal.run":
        rest = argv[3:]
        if "--help" in rest:
            return "run --help"
        if "--cfg" in rest:
            return "run --cfg"
        if any(a.startswith(("hydra/launcher=", "trainer.num_nodes=")) for a in rest):
            return "run cluster"
        return "run -m" if "-m" in rest else "run"
    if argv[0] == "python" and argv[1].startswith("experiments/"):
        return f"script {argv[1]}"
    if command.startswith("from crossmodal import"):
        return "python api"
    return "unknown"


# Shrinking overrides by experiment (None: the demo, `python -m crossmodal.run`). A README command
# with an experiment missing here fails: add the overrides that make it small.
_TRAIN_SMALL = ["trainer.max_epochs=1", "trainer.limit_train_batches=2", "trainer.limit_val_batches=2", "trainer.limit_test_batches=2"]
_DISTILL_SMALL = ["trainer.max_epochs=1", "data.batches_per_epoch=2", "data.batch_size=8", "trainer.limit_val_batches=2", "trainer.limit_test_batches=2"]
SHRINK: dict[str | None, list[str]] = {
    None: _DISTILL_SMALL,
    "teacher_cpu": [*_TRAIN_SMALL, "data.batch_size=16", "trainer.max_time=null", "trainer.precision=32-true"],
    "teacher_senet50": [*_TRAIN_SMALL, "data.batch_size=4", "trainer.precision=32-true"],
    "teacher_eval": [],
    "extract_logits": [],
    "pseudo_pairs": [],
    "distill_senet": [*_DISTILL_SMALL, "data.batch_size=2", "data.eval_batch_size=2"],
    "distill_cpu": _DISTILL_SMALL,
    "supervised_cpu": _DISTILL_SMALL,
    "eval_emodb": ["benchmark.folds=2", "benchmark.Cs=[1.0]", "benchmark.max_clips=40", "benchmark.baselines=[chance,zero_shot,mfcc]"],
}
# Commands (by experiment) that take over ~30 s even shrunk: marked slow.
SLOW = {None, "teacher_cpu", "teacher_eval", "teacher_senet50", "extract_logits", "pseudo_pairs", "distill_senet", "distill_cpu", "supervised_cpu"}
SLOW_KINDS = {"make demo", "run -m", "script experiments/sweeps/summarise.py", "crossmodal timeline"}  # timeline: tests/test_timeline.py runs it fast


def _has_gpu() -> bool:
    import torch

    return torch.cuda.is_available()


def _params():
    for command in readme_commands():
        argv, k = _argv(command), kind(command)
        slow = k in SLOW_KINDS or (k == "run" and _experiment(argv) in SLOW)
        yield pytest.param(command, id=command[:90], marks=[pytest.mark.slow] if slow else [])


COMMANDS = list(_params())


# ------------------------------------------------------------------------------ data a user would have


class Workspace:
    """One temporary folder shared by the README's commands (as a user's checkout would be): the
    stand-ins for the user's data, one ``paths.data_dir``, and a run folder per command."""

    def __init__(self, root: Path, emodb: Path, ferplus: Path, grid: Path, voxceleb1: Path) -> None:
        self.root, self.runs = root, 0
        self.data_dir = root / "data"
        self.emodb, self.ferplus, self.grid, self.voxceleb1 = emodb, ferplus, grid, voxceleb1
        self.done: dict[str, subprocess.CompletedProcess] = {}

    def data(self, name: str) -> Path:
        """The stand-in for ``/data/<name>`` in the README, built from the shipped real data."""
        if name == "emodb":
            return self.emodb
        if name == "ferplus":
            return self.ferplus
        if name == "grid":
            return self.grid
        if name == "voxceleb2":  # <id>/<youtube_id>/<n>.mp4: the GRID clips (MPEG-PS; ffmpeg probes the content)
            root = self.root / "voxceleb2"
            for n, clip in enumerate(sorted(self.grid.glob("*.mpg"))):
                target = root / f"id0000{n % 2 + 1}" / f"yt{n:09d}" / "00001.mp4"
                if not target.exists():
                    target.parent.mkdir(parents=True, exist_ok=True)
                    os.symlink(clip, target)
            return root
        if name in ("voxceleb1", "vox1_frames"):  # wav/<id>/<yt>/<n>.wav plus face frames cut from GRID video
            from test_pairs import _voxceleb1_tree

            if not (self.root / "vox1" / "built").exists():
                self.vox1 = _voxceleb1_tree(self.grid, self.voxceleb1, self.root / "vox1")
                (self.root / "vox1" / "built").write_text("")
            root, frames = self.vox1
            return root if name == "voxceleb1" else frames
        raise AssertionError(f"README uses /data/{name}: tests/test_readme.py has no shipped stand-in for it (add one to Workspace.data)")

    def teacher(self, name: str) -> Path:
        """The stand-in for a teacher file the README names (``teacher.ckpt``, ``T``): the shipped teacher's
        weights, re-saved once per name so that each name has its own bytes and digest, as two users'
        teachers would. The paper path (extract with ``teacher_ckpt=T``, then distill with the same ``T``)
        must then find exactly the set that teacher made."""
        from crossmodal.models.loading import load_teacher
        from crossmodal.models.teacher import save_teacher

        path = self.root / "teachers" / f"{Path(name).stem}.safetensors"
        if not path.exists():
            save_teacher(load_teacher(), path, provenance={"note": f"stand-in for the README's {name}"})
        return path

    def substitute(self, argv: list[str]) -> list[str]:
        """argv with the user's data paths, files and devices replaced by what this machine has."""
        from crossmodal.inference import DEFAULT_STUDENT

        out = []
        teacher_run = (_experiment(argv) or "").startswith("teacher")
        for arg in argv:
            arg = re.sub(r"/data/(\w+)", lambda m: str(self.data(m.group(1))), arg)
            key, _, value = arg.partition("=")
            user_file = value not in ("", "null", "last") and not Path(value).exists()
            if user_file and (key in ("teacher_ckpt", "model.init_from") or key == "ckpt_path" and teacher_run):
                arg = f"{key}={self.teacher(value)}"  # the user's teacher file: the shipped one, under that name
            elif user_file and key == "ckpt_path":
                arg = f"{key}={DEFAULT_STUDENT}"  # the user's student file (RUN/student...): the shipped one
            elif key == "hydra.run.dir":
                arg = f"hydra.run.dir={self.root / value}"
            elif key == "trainer.gpus" and not _has_gpu():
                arg = "trainer.gpus=0"
            elif arg == "trainer=gpu" and not _has_gpu():
                out += [arg, "trainer.accelerator=cpu"]
                continue
            out.append(arg)
        return out

    def run(self, argv: list[str], timeout: int = 1500, cwd: Path | None = None) -> subprocess.CompletedProcess:
        env = {**os.environ, "WANDB_MODE": "disabled", "CROSSMODAL_NO_PROGRESS": "1", "PYTHONPATH": str(ROOT / "tests")}
        proc = subprocess.run(argv, capture_output=True, text=True, cwd=cwd or self.root, env=env, timeout=timeout)
        assert proc.returncode == 0, f"{shlex.join(argv)}\n--- stdout\n{proc.stdout[-3000:]}\n--- stderr\n{proc.stderr[-5000:]}"
        return proc

    @staticmethod
    def corpora(experiment: str | None) -> list[str]:
        """The CPU distillation runs find EmoDB and FER+ in paths.data_dir or paths.shared_data_dir,
        which a fresh clone lacks: point them at the shipped demo voices and faces (as the demo does)."""
        if experiment in ("distill_cpu", "supervised_cpu"):
            return [f"data.emodb={DEMO / 'emodb'}", f"data.ferplus={DEMO / 'ferplus'}"]
        return []

    def entry_point(self, argv: list[str]) -> tuple[subprocess.CompletedProcess, Path]:
        """``python -m crossmodal.run`` with argv (already substituted), shrunk, in its own run folder."""
        experiment = _experiment(argv)
        assert experiment in SHRINK, f"README runs experiment={experiment}: add its shrinking overrides to test_readme.SHRINK"
        extra = list(SHRINK[experiment]) + ["logger=csv", f"paths.data_dir={self.data_dir}"]
        extra += self.corpora(experiment)
        run_dir = next((Path(a.split("=", 1)[1]) for a in argv if a.startswith("hydra.run.dir=")), None)
        if run_dir is None:
            self.runs += 1
            run_dir = self.root / "runs" / f"{self.runs:02d}"
            extra.append(f"hydra.run.dir={run_dir}")
        return self.run([sys.executable, "-m", "crossmodal.run", *argv[3:], *extra]), run_dir


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, emodb_root, ferplus_root, grid_root, voxceleb1_root) -> Workspace:
    return Workspace(tmp_path_factory.mktemp("readme"), emodb_root, ferplus_root, grid_root, voxceleb1_root)


# ----------------------------------------------------------------------------------------- checks


def _metrics(run_dir: Path) -> dict:
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics and all(np.isfinite(v) for v in metrics.values() if isinstance(v, (int, float)))
    assert (run_dir / "config.yaml").exists()
    return metrics


def _check_task_output(task: str, run_dir: Path, proc: subprocess.CompletedProcess) -> None:
    """What each task must have written (see docs/conventions.md)."""
    metrics = _metrics(run_dir)
    if task == "evaluate":
        assert metrics["eval/clips"] > 0 and 0 <= metrics["eval/zero_shot/clips/ua_mean"] <= 1
        assert (run_dir / "evaluation.md").exists()
    elif task == "test":
        assert 0 <= metrics["test/acc"] <= 1
    elif task == "extract":
        assert any(k.startswith(("extract/", "pairs/")) for k in metrics), metrics
    elif task in ("train", "demo"):
        assert any(k.startswith("test/") for k in metrics) and list((run_dir / "checkpoints").glob("*.ckpt")), metrics
    if task == "demo":
        assert "crossmodal demo: summary" in proc.stdout and "unheard speakers" in proc.stdout


def _clip(workspace: Workspace, name: str) -> Path:
    """A real clip standing in for the user's file ``name`` (a voice as wav/flac, a video as GRID)."""
    suffix = Path(name).suffix.lower()
    target = workspace.root / "user_files" / name
    target.parent.mkdir(parents=True, exist_ok=True)
    if not target.exists():
        if suffix in (".mp4", ".mpg", ".avi", ".mkv", ".mov"):
            os.symlink(sorted(workspace.grid.glob("*.mpg"))[0], target)
        else:
            wave, rate = sf.read(str(workspace.emodb / "wav" / "03a01Wa.wav"), dtype="float32")
            sf.write(str(target), wave, rate)
    return target


# ------------------------------------------------------------------------------------------ tests


def test_readme_shows_the_setup_commands_first():
    assert readme_commands()[:3] == ["make install", "make demo", "make test"]


def test_every_readme_command_has_a_runner():
    unknown = [c for c in readme_commands() if kind(c) not in RUNNERS]
    assert not unknown, f"README commands with no runner in tests/test_readme.py: {unknown}"
    for command in readme_commands():
        argv = _argv(command)
        if kind(command) == "run":
            assert _experiment(argv) in SHRINK, f"{command}: add experiment={_experiment(argv)} to test_readme.SHRINK"


@pytest.mark.parametrize("command", COMMANDS)
def test_readme_command(command, workspace):
    RUNNERS[kind(command)](command, workspace)


# ---------------------------------------------------------------------------------------- runners


def _make(command: str, workspace: Workspace) -> None:
    """``make install|test|lint``: the recipe runs (make -n shows it) through the project's venv; ``make
    test`` is this very run; ``make demo`` is ``python -m crossmodal.run`` (the demo runner)."""
    target = _argv(command)[1]
    dry = subprocess.run(["make", "-n", target], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert dry.returncode == 0, dry.stderr
    if target == "demo":
        assert re.search(r"/python -m crossmodal\.run\s*$", dry.stdout, flags=re.M), dry.stdout
        _make_demo(workspace)
    elif target == "test":
        assert "-m pytest" in dry.stdout and "WANDB_MODE=disabled" in dry.stdout
    elif target == "install":
        assert "constraints.txt" in (ROOT / "Makefile").read_text()
        assert (Path(sys.prefix) / ".installed").exists() or (ROOT / ".venv" / ".installed").exists()
    else:
        proc = subprocess.run(["make", target], capture_output=True, text=True, cwd=ROOT, timeout=600)
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]


def _make_demo(workspace: Workspace) -> None:
    """``make demo`` as a user runs it (full schedule, fresh data folder, W&B disabled): its figures are
    within the recorded tolerance of those in crossmodal/assets/recorded.json (``demo``), which README.md
    shows (tests/test_demo.py)."""
    from crossmodal.tasks.demo import compare_with_recorded, recorded_figures

    run_dir = workspace.root / "runs" / "make_demo"
    proc = workspace.run([sys.executable, "-m", "crossmodal.run", f"hydra.run.dir={run_dir}",
                          f"paths.data_dir={workspace.root / 'make_demo_data'}"])
    _check_task_output("demo", run_dir, proc)
    compared = compare_with_recorded(_metrics(run_dir), recorded_figures())
    assert compared, "crossmodal/assets/recorded.json has no demo figures"
    moved = [f"{key}: {got:.4f} (recorded {want:.4f} +/- {tol:.4f})" for key, got, want, tol in compared
             if not abs(got - want) <= tol + 1e-9]
    assert not moved, ("make demo's figures moved beyond the recorded tolerance; if the code change is meant to "
                       "change them, re-measure (experiments/demo/README.md), update recorded.json and the "
                       "README's demo block:\n  " + "\n  ".join(moved))
    assert "(OUTSIDE)" not in proc.stdout


def _run(command: str | list[str], workspace: Workspace) -> None:
    argv = workspace.substitute(_argv(command) if isinstance(command, str) else command)
    from crossmodal.run import _compose

    overrides = [a for a in argv[3:] if "=" in a and not a.startswith(("hydra.", "-"))]
    task = _compose(overrides, []).task
    proc, run_dir = workspace.entry_point(argv)
    _check_task_output(task, run_dir, proc)
    workspace.done[shlex.join(_argv(command) if isinstance(command, str) else command)] = proc


def _run_help(command: str, workspace: Workspace) -> None:
    proc = workspace.run([sys.executable, *_argv(command)[1:]], timeout=120)
    assert "experiment:" in proc.stdout or "== Config groups ==" in proc.stdout, proc.stdout[-2000:]
    assert "teacher_cpu" in proc.stdout


def _run_cfg(command: str, workspace: Workspace) -> None:
    """``--cfg job``: the printed config is the composed one, with trainer.gpus translated."""
    import yaml

    argv = _argv(command)
    proc = workspace.run([sys.executable, *argv[1:]], timeout=120)
    cfg = yaml.safe_load(proc.stdout)
    assert "trainer" in cfg and "data" in cfg and "model" in cfg
    for arg in argv[3:]:
        key, _, value = arg.partition("=")
        if key == "trainer.gpus" and int(value) > 0:
            assert cfg["trainer"]["accelerator"] == "gpu" and cfg["trainer"]["devices"] == int(value)


def _run_cluster(command: str, workspace: Workspace) -> None:
    """Multi-node DDP and SLURM sweeps cannot run on one machine: compose the job (``--cfg job``,
    through the same entry point and checks) and check that the cluster settings arrived."""
    import yaml

    argv = _argv(command)
    proc = workspace.run([sys.executable, *argv[1:], "--cfg", "all"], timeout=120)
    cfg = yaml.safe_load(proc.stdout)
    for arg in argv[3:]:
        key, _, value = arg.partition("=")
        if key == "trainer.num_nodes":
            assert cfg["trainer"]["num_nodes"] == int(value)
        if key == "hydra/launcher":
            assert value.split("_")[0] in str(cfg["hydra"]["launcher"]["_target_"]).lower()
        if key == "trainer.gpus" and int(value) > 0:
            assert cfg["trainer"]["accelerator"] == "gpu" and cfg["trainer"]["devices"] == int(value)


def _run_sweep(command: str, workspace: Workspace) -> None:
    """``-m``: the sweep's jobs all run (shrunk), each with its own metrics.json."""
    argv = workspace.substitute(_argv(command))
    experiment = _experiment(argv)
    sweep_dir = workspace.root / "sweeps" / (experiment or "demo")
    extra = list(SHRINK[experiment]) + ["logger=csv", f"paths.data_dir={workspace.data_dir}", f"hydra.sweep.dir={sweep_dir}"]
    extra += workspace.corpora(experiment)
    workspace.run([sys.executable, "-m", "crossmodal.run", *argv[3:], *extra])
    jobs = sorted(p.parent for p in sweep_dir.glob("*/metrics.json"))
    assert len(jobs) >= 2, f"sweep wrote {len(jobs)} jobs under {sweep_dir}"
    workspace.sweep_dir = sweep_dir


def _run_summarise(command: str, workspace: Workspace) -> None:
    """The sweep summary, on the README's own sweep (run first when this test runs alone)."""
    if not hasattr(workspace, "sweep_dir"):
        _run_sweep(next(c for c in readme_commands() if kind(c) == "run -m"), workspace)
    argv = [workspace.sweep_dir if a.startswith("logs/") else a for a in _argv(command)[1:]]
    proc = workspace.run([sys.executable, *map(str, argv)], cwd=ROOT, timeout=120)
    assert proc.stdout.count("\n") >= 3 and "AUC" in proc.stdout, proc.stdout


def _run_predict(command: str, workspace: Workspace) -> None:
    """``crossmodal predict FILES [--json]`` with the shipped student on real stand-ins of the user's files."""
    argv = _argv(command)
    files = [a for a in argv[2:] if not a.startswith("-")]
    args = [str(_clip(workspace, name)) if name in files else name for name in argv[2:]]
    proc = workspace.run([sys.executable, "-m", "crossmodal.cli", "predict", *args], timeout=300)
    from crossmodal.emotions import EMOTIONS

    if "--json" in argv:
        payload = json.loads(proc.stdout)
        assert [Path(f["path"]).name for f in payload["files"]] == files and not payload["errors"]
        for item in payload["files"]:
            assert list(item["probabilities"]) == list(EMOTIONS)
            assert sum(item["probabilities"].values()) == pytest.approx(1.0, abs=1e-4)
    else:
        for name in files:
            assert name in proc.stdout
        assert "whole file" in proc.stdout and any(e in proc.stdout for e in EMOTIONS)


def _run_timeline(command: str, workspace: Workspace) -> None:
    """``crossmodal timeline VIDEO --out DIR`` on a GRID clip standing in for the user's video."""
    argv = _argv(command)
    video = _clip(workspace, argv[2])
    cwd = workspace.root / "timeline"
    cwd.mkdir(exist_ok=True)
    workspace.run([sys.executable, "-m", "crossmodal.cli", "timeline", str(video), *argv[3:]], cwd=cwd, timeout=300)
    out = cwd / argv[argv.index("--out") + 1] if "--out" in argv else video.parent
    stem = Path(argv[2]).stem
    doc = json.loads((out / f"{stem}.timeline.json").read_text())
    assert doc["windows"] and all(w["face"] for w in doc["windows"])
    assert (out / f"{stem}.timeline.csv").exists() and (out / f"{stem}.timeline.png").stat().st_size > 10_000


def _run_export(command: str, workspace: Workspace) -> None:
    """``crossmodal export`` with the shipped student: the written file gives the student's outputs on a real clip."""
    import torch

    from crossmodal.export import load_exported
    from crossmodal.inference import load_student
    from crossmodal.io.audio import load_audio

    argv = _argv(command)
    cwd = workspace.root / "export"
    cwd.mkdir(exist_ok=True)
    proc = workspace.run([sys.executable, "-m", "crossmodal.cli", *argv[1:]], cwd=cwd, timeout=300)
    out = cwd / argv[argv.index("--out") + 1] if "--out" in argv else None
    assert out is not None and out.exists(), proc.stdout
    assert f"wrote {argv[argv.index('--format') + 1]}" in proc.stdout
    wave = load_audio(workspace.emodb / "wav" / "03a01Wa.wav")[None]
    with torch.no_grad():
        logits, embedding = load_student()(torch.from_numpy(wave))
    got_logits, _ = load_exported(out)(wave)
    np.testing.assert_allclose(got_logits, logits.numpy(), atol=1e-3, rtol=1e-3)


def _run_python_api(command: str, workspace: Workspace) -> None:
    """The README's Python one-liner, with ``waveform, sample_rate`` a real EmoDB clip at 22.05 kHz."""
    from crossmodal.emotions import EMOTIONS
    from crossmodal.io.audio import resample

    wave, rate = sf.read(str(workspace.emodb / "wav" / "03a01Wa.wav"), dtype="float32")
    scope = {"waveform": resample(wave, rate, 22050), "sample_rate": 22050}
    *setup, last = [part.strip() for part in command.split(";")]
    exec("\n".join(setup), scope)  # noqa: S102 - the README's own text
    result = eval(last, scope)  # noqa: S307
    assert result.top in EMOTIONS
    assert sum(result.distribution().values()) == pytest.approx(1.0, abs=1e-5)


RUNNERS = {
    "make install": _make,
    "make demo": _make,
    "make test": _make,
    "run": _run,
    "run --help": _run_help,
    "run --cfg": _run_cfg,
    "run cluster": _run_cluster,
    "run -m": _run_sweep,
    "script experiments/sweeps/summarise.py": _run_summarise,
    "crossmodal predict": _run_predict,
    "crossmodal export": _run_export,
    "crossmodal timeline": _run_timeline,
    "python api": _run_python_api,
}
