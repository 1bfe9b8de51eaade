"""Print (and write as JSON) the headline figures of MLflow runs, for RESULTS.md.

    python benchmarks/run_summary.py RUN_ID [RUN_ID ...] [--out results/summary.json]

Reads the project's tracking store (``$MLFLOW_TRACKING_URI``, else ./mlflow.db).
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from mlflow.tracking import MlflowClient

from segkit.metric_names import internal

FIELDS = ("test_mdice", "test_miou", "test_pixel_accuracy", "test_auc", "test_pixel_dice",
          "val_mdice", "val_best_threshold", "test_tuned_mdice", "test_tuned_pixel_accuracy",
          "epochs_run", "train_seconds", "time_limit_hit")


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
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(rows, indent=2))
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
