"""task=evaluate: scoring on planted features, the zero-shot mapping, class selection, bad input,
and whole runs on corpus layouts built from real EmoDB files."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from omegaconf import OmegaConf
from test_corpora import build_cremad, build_enterface, build_iemocap, build_ravdess, build_rml
from test_predict import tiny_student_file

from crossmodal.emotions import EMOTIONS
from crossmodal.eval.probe import FoldError, clip_folds
from crossmodal.io.corpora import Clip, CorpusError, read_corpus
from crossmodal.run import _compose
from crossmodal.tasks.evaluate import BenchmarkConfig, evaluate_features, run, select_classes, zero_shot_row
from crossmodal.tasks.run_folder import RunFolder

ROOT = Path(__file__).resolve().parents[1]
EMODB_CLASSES = ("anger", "boredom", "disgust", "fear", "happiness", "sadness", "neutral")


def _clips(per_class: int = 12, speakers: int = 6) -> list[Clip]:
    clips = []
    for label in EMODB_CLASSES:
        emotion = None if label == "boredom" else label
        for i in range(per_class):
            clips.append(Clip(Path(f"/x/{label}{i}.wav"), f"{i % speakers:02d}", label, emotion, "emodb"))
    return clips


def _planted_logits(clips: list[Clip], rng, signal: float) -> np.ndarray:
    """Student logits whose true emotion (boredom: neutral's column) is ``signal`` above the rest."""
    logits = rng.normal(size=(len(clips), len(EMOTIONS)))
    for row, clip in zip(logits, clips):
        row[EMOTIONS.index(clip.emotion or "neutral")] += signal
        row[EMOTIONS.index("contempt")] += 2 * signal  # a class EmoDB lacks: zero-shot must ignore it
    return logits


def test_zero_shot_maps_onto_the_shared_classes():
    clips = _clips()
    logits = _planted_logits(clips, np.random.default_rng(0), signal=10.0)
    folds = clip_folds([c.corpus_label for c in clips], 4)
    row = zero_shot_row(clips, logits, folds, "clips")
    assert row.scores.class_names == ("neutral", "happiness", "sadness", "anger", "disgust", "fear")  # FER+ order, no boredom
    assert row.scores.summary()["ua_mean"] == 1.0  # contempt's bigger logit is never chosen
    assert row.scores.confusion.sum() == len(clips) - 12  # boredom clips left out
    assert "12 clips of unmapped classes left out" in row.note


def test_probe_and_baselines_on_planted_features():
    clips = _clips()
    rng = np.random.default_rng(1)
    labels = np.array([EMODB_CLASSES.index(c.corpus_label) for c in clips])
    signal = rng.normal(size=(len(clips), 8))
    signal[np.arange(len(clips)), labels] += 4.0
    bench = BenchmarkConfig(corpus="emodb", source="/x", folds=4, Cs=[0.1, 1.0])
    feature_sets = {"probe_logits": signal, "random_init_logits": rng.normal(size=(len(clips), 8))}
    report = evaluate_features(clips, EMODB_CLASSES, feature_sets, _planted_logits(clips, rng, 0.0), bench, "emodb")
    scores = {(r.method, r.protocol): r.scores.summary() for r in report.rows}
    for protocol in ("clips", "speakers"):
        assert scores[("probe_logits", protocol)]["ua_mean"] > 0.9
        assert scores[("random_init_logits", protocol)]["ua_mean"] < 0.35
        assert scores[("chance", protocol)]["ua_mean"] == pytest.approx(1 / 7, abs=0.01)
    assert scores[("probe_logits", "speakers")]["folds"] == 6  # leave-one-speaker-out
    metrics = report.metrics()
    assert metrics["eval/probe_logits/speakers/ua_mean"] > 0.9 and "eval/zero_shot/clips/wa_std" in metrics


def test_single_speaker_and_small_classes_are_explained():
    clips = [Clip(c.path, "only", c.corpus_label, c.emotion, c.corpus) for c in _clips()]
    bench = BenchmarkConfig(corpus="emodb", source="/data/emodb", folds=4, Cs=[1.0], baselines=["chance"])
    features = {"probe_logits": np.random.default_rng(0).normal(size=(len(clips), 8))}
    report = evaluate_features(clips, EMODB_CLASSES, features, features["probe_logits"], bench, "emodb")
    assert {r.protocol for r in report.rows} == {"clips"}
    assert any("only one speaker (only)" in note and "single-speaker" in note for note in report.notes)
    with pytest.raises(FoldError, match=r"EmoDB under /data/emodb: fewer clips than the 20 folds .* in class 'anger' \(12 clips\), 'boredom' \(12 clips\)"):
        evaluate_features(clips, EMODB_CLASSES, features, features["probe_logits"], BenchmarkConfig(corpus="emodb", source="/data/emodb", folds=20), "emodb")


def test_iemocap_four_class_selection(emodb_root, tmp_path):
    root = build_iemocap(emodb_root, tmp_path / "iemocap")
    exc = root / "Session1" / "dialog" / "EmoEvaluation" / "Ses01F_impro01_F.txt"
    exc.write_text(exc.read_text().replace("\tang\t", "\texc\t", 1))  # one clip becomes 'excited'
    cfg = _compose(["experiment=eval_iemocap", f"benchmark.source={root}"], [])
    bench = BenchmarkConfig(**{k: v for k, v in OmegaConf.to_container(cfg.benchmark, resolve=True).items() if k != "_target_"})
    clips, classes = select_classes(read_corpus("iemocap", root), bench)
    assert classes == ("neu", "hap", "sad", "ang")
    assert {c.corpus_label for c in clips} == set(classes)  # fru dropped, exc merged into hap
    assert any(c.path.stem == "Ses01F_impro01_F000" and c.corpus_label == "hap" and c.emotion == "happiness" for c in clips)


def _cfg(experiment: str, source: Path, ckpt: Path, *overrides: str):
    cfg = _compose([f"experiment={experiment}", f"benchmark.source={source}", f"ckpt_path={ckpt}", *overrides], [])
    return OmegaConf.create(OmegaConf.to_container(cfg, resolve=False) | {"paths": {}, "logger": None})


def test_evaluate_run_on_a_ravdess_layout(emodb_root, tmp_path):
    root = build_ravdess(emodb_root, tmp_path / "ravdess", per_speaker=2)
    # A silent clip and an unreadable one: skipped and reported, not fatal (strict=false).
    sf.write(root / "Actor_03" / "03-01-05-02-02-02-03.wav", np.zeros(16000, np.float32), 16000)
    (root / "Actor_03" / "03-01-04-02-02-02-03.wav").write_bytes(b"RIFF....garbage")
    sf.write(root / "Actor_03" / "take2.wav", np.ones(1600, np.float32) * 0.1, 16000)  # a name that does not parse
    student = tiny_student_file(tmp_path / "student.pt")
    cfg = _cfg("eval_ravdess", root, student, "benchmark.folds=4", "benchmark.features=[logits,embedding]", "benchmark.Cs=[0.1,10.0]",
               "benchmark.workers=1")
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    metrics = run(cfg, RunFolder(cfg, run_dir))
    assert metrics["eval/skipped"] == 3 and metrics["eval/speakers"] == 4 and metrics["eval/classes"] == 7
    for method in ("probe_logits", "probe_embedding", "random_init_logits", "random_init_embedding", "egemaps", "mfcc", "chance", "zero_shot"):
        for protocol in ("clips", "speakers"):
            assert 0.0 <= metrics[f"eval/{method}/{protocol}/ua_mean"] <= 1.0
            assert 0.0 <= metrics[f"eval/{method}/{protocol}/wa_std"] <= 1.0
    assert metrics["eval/chance/clips/ua_mean"] == pytest.approx(1 / 7)
    folds = json.loads((run_dir / "fold_scores.json").read_text())["probe_embedding/speakers"]
    assert len(folds["ua"]) == 4 and np.mean(folds["ua"]) == pytest.approx(metrics["eval/probe_embedding/speakers/ua_mean"])
    report = (run_dir / "evaluation.md").read_text()
    assert "leave-one-speaker-out (4 folds)" in report and "skipped files (unparseable name, unreadable, silent or no speech): 3" in report
    assert "skipped files by reason: 1 silent, 1 unparseable name, 1 unreadable" in report
    assert metrics["eval/skipped_unreadable"] == metrics["eval/skipped_silent"] == metrics["eval/skipped_unparseable_name"] == 1
    assert "03-01-05-02-02-02-03.wav`: " in report and "silent" in report
    assert "take2.wav`: name does not parse" in report
    plots = sorted(p.name for p in (run_dir / "plots").glob("*.png"))
    assert "eval_confusion_probe_logits_speakers.png" in plots and "eval_confusion_zero_shot_clips.png" in plots
    saved = np.load(run_dir / "features.npz")
    assert saved["probe_logits"].shape == (metrics["eval/clips"], 8) and saved["probe_embedding"].shape[1] == 16
    assert saved["egemaps"].shape == (metrics["eval/clips"], 88) and saved["mfcc"].shape == (metrics["eval/clips"], 160)
    assert "| eGeMAPSv02 functionals (88) + LR, global norm | speaker-independent |" in report
    # strict=true: the unparseable name, then the unreadable or silent clip, is an error naming it.
    strict = OmegaConf.merge(cfg, {"strict": True})
    with pytest.raises(CorpusError, match="cannot parse .*take2.wav: RAVDESS names are"):
        run(strict, RunFolder(cfg, run_dir))
    (root / "Actor_03" / "take2.wav").unlink()
    with pytest.raises(CorpusError, match="03-01-0[45]-02-02-02-03.wav"):
        run(strict, RunFolder(cfg, run_dir))


def test_no_recognisable_files(tmp_path):
    (tmp_path / "empty").mkdir()
    cfg = _cfg("eval_emodb", tmp_path / "empty", tmp_path / "unused.pt")
    with pytest.raises(CorpusError, match=r"no EmoDB files found under .*empty"):
        run(cfg, RunFolder(cfg, tmp_path))


@pytest.mark.slow  # ~22 s; the fast suite runs eval_* through the entry point in test_readme (make test-full)
def test_entry_point_on_a_cremad_layout(emodb_root, tmp_path):
    """The real command line: python -m crossmodal.run experiment=eval_cremad ... writes metrics.json and plots/."""
    root = build_cremad(emodb_root, tmp_path / "cremad", per_speaker=2)
    student = tiny_student_file(tmp_path / "student.pt")
    run_dir = tmp_path / "run"
    env = {**os.environ, "WANDB_MODE": "disabled", "CROSSMODAL_NO_PROGRESS": "1", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "crossmodal.run", "experiment=eval_cremad", f"benchmark.source={root}", f"ckpt_path={student}",
           "benchmark.folds=4", "benchmark.Cs=[1.0,10.0]", f"hydra.run.dir={run_dir}", "logger=csv"]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["eval/clips"] == len(read_corpus("cremad", root))
    assert {"eval/probe_logits/clips/ua_mean", "eval/probe_logits/speakers/ua_mean", "eval/random_init_logits/speakers/wa_mean",
            "eval/chance/speakers/ua_mean", "eval/zero_shot/speakers/ua_mean"} <= set(metrics)
    assert (run_dir / "plots" / "eval_confusion_probe_logits_clips.png").exists()
    assert "speaker-independent" in (run_dir / "evaluation.md").read_text()
    # A misspelt probe key fails at once, naming the key.
    bad = subprocess.run([*cmd[:-2], "data.fold=3", f"hydra.run.dir={tmp_path / 'bad'}"], capture_output=True, text=True, cwd=ROOT, env=env, timeout=120)
    assert bad.returncode != 0 and "data.fold" in bad.stderr


EVAL_EXPERIMENTS = sorted(p.stem for p in (ROOT / "conf" / "experiment").glob("eval_*.yaml"))
# Each corpus' own layout, built from real EmoDB clips renamed to its naming (tests/test_corpora.py).
LAYOUTS = {
    "emodb": lambda emodb_root, out: emodb_root,
    "ravdess": lambda emodb_root, out: build_ravdess(emodb_root, out, per_speaker=2),
    "cremad": lambda emodb_root, out: build_cremad(emodb_root, out, per_speaker=2),
    "iemocap": lambda emodb_root, out: build_iemocap(emodb_root, out, per_speaker=3),
    "enterface": lambda emodb_root, out: build_enterface(emodb_root, out, per_speaker=2),
    "rml": lambda emodb_root, out: build_rml(emodb_root, out, per_speaker=2),
}


@pytest.mark.parametrize("experiment", EVAL_EXPERIMENTS)
def test_every_eval_experiment_with_the_shipped_student(experiment, emodb_root, tmp_path):
    """``experiment=eval_X data.source=...`` without ckpt_path: the shipped student on the corpus' real layout."""
    corpus = experiment.removeprefix("eval_")
    assert corpus in LAYOUTS, f"conf/experiment/{experiment}.yaml has no corpus layout in test_evaluate.LAYOUTS"
    root = LAYOUTS[corpus](emodb_root, tmp_path / corpus)
    overrides = [f"experiment={experiment}", f"benchmark.source={root}", "benchmark.folds=3", "benchmark.Cs=[1.0]", "benchmark.max_clips=40"]
    defaults = _compose(overrides, []).benchmark
    assert {"egemaps", "mfcc", "chance", "zero_shot"} <= set(defaults.baselines) and list(defaults.features) == ["logits", "embedding"]
    # eGeMAPS (~0.1 s a clip) runs on the EmoDB layout only, to keep the fast suite fast; MFCC everywhere.
    cfg = _compose(overrides + ([] if corpus == "emodb" else ["benchmark.baselines=[chance,random_init,zero_shot,mfcc]"]), [])
    assert cfg.get("ckpt_path") is None
    cfg = OmegaConf.create(OmegaConf.to_container(cfg, resolve=False) | {"paths": {}, "logger": None})
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    metrics = run(cfg, RunFolder(cfg, run_dir))
    bench = BenchmarkConfig(**{k: v for k, v in OmegaConf.to_container(cfg.benchmark, resolve=True).items() if k != "_target_"})
    selected, classes = select_classes(read_corpus(corpus, root), bench)
    # EmoDB: the shipped student heard some EmoDB speakers in training; they are left out.
    wanted = min(40, len(selected))  # a class-stratified subset: per-class rounding may drop a few
    assert 0 < metrics["eval/clips"] <= wanted and (corpus == "emodb" or metrics["eval/clips"] >= wanted - len(classes))
    assert metrics["eval/speakers"] >= 2 and metrics["eval/classes"] <= len(classes)
    for method in ("probe_logits", "probe_embedding", "mfcc", "chance", "zero_shot") + (("egemaps",) if corpus == "emodb" else ()):
        assert 0.0 <= metrics[f"eval/{method}/clips/ua_mean"] <= 1.0
    assert (run_dir / "evaluation.md").exists() and list((run_dir / "plots").glob("eval_confusion_*.png"))


@pytest.mark.slow
def test_eval_emodb_full(emodb_full_root, tmp_path):
    """The done-when command on all 535 EmoDB clips (several minutes on 2 CPU cores: eGeMAPS alone is
    ~70 s, then 6 feature sets x 2 protocols x 10 folds of probes with C by inner CV)."""
    student = tiny_student_file(tmp_path / "student.pt")
    run_dir = tmp_path / "run"
    env = {**os.environ, "WANDB_MODE": "disabled", "CROSSMODAL_NO_PROGRESS": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "crossmodal.run", "experiment=eval_emodb", f"benchmark.source={emodb_full_root}",
                           f"ckpt_path={student}", f"hydra.run.dir={run_dir}", "logger=csv"],
                          capture_output=True, text=True, cwd=ROOT, env=env, timeout=1800)
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["eval/clips"] == 535 and metrics["eval/speakers"] == 10
    assert metrics["eval/probe_logits/speakers/folds"] == 10 and metrics["eval/egemaps/speakers/folds"] == 10
    assert metrics["eval/chance/clips/ua_mean"] == pytest.approx(1 / 7)
    assert metrics["eval/egemaps/speakers/ua_mean"] > 0.5 and metrics["eval/mfcc/speakers/ua_mean"] > 0.4  # far above chance (1/7)
    assert len(list((run_dir / "plots").glob("eval_confusion_*.png"))) == 6  # probe on logits, eGeMAPS, zero-shot x 2 protocols


