"""A script measuring in a fresh process of itself: ``python <script> --child --child-out F
...`` measures in that process and writes its raw result to F as JSON. A fresh process has
its own peak memory and no TensorFlow state from earlier measurements."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path


def add_child_options(ap: argparse.ArgumentParser) -> None:
    """The documented ``--child`` / ``--child-out`` options of a script that runs itself."""
    ap.add_argument("--child", action="store_true",
                    help="measure once in this process and write the raw result as JSON to "
                         "--child-out, leaving the results file alone (the script runs itself "
                         "this way, in a fresh process per measurement)")
    ap.add_argument("--child-out", type=Path, help="where --child writes its JSON")


def write_child(path: Path | None, result: Mapping) -> None:
    """The child's result, as JSON to ``path`` (stdout when None)."""
    text = json.dumps(result, indent=2)
    if path is None:
        print(text)
    else:
        Path(path).write_text(text)


def run_child(script: Path, args: Sequence[str], timeout: float = 900) -> tuple[dict, float]:
    """``script --child`` in a fresh Python process: its JSON result and wall seconds."""
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
        out = Path(f.name)
    try:
        t = time.perf_counter()
        res = subprocess.run([sys.executable, str(script), "--child", f"--child-out={out}",
                              *args], capture_output=True, text=True, timeout=timeout)
        wall = time.perf_counter() - t
        if res.returncode != 0:
            raise RuntimeError(f"{Path(script).name} --child failed ({res.returncode}):\n"
                               f"{res.stderr[-3000:]}")
        return json.loads(out.read_text()), wall
    finally:
        out.unlink(missing_ok=True)
