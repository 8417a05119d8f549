"""One HTML page per run folder (``report.html``) and an index per sweep folder (``index.html``):
what they show, how they are built and the commands are in experiments/report/README.md.

    report_folder("logs/demo/runs/2026-12-02_10-00-00")     # -> [.../report.html]
"""
from __future__ import annotations

from pathlib import Path

from crossmodal.report.content import is_run_folder
from crossmodal.report.run_page import REPORT_NAME, write_report
from crossmodal.report.sweep import INDEX_NAME, find_jobs, is_sweep_folder, write_index

__all__ = ["INDEX_NAME", "REPORT_NAME", "find_jobs", "is_run_folder", "is_sweep_folder", "report_folder", "write_index", "write_report"]


def report_folder(path: str | Path, *, rebuild: bool = False) -> list[Path]:
    """The report of a run folder, or the index (and the job reports it lacks, or all with
    ``rebuild``) of a sweep folder; the pages written."""
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: no such folder; give a run folder or a sweep folder")
    if is_sweep_folder(path):
        return [write_index(path, job_reports="all" if rebuild else "missing")]
    if is_run_folder(path):
        return [write_report(path)]
    raise FileNotFoundError(f"{path} is neither a run folder (metrics.json, config.yaml, .hydra/ or run.log) nor a "
                            "sweep folder (multirun.yaml or run folders below it)")
