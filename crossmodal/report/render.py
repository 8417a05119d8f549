"""The report's HTML: Jinja2 templates (``templates/``, autoescaped: every string a run wrote is
escaped), Markdown through markdown-it-py (no raw HTML, no links or images), the teacher/student bars
as the project's matplotlib figure (inline SVG), and links relative to the page."""
from __future__ import annotations

import io
import json
import math
import os
import textwrap
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import quote

from jinja2 import Environment, PackageLoader, StrictUndefined


def fmt(value: Any) -> str:
    """A metric for a person: 4 significant digits, whole numbers as such, None as a dash."""
    if value is None:
        return "\u2014"
    if isinstance(value, float) and math.isfinite(value):
        return str(int(value)) if value.is_integer() and abs(value) < 1e6 else f"{value:.4g}"
    return str(value)


def href(target: Path, page_dir: Path) -> str:
    """``target`` (a file inside the run folder, as named there) relative to the page's folder, URL-quoted."""
    return quote(Path(os.path.relpath(Path(target).absolute(), Path(page_dir).absolute())).as_posix())


@cache
def environment() -> Environment:
    env = Environment(loader=PackageLoader("crossmodal.report", "templates"), autoescape=True,
                      undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True)
    env.filters.update(fmt=fmt, markdown=markdown,
                       pretty_json=lambda value, sort=False: json.dumps(value, indent=1, sort_keys=sort))
    # flat_list: a list of plain values (shown comma-separated), not of mappings or lists (shown as JSON)
    env.tests.update(numeric=lambda v: v is None or isinstance(v, (int, float)) and not isinstance(v, bool),
                     flat_list=lambda v: isinstance(v, list) and not any(isinstance(x, (dict, list)) for x in v))
    return env


def render(template: str, **context: Any) -> str:
    return environment().get_template(template).render(**context)


@cache
def _markdown():
    from markdown_it import MarkdownIt

    # commonmark + pipe tables; a file's raw HTML is escaped; links and images stay text (the page
    # links only files of the run folder); line breaks kept: our summaries are console text
    return MarkdownIt("commonmark", {"html": False, "breaks": True}).enable("table").disable(["link", "image", "autolink"])


def markdown(text: str) -> str:
    """HTML of ``text`` (the templates mark it ``| safe``: markdown-it escapes the file's own HTML)."""
    return _markdown().render(console_text(text))


def console_text(text: str) -> str:
    """Our summaries are console text as much as Markdown: a pipe table ends at the first line that
    is not a row (GFM would take the next line as one), and indented lines (commands) are code."""
    out: list[str] = []
    block: list[str] = []
    fenced = in_table = False
    for line in text.splitlines():
        indented = line.startswith(("  ", "\t")) and bool(line.strip())
        if block and (fenced or not indented):
            out += ["", "```", *textwrap.dedent("\n".join(block)).splitlines(), "```", ""]
            block = []
        if line.lstrip().startswith("```"):
            fenced = not fenced
        elif not fenced and indented and not in_table:
            block.append(line)
            continue
        row = not fenced and line.lstrip().startswith("|")
        if in_table and not row and line.strip():
            out.append("")
        in_table = row
        out.append(line)
    if block:
        out += ["", "```", *textwrap.dedent("\n".join(block)).splitlines(), "```"]
    return "\n".join(out) + "\n"


def distribution_svg(teacher: list[float], student: list[float], emotions: list[str], key: str) -> str:
    """Teacher (face) vs student (voice) emotion distributions: the gallery's bar figure as inline SVG
    (text as text, escaped by matplotlib; ids salted by ``key`` so several figures share a page)."""
    import matplotlib

    from crossmodal.utils.plots import close, distribution_figure

    if len(emotions) != len(teacher):
        from crossmodal.emotions import EMOTIONS

        emotions = list(EMOTIONS) if len(EMOTIONS) == len(teacher) else [str(i) for i in range(len(teacher))]
    out = io.StringIO()
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": f"clip-{key}"}):
        fig = distribution_figure(teacher, student, emotions)
        fig.savefig(out, format="svg", metadata={"Date": None})
        close(fig)
    svg = out.getvalue()
    svg = svg[svg.index("<svg"):]  # without the XML prolog and DOCTYPE
    return svg.replace("<svg ", '<svg role="img" aria-label="teacher vs student emotion distribution" ', 1)
