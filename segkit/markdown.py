"""The Markdown renderer of the evaluation report: a heading, notes, one metric table and one
image per figure.

Rendered by hand on purpose (no template engine, no Markdown library): the report is that
small, and every cell must be escaped the same way.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Sequence
from pathlib import Path

from segkit.fileio import write_text

# Metrics that count pixels or images: shown as integers with thousands separators.
COUNT_METRICS = frozenset({"tp", "fp", "tn", "fn", "images"})
MISSING = "–"


def format_value(name: str, value: object) -> str:
    """One table cell: counts as ``1,234,567``, other numbers with 4 decimals."""
    if value is None:
        return MISSING
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, numbers.Integral):
        return f"{int(value):,}"
    if isinstance(value, numbers.Real):
        number = float(value)
        if not math.isfinite(number):  # undefined (e.g. AUC without a positive pixel)
            return MISSING
        if name.lower() in COUNT_METRICS and number.is_integer():
            return f"{int(number):,}"
        return f"{number:.4f}"
    return _cell(str(value))


def _cell(text: str) -> str:
    """Text safe inside a Markdown table cell (no pipes, no line breaks)."""
    return " ".join(str(text).split()).replace("|", "\\|")


def metric_table(metrics: Mapping[str, Mapping[str, object]]) -> list[str]:
    """Markdown table lines: one row per metric (first-seen order), one column per split."""
    splits = list(metrics)
    names = list(dict.fromkeys(name for split in splits for name in metrics[split]))
    lines = ["| metric | " + " | ".join(_cell(s) for s in splits) + " |",
             "|:--|" + "--:|" * len(splits)]
    for name in names:
        cells = [format_value(name, metrics[s][name]) if name in metrics[s] else MISSING
                 for s in splits]
        lines.append(f"| {_cell(name)} | " + " | ".join(cells) + " |")
    return lines


def _image(caption: str, file: str) -> str:
    alt = " ".join(caption.split()).replace("[", "\\[").replace("]", "\\]")
    target = f"<{file}>" if any(c.isspace() or c in "()<>" for c in file) else file
    return f"![{alt}]({target})"


def render_report(*, title: str, metrics: Mapping[str, Mapping[str, object]],
                  plots: Mapping[str, str], notes: Sequence[str] | None = None) -> str:
    """The Markdown text of the report (see :func:`write_report`)."""
    lines = [f"# {' '.join(title.split())}", ""]
    if notes:
        for note in notes:
            first, *rest = str(note).strip().splitlines() or [""]
            lines.append(f"- {first}")
            lines.extend(f"  {line}" for line in rest)
        lines.append("")
    lines.append("## Metrics")
    lines.append("")
    lines.extend(metric_table(metrics) if metrics else ["No metrics."])
    lines.append("")
    for caption, file in plots.items():
        lines += [f"## {' '.join(caption.split())}", "", _image(caption, file), ""]
    return "\n".join(lines)


def write_report(path: Path, *, title: str, metrics: dict[str, dict[str, float]],
                 plots: dict[str, str], notes: list[str] | None = None) -> Path:
    """Write the Markdown report atomically (temp file in the same folder, then rename).

    ``metrics`` maps split -> metric -> value (one table column per split, rows in
    first-seen order, "–" where a split lacks a metric); ``plots`` maps caption -> PNG file
    name relative to the report; ``notes`` become a bullet list under the title.
    """
    return write_text(path, render_report(title=title, metrics=metrics, plots=plots,
                                          notes=notes))
