"""HTML pieces of the report pages: escaping, tables, figures, a small Markdown reader, the page shell.

Everything a run wrote is text we did not write: every string goes through :func:`esc`, and file
references are relative to the page and URL-quoted so the folder can be zipped and opened elsewhere.
"""
from __future__ import annotations

import html
import math
import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;color:#1d1d1f;background:#fafafa}
header{background:#20324a;color:#fff;padding:14px 24px}
header h1{margin:0;font-size:20px} header p{margin:4px 0 0;opacity:.8;font-size:12px;word-break:break-all}
nav{position:sticky;top:0;background:#fff;border-bottom:1px solid #ddd;padding:6px 24px;z-index:2}
nav a{margin-right:14px;color:#20324a;text-decoration:none;font-weight:600}
main{padding:8px 24px 40px;max-width:1400px}
h2{border-bottom:2px solid #20324a;padding-bottom:2px;margin-top:28px}
h3{margin:18px 0 6px}
table{border-collapse:collapse;margin:6px 0 12px;background:#fff}
th,td{border:1px solid #ddd;padding:3px 8px;text-align:left;vertical-align:top}
th{background:#eef1f5} td.num{text-align:right;font-variant-numeric:tabular-nums}
td.best{font-weight:700;background:#e7f5e9}
.wide-table{overflow-x:auto}
.tables{display:flex;flex-wrap:wrap;gap:18px;align-items:flex-start}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(380px,1fr));gap:14px}
figure{margin:0;background:#fff;border:1px solid #ddd;padding:8px}
figure img{max-width:100%;height:auto;display:block;margin:auto}
figcaption{font-size:13px;color:#333;margin-top:4px} figcaption code{color:#777;font-size:11px}
pre{background:#fff;border:1px solid #ddd;padding:8px;overflow:auto;max-height:600px;font-size:12px}
details{margin:6px 0} summary{cursor:pointer;font-weight:600}
.clips{display:flex;flex-wrap:wrap;gap:10px}
figure.wide{display:inline-block;max-width:100%}
.clip{display:flex;flex-wrap:wrap;gap:12px;align-items:center;background:#fff;border:1px solid #ddd;padding:8px;margin:8px 0}
.clip .frames img{height:96px;margin-right:4px;image-rendering:pixelated;border:1px solid #ccc}
.note{color:#8a5a00;background:#fff7e0;border:1px solid #f0d890;padding:4px 8px;margin:6px 0}
.muted{color:#777}
"""


def esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def fmt(value: Any) -> str:
    """A metric for a person: 4 significant digits, whole numbers as such, None as a dash."""
    if value is None:
        return "\u2014"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        if value.is_integer() and abs(value) < 1e6:
            return str(int(value))
        return f"{value:.4g}"
    return str(value)


def href(target: Path, page_dir: Path) -> str:
    """``target`` relative to the folder of the page, as a URL path (quoted: spaces, #, ? are safe)."""
    rel = os.path.relpath(Path(target).resolve(), Path(page_dir).resolve())
    return quote(Path(rel).as_posix())


def table(columns: Sequence[str], rows: Iterable[Sequence[Any]], *, raw_columns: Sequence[int] = (), best: set[tuple[int, int]] = frozenset(),
          numeric_columns: Sequence[int] = ()) -> str:
    """An HTML table; cells are escaped unless their column index is in ``raw_columns`` (pre-built HTML)."""
    head = "".join(f"<th>{esc(c)}</th>" for c in columns) if any(columns) else ""  # key/value tables: no header
    body = []
    for i, row in enumerate(rows):
        cells = []
        for j, cell in enumerate(row):
            numeric = isinstance(cell, (int, float)) and not isinstance(cell, bool) or cell is None or j in numeric_columns
            text = cell if j in raw_columns else esc(fmt(cell))
            classes = " ".join(c for c in ("num" if numeric else "", "best" if (i, j) in best else "") if c)
            cells.append(f'<td class="{classes}">{text}</td>' if classes else f"<td>{text}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    thead = f"<thead><tr>{head}</tr></thead>" if head else ""
    return f"<table>{thead}<tbody>{''.join(body)}</tbody></table>"


def details(summary: str, body: str, *, open_: bool = False) -> str:
    return f"<details{' open' if open_ else ''}><summary>{esc(summary)}</summary>{body}</details>"


def pre(text: str) -> str:
    return f"<pre>{esc(text)}</pre>"


def note(text: str) -> str:
    return f'<p class="note">{esc(text)}</p>'


def figure(src: str, caption: str, file_name: str, *, wide: bool = False) -> str:
    return (f'<figure{" class=wide" if wide else ""}><a href="{src}"><img src="{src}" alt="{esc(caption)}" loading="lazy"></a>'
            f"<figcaption>{esc(caption)} <code>{esc(file_name)}</code></figcaption></figure>")


def page(title: str, subtitle: str, sections: Sequence[tuple[str, str, str]]) -> str:
    """The whole document: ``sections`` are (anchor, heading, body HTML); empty bodies are left out."""
    sections = [s for s in sections if s[2]]
    nav = "".join(f'<a href="#{esc(anchor)}">{esc(heading)}</a>' for anchor, heading, _ in sections)
    parts = "".join(f'<section id="{esc(anchor)}"><h2>{esc(heading)}</h2>{body}</section>' for anchor, heading, body in sections)
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width,initial-scale=1"><title>{esc(title)}</title>'
            f"<style>{CSS}</style></head><body><header><h1>{esc(title)}</h1><p>{esc(subtitle)}</p></header>"
            f"<nav>{nav}</nav><main>{parts}</main></body></html>\n")


# ------------------------------------------------------------------------------------------ Markdown

_RULE = re.compile(r"^\|?\s*:?-{2,}:?\s*(\|\s*:?-{2,}:?\s*)*\|?$")


def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def markdown(text: str) -> str:
    """The Markdown our tasks write (pipe tables, code fences, headings, bullets, paragraphs) as HTML.
    Anything else shows as plain escaped text; no raw HTML from the file gets through."""
    out: list[str] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("```"):
            end = next((j for j in range(i + 1, len(lines)) if lines[j].startswith("```")), len(lines))
            out.append(pre("\n".join(lines[i + 1:end])))
            i = end + 1
        elif line.lstrip().startswith("|") and i + 1 < len(lines) and _RULE.match(lines[i + 1].strip()):
            columns = _cells(line)
            j = i + 2
            rows = []
            while j < len(lines) and lines[j].lstrip().startswith("|"):
                rows.append(_cells(lines[j]))
                j += 1
            out.append(table(columns, rows))
            i = j
        elif line.startswith("#"):
            out.append(f"<h4>{_inline(line.lstrip('#').strip())}</h4>")
            i += 1
        elif line.lstrip().startswith(("- ", "* ")):
            items = []
            while i < len(lines) and lines[i].lstrip().startswith(("- ", "* ")):
                items.append(f"<li>{_inline(lines[i].lstrip()[2:])}</li>")
                i += 1
            out.append(f"<ul>{''.join(items)}</ul>")
        elif line.startswith(("  ", "\t")) and line.strip():
            block = []  # indented lines (commands in a console summary): as written
            while i < len(lines) and lines[i].startswith(("  ", "\t")) and lines[i].strip():
                block.append(lines[i])
                i += 1
            out.append(pre("\n".join(block)))
        elif line.strip():
            para = []
            while i < len(lines) and lines[i].strip() and not lines[i].startswith(("#", "```", "  ", "\t")) \
                    and not lines[i].lstrip().startswith(("|", "- ", "* ")):
                para.append(lines[i])
                i += 1
            if not para:  # a lone '|' line that is not a table
                para.append(line)
                i += 1
            # our summaries are console text: keep their line breaks
            out.append(f"<p>{'<br>'.join(_inline(p) for p in para)}</p>")
        else:
            i += 1
    return "".join(out)


def _inline(text: str) -> str:
    """`code` spans; everything escaped."""
    parts = text.split("`")
    return "".join(f"<code>{esc(p)}</code>" if k % 2 else esc(p) for k, p in enumerate(parts))
