"""Entry point: `python run.py [overrides]` trains and evaluates one configured experiment;
`python run.py -m key=a,b` sweeps (segkit.sweep: parent run, failures contained, summary).
All work happens in segkit.experiment.run_experiment."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

from segkit.config import register_resolvers
from segkit.config_errors import CONFIG_ERRORS, one_line
from segkit.console import native_startup, quiet_environment
from segkit.errors import SegkitError
from segkit.sweep import FailedJob, run_job

# Hydra then raises its config errors instead of printing several lines: one line is printed
# below. Errors inside a job are handled in main() (one line, or a failed sweep job).
os.environ.setdefault("HYDRA_FULL_ERROR", "1")
ROOT = Path(__file__).resolve().parent
register_resolvers(ROOT)


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> float | FailedJob:
    register_resolvers(ROOT)  # idempotent: for launchers whose workers never import run.py
    hc = HydraConfig.get()
    out = Path(hc.runtime.output_dir)

    def train(run_name: str | None, tags: dict[str, str]) -> float:
        with native_startup(cfg.verbose is True):  # TensorFlow: only once cfg is valid
            from segkit.experiment import run_experiment

        return run_experiment(cfg, root=ROOT, run_dir=out, hydra_dir=out / hc.output_subdir,
                              run_name=run_name, tags=tags)

    try:
        quiet_environment(cfg.verbose is True)  # before TensorFlow and MLflow are imported
        with open_dict(cfg):  # logged, hashed and saved as an absolute path, whatever the cwd
            cfg.data.root = str(Path(cfg.data.root).expanduser().absolute())
        # Validates first (no TensorFlow yet); in a sweep, errors are recorded, not raised.
        return run_job(cfg, train)
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM: the run is KILLED, its state saved
        print("interrupted", file=sys.stderr)
        raise SystemExit(130) from None
    except SegkitError as exc:  # 2: bad input; 1: a run that started but could not finish
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(exc.exit_status) from None
    except CONFIG_ERRORS as exc:  # e.g. an interpolation that does not resolve
        print(f"error: {one_line(exc)}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    try:
        main()  # a sweep with a failed job exits 1 from its callback, after the summary
    except CONFIG_ERRORS as exc:  # raised while Hydra composes the config: no job ran
        print(f"error: {one_line(exc)}", file=sys.stderr)
        raise SystemExit(2) from None
