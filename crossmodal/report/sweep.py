"""``index.html`` of a sweep (Hydra multirun) folder: one row per job, its overrides, its headline
metrics (the best of each column in bold) and a link to the job's report.html (``templates/sweep.html``)."""
from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path
from typing import Any

from crossmodal.report import content as c
from crossmodal.report.render import href, render
from crossmodal.report.run_page import REPORT_NAME, write_report
from crossmodal.utils.atomic import write_text

log = logging.getLogger(__name__)

INDEX_NAME = "index.html"


def find_jobs(sweep_dir: Path) -> list[Path]:
    """Run folders below ``sweep_dir`` (Hydra's ``sweep.subdir`` may nest them, e.g. ``name/fold0-seed0``)."""
    jobs = []
    for folder, subdirs, _ in os.walk(sweep_dir):
        path = Path(folder)
        if path != sweep_dir and c.is_run_folder(path):
            jobs.append(path)
            subdirs[:] = []
            continue
        subdirs[:] = sorted(d for d in subdirs if d not in c.NOT_A_RUN_PART and not d.startswith("."))

    def natural(job: Path) -> list[Any]:  # job10 after job9
        return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", job.relative_to(sweep_dir).as_posix())]
    return sorted(jobs, key=natural)


def is_sweep_folder(path: Path) -> bool:
    return path.is_dir() and ((path / "multirun.yaml").is_file() or (not c.is_run_folder(path) and bool(find_jobs(path))))


def write_index(sweep_dir: str | Path, *, job_reports: str = "missing") -> Path:
    """Write ``<sweep_dir>/index.html``. ``job_reports``: "missing" writes the reports jobs lack,
    "all" rewrites every job's report, "none" writes none (a job's own run writes its report)."""
    sweep_dir = Path(sweep_dir)
    jobs = find_jobs(sweep_dir) if sweep_dir.is_dir() else []
    if not jobs:
        raise FileNotFoundError(f"{sweep_dir} holds no run folders (folders with metrics.json, config.yaml, .hydra/ "
                                "or run.log): give a sweep folder (hydra.sweep.dir, with multirun.yaml) or a run folder")
    log.info("report: sweep %s, %d jobs", sweep_dir, len(jobs))
    problems = c.Problems()
    rows = []
    for number, job in enumerate(jobs, 1):
        report = job / REPORT_NAME
        if job_reports == "all" or job_reports == "missing" and not report.is_file():
            log.info("report: job %d/%d %s", number, len(jobs), job.relative_to(sweep_dir))
            try:
                write_report(job)
            except (OSError, ValueError) as exn:
                problems.add(job, exn)
        name = c.config_name(job)
        config = (c.read_data(job, name, problems) if name else None) or {}
        metrics = c.read_metrics(job, problems)
        first = config.get("optimized_metric") if isinstance(config, dict) else None
        rows.append((job, c.overrides(job, problems), c.headline(metrics, first), c.inside(report, sweep_dir)))
    out = sweep_dir / INDEX_NAME
    write_text(out, render("sweep.html", **_page(sweep_dir, rows, problems)))
    log.info("report: sweep index of %d jobs -> %s", len(jobs), out)
    return out


def _page(sweep_dir: Path, rows, problems: c.Problems) -> dict[str, Any]:
    all_overrides = [set(o) for _, o, _, _ in rows]
    common = set.intersection(*all_overrides) if all_overrides else set()
    varied = (o.split("=", 1)[0] for _, overrides, _, _ in rows for o in overrides if o not in common)
    varied_keys = list(dict.fromkeys(varied))
    metric_keys = list(dict.fromkeys(k for _, _, metrics, _ in rows for k in metrics))
    jobs = []
    for job, overrides, metrics, has_report in rows:
        by_key = dict(o.split("=", 1) if "=" in o else (o, "") for o in overrides)
        jobs.append({"name": job.relative_to(sweep_dir).as_posix(), "report": href(job / REPORT_NAME, sweep_dir) if has_report else None,
                     "status": _status(job),
                     "varied": [by_key.get(k, "") for k in varied_keys], "metrics": [metrics.get(k) for k in metric_keys]})
    multirun = c.read_text(sweep_dir, "multirun.yaml", problems)
    sweeper = ((c.read_data(sweep_dir, "multirun.yaml", problems) or {}).get("hydra") or {}).get("sweeper") or {}
    params = sweeper.get("params") or {}
    sections = [("jobs", "Jobs")] + ([("sweep", "Sweep")] if multirun is not None else [])
    return {"title": f"sweep {sweep_dir.name}", "subtitle": str(sweep_dir.resolve()), "problems": problems.items,
            "sections": ([("problems", "Unreadable files")] if problems.items else []) + sections,
            "jobs": jobs, "common": sorted(common), "columns": ["job (its report)", "status", *varied_keys, *metric_keys],
            "best": _best([m for _, _, m, _ in rows], metric_keys), "multirun": multirun, "params": list(params.items())}


def _status(job: Path) -> str:
    if (job / "failed.json").is_file():
        try:
            return "failed: " + str(json.loads((job / "failed.json").read_text()).get("error", "")).splitlines()[0]
        except (OSError, ValueError, IndexError):
            return "failed (failed.json unreadable)"
    return "finished" if (job / "metrics.json").is_file() else "no metrics.json yet"


def _best(metrics: list[dict[str, Any]], metric_keys: list[str]) -> set[tuple[int, int]]:
    """(job, metric column) of the best value of each metric whose direction is known."""
    best = set()
    for j, key in enumerate(metric_keys):
        direction = c.better(key)
        values = [(m.get(key), i) for i, m in enumerate(metrics) if isinstance(m.get(key), (int, float))]
        if direction and len(values) > 1:
            target = (max if direction == "max" else min)(v for v, _ in values)
            best |= {(i, j) for v, i in values if v == target}
    return best
