"""The evaluation report as one self-contained HTML file (figures embedded as PNG data
URIs), which MLflow's artifact viewer renders with its figures; report.md stays for
repositories and terminals.

Rendered by hand with ``html.escape`` (no template engine): a heading, notes, the metric
table and one figure per section.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Mapping, Sequence
from pathlib import Path

from segkit.fileio import write_text
from segkit.markdown import format_value

STYLE = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em}"
         "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:3px 8px}"
         "td{text-align:right}td:first-child,th:first-child{text-align:left}"
         "img{max-width:100%}")


def _table(metrics: Mapping[str, Mapping[str, object]]) -> list[str]:
    splits = list(metrics)
    names = list(dict.fromkeys(name for split in splits for name in metrics[split]))
    rows = ["<table>", "<tr><th>metric</th>" + "".join(f"<th>{html.escape(s)}</th>"
                                                        for s in splits) + "</tr>"]
    for name in names:
        cells = "".join(f"<td>{html.escape(format_value(name, metrics[s].get(name)))}</td>"
                        for s in splits)
        rows.append(f"<tr><td>{html.escape(name)}</td>{cells}</tr>")
    return [*rows, "</table>"]


def _figure(caption: str, png: Path) -> list[str]:
    data = base64.b64encode(png.read_bytes()).decode("ascii")
    alt = html.escape(caption, quote=True)
    return [f"<h2>{html.escape(caption)}</h2>",
            f'<img alt="{alt}" src="data:image/png;base64,{data}">']


def render_html(*, title: str, metrics: Mapping[str, Mapping[str, object]],
                figures: Mapping[str, Path], notes: Sequence[str] = ()) -> str:
    """The HTML text: ``figures`` maps caption -> PNG file, embedded in the page."""
    parts = ["<!DOCTYPE html>", '<html><head><meta charset="utf-8">',
             f"<title>{html.escape(title)}</title><style>{STYLE}</style></head><body>",
             f"<h1>{html.escape(title)}</h1>"]
    if notes:
        parts += ["<ul>", *(f"<li>{html.escape(str(n))}</li>" for n in notes), "</ul>"]
    parts += ["<h2>Metrics</h2>", *_table(metrics)]
    for caption, png in figures.items():
        parts += _figure(caption, Path(png))
    return "\n".join([*parts, "</body></html>", ""])


def write_html(path: Path, **kwargs: object) -> Path:
    """Write :func:`render_html` atomically to ``path``."""
    return write_text(path, render_html(**kwargs))  # type: ignore[arg-type]
