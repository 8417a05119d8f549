"""experiments/external_eval/judge.py: a study's students judged on a RAVDESS layout, end to end (each
student through `python -m crossmodal.run experiment=eval_ravdess`), resumable, with its table and figure."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from test_corpora import build_ravdess
from test_predict import tiny_student_file

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "experiments" / "external_eval"))
import judge  # noqa: E402


def test_judge_a_sweep_on_ravdess(emodb_root, tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)  # the evaluations run `python -m crossmodal.run` from the project, as a user does
    source = build_ravdess(emodb_root, tmp_path / "ravdess", per_speaker=2)
    sweep = tmp_path / "sweep" / "agreement1"
    for seed in (0, 1):
        (sweep / f"fold{seed}-seed0").mkdir(parents=True)
        tiny_student_file(sweep / f"fold{seed}-seed0" / "student.safetensors", seed=seed)
    (sweep / "fold0-seed1").mkdir()
    tiny_student_file(sweep / "fold0-seed1" / "student.safetensors", seed=2)  # left out by --seeds 0
    out = tmp_path / "out"
    args = ["p=1=" + str(sweep), "--source", str(source), "--out", str(out), "--seeds", "0",
            "--override", "benchmark.folds=4", "--override", "benchmark.Cs=[0.1,10.0]", "--override", "benchmark.workers=1"]
    assert judge.main(args) == 0
    result = json.loads((out / "ravdess_dev.json").read_text())
    (recipe,) = result["recipes"]
    assert recipe["label"] == "p=1" and recipe["runs"] == 2 and sorted(recipe["per_run"]) == ["fold0-seed0", "fold1-seed0"]
    for row in ("zero_shot", "probe_embedding", "random_init_embedding"):
        assert recipe[row]["low"] <= recipe[row]["mean"] <= recipe[row]["high"] and 0.0 <= recipe[row]["mean"] <= 1.0
    table = (out / "ravdess_dev.md").read_text()
    assert "| p=1 | 2 |" in table and (out / "ravdess_dev.png").stat().st_size > 0
    # resumable: a second call reuses every finished evaluation (none runs again); a second recipe is compared with
    # the first, paired by student (here the same students: "p_1" is the run folder of "p=1", so nothing new runs)
    stamps = {p: p.stat().st_mtime_ns for p in (out / "ravdess_dev_runs").rglob("metrics.json")}
    assert len(stamps) == 2
    assert judge.main([*args[:1], "p_1=" + str(sweep), *args[1:]]) == 0
    assert stamps == {p: p.stat().st_mtime_ns for p in (out / "ravdess_dev_runs").rglob("metrics.json")}
    again = json.loads((out / "ravdess_dev.json").read_text())["recipes"][1]
    for change in again["vs_first"].values():
        assert change["pairs"] == 2 and change["mean"] == 0.0
    assert "| p_1 | 2 |" in (out / "ravdess_dev.md").read_text() and "+0.0 [+0.0, +0.0] (2)" in (out / "ravdess_dev.md").read_text()


def test_paired_recipes_fold_by_fold(tmp_path):
    """experiments/external_eval/paired.py: recipes' evaluation runs (one per seed) paired by (run, fold)."""
    import paired

    def run(name: str, embedding: list[float], twin: list[float]) -> Path:
        folder = tmp_path / name
        folder.mkdir()
        rows = {"zero_shot": [0.5, 0.5, 0.5], "probe_embedding": embedding, "random_init_embedding": twin}
        (folder / "fold_scores.json").write_text(json.dumps({f"{k}/speakers": {"ua": v, "wa": v} for k, v in rows.items()}))
        return folder

    base = [run("b0", [0.4, 0.5, 0.6], [0.5, 0.5, 0.5]), run("b1", [0.4, 0.4, 0.4], [0.5, 0.5, 0.5])]
    other = [run("o0", [0.5, 0.6, 0.7], [0.5, 0.5, 0.5]), run("o1", [0.5, 0.5, 0.5], [0.5, 0.5, 0.5])]
    out = tmp_path / "out"
    assert paired.main(["base=" + ",".join(map(str, base)), "other=" + ",".join(map(str, other)), "--out", str(out)]) == 0
    first, second = json.loads((out / "paired.json").read_text())["recipes"]
    assert first["pairs"] == second["pairs"] == 6 and "embedding_vs_first" not in first
    assert second["embedding_vs_first"]["mean"] == pytest.approx(0.1) and second["embedding_vs_first"]["pairs"] == 6
    assert first["student_minus_twin"]["mean"] == pytest.approx(-0.05)
    assert "| other | 6 |" in (out / "paired.md").read_text() and (out / "paired.png").stat().st_size > 1000
    with pytest.raises(SystemExit):  # one run against two: no pairing by seed
        paired.main(["base=" + str(base[0]), "other=" + ",".join(map(str, other)), "--out", str(out)])
