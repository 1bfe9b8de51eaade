"""The session's shared smoke run (fixture smoke_run in tests/conftest.py): its arguments
and what it hands to the tests that read it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

# `run.py debug=smoke` on the real_root fixture: 8 train / 4 val / 4 test images, 2 epochs,
# figures and TensorBoard logs on (the defaults).
SMOKE_ARGS = ("debug=smoke", "split.val_fraction=0.34")


@dataclass(frozen=True)
class SmokeRun:
    """A finished `run.py debug=smoke` training run and where it left its things."""

    uri: str  # its own sqlite tracking store
    run: object  # mlflow.entities.Run, as it was when training ended
    run_id: str
    model_uri: str  # the logged model (segkit.model_uri tag)
    run_dir: Path  # hydra.run.dir: checkpoints/, tensorboard/, ...
    cache: Path  # its data.cache_dir
