"""The shared results file (results/benchmarks.json): every measurement script merges its
own top-level parts into it, leaving the others as they are."""

from __future__ import annotations

import datetime as dt
import json
import shlex
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np


def to_jsonable(obj):
    """Plain JSON types; mapping keys starting with ``_`` (in-process objects) left out."""
    if isinstance(obj, Mapping):
        return {str(k): to_jsonable(v) for k, v in obj.items() if not str(k).startswith("_")}
    if isinstance(obj, (list, tuple, set)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


def load(path: Path) -> dict:
    """The results in ``path``, or an empty mapping when there is no such file."""
    path = Path(path)
    return json.loads(path.read_text()) if path.is_file() else {}


def save(path: Path, res: Mapping) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(to_jsonable(res), indent=2) + "\n")


def update(path: Path, parts: Mapping) -> dict:
    """Merge ``parts`` (top-level keys) into the results in ``path``; return the whole."""
    res = load(path)
    res.update(to_jsonable(parts))
    save(path, res)
    return res


class Provenance:
    """The command, start time and wall seconds of one script's measurement."""

    def __init__(self, script: str, argv: Sequence[str]):
        self.command = shlex.join(["python", f"benchmarks/{script}", *argv])
        self.started = dt.datetime.now().isoformat(timespec="seconds")
        self._t0 = time.perf_counter()

    def stamp(self) -> dict:
        return {"command": self.command, "started": self.started,
                "wall_s": time.perf_counter() - self._t0}
