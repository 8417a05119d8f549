"""The performance benchmarks (experiments/perf/run_all.py, `make bench`) run and print their lines.

Tiny sizes, so the figures mean nothing and nothing here checks a timing: only that each benchmark
runs end to end on real (or, without ../shared, synthesised) data, prints its line with its target,
and returns finite positive figures. Both run under `make test-full`; the full benchmark is `make bench`.
"""
from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest

PERF = Path(__file__).resolve().parents[1] / "experiments" / "perf"


@pytest.fixture(scope="module")
def run_all():
    sys.path.insert(0, str(PERF))
    try:
        import run_all

        yield run_all
    finally:
        sys.path.remove(str(PERF))


def _positive(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value) and value > 0


@pytest.mark.slow  # ~55 s (P2 starts loader workers three times); the fast suite stays under 8 min
def test_in_process_benchmarks_run_and_print(run_all, tmp_path, capsys):
    results = run_all.main(["--tiny", "--only", "P2,P3,P5", "--work-dir", str(tmp_path), "--json", str(tmp_path / "r.json")])
    out = capsys.readouterr().out
    assert "P2 input pipeline" in out and "target: 1 worker keeps up" in out and "on paper, GPU" in out
    assert "P3 teacher cache, teacher_cpu" in out and "P5 front-end" in out
    assert results["data"]["segments"] == run_all.DATA["tiny"].segments
    for workers in (0, 1, 2):
        figures = results["P2"][f"workers_{workers}"]
        assert _positive(figures["loader_samples_per_s"]) and _positive(figures["step_samples_per_s"])
    assert _positive(results["P2"]["flops_per_step"]["vggvox"]) and results["P2"]["flops_per_step"]["vggvox"] > results["P2"]["flops_per_step"]["distill_cpu"]
    cached = results["P3"]["teacher_cpu (shipped)"]
    assert _positive(cached["cached_samples_per_s"]) and _positive(cached["online_samples_per_s"])
    assert all(_positive(v["batched_samples_per_s"]) for k, v in results["P5"].items() if isinstance(v, dict))
    assert (tmp_path / "r.json").exists()


@pytest.mark.slow
def test_subprocess_benchmarks_run_and_print(run_all, tmp_path, capsys):
    """P1 (python -m crossmodal.run vs a bare loop), P4 (fresh processes) and P6 (bench_extract.py)."""
    results = run_all.main(["--tiny", "--only", "P1,P4,P6", "--work-dir", str(tmp_path)])
    out = capsys.readouterr().out
    assert "P1 framework overhead" in out and "P4 streaming memory" in out and "P6 extraction" in out
    assert _positive(results["P1"]["ratio"]) and _positive(results["P1"]["cpu_ratio"])
    assert results["P4"]["10N"] == 10 * results["P4"]["N"] and _positive(results["P4"]["ratio"])


@pytest.mark.slow
def test_teacher_benchmark_runs_on_demo_faces(tmp_path, capsys):
    """bench_teacher.py (issue 22 goal 2) on a few shipped demo faces: its lines, both rates, the check's figures."""
    sys.path.insert(0, str(PERF))
    try:
        import bench_teacher
    finally:
        sys.path.remove(str(PERF))
    result = bench_teacher.main(["--ferplus", str(tmp_path / "absent"), "--faces", "32", "--batch-size", "16", "--repeats", "1",
                                 "--check"])
    out = capsys.readouterr().out
    assert "Teacher new / old" in out and "target >= 4x" in out and "Teacher check on all" in out
    assert "demo" in result["source"] and result["faces"] == 32
    assert _positive(result["images_per_s"]["old"]) and _positive(result["images_per_s"]["new"])
    assert result["check"]["new"]["max_abs_diff"] <= 1e-4 and result["check"]["new"]["argmax_agreement"] == 1.0
