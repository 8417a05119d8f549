"""``index.html`` of a sweep (Hydra multirun) folder: one row per job, its overrides, its headline
metrics (the best of each column in bold) and a link to the job's report.html."""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from crossmodal.report import content as c
from crossmodal.report.html import details, esc, fmt, href, note, page, pre, table
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
    return sorted(jobs, key=lambda p: _natural(p.relative_to(sweep_dir).as_posix()))


def _natural(text: str) -> list[Any]:
    import re

    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", text)]


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
        config = c.read_yaml(job / "config.yaml", problems) or c.read_yaml(job / ".hydra" / "config.yaml", problems) or {}
        metrics = c.read_metrics(job, problems)
        first = config.get("optimized_metric") if isinstance(config, dict) else None
        rows.append((job, c.overrides(job, problems), c.headline(metrics, first), report.is_file()))
    out = sweep_dir / INDEX_NAME
    write_text(out, _page(sweep_dir, rows, problems))
    log.info("report: sweep index of %d jobs -> %s", len(jobs), out)
    return out


def _page(sweep_dir: Path, rows, problems: c.Problems) -> str:
    all_overrides = [set(o) for _, o, _, _ in rows]
    common = set.intersection(*all_overrides) if all_overrides else set()
    varied_keys: list[str] = []
    for _, overrides, _, _ in rows:
        varied_keys += [o.split("=", 1)[0] for o in overrides if o not in common and o.split("=", 1)[0] not in varied_keys]
    metric_keys: list[str] = []
    for _, _, metrics, _ in rows:
        metric_keys += [k for k in metrics if k not in metric_keys]
    columns = ["job (its report)", "status", *varied_keys, *metric_keys]
    body_rows = []
    for job, overrides, metrics, has_report in rows:
        by_key = dict(o.split("=", 1) if "=" in o else (o, "") for o in overrides)
        name = job.relative_to(sweep_dir).as_posix()
        link = f'<a href="{href(job / REPORT_NAME, sweep_dir)}">{esc(name)}</a>' if has_report else esc(name)
        status = "finished" if (job / "metrics.json").is_file() else "no metrics.json yet"
        body_rows.append([link, esc(status), *(esc(by_key.get(k, "")) for k in varied_keys),
                          *(esc(fmt(metrics.get(k))) for k in metric_keys)])
    offset = 2 + len(varied_keys)
    best = _best(rows, metric_keys, offset=offset)
    summary = [f"<p>{len(rows)} jobs in <code>{esc(sweep_dir.resolve())}</code>. Bold: the best value of a column "
               "(highest AUC/UA/WA/accuracy, lowest loss).</p>"]
    if common:
        summary.append("<p>Every job: " + " ".join(f"<code>{esc(o)}</code>" for o in sorted(common)) + "</p>")
    multirun = sweep_dir / "multirun.yaml"
    sweeper = ""
    if multirun.is_file():
        params = ((((c.read_yaml(multirun, problems) or {}).get("hydra") or {}).get("sweeper") or {}).get("params")) or {}
        if params:
            sweeper = "<h3>Swept parameters (multirun.yaml)</h3>" + table(["key", "values"], [[k, v] for k, v in params.items()])
        sweeper += details("multirun.yaml", pre(multirun.read_text(encoding="utf-8", errors="replace")))
    sections = [
        ("problems", "Unreadable files", "".join(note(p) for p in problems.items)),
        ("jobs", "Jobs", "".join(summary) + "<div class='wide-table'>"
         + table(columns, body_rows, raw_columns=range(len(columns)), best=best, numeric_columns=range(offset, len(columns))) + "</div>"),
        ("sweep", "Sweep", sweeper),
    ]
    return page(f"sweep {sweep_dir.name}", str(sweep_dir.resolve()), sections)


def _best(rows, metric_keys: list[str], offset: int) -> set[tuple[int, int]]:
    best = set()
    for j, key in enumerate(metric_keys):
        direction = c.better(key)
        values = [(m.get(key), i) for i, (_, _, m, _) in enumerate(rows) if isinstance(m.get(key), (int, float))]
        if direction and len(values) > 1:
            target = (max if direction == "max" else min)(v for v, _ in values)
            best |= {(i, offset + j) for v, i in values if v == target}
    return best