def test_speaker_selection(emodb_root):
    from crossmodal.config.checks import ConfigError
    from crossmodal.tasks.evaluate import select_speakers

    clips = read_corpus("emodb", emodb_root)
    kept = select_speakers(clips, BenchmarkConfig(corpus="emodb", source=str(emodb_root), speakers=[3, "08"]))
    assert {c.speaker for c in kept} == {"03", "08"} and len(kept) == sum(c.speaker in ("03", "08") for c in clips)
    with pytest.raises(ConfigError, match="no clip of speaker\\(s\\) 99 under .*speakers there: 03, 08, 09"):
        select_speakers(clips, BenchmarkConfig(corpus="emodb", source=str(emodb_root), speakers=["99"]))


def test_speakers_the_student_trained_on_are_left_out():
    from crossmodal.tasks.evaluate import drop_student_speakers

    clips = _clips()
    info = {"train_speakers": {"EmoDB": ["00", "01", "02", "03"], "ravdess": ["Actor_01"], "voxceleb1": ["id10001"]}}
    kept, note = drop_student_speakers(clips, info, "emodb", exclude=True)
    assert {c.speaker for c in kept} == {"04", "05"} and "left out speakers 00, 01, 02, 03" in note
    kept, note = drop_student_speakers(clips, info, "emodb", exclude=False)
    assert kept == clips and note.startswith("WARNING")
    assert drop_student_speakers(clips, {}, "emodb", exclude=True) == (clips, "")
    with pytest.raises(CorpusError, match="every speaker here"):
        drop_student_speakers(clips, {"train_speakers": {"emodb": [f"{i:02d}" for i in range(6)]}}, "emodb", exclude=True)


