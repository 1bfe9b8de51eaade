"""The report of a benchmark run: ratios, fixes, findings and the table derived from the
measurements, the sections other scripts wrote, then the JSON and BENCHMARKS.md written."""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks.common import results
from benchmarks.common.assess import assess
from benchmarks.common.derive import derive
from benchmarks.common.findings import findings, fixes
from benchmarks.common.markdown import render_markdown

# Written by other scripts beside the results file, included when present.
DETERMINISM = "determinism_cost.json"  # benchmarks/determinism_cost.py
ACCELERATOR = "accelerator.md"         # benchmarks/accelerator.py, on a GPU machine
RUNTIMES = "runtimes.json"              # benchmarks/runtimes.py


def include_other_scripts(res: dict, folder: Path) -> None:
    """The determinism cost and the GPU table, when their scripts have written them."""
    det, acc = folder / DETERMINISM, folder / ACCELERATOR
    if det.is_file():
        res["determinism"] = json.loads(det.read_text())
    if acc.is_file():
        res["accelerator_md"] = acc.read_text()
    if (folder / RUNTIMES).is_file():
        res["runtimes"] = json.loads((folder / RUNTIMES).read_text())


def write_outputs(res: dict, out: Path, md: Path) -> list[dict]:
    """Ratios, findings and the table from the measurements; the JSON and Markdown written;
    the table's rows returned."""
    derive(res)
    res["fixes"] = fixes(res)
    res["findings"] = findings(res)
    rows = assess(res)
    res["table"] = rows
    include_other_scripts(res, Path(out).parent)
    results.save(out, res)
    Path(md).write_text(render_markdown(res, rows) + "\n")
    return rows


def print_table(rows: list[dict]) -> None:
    for r in rows:
        print(f"{r['status']:>10}  {r['measure']}: {r['value']}")
