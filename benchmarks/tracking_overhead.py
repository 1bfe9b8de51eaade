"""Tracking overhead: the share of a smoke run's wall time spent in MLflow and evaluation plots.

    python benchmarks/tracking_overhead.py [--data-dir ../shared/data/kvasir-seg] [--repeats 2]
                                           [--pairs 24] [--quick] [--out results/benchmarks.json]

Runs ``debug=smoke`` experiments (``segkit.experiment.run_experiment``) on ``--pairs`` real
Kvasir-SEG pairs, each in a fresh process of this script (as the CLI runs them): the first
creates the MLflow store (sqlite), the others reuse it, as every later run of a project does;
then, interleaved with those, the same with ``eval.plots=false``. In each, MLflow's public
API and segkit.tracking's helpers ("mlflow") and ``segkit.plots.plot_*`` ("plots") are timed
by wrapping them; the run's own phases (build, fit, log_model, evaluate) are read from the
``timings.json`` segkit writes in the run folder. Data preparation happens before the run's
first phase, so it is timed outside the run: a warm ``segkit.data.prepare`` of the same
config after it.

Writes the ``tracking`` part of the results JSON (merged: other parts are kept): every smoke
run's wall seconds, seconds per category and per wrapped function, its phases, and the
medians over the runs that reused the store.

``--child --child-out FILE --workdir DIR [--no-plots]`` runs one smoke experiment in this
process and writes only FILE (its raw timings), leaving the results JSON alone.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from anywhere: benchmarks and segkit beside it
    sys.path.insert(0, str(ROOT))

from benchmarks.common import cli, results  # noqa: E402
from benchmarks.common.child import add_child_options, run_child, write_child  # noqa: E402
from benchmarks.common.config import (  # noqa: E402
    check_dataset,
    compose,
    default_epochs,
    make_small_dataset,
)
from benchmarks.common.ledger import Ledger, instrumented  # noqa: E402
from benchmarks.common.timing import logger, median, rotate, seconds  # noqa: E402


def smoke_config(data_dir: Path, workdir: Path, plots: bool):
    return compose(data_dir, workdir / "cache", "debug=smoke", "split.val_fraction=0.5",
                   f"tracking.uri=sqlite:///{workdir}/mlflow.db",
                   *([] if plots else ["eval.plots=false"]))


def smoke_run(data_dir: Path, workdir: Path, plots: bool = True) -> dict:
    """One ``debug=smoke`` experiment in this process, instrumented.

    ``root`` (the checkout whose git state is tagged) is ``workdir``, not a git repository:
    the benchmark never runs git in the shared checkout; segkit tags the commit "unknown".
    """
    from omegaconf import OmegaConf

    from segkit.data import prepare
    from segkit.experiment import run_experiment
    from segkit.lifecycle import TIMINGS

    cfg = smoke_config(data_dir, workdir, plots)
    run_dir = workdir / f"out-{time.time_ns()}"
    hydra_dir = run_dir / ".hydra"
    hydra_dir.mkdir(parents=True)
    OmegaConf.save(cfg, hydra_dir / "config.yaml")  # what Hydra writes and segkit logs
    with instrumented(Ledger()) as ledger:
        wall = seconds(lambda: run_experiment(cfg, root=workdir, run_dir=run_dir,
                                              hydra_dir=hydra_dir, run_name="bench"))
    tracking_s = ledger.seconds["mlflow"] + ledger.seconds["plots"]
    return {"wall_s": wall, "seconds": dict(ledger.seconds), "tracking_s": tracking_s,
            "share": tracking_s / wall,
            "by_name": dict(sorted(ledger.by_name.items(), key=lambda kv: -kv[1])),
            "top": dict(ledger.top), "calls": dict(ledger.calls),
            "phases": json.loads((run_dir / TIMINGS).read_text()),
            "data_prepare_s": seconds(lambda: prepare(cfg.data, cfg.split))}


def schedule(repeats: int) -> list[tuple[int, bool]]:
    """(index, with plots): one run creating the store, then pairs in alternating order."""
    return [(0, True)] + [(i + 1, p) for i in range(repeats) for p in rotate([True, False], i)]


def one_run(small: Path, workdir: Path, r: int, plots: bool) -> dict:
    """One smoke run in a fresh process of this script, with its process's wall time."""
    res, process_wall = run_child(Path(__file__), [f"--data-dir={small}", f"--workdir={workdir}",
                                                   *([] if plots else ["--no-plots"])])
    res["process_wall_s"] = process_wall
    res["fresh_store"] = r == 0
    res["share_of_process"] = res["tracking_s"] / process_wall
    return res