def test_classes_smaller_than_the_folds():
    from crossmodal.tasks.evaluate import fit_classes_to_folds

    # disgust: 3 clips, fear: 1 clip, the rest 12
    clips = [c for c in _clips(per_class=12) if not (c.corpus_label == "disgust" and int(c.path.stem[7:]) >= 3)
             and not (c.corpus_label == "fear" and int(c.path.stem[4:]) >= 1)]
    bench = BenchmarkConfig(corpus="emodb", source="/data/emodb", folds=10)
    keep, classes, folds, note = fit_classes_to_folds(clips, EMODB_CLASSES, bench)  # shrink (default)
    assert folds == 3 and "fear" not in classes and "disgust" in classes and len(keep) == len(clips) - 1
    assert "folds lowered from 10 to 3: class disgust" in note and "fear (1 clips)" in note
    bench.small_classes = "drop"
    keep, classes, folds, note = fit_classes_to_folds(clips, EMODB_CLASSES, bench)
    assert folds == 10 and classes == ("anger", "boredom", "happiness", "sadness", "neutral") and "disgust (3 clips)" in note
    bench.small_classes = "error"
    assert fit_classes_to_folds(clips, EMODB_CLASSES, bench)[1:3] == (EMODB_CLASSES, 10)  # left to clip_folds, which raises
    with pytest.raises(FoldError, match="'disgust' \\(3 clips\\), 'fear' \\(1 clips\\)"):
        clip_folds([c.corpus_label for c in clips], 10, where="emodb")


