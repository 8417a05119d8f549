"""``report.html`` of one run folder: summary, metrics, figures, gallery, tables, model card, config."""
from __future__ import annotations

import csv
import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from crossmodal.report import content as c
from crossmodal.report.html import details, esc, figure, fmt, href, markdown, note, page, pre, table
from crossmodal.utils.atomic import write_text

log = logging.getLogger(__name__)

REPORT_NAME = "report.html"
TEACHER_COLOUR, STUDENT_COLOUR = "#4c72b0", "#dd8452"  # matplotlib's first two: the gallery figure's bars
MAX_TABLE_ROWS = 200


def write_report(run_dir: str | Path) -> Path:
    """Write ``<run_dir>/report.html`` (atomically) from the files the run left there; return its path."""
    run_dir = Path(run_dir)
    if not c.is_run_folder(run_dir):
        raise FileNotFoundError(f"{run_dir} is not a run folder: it has none of {', '.join(c.RUN_MARKERS)}. "
                                "Give the folder a run wrote (python -m crossmodal.run prints it at the end)")
    log.info("report: reading %s", run_dir)
    out = run_dir / REPORT_NAME
    problems = c.Problems()
    metrics = c.read_metrics(run_dir, problems)
    config_path, config_text = c.config_text(run_dir)
    config = c.read_yaml(config_path, problems) if config_path else None
    config = config if isinstance(config, dict) else {}
    figures = c.figures(run_dir)
    clips = c.gallery_clips(run_dir, problems)
    cards = c.model_cards(run_dir, problems)
    gallery_figures = [f for f in figures if f.kind == "samples"]
    shown: set[Path] = {out, run_dir / "metrics.json", run_dir / "run.log"} | ({config_path} if config_path else set())
    tables_html, table_files = _tables(run_dir, out.parent)
    shown |= table_files
    sections = [
        ("summary", "Summary", _summary(run_dir, config, metrics, cards, problems, out.parent)),
        ("metrics", "Metrics", _metrics(metrics)),
        ("figures", "Figures", _figures([f for f in figures if f.kind != "samples"], out.parent)),
        ("gallery", "Sample gallery", _gallery(clips, gallery_figures, out.parent)),
        ("tables", "Tables", tables_html),
        ("models", "Model files", _models(run_dir, cards, out.parent)),
        ("config", "Config", _config(run_dir, config_path, config_text, out.parent)),
        ("log", "Log", _log(run_dir, out.parent)),
        ("files", "Other files", _files(run_dir, shown | {p for p, _ in cards}, out.parent)),
    ]
    if problems.items:
        sections.insert(0, ("problems", "Unreadable files", "".join(note(p) for p in problems.items)))
    title = f"{config.get('name') or run_dir.parent.name} / {run_dir.name}"
    write_text(out, page(title, str(run_dir.resolve()), sections))
    log.info("report: %d figures, %d gallery clips, %d model files -> %s", len(figures), len(clips), len(cards), out)
    return out


# ----------------------------------------------------------------------------------------- sections


def _summary(run_dir: Path, config: Mapping[str, Any], metrics: Mapping[str, Any], cards, problems, page_dir: Path) -> str:
    hydra = c.read_yaml(run_dir / ".hydra" / "hydra.yaml", problems) or {}
    choices = ((hydra.get("hydra") or {}).get("runtime") or {}).get("choices") or {}
    start, end = c.log_times(run_dir)
    rows: list[list[Any]] = [
        ["folder", esc(run_dir.name)],
        ["name", esc(config.get("name", "\u2014"))],
        ["task", esc(config.get("task", "\u2014"))],
        ["experiment", esc(choices.get("experiment", "\u2014"))],
        ["seed", esc(fmt(config.get("seed")))],
    ]
    if start:
        rows.append(["started", esc(start.isoformat(sep=" "))])
        rows.append(["last log line", f"{esc(end.isoformat(sep=' '))} ({esc(_duration((end - start).total_seconds()))} after the start)"])
    extra = c.overrides(run_dir, problems)
    if extra:
        rows.append(["overrides", "<br>".join(f"<code>{esc(o)}</code>" for o in extra)])
    for path, card in cards:
        prov = card.get("provenance") or {}
        rows.append([f"model file ({esc(card.get('kind', '?'))})",
                     f'<a href="{href(path, page_dir)}">{esc(path.name)}</a> {esc((card.get("architecture") or {}).get("name", ""))}'
                     f"{', git ' + esc(prov['git_commit']) if prov.get('git_commit') else ''}"])
    wandb = run_dir / "wandb_run.json"
    if wandb.is_file():
        try:
            info = json.loads(wandb.read_text())
            rows.append(["W&B run", esc(f"{info.get('project')}/{info.get('id')} ({info.get('name')}, {info.get('mode')})")])
        except (OSError, ValueError) as exn:
            problems.add(wandb, exn)
    body = table(["", ""], rows, raw_columns=(0, 1))
    key = c.headline(metrics, config.get("optimized_metric"))
    if key:
        body += "<h3>Headline metrics</h3>" + table(["metric", "value"], [[k, v] for k, v in key.items()])
    elif not metrics:
        body += note("no metrics.json: the run stopped before writing its metrics (see the log below)")
    summary = run_dir / "summary.md"
    if summary.is_file():
        body += "<h3>summary.md</h3>" + markdown(summary.read_text(encoding="utf-8", errors="replace"))
    return body


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min" if hours else f"{minutes} min {secs:02d} s"


