"""``report.html`` of one run folder: summary, metrics, figures, gallery, tables, model card, config
(the page is ``templates/run.html``; this module gathers what it shows)."""
from __future__ import annotations

import csv
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from crossmodal.report import content as c
from crossmodal.report.render import distribution_svg, href, render
from crossmodal.utils.atomic import write_text

log = logging.getLogger(__name__)

REPORT_NAME = "report.html"
MAX_TABLE_ROWS = 200


@dataclass
class File:
    """A file of the run as the page links it: ``src`` relative to the page, ``name`` as shown."""

    src: str
    name: str
    size: str = ""

    @classmethod
    def of(cls, path: Path, run_dir: Path, *, size_unit: str = "", name: str | None = None) -> File:
        size = ""
        if size_unit:
            scale = 1e6 if size_unit == "MB" else 1e3
            size = f"{path.stat().st_size / scale:.1f} {size_unit}"
        return cls(href(path, run_dir), name or path.relative_to(run_dir).as_posix(), size)


@dataclass
class Shown:
    src: str
    caption: str
    name: str


def write_report(run_dir: str | Path) -> Path:
    """Write ``<run_dir>/report.html`` (atomically) from the files the run left there; return its path."""
    run_dir = Path(run_dir)
    if not c.is_run_folder(run_dir):
        raise FileNotFoundError(f"{run_dir} is not a run folder: it has none of {', '.join(c.RUN_MARKERS)}. "
                                "Give the folder a run wrote (python -m crossmodal.run prints it at the end)")
    log.info("report: reading %s", run_dir)
    out = run_dir / REPORT_NAME
    page = run_page(run_dir)
    write_text(out, render("run.html", **page))
    log.info("report: %d figures, %d gallery clips, %d model files -> %s", page["n_figures"], len(page["clips"]),
             len(page["models"]), out)
    return out


def run_page(run_dir: Path) -> dict[str, Any]:
    problems = c.Problems()
    metrics = c.read_metrics(run_dir, problems)
    config_name = c.config_name(run_dir)
    config = c.read_data(run_dir, config_name, problems) if config_name else None
    config = config if isinstance(config, dict) else {}
    figures = c.figures(run_dir, problems)
    clips = c.gallery_clips(run_dir, problems)
    cards = c.model_cards(run_dir, problems)
    models = [{"file": File.of(path, run_dir, size_unit="MB"), "header": card} for path, card in cards]
    tables, table_files = _tables(run_dir, problems)
    checkpoints = [File.of(p, run_dir, size_unit="MB", name=p.name) for p in c.run_files(run_dir, problems, "checkpoints/*.ckpt")]
    shown = {run_dir / REPORT_NAME, run_dir / "metrics.json", run_dir / "run.log", *table_files, *(p for p, _ in cards)}
    if config_name:
        shown.add(run_dir / config_name)
    other_files = [File.of(p, run_dir, size_unit="kB") for p in c.run_files(run_dir, problems, "*")
                   if not p.name.startswith(".") and p not in shown and p.suffix.lower() not in c.IMAGE_SUFFIXES]
    log_tail = c.log_tail(run_dir)
    page: dict[str, Any] = {
        "title": f"{config.get('name') or run_dir.parent.name} / {run_dir.name}",
        "subtitle": str(run_dir.resolve()),
        "summary": _summary_rows(run_dir, config, problems),
        "overrides": c.overrides(run_dir, problems),
        "wandb": _wandb(run_dir, problems),
        "metrics": metrics,
        "headline": list(c.headline(metrics, config.get("optimized_metric")).items()),
        "summary_md": c.read_text(run_dir, "summary.md", problems),
        "metric_tables": c.metric_tables(metrics),
        "figure_groups": _figure_groups([f for f in figures if f.kind != "samples"], run_dir),
        "n_figures": len(figures),
        "clips": [_clip(clip, i, run_dir) for i, clip in enumerate(clips)],
        "with_bars": any(clip.teacher for clip in clips),  # the cards show what the gallery figure shows
        "gallery_figures": [_shown(f, run_dir) for f in figures if f.kind == "samples"],
        "tables": tables,
        "models": models,
        "checkpoints": checkpoints,
        "config": {"file": File.of(run_dir / config_name, run_dir), "text": c.read_text(run_dir, config_name, problems)}
        if config_name else None,
        "log": {"file": File.of(run_dir / "run.log", run_dir), "tail": log_tail} if log_tail else None,
        "other_files": other_files,
    }
    page["problems"] = problems.items
    present = {"problems": page["problems"], "summary": True, "metrics": metrics, "figures": page["figure_groups"],
               "gallery": page["clips"] or page["gallery_figures"], "tables": tables, "models": models or checkpoints,
               "config": page["config"], "log": page["log"], "files": other_files}
    page["sections"] = [(anchor, heading) for anchor, heading in SECTIONS if present[anchor]]
    return page


