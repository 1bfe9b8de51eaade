"""The ``segkit`` command: ``segkit predict --model MODEL --output DIR INPUT ...``.

A thin layer over ``segkit.predict``: it parses arguments, prints what was used and a
summary, and turns a SegkitError into ``error: <message>`` and exit status 2.
Exit status: 0 all inputs done or skipped, 1 some input failed, 2 nothing could run.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from segkit.errors import SegkitError

EPILOG = """\
MODEL is a .keras file, runs:/<run_id>/model, models:/<name>/<version>,
models:/<name>@<alias> or models:/m-<logged model id>. INPUT is an image file, a folder
(its images, not recursive) or a quoted glob pattern. For each input <stem>, OUT_DIR gets
<stem>_mask.png (0/255 at the input's own size), and <stem>_prob.png / <stem>_overlay.png
when asked. Exit status: 0 all done or skipped, 1 some input failed, 2 nothing could run.
"""


def _threshold(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{text} is outside [0, 1]")
    return value


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} is not a positive integer")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="segkit", description="segkit command line tools")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    p = commands.add_parser(
        "predict", help="segment images with a saved or registered model", epilog=EPILOG,
        description="Segment images at their own resolution with a saved or registered model.",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="image files, folders, globs")
    p.add_argument("--model", required=True, metavar="MODEL", help="model file or MLflow URI")
    p.add_argument("--output", required=True, type=Path, metavar="OUT_DIR",
                   help="folder for the outputs (created if missing)")
    p.add_argument("--threshold", type=_threshold, metavar="T",
                   help="probability threshold; default: val_best_threshold of the model's "
                        "training run, else 0.5")
    p.add_argument("--batch-size", type=_positive, default=8, metavar="N",
                   help="images per forward pass (default 8)")
    p.add_argument("--probabilities", choices=("none", "8", "16"), default="none",
                   help="also write <stem>_prob.png with 8 or 16 bits (default none)")
    p.add_argument("--overlay", action="store_true",
                   help="also write <stem>_overlay.png: the image with the prediction drawn")
    p.add_argument("--overwrite", action="store_true",
                   help="replace existing outputs (default: skip those inputs)")
    p.add_argument("--with-truth", type=Path, metavar="MASK_DIR",
                   help="score the predictions against masks of the same stems in MASK_DIR "
                        "and write OUT_DIR/metrics.json")
    p.add_argument("--tracking-uri", metavar="URI",
                   help="MLflow store for runs:/ and models:/ URIs (default: "
                        "$MLFLOW_TRACKING_URI, else sqlite:///<cwd>/mlflow.db)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def _setup_logging() -> None:
    """segkit's notes (skipped inputs, unscored inputs) on stderr, without timestamps."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger = logging.getLogger("segkit")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False


def predict_command(args: argparse.Namespace) -> int:
    """Run ``segkit predict``; return the exit status."""
    from tqdm.contrib.logging import logging_redirect_tqdm

    from segkit import predict

    paths = predict.collect_inputs(args.inputs)  # before loading anything: fails fast
    if args.with_truth is not None and not args.with_truth.is_dir():
        raise predict.PredictError(f"--with-truth {args.with_truth}: no such folder")
    tracking_uri = args.tracking_uri or predict.default_tracking_uri()
    model = predict.load_model(args.model, tracking_uri)
    threshold, why = predict.resolve_threshold(args.model, args.threshold,
                                               tracking_uri=tracking_uri)
    size = predict.model_size(model)
    print(f"model {args.model} ({size}x{size}); {len(paths)} input(s); "
          f"threshold {threshold:g} ({why})", flush=True)
    with logging_redirect_tqdm(loggers=[logging.getLogger("segkit")]):
        summary = predict.predict_files(
            model, paths, args.output, threshold=threshold, batch_size=args.batch_size,
            probabilities=args.probabilities, overlay=args.overlay, overwrite=args.overwrite,
            progress=not args.no_progress)
    if args.with_truth is not None:
        failed = {path for path, _ in summary.failed}
        report = predict.score_with_truth(
            model, [p for p in paths if p not in failed], args.with_truth, args.output,
            threshold=threshold, batch_size=args.batch_size, overwrite=args.overwrite,
            model_uri=args.model)
        print(f"scored {report['scored']} input(s) against {args.with_truth} "
              f"at their own resolution, threshold {threshold:g}:")
        print(predict.format_table(report["metrics"]))
    print("\n".join(summary.lines()))
    return 1 if summary.failed else 0


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point (``segkit``): returns the exit status."""
    args = build_parser().parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's C++ start-up chatter
    _setup_logging()
    try:
        return predict_command(args)
    except SegkitError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