def _metrics(metrics: Mapping[str, Any]) -> str:
    if not metrics:
        return ""
    blocks = []
    for t in c.metric_tables(metrics):
        blocks.append(f"<div><h3>{esc(t.title)}</h3>{table(t.columns, t.rows)}</div>")
    return f'<div class="tables">{"".join(blocks)}</div>' + details(
        "metrics.json as written", pre(json.dumps(metrics, indent=1, sort_keys=True)))


def _figures(figures: list[c.Figure], page_dir: Path) -> str:
    if not figures:
        return ""
    out = []
    for kind, heading in c.SECTIONS:
        group = [f for f in figures if f.kind == kind or not kind and f.kind not in {k for k, _ in c.SECTIONS}]
        if group:
            out.append(f"<h3>{esc(heading)}</h3><div class='grid'>"
                       + "".join(figure(href(f.path, page_dir), f.caption, f.path.name) for f in group) + "</div>")
    return "".join(out)


def _gallery(clips: list[c.Clip], gallery_figures: list[c.Figure], page_dir: Path) -> str:
    if not clips and not gallery_figures:
        return ""
    out: list[str] = []
    intro = ""
    if clips and not any(clip.teacher for clip in clips):
        intro = ("<p class='muted'>The clips the gallery wrote; their face frames and the teacher's and "
                 "student's distributions are in the figure below.</p>")
    for clip in clips:
        parts = [f"<div><strong>{esc(clip.title)}</strong><br>"]
        if clip.audio:
            kind = c.AUDIO_TYPES.get(clip.audio.suffix.lower(), "audio/flac")
            parts.append(f'<audio controls preload="none" src="{href(clip.audio, page_dir)}" type="{kind}"></audio>')
        parts.append("</div>")
        if clip.frames:
            parts.append("<div class='frames'>" + "".join(
                f'<img src="{href(p, page_dir)}" alt="face frame {i + 1}">' for i, p in enumerate(clip.frames)) + "</div>")
        if clip.teacher and clip.student and len(clip.teacher) == len(clip.student):
            parts.append(distribution_svg(clip.teacher, clip.student, clip.emotions))
        out.append(f"<div class='clip'>{''.join(parts)}</div>")
    out = [intro + f"<div class='clips'>{''.join(out)}</div>"] if out else []
    if any(clip.teacher for clip in clips):  # the cards above already show what the gallery figure shows: link it
        links = ", ".join(f'<a href="{href(f.path, page_dir)}">{esc(f.path.name)}</a>' for f in gallery_figures)
        if links:
            out.append(f"<p class='muted'>The same clips as one figure: {links}</p>")
    else:
        out += [figure(href(f.path, page_dir), f.caption, f.path.name, wide=True) for f in gallery_figures]
    return "".join(out)


def distribution_svg(teacher: list[float], student: list[float], emotions: list[str]) -> str:
    """Teacher (face) vs student (voice) emotion distributions as an inline bar chart."""
    if len(emotions) != len(teacher):
        from crossmodal.emotions import EMOTIONS

        emotions = list(EMOTIONS) if len(EMOTIONS) == len(teacher) else [str(i) for i in range(len(teacher))]
    step, height, top = 56, 90, 16
    bars = []
    for i, (t, s) in enumerate(zip(teacher, student)):
        x = 30 + i * step
        for dx, value, colour in ((8, t, TEACHER_COLOUR), (26, s, STUDENT_COLOUR)):
            h = max(0.0, min(1.0, value)) * height
            bars.append(f'<rect x="{x + dx}" y="{top + height - h:.1f}" width="17" height="{h:.1f}" fill="{colour}">'
                        f"<title>{esc(emotions[i])}: {value:.3f}</title></rect>")
        bars.append(f'<text x="{x + 26}" y="{top + height + 12}" font-size="9" text-anchor="middle">{esc(emotions[i][:10])}</text>')
    width = 40 + len(teacher) * step
    legend = (f'<rect x="30" y="2" width="10" height="10" fill="{TEACHER_COLOUR}"/><text x="44" y="11" font-size="10">teacher (faces)</text>'
              f'<rect x="140" y="2" width="10" height="10" fill="{STUDENT_COLOUR}"/><text x="154" y="11" font-size="10">student (voice)</text>')
    axis = (f'<line x1="28" y1="{top + height}" x2="{width - 6}" y2="{top + height}" stroke="#888"/>'
            f'<text x="2" y="{top + 8}" font-size="9">1.0</text><text x="2" y="{top + height}" font-size="9">0</text>')
    return (f'<svg role="img" aria-label="teacher vs student emotion distribution" width="{width}" height="{top + height + 18}" '
            f'xmlns="http://www.w3.org/2000/svg">{legend}{axis}{"".join(bars)}</svg>')


