"""The self-contained HTML report: one file, figures embedded, no network reference of any kind.

A report is a list of `Section`s (title, a one-line reading of what it shows, figures, tables,
and the definition of each number, linked from the section to an anchor in the report's own
"Definitions" part). A Content-Security-Policy forbids every fetch, so a report opened anywhere
requests nothing: images are `data:` URIs, styles are inline.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import os
from dataclasses import dataclass, field
from pathlib import Path

from maelens.atomic import atomic_write

CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"
STYLE = """
body{font:15px/1.5 system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:0;
color:#1d2330;background:#fafbfc}
main{max-width:1100px;margin:0 auto;padding:24px 32px 64px}
h1{font-size:28px;margin:8px 0 4px}h2{font-size:21px;margin:36px 0 6px;
border-bottom:1px solid #dde2ea;padding-bottom:4px}
.reading{color:#3b4657;margin:4px 0 12px}.meta{color:#5b6678;font-size:13px}
figure{margin:12px 0;background:#fff;border:1px solid #e3e7ee;border-radius:6px;padding:8px}
figure img{max-width:100%;height:auto;display:block;margin:0 auto}
figcaption{font-size:13px;color:#5b6678;margin-top:4px}
table{border-collapse:collapse;font-size:13px;margin:10px 0;background:#fff}
th,td{border:1px solid #dde2ea;padding:3px 8px;text-align:right}
th{background:#f0f3f7}td:first-child,th:first-child{text-align:left}
nav ol{columns:2;font-size:14px}a{color:#2456a6}
.def{margin:6px 0 14px}.def b{display:block}
"""


@dataclass
class Figure:
    path: Path
    caption: str = ""


@dataclass
class Table:
    title: str
    csv_path: Path | None = None
    rows: list[list[str]] | None = None


@dataclass
class Section:
    """One part of the report; `definition` is HTML text shown under Definitions."""

    id: str
    title: str
    reading: str
    definition: str = ""
    figures: list[Figure] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    note: str = ""


def render_report(path: str | os.PathLike, title: str, sections: list[Section],
                  meta: dict[str, str]) -> Path:
    """Write the report to `path` (atomically) and return it."""
    parts = [f"<!doctype html><html lang=en><head><meta charset=utf-8>"
             f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
             f"<meta name=viewport content='width=device-width,initial-scale=1'>"
             f"<title>{html.escape(title)}</title><style>{STYLE}</style></head><body><main>",
             f"<h1>{html.escape(title)}</h1>", _meta(meta), _contents(sections)]
    parts += [_section(s) for s in sections]
    parts.append(_definitions(sections))
    parts.append("</main></body></html>\n")
    text = "\n".join(parts)
    return atomic_write(Path(path), lambda tmp: tmp.write_text(text, encoding="utf-8"))


def _meta(meta: dict[str, str]) -> str:
    items = "".join(f"<b>{html.escape(k)}</b>: {html.escape(str(v))}<br>" for k, v in meta.items())
    return f"<p class=meta>{items}</p>"


def _contents(sections: list[Section]) -> str:
    items = "".join(f"<li><a href='#{s.id}'>{html.escape(s.title)}</a></li>" for s in sections)
    return f"<nav><ol>{items}<li><a href='#definitions'>Definitions</a></li></ol></nav>"


def _section(s: Section) -> str:
    out = [f"<section id='{s.id}'><h2>{html.escape(s.title)}</h2>",
           f"<p class=reading>{html.escape(s.reading)}"
           + (f" <a href='#def-{s.id}'>Definition</a>" if s.definition else "") + "</p>"]
    if s.note:
        out.append(f"<p class=meta>{html.escape(s.note)}</p>")
    out += [_figure(f) for f in s.figures if f.path.is_file()]
    out += [_table(t) for t in s.tables]
    out.append("</section>")
    return "\n".join(out)


def _figure(fig: Figure) -> str:
    data = base64.b64encode(fig.path.read_bytes()).decode()
    caption = f"<figcaption>{html.escape(fig.caption)}</figcaption>" if fig.caption else ""
    alt = html.escape(fig.caption or fig.path.stem)
    return f"<figure><img alt='{alt}' src='data:image/png;base64,{data}'>{caption}</figure>"


def _table(table: Table) -> str:
    rows = table.rows
    if rows is None and table.csv_path is not None and table.csv_path.is_file():
        rows = list(csv.reader(io.StringIO(table.csv_path.read_text())))
    if not rows:
        return ""
    head = "".join(f"<th>{html.escape(c)}</th>" for c in rows[0])
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>"
                   for row in rows[1:])
    return (f"<p><b>{html.escape(table.title)}</b></p><table><thead><tr>{head}</tr></thead>"
            f"<tbody>{body}</tbody></table>")


def _definitions(sections: list[Section]) -> str:
    items = "".join(f"<div class=def id='def-{s.id}'><b>{html.escape(s.title)}</b>"
                    f"{s.definition}</div>" for s in sections if s.definition)
    return f"<section id='definitions'><h2>Definitions</h2>{items}</section>"
