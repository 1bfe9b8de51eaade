"""Number and cell formatting shared by the table, the findings and BENCHMARKS.md."""

from __future__ import annotations

from collections.abc import Iterable


def fmt(x: float | None, digits: int = 2) -> str:
    """``x`` with ``digits`` decimals; thousands separated and no decimals from 100; – for None."""
    if x is None:
        return "–"
    if abs(x) >= 100:
        return f"{x:,.0f}"
    return f"{x:.{digits}f}"


def status(ok: bool | None) -> str:
    return "–" if ok is None else ("met" if ok else "**missed**")


def loads(values: Iterable[float] | None) -> str:
    """Load averages as ``a / b / c``."""
    return " / ".join(f"{x:.1f}" for x in values) if values else "–"


def cell(text: object) -> str:
    """One Markdown table cell: one line, pipes escaped."""
    return " ".join(str(text).split()).replace("|", "\\|")


def times(ratio: float) -> str:
    """A ratio in words: "about twice" or "about 2.6x"."""
    return "about twice" if 1.5 <= ratio < 2.5 else f"about {ratio:.1f}x"
