"""Print (and write as JSON) the headline figures of MLflow runs, for RESULTS.md.

    python benchmarks/run_summary.py RUN_ID [RUN_ID ...] [--out results/summary.json]

Reads the project's tracking store (``$MLFLOW_TRACKING_URI``, else ./mlflow.db). Given
several runs (repeats of one preset: seeds), it also summarises them as a group: n, mean,
std, median, min, max and the 95% Student-t interval of each figure (segkit.statistics,
what a sweep's parent logs).
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np
from mlflow.tracking import MlflowClient

from segkit.metric_names import internal

FIELDS = ("test_mdice", "test_mdice_ci_low", "test_mdice_ci_high", "test_miou",
          "test_pixel_accuracy", "test_auc", "test_pixel_dice", "test_mhd95", "test_mnsd",
          "val_mdice", "val_best_threshold", "test_tuned_mdice", "test_tuned_pixel_accuracy",
          "test_fullres_mdice", "epochs_run", "train_seconds", "time_limit_hit")
GROUP_FIELDS = ("test_mdice", "test_miou", "test_pixel_accuracy", "test_auc", "test_mhd95",
                "test_mnsd", "val_mdice", "test_fullres_mdice", "epochs_run", "train_seconds")


def summary(client: MlflowClient, run_id: str) -> dict:
    run = client.get_run(run_id)
    p, m, t = run.data.params, internal(run.data.metrics), run.data.tags
    return {"run_id": run_id, "run_name": run.info.run_name, "status": run.info.status,
            "task": t.get("segkit.task", "train"), "source_run_id": t.get("segkit.source_run_id"),
            "split": t.get("segkit.test_split"), "policy": p.get("trainer.policy"),
            "image_size": p.get("data.image_size"), "model": p.get("model.name"),
            "filters": p.get("model.filters"), "depth": p.get("model.depth"),
            "loss": p.get("loss.name"), "git_commit": t.get("segkit.git_commit"),
            **{k: m.get(k) for k in FIELDS}}


def group(rows: list[dict]) -> dict[str, dict[str, float]]:
    """Per field, the group statistics over the runs that logged it."""
    from segkit.statistics import summarize_group

    return {f: summarize_group(np.array([r[f] for r in rows if r.get(f) is not None], float))
            for f in GROUP_FIELDS if any(r.get(f) is not None for r in rows)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_ids", nargs="+")
    ap.add_argument("--out", default="results/summary.json")
    args = ap.parse_args()
    uri = os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path.cwd()}/mlflow.db"
    client = MlflowClient(uri)
    rows = [summary(client, r) for r in args.run_ids]
    for row in rows:
        print(json.dumps(row, indent=2))
    out: list[dict] | dict = rows
    if len(rows) > 1:
        out = {"runs": rows, "group": group(rows)}
        for field, stats in out["group"].items():
            print(f"{field}: mean {stats['mean']:.4f} std {stats['std']:.4f} median "
                  f"{stats['median']:.4f} min {stats['min']:.4f} max {stats['max']:.4f} "
                  f"95% t [{stats['ci_low']:.4f}, {stats['ci_high']:.4f}] (n {stats['n']:.0f})")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2))
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
