"""Repeats within a sweep: jobs whose overrides differ only in ``seed`` and/or
``split.fold`` form a group (one configuration), summarised by the mean, std, median, min,
max and a 95% Student-t interval of every test and validation metric across its runs.

``-m seed=1,2,3`` is one group; ``-m model=unet,resunet seed=1,2,3`` gives one row per
model, which answers "which model, and by how much".
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from segkit.statistics import summarize_group

REPEAT_KEYS = ("seed", "split.fold")  # what varies within a group
STATS = ("n", "mean", "std", "median", "min", "max", "ci_low", "ci_high")


def group_key(overrides: str) -> str:
    """The job's overrides without the repeat keys: its configuration."""
    kept = [o for o in overrides.split() if o.split("=", 1)[0].lstrip("+~") not in REPEAT_KEYS]
    return " ".join(sorted(kept)) or "(base config)"


def _metric_names(rows: Sequence[dict]) -> list[str]:
    names = {k for r in rows for k, v in r.items()
             if k.startswith(("test_", "val_")) and isinstance(v, float)}
    return sorted(names)


def group_rows(rows: Sequence[dict], swept: Sequence[str]) -> list[dict]:
    """One row per configuration with at least one finished run, when the sweep repeats
    something (a swept seed or fold): its overrides, run count and, per metric,
    ``<metric>_<stat>``. Empty when nothing is repeated."""
    if not any(k in REPEAT_KEYS for k in swept):
        return []
    done = [r for r in rows if r["status"] in ("FINISHED", "SKIPPED")]
    groups: dict[str, list[dict]] = {}
    for row in done:
        groups.setdefault(group_key(row.get("overrides", "")), []).append(row)
    metrics = _metric_names(done)
    out = []
    for key, members in groups.items():
        group: dict = {"configuration": key, "runs": len(members)}
        for metric in metrics:
            values = np.array([m.get(metric, math.nan) for m in members], float)
            stats = summarize_group(values)
            group.update({f"{metric}_{s}": stats[s] for s in STATS})
        out.append(group)
    return out


def group_metrics(group: dict) -> dict[str, float]:
    """The finite per-metric statistics of one group, as parent-run metrics
    (``test_mdice_mean``, ``test_mdice_ci_low``, ...)."""
    return {k: float(v) for k, v in group.items()
            if k not in ("configuration", "runs") and isinstance(v, float) and math.isfinite(v)}


def format_groups(groups: Sequence[dict], metric: str) -> list[str]:
    """Console lines: one per configuration, ``metric`` as mean ± std [95% t interval]."""
    lines = []
    for g in groups:
        mean, std = g.get(f"{metric}_mean", math.nan), g.get(f"{metric}_std", math.nan)
        lo, hi = g.get(f"{metric}_ci_low", math.nan), g.get(f"{metric}_ci_high", math.nan)
        n = int(g.get(f"{metric}_n", g["runs"]))
        if not math.isfinite(std):  # one finished run: a value, no spread to report
            lines.append(f"  {g['configuration']}: {metric} {mean:.4f} from {n} run "
                         "(no std or interval from one run)")
            continue
        lines.append(f"  {g['configuration']}: {metric} {mean:.4f} ± {std:.4f} over "
                     f"{n} runs, 95% t interval [{lo:.4f}, {hi:.4f}], median "
                     f"{g.get(f'{metric}_median', math.nan):.4f}")
    return lines