SECTIONS = (("problems", "Unreadable files"), ("summary", "Summary"), ("metrics", "Metrics"), ("figures", "Figures"),
            ("gallery", "Sample gallery"), ("tables", "Tables"), ("models", "Model files"), ("config", "Config"),
            ("log", "Log"), ("files", "Other files"))


def _summary_rows(run_dir: Path, config: dict[str, Any], problems: c.Problems) -> list[tuple[str, str]]:
    hydra = c.read_data(run_dir, ".hydra/hydra.yaml", problems) or {}
    choices = ((hydra.get("hydra") or {}).get("runtime") or {}).get("choices") or {}
    rows = [("folder", run_dir.name), ("name", config.get("name", "\u2014")), ("task", config.get("task", "\u2014")),
            ("experiment", choices.get("experiment", "\u2014")), ("seed", config.get("seed"))]
    start, end = c.log_times(run_dir)
    if start and end:
        rows.append(("started", start.isoformat(sep=" ")))
        rows.append(("last log line", f"{end.isoformat(sep=' ')} ({_duration((end - start).total_seconds())} after the start)"))
    return [(key, "\u2014" if value is None else str(value)) for key, value in rows]


def _wandb(run_dir: Path, problems: c.Problems) -> str | None:
    info = c.read_data(run_dir, "wandb_run.json", problems, json.loads)
    if info is not None and not isinstance(info, dict):
        problems.add(run_dir / "wandb_run.json", ValueError("expected a JSON object"))
    if isinstance(info, dict):
        return f"{info.get('project')}/{info.get('id')} ({info.get('name')}, {info.get('mode')})"
    return None


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min" if hours else f"{minutes} min {secs:02d} s"


def _shown(figure: c.Figure, run_dir: Path) -> Shown:
    return Shown(href(figure.path, run_dir), figure.caption, figure.path.name)


def _figure_groups(figures: list[c.Figure], run_dir: Path) -> list[tuple[str, list[Shown]]]:
    kinds = {k for k, _ in c.SECTIONS}
    groups = []
    for kind, heading in c.SECTIONS:
        group = [_shown(f, run_dir) for f in figures if f.kind == kind or not kind and f.kind not in kinds]
        if group:
            groups.append((heading, group))
    return groups


def _clip(clip: c.Clip, index: int, run_dir: Path) -> dict[str, Any]:
    audio = None
    if clip.audio:
        audio = {"src": href(clip.audio, run_dir), "type": c.AUDIO_TYPES.get(clip.audio.suffix.lower(), "audio/flac")}
    bars = None
    if clip.teacher and clip.student and len(clip.teacher) == len(clip.student):
        bars = distribution_svg(clip.teacher, clip.student, clip.emotions, key=str(index))
    return {"title": clip.title, "audio": audio, "frames": [href(p, run_dir) for p in clip.frames], "bars": bars}


def _tables(run_dir: Path, problems: c.Problems) -> tuple[list[dict[str, Any]], set[Path]]:
    """CSV and Markdown tables the run wrote (summary.md is in the summary)."""
    paths = c.run_files(run_dir, problems, "*.md", "tables/*.md", "*.csv", "tables/*.csv", "plots/*.csv")
    paths = [p for p in paths if p.name != "summary.md"]
    out = []
    for path in paths:
        text = path.read_text(encoding="utf-8", errors="replace")
        entry: dict[str, Any] = {"file": File.of(path, run_dir), "markdown": None, "columns": [], "rows": [], "total": 0}
        if path.suffix == ".csv":
            rows = list(csv.reader(text.splitlines()))
            if rows:
                entry.update(columns=rows[0], rows=rows[1:MAX_TABLE_ROWS + 1], total=len(rows) - 1)
        else:
            entry["markdown"] = text
        out.append(entry)
    summary = {run_dir / "summary.md"} if c.inside(run_dir / "summary.md", run_dir) else set()
    return out, set(paths) | summary
