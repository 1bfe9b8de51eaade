"""Entry point: `python run.py [overrides]` trains and evaluates one configured experiment;
`python run.py -m key=a,b` sweeps. All work happens in segkit.app.run_experiment."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from segkit.config import register_resolvers, validate
from segkit.errors import SegkitError

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep TensorFlow's C++ start-up chatter out
ROOT = Path(__file__).resolve().parent
register_resolvers(ROOT)
log = logging.getLogger("segkit")


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> float:
    hc = HydraConfig.get()
    out = Path(hc.runtime.output_dir)
    try:
        validate(cfg)  # before TensorFlow is imported: a bad value fails in about a second
        from segkit.app import run_experiment

        return run_experiment(cfg, root=ROOT, run_dir=out, hydra_dir=out / hc.output_subdir,
                              run_name=hc.job.override_dirname or None)
    except SegkitError as exc:
        log.error("%s", exc)
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