def test_out_of_fold_students_and_per_speaker_norm(emodb_root, tmp_path):
    """benchmark.student_per_fold: each clip's features come from the student listed for its speaker
    (two tiny students here, standing in for the cross-validation folds' students); a speaker listed
    nowhere is left out; per_speaker_norm renames and relabels every probe row."""
    import torch

    from crossmodal.config.checks import ConfigError
    from crossmodal.inference import load_student
    from crossmodal.io.audio import load_audio

    first, second = tiny_student_file(tmp_path / "a.safetensors", seed=0), tiny_student_file(tmp_path / "b.safetensors", seed=1)
    mapping = f"{{03+08: '{first}', 10+12: '{second}'}}"
    cfg = _cfg("eval_emodb", emodb_root, tmp_path / "unused.pt", f"benchmark.student_per_fold={mapping}", "benchmark.speakers=[03,08,09,10,12]",
               "benchmark.max_clips=40", "benchmark.folds=3", "benchmark.Cs=[1.0]", "benchmark.baselines=[chance,zero_shot]",
               "benchmark.per_speaker_norm=true", "benchmark.confusion_plots=false")
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    metrics = run(cfg, RunFolder(cfg, run_dir))
    saved = np.load(run_dir / "features.npz")
    assert set(saved["speakers"].tolist()) == {"03", "08", "10", "12"} and metrics["eval/speakers"] == 4  # 09 has no student
    students = {"a": load_student(first), "b": load_student(second)}
    for path, speaker, logits in zip(saved["paths"], saved["speakers"], saved["probe_logits"]):
        student = students["a" if speaker in ("03", "08") else "b"]
        with torch.inference_mode():
            expected = student(torch.from_numpy(load_audio(path, 16000))[None])[0][0].numpy()
        np.testing.assert_allclose(logits, expected, rtol=1e-4, atol=1e-5)
    assert metrics["eval/speakers"] == 4 and "eval/probe_embedding_spknorm/speakers/ua_mean" in metrics and "eval/probe_logits/speakers/ua_mean" not in metrics
    report = (run_dir / "evaluation.md").read_text()
    assert "probe on student logits (paper), per-speaker norm" in report and "speakers 09 have no student" in report
    # zero-shot: each speaker's logits z-scored with its own statistics, then the argmax
    assert "zero-shot (student argmax, shared classes), logits per-speaker norm" in report
    assert "eval/zero_shot_spknorm/speakers/ua_mean" in metrics and "eval/zero_shot/speakers/ua_mean" not in metrics
    assert "03+08: small_cnn (" in report
    # A student listed for a speaker it trained on (the shipped student heard 03) is refused, naming it.
    shipped = ROOT / "crossmodal" / "assets" / "student_cpu.safetensors"
    bad = _cfg("eval_emodb", emodb_root, tmp_path / "unused.pt", f"benchmark.student_per_fold={{03+10: '{shipped}'}}")
    with pytest.raises(ConfigError, match=r"student_per_fold\['03\+10'\]: .*student_cpu.safetensors trained on speaker\(s\) 03 \(its train_speakers\)"):
        run(bad, RunFolder(bad, run_dir))



