"""The whole pipeline against the naive baseline and the machine's limit, in one run.

    python benchmarks/pipeline.py [--data-dir ../shared/data/kvasir-seg] [--repeats 3]
                                  [--steps N] [--warmup N] [--train-images N] [--quick]
                                  [--no-xla] [--notes TEXT] [--out FILE] [--md FILE]
    python benchmarks/pipeline.py --render-only   # BENCHMARKS.md again from the JSON

Runs one script per measurement, in sequence, each in its own process (each also runs
alone; see its --help):

- ``benchmarks/data_prep.py``: cold and warm ``segkit.data.prepare`` of every Kvasir-SEG
  pair, and the peak resident memory of a process doing only that;
- ``benchmarks/train_throughput.py``: steady-state training throughput of the reference
  U-Net (256x256, batch 8): segkit with ``precision=auto`` and float32, the naive baseline,
  in-memory tensors (the input pipeline's overhead) and XLA;
- ``benchmarks/inference.py``: ``model.predict`` at 256x256 (and with XLA) and end to end
  through ``segkit.predict.predict_files``;
- ``benchmarks/flops.py``: FLOPs per image and the machine's peak FLOP/s;
- ``benchmarks/tracking_overhead.py``: the share of a smoke run spent in MLflow and plots.

Each merges its part into a partial results file (``<out>.partial.json``, removed at the
end); then ``--out`` (``results/benchmarks.json``: the machine, versions, settings, every
part, and the ratios, findings and table derived from them) and ``--md`` (``BENCHMARKS.md``)
are written. ``--render-only`` measures nothing: it derives and writes both again from
``--out``. BENCHMARKS.md also includes ``results/determinism_cost.json``
(benchmarks/determinism_cost.py) and ``results/accelerator.md`` (benchmarks/accelerator.py)
when present.

The machine is shared and noisy: variants are interleaved (the order rotates per repeat),
every figure is a median over repeats, and only ratios within one run are compared.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from anywhere: benchmarks and segkit beside it
    sys.path.insert(0, str(ROOT))

from benchmarks.common import BATCH, BENCHMARKS, SIZE, cli, results  # noqa: E402
from benchmarks.common.config import check_dataset  # noqa: E402
from benchmarks.common.machine import gpu_names, machine, versions  # noqa: E402
from benchmarks.common.report import print_table, write_outputs  # noqa: E402
from benchmarks.common.timing import logger  # noqa: E402


def parse(argv: list[str] | None) -> argparse.Namespace:
    ap = cli.parser(__doc__)
    cli.add_common(ap, out_help="the results JSON written (default results/benchmarks.json); "
                                "with --render-only, also read")
    ap.add_argument("--steps", type=int, default=None,
                    help="measured training steps per repeat and variant (default 5; quick 2)")
    ap.add_argument("--warmup", type=int, default=None, help="steps skipped per repeat (1)")
    ap.add_argument("--train-images", type=int, default=None,
                    help="training images the variants cycle through (default 256; quick 32)")
    ap.add_argument("--no-xla", action="store_true", help="skip the jit_compile=True variants")
    ap.add_argument("--md", type=Path, default=ROOT / "BENCHMARKS.md",
                    help="the Markdown report written (default BENCHMARKS.md)")
    ap.add_argument("--notes", default="", help="free text recorded with the machine")
    ap.add_argument("--render-only", action="store_true",
                    help="re-render --md (and the table in --out) from --out, measure nothing")
    return ap.parse_args(argv)


def settings(args: argparse.Namespace) -> dict:
    """The settings every script runs with (recorded in the results)."""
    return {"repeats": cli.setting(args, "repeats"), "steps": cli.setting(args, "steps"),
            "warmup_steps": cli.setting(args, "warmup"), "batch": BATCH, "image_size": SIZE,
            "train_images": cli.setting(args, "train_images"),
            "predict_images": cli.setting(args, "predict_images"),
            "e2e_images": cli.setting(args, "e2e_images"), "xla": not args.no_xla}


def script_args(args: argparse.Namespace, s: dict, tmp: Path, cache: Path) -> dict:
    """The arguments of each script after data_prep.py for this run (``cache``: the segkit
    cache data_prep.py filled)."""
    data, xla = f"--data-dir={args.data_dir}", [] if s["xla"] else ["--no-xla"]
    smoke = 1 if args.quick else max(1, s["repeats"] - 1)
    return {
        "train_throughput.py": [data, f"--cache-dir={cache}", f"--repeats={s['repeats']}",
                                f"--steps={s['steps']}", f"--warmup={s['warmup_steps']}",
                                f"--train-images={s['train_images']}", *xla],
        "inference.py": [data, f"--cache-dir={cache}", f"--repeats={s['repeats']}",
                         f"--predict-images={s['predict_images']}",
                         f"--e2e-images={s['e2e_images']}", *xla],
        "flops.py": [],
        "tracking_overhead.py": [data, f"--repeats={smoke}",
                                 f"--pairs={cli.setting(args, 'smoke_pairs', 'pairs')}",
                                 f"--workdir={tmp / 'tracking'}"],
    }


def run_script(script: str, extra: list[str], partial: Path, log) -> None:
    log(f"{script} {shlex.join(extra)}")
    subprocess.run([sys.executable, str(BENCHMARKS / script), *extra, f"--out={partial}"],
                   check=True)


def run_scripts(args: argparse.Namespace, s: dict, partial: Path, log) -> None:
    """Every measurement script in sequence, merging its part into ``partial``."""
    with tempfile.TemporaryDirectory(prefix="segkit-bench-") as tmp:
        run_script("data_prep.py", [f"--data-dir={args.data_dir}", f"--repeats={s['repeats']}",
                                    f"--workdir={Path(tmp) / 'data'}"], partial, log)
        cache = Path(results.load(partial)["data"]["cache_entry"]).parent  # kept by data_prep
        for script, extra in script_args(args, s, Path(tmp), cache).items():
            run_script(script, extra, partial, log)


def measure(args: argparse.Namespace, argv: list[str]) -> dict:
    """The run's header, every script's part, and the machine's state at the end."""
    log, t0 = logger(), time.perf_counter()
    args.data_dir = check_dataset(args.data_dir)
    s = settings(args)
    partial = args.out.with_name(f"{args.out.stem}.partial.json")
    results.save(partial, {
        "started": dt.datetime.now().isoformat(timespec="seconds"), "quick": args.quick,
        "machine": machine(), "versions": versions(), "notes": args.notes,
        "command": shlex.join(["python", "benchmarks/pipeline.py", *argv]), "settings": s})
    run_scripts(args, s, partial, log)
    res = results.load(partial)
    res["machine"]["gpu"] = gpu_names()
    res["machine"]["load_average_end"] = list(os.getloadavg())
    res["wall_s"] = time.perf_counter() - t0
    partial.unlink()
    return res


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    args = parse(argv)
    res = results.load(args.out) if args.render_only else measure(args, argv)
    if not res:
        raise SystemExit(f"error: no results in {args.out}")
    print_table(write_outputs(res, args.out, args.md))
    print(f"written {args.out} and {args.md}")


if __name__ == "__main__":
    main()