def _tables(run_dir: Path, page_dir: Path) -> tuple[str, set[Path]]:
    files = sorted(run_dir.glob("*.md")) + sorted((run_dir / "tables").glob("*.md"))
    files += sorted(run_dir.glob("*.csv")) + sorted((run_dir / "tables").glob("*.csv")) + sorted((run_dir / "plots").glob("*.csv"))
    files = [f for f in files if f.name != "summary.md"]  # shown in the summary
    out = []
    for path in files:
        text = path.read_text(encoding="utf-8", errors="replace")
        if path.suffix == ".csv":
            rows = list(csv.reader(text.splitlines()))
            body = table(rows[0], rows[1:MAX_TABLE_ROWS + 1]) if rows else "<p class='muted'>empty</p>"
            if len(rows) > MAX_TABLE_ROWS + 1:
                body += f"<p class='muted'>first {MAX_TABLE_ROWS} of {len(rows) - 1} rows</p>"
        else:
            body = markdown(text)
        name = path.relative_to(run_dir).as_posix()
        out.append(f'<h3><a href="{href(path, page_dir)}">{esc(name)}</a></h3>{body}')
    return "".join(out), set(files) | ({run_dir / "summary.md"} if (run_dir / "summary.md").is_file() else set())


def _models(run_dir: Path, cards, page_dir: Path) -> str:
    out = []
    for path, card in cards:
        out.append(f'<h3><a href="{href(path, page_dir)}">{esc(path.relative_to(run_dir).as_posix())}</a> '
                   f"<span class='muted'>({path.stat().st_size / 1e6:.1f} MB)</span></h3>{_card(card)}")
    checkpoints = sorted((run_dir / "checkpoints").glob("*.ckpt"))
    if checkpoints:
        rows = [[f'<a href="{href(p, page_dir)}">{esc(p.name)}</a>', esc(f"{p.stat().st_size / 1e6:.1f} MB")] for p in checkpoints]
        out.append("<h3>Lightning checkpoints</h3><p class='muted'>Resume or test with <code>ckpt_path=</code>; "
                   "they are loaded weights-only.</p>" + table(["file", "size"], rows, raw_columns=(0, 1)))
    return "".join(out)


def _card(card: Mapping[str, Any], depth: int = 0) -> str:
    """A model header as nested key/value tables; long mappings (provenance metrics) collapsed."""
    rows = []
    for key, value in card.items():
        if isinstance(value, Mapping) and value:
            cell = _card(value, depth + 1)
            if len(value) > 24:  # a model file's copy of its run's metrics
                cell = details(f"{len(value)} entries", cell)
        elif isinstance(value, list) and all(not isinstance(v, (Mapping, list)) for v in value):
            cell = esc(", ".join(fmt(v) for v in value))
        elif isinstance(value, (Mapping, list)):
            cell = pre(json.dumps(value, indent=1))
        else:
            cell = esc(fmt(value))
        rows.append([esc(key), cell])
    return table(["key", "value"] if depth == 0 else ["", ""], rows, raw_columns=(0, 1))


def _config(run_dir: Path, config_path: Path | None, text: str, page_dir: Path) -> str:
    if not config_path:
        return ""
    name = config_path.relative_to(run_dir).as_posix()
    return (f'<p>The resolved config of this run (<a href="{href(config_path, page_dir)}">{esc(name)}</a>); '
            "run it again with the overrides in the summary.</p>" + details(name, pre(text)))


def _log(run_dir: Path, page_dir: Path) -> str:
    tail = c.log_tail(run_dir)
    if not tail:
        return ""
    return (f'<p><a href="{href(run_dir / "run.log", page_dir)}">run.log</a>, its last lines:</p>'
            + details("last lines of run.log", pre(tail)))


def _files(run_dir: Path, shown: set[Path], page_dir: Path) -> str:
    rest = [p for p in sorted(run_dir.iterdir()) if p.is_file() and not p.name.startswith(".") and p not in shown
            and p.suffix.lower() not in c.IMAGE_SUFFIXES]
    if not rest:
        return ""
    rows = [[f'<a href="{href(p, page_dir)}">{esc(p.name)}</a>', esc(f"{p.stat().st_size / 1e3:.1f} kB")] for p in rest]
    return table(["file", "size"], rows, raw_columns=(0, 1))