def test_external_eval_table_over_seeds(tmp_path: Path) -> None:
    """experiments/external_eval/plot.py: the runs of one evaluation (one per seed) as a table with a
    t-interval over them, the per-speaker-norm rows titled as such, and the bar chart."""
    runs = []
    for seed, (logits, egemaps) in enumerate([(0.48, 0.61), (0.50, 0.61), (0.46, 0.61)]):
        run_dir = tmp_path / f"seed{seed}"
        run_dir.mkdir()
        (run_dir / "config.yaml").write_text("benchmark:\n  corpus: emodb\n")
        metrics = {"eval/probe_logits/speakers/ua_mean": logits, "eval/probe_logits/speakers/ua_std": 0.05,
                   "eval/egemaps/speakers/ua_mean": egemaps, "eval/probe_logits_spknorm/speakers/ua_mean": logits + 0.1}
        (run_dir / "metrics.json").write_text(json.dumps(metrics))
        runs.append(str(run_dir))
    sys.path.insert(0, str(ROOT / "experiments" / "external_eval"))
    try:
        import plot
    finally:
        sys.path.pop(0)
    assert plot.main([*runs, "--labels", "s0", "s1", "s2", "--out", str(tmp_path / "ua.png"), "--table", str(tmp_path / "seeds.md")]) == 0
    lines = (tmp_path / "seeds.md").read_text().splitlines()
    assert lines[0] == "| method | protocol | s0 | s1 | s2 | mean UA % | 95 % t-interval over runs |"
    row = next(line for line in lines if line.startswith("| probe on student logits (paper) | speaker-independent"))
    assert "| 48.0 | 50.0 | 46.0 | **48.0** | [43.0, 53.0] |" in row  # mean 48, sem 1.155, t(2) 4.303
    assert "| eGeMAPSv02 + LR | speaker-independent | 61.0 | 61.0 | 61.0 | **61.0** | [61.0, 61.0] |" in lines
    assert any(line.startswith("| probe on student logits (paper), per-speaker norm | speaker-independent") for line in lines)
    assert (tmp_path / "ua.png").stat().st_size > 1000
    with pytest.raises(SystemExit, match="metrics.json: missing"):
        plot.main([str(tmp_path)])