def describe(res: dict, r: int, repeats: int, plots: bool) -> str:
    sec = res["seconds"]
    return (f"  smoke {r + 1}/{repeats + 1}{' (new store)' if r == 0 else ''}"
            f"{'' if plots else ' eval.plots=false'}: {res['wall_s']:.1f}s in run_experiment "
            f"(fit {res['phases'].get('fit', 0):.1f}s), mlflow {sec.get('mlflow', 0):.1f}s, "
            f"plots {sec.get('plots', 0):.1f}s -> {100 * res['share']:.1f}%")


def summarise(runs: Sequence[dict], bare: Sequence[dict], pairs: int) -> dict:
    """Medians over the smoke runs that reused the store (and over those without plots)."""
    later = runs[1:]
    phases = sorted({k for x in later for k in x["phases"]})
    return {"pairs": pairs, "runs": list(runs), "no_plots_runs": list(bare),
            "no_plots_share_median": median([x["share"] for x in bare]),
            "no_plots_wall_s_median": median([x["wall_s"] for x in bare]),
            "share_median": median([x["share"] for x in later]),
            "share_of_process_median": median([x["share_of_process"] for x in later]),
            "wall_s_median": median([x["wall_s"] for x in later]),
            "mlflow_s_median": median([x["seconds"].get("mlflow", 0.0) for x in later]),
            "plots_s_median": median([x["seconds"].get("plots", 0.0) for x in later]),
            "phases_s_median": {k: median([x["phases"].get(k, 0.0) for x in later])
                                for k in phases},
            "data_prepare_s_median": median([x["data_prepare_s"] for x in later]),
            "first_run_share": runs[0]["share"], "default_epochs": default_epochs()}


def tracking_overhead(data_dir: Path, workdir: Path, repeats: int, pairs: int,
                      log: Callable[[str], None]) -> dict:
    """The smoke runs of :func:`schedule`, each in a fresh process, summarised."""
    small = make_small_dataset(data_dir, workdir / "kvasir-small", pairs)
    runs, bare = [], []
    for r, plots in schedule(repeats):
        res = one_run(small, workdir, r, plots)
        (runs if plots else bare).append(res)
        log(describe(res, r, repeats, plots))
    return summarise(runs, bare, pairs)


def main(argv: list[str] | None = None) -> None:
    ap = cli.parser(__doc__)
    cli.add_common(ap, repeats="smoke_repeats")
    ap.add_argument("--pairs", type=int, default=None,
                    help="Kvasir-SEG pairs a smoke run uses (default 24)")
    ap.add_argument("--workdir", type=Path, default=None,
                    help="MLflow store, cache and run folders (default: a temporary folder)")
    ap.add_argument("--no-plots", action="store_true", help="--child only: eval.plots=false")
    add_child_options(ap)
    args = ap.parse_args(argv)
    data_dir = check_dataset(args.data_dir)
    if args.child:
        if args.workdir is None:
            ap.error("--child needs --workdir")
        return write_child(args.child_out, smoke_run(data_dir, args.workdir, not args.no_plots))
    stamp = results.Provenance("tracking_overhead.py", sys.argv[1:] if argv is None else argv)
    with tempfile.TemporaryDirectory(prefix="segkit-bench-tracking-") as tmp:
        part = tracking_overhead(data_dir, args.workdir or Path(tmp),
                                 cli.setting(args, "smoke_repeats", "repeats"),
                                 cli.setting(args, "smoke_pairs", "pairs"), logger())
    part["measured"] = stamp.stamp()
    results.update(args.out, {"tracking": part})
    print(f"tracking: {100 * part['share_median']:.1f}% of a smoke run -> {args.out}")


if __name__ == "__main__":
    main()