# ----------------------------------------------------------------------------- features: batches, processes, cache, speech

DEMO_WAV = ROOT / "crossmodal" / "assets" / "demo" / "emodb" / "wav"
BUCKET = 400 + 160 * 150  # samples of a 151-frame clip of the 25 ms / 10 ms front-end; up to +159 gives 151 frames too


def _speech_layout(out: Path, count: int = 12) -> list[Clip]:
    """Real EmoDB speech (the shipped demo clips, 2 s each) as a small corpus: six clips cut to lengths
    that share one front-end frame count (a padded batch), the others to lengths of their own."""
    sources = sorted(DEMO_WAV.glob("*.flac"))[:count]
    clips = []
    for i, source in enumerate(sources):
        wave, rate = sf.read(str(source), dtype="float32")
        assert rate == 16000 and len(wave) >= 32000
        wave = wave[: BUCKET + 30 * i] if i < 6 else wave[: 32000 - 700 * (i - 6)]
        path = out / f"s{i % 3}" / f"clip{i:02d}.wav"
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(str(path), wave, rate)
        clips.append(Clip(path, f"s{i % 3}", "anger", "anger", "emodb"))
    return clips


def _students():
    from crossmodal.inference import load_student
    from crossmodal.tasks.evaluate import random_init_student

    student = load_student(None)
    return [student, random_init_student(student, 0)]


def test_batched_students_and_parallel_features_equal_per_clip(tmp_path):
    """Students on padded batches of equal frame counts, eGeMAPS/MFCC in 2 worker processes: the same
    numbers as the per-clip loop this replaced (the shipped student and its random-init twin)."""
    from crossmodal.eval.baselines import EgemapsExtractor, MfccExtractor
    from crossmodal.io.audio import load_audio
    from crossmodal.tasks.evaluate import extract_features

    clips = _speech_layout(tmp_path / "corpus")
    students = _students()
    outputs, kept, failures, reasons = extract_features(students, clips, strict=False, desc="test", baselines=["egemaps", "mfcc"],
                                                        workers=2, batch_clips=4)
    assert kept == list(range(len(clips))) and not failures and not reasons
    egemaps, mfcc = EgemapsExtractor(), MfccExtractor()
    for i, clip in enumerate(clips):
        wave = load_audio(clip.path)
        with torch.inference_mode():
            for student, out in zip(students, outputs):
                logits, embedding = student(torch.from_numpy(wave)[None])
                np.testing.assert_allclose(out["logits"][i], logits[0].numpy(), atol=1e-5, rtol=0)
                np.testing.assert_allclose(out["embedding"][i], embedding[0].numpy(), atol=1e-5, rtol=0)
        np.testing.assert_allclose(outputs[0]["egemaps"][i], egemaps(wave), rtol=1e-9, atol=1e-9)
        np.testing.assert_allclose(outputs[0]["mfcc"][i], mfcc(wave), rtol=1e-9, atol=1e-9)


def test_baseline_features_are_cached_and_follow_the_listing(tmp_path, monkeypatch):
    """The first evaluation writes the fingerprinted set, the second reuses it without computing a
    feature, and a changed listing (a clip added) or other features make a new set."""
    import crossmodal.tasks.evaluate as evaluate
    from crossmodal.pipeline.cache import read_manifest

    corpus = tmp_path / "corpus"
    clips = _speech_layout(corpus, count=8)
    students = _students()[:1]

    def evaluate_once(clips, names=("egemaps", "mfcc")):
        with evaluate.baseline_feature_set(tmp_path / "data", "emodb", str(corpus), clips, list(names)) as cached:
            outputs, kept, _, _ = evaluate.extract_features(students, clips, False, "test", list(names), cached=cached.rows, workers=1)
            cached.save(clips, kept, outputs[0], list(names))
        return cached, outputs[0]

    first, computed = evaluate_once(clips)
    assert not first.reused and (first.folder / "features.safetensors").is_file()
    assert first.folder.parent == tmp_path / "data" / "eval_features" and first.folder.name.startswith("emodb-")
    manifest = read_manifest(first.folder)
    assert manifest["meta"]["fingerprint"]["settings"]["features"]["egemaps"]["opensmile"] and len(manifest["clips"]) == 8

    class Refused:
        def __init__(self):
            raise AssertionError("a cached feature was computed again")

    monkeypatch.setattr(evaluate, "BASELINE_EXTRACTORS", {"egemaps": Refused, "mfcc": Refused})
    monkeypatch.setattr(evaluate, "_EXTRACTORS", {})
    second, reused = evaluate_once(list(reversed(clips)))  # the same clips in another order: the same set
    assert second.reused and second.folder == first.folder and "reused from" in second.note()
    for name in ("egemaps", "mfcc"):
        np.testing.assert_array_equal(reused[name], computed[name][::-1])
    monkeypatch.undo()

    # A clip rewritten in place (same name, new contents and mtime): the listing differs, the set is not reused.
    wave, rate = sf.read(str(clips[7].path), dtype="float32")
    sf.write(str(clips[7].path), wave[: len(wave) // 2], rate)
    os.utime(clips[7].path, ns=(1, 1))
    third, rewritten = evaluate_once(clips)
    assert not third.reused and third.folder != first.folder
    assert not np.array_equal(rewritten["mfcc"][7], computed["mfcc"][7]) and np.array_equal(rewritten["mfcc"][:7], computed["mfcc"][:7])
    # Another clip in the folder (the listing changes, though the clips evaluated do not), other features: new sets.
    sf.write(str(corpus / "s0" / "new.wav"), wave, rate)
    fourth, _ = evaluate_once(clips)
    fifth, _ = evaluate_once(clips, names=("mfcc",))
    assert len({first.folder, third.folder, fourth.folder, fifth.folder}) == 4 and not (fourth.reused or fifth.reused)


def test_clips_without_speech_are_skips_or_errors(tmp_path, monkeypatch):
    """The evaluate side of the speech-presence check: a clip the detector refuses is a skip counted
    under 'no speech' with its reason, and an error under strict=true."""
    import crossmodal.tasks.evaluate as evaluate

    clips = _speech_layout(tmp_path / "corpus", count=7)
    refused = str(clips[6].path)
    monkeypatch.setattr(evaluate, "no_speech", lambda wave, where: f"no speech found in {where}: 0 % of frames voiced" if where == refused else None)
    students = _students()[:1]
    _, kept, failures, reasons = evaluate.extract_features(students, clips, False, "test", workers=1)
    assert kept == list(range(6)) and reasons == {"no speech": 1}
    assert failures == [(refused, f"no speech found in {refused}: 0 % of frames voiced")]
    with pytest.raises(CorpusError, match=r"no speech found in .*clip06.wav.*strict=true"):
        evaluate.extract_features(students, clips, True, "test", workers=1)
