"""The ``segkit`` command: ``segkit predict --model MODEL --output DIR INPUT ...`` and
``segkit sync RUN_DIR`` (finish the MLflow logging of a run whose tracking server was gone).

A thin layer over ``segkit.predict`` and ``segkit.sync``: it parses arguments, prints what
was used and a summary, and turns a SegkitError into ``error: <message>`` and its exit status.
Exit status: 0 all inputs done or skipped, 1 some input failed, 2 nothing could run.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from segkit.console import native_startup, quiet_environment
from segkit.errors import SegkitError

EPILOG = """\
MODEL is a .keras file, runs:/<run_id>/model, models:/<name>/<version>,
models:/<name>@<alias>, models:/m-<logged model id>, or an exported model (.onnx, OpenVINO
.xml, SavedModel folder: segkit export); several --model: their ensemble. INPUT is an image
file, a folder (its images, not recursive) or a quoted glob pattern. For each input <stem>,
OUT_DIR gets <stem>_mask.png (0/255 at the input's own size), and <stem>_prob.png /
<stem>_overlay.png when asked. Exit status: 0 all done or skipped, 1 some input failed, 2
nothing could run.
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
    _add_predict_parser(commands)
    _add_sync_parser(commands)
    _add_export_parser(commands)
    _add_compare_parser(commands)
    return parser


def _add_predict_parser(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser(
        "predict", help="segment images with a saved or registered model", epilog=EPILOG,
        description="Segment images at their own resolution with a saved or registered model.",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="image files, folders, globs")
    p.add_argument("--model", required=True, action="append", metavar="MODEL",
                   help="model file, exported model or MLflow URI; give it several times for "
                        "an ensemble (the mean of the models' probabilities)")
    p.add_argument("--runtime", choices=("auto", "tf", "onnx", "openvino"),
                   help="auto: the fastest installed (a Keras model is converted first); "
                        "default: the one that reads the model as it is (Keras: tf)")
    p.add_argument("--tta", action=argparse.BooleanOptionalAction,
                   help="flip averaging (4x slower); default: what the model's training "
                        "run evaluated with (eval.tta), else off")
    p.add_argument("--output", required=True, type=Path, metavar="OUT_DIR",
                   help="folder for the outputs (created if missing)")
    p.add_argument("--threshold", type=_threshold, metavar="T",
                   help="probability threshold; default: val_best_threshold of the model's "
                        "training run (an ensemble: their mean; an export: its "
                        "parity.json's source run), else 0.5")
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
    p.add_argument("-v", "--verbose", action="store_true",
                   help="also TensorFlow's start-up lines and MLflow's download bars")


def _add_compare_parser(commands: argparse._SubParsersAction) -> None:
    c = commands.add_parser(
        "compare", help="is model B better than model A on the same test images?",
        description="Pair two runs' per-image test scores (evaluation/test_per_image.csv) "
                    "image by image: mean difference B - A with a 95% bootstrap interval, "
                    "the Wilcoxon signed-rank p-value, wins/ties/losses and a figure; "
                    "printed, written to --output and logged as an MLflow run. A side is a "
                    "run id, a model URI, or several joined by commas (a group: their mean "
                    "per image). Exit status: 0 done, 2 the sides cannot be compared.")
    c.add_argument("a", metavar="A", help="run id(s) or model URI(s) of the baseline")
    c.add_argument("b", metavar="B", help="run id(s) or model URI(s) compared with A")
    c.add_argument("--metric", choices=("dice", "iou"), default="dice",
                   help="the per-image score compared (default dice)")
    c.add_argument("--output", type=Path, default=Path("compare"), metavar="DIR",
                   help="folder for comparison.md/.json, paired.png, paired_scores.csv")
    c.add_argument("--seed", type=int, default=0, help="seeds the bootstrap (default 0)")
    c.add_argument("--draws", type=_positive, default=10_000, metavar="N",
                   help="bootstrap draws (default 10000)")
    c.add_argument("--tracking-uri", metavar="URI",
                   help="MLflow store (default: $MLFLOW_TRACKING_URI, else "
                        "sqlite:///<cwd>/mlflow.db)")
    c.add_argument("-v", "--verbose", action="store_true", help="MLflow's progress bars too")


def compare_command(args: argparse.Namespace) -> int:
    """Run ``segkit compare``; return the exit status."""
    from segkit.compare import compare, format_table
    from segkit.predict import default_tracking_uri

    uri = args.tracking_uri or default_tracking_uri()
    result, run_id, (a, b) = compare(args.a, args.b, metric=args.metric, tracking_uri=uri,
                                     output=args.output, seed=args.seed, draws=args.draws)
    print(format_table(result, a, b, args.metric))
    print(f"written to {args.output}; logged as run {run_id} (experiment segkit-compare)")
    return 0


def _add_export_parser(commands: argparse._SubParsersAction) -> None:
    e = commands.add_parser(
        "export", help="export a model to ONNX, OpenVINO or a SavedModel, with a parity check",
        description="Export a model (any MODEL that segkit predict takes) with Keras' own "
                    "export, then run the same real images (the test split by default) "
                    "through TensorFlow and the export: max |probability difference| and "
                    "mask Dice are printed and written to parity.json beside it. An MLflow "
                    "model's export is logged to its training run. Exit status: 0 exported, "
                    "1 parity failed (export removed), 2 nothing could run. "
                    "See docs/deployment.md.")
    e.add_argument("--model", required=True, metavar="MODEL", help="model file or MLflow URI")
    e.add_argument("--format", required=True, metavar="FORMAT",
                   help="onnx | openvino | saved_model")
    e.add_argument("--output", required=True, type=Path, metavar="PATH",
                   help="the export: a .onnx or .xml file, or a SavedModel folder")
    e.add_argument("--quantize", metavar="MODE", help="int8: static quantization (onnx, openvino)")
    e.add_argument("--calibration", type=_positive, default=64, metavar="N",
                   help="training images calibrating int8 (default 64)")
    e.add_argument("--parity-images", type=_positive, default=16, metavar="N",
                   help="images of the parity check (default 16)")
    e.add_argument("--images", nargs="+", default=[], metavar="INPUT",
                   help="parity images (files, folders, globs); default: the test split")
    e.add_argument("--data", type=Path, metavar="DIR",
                   help="dataset folder (default $SEGKIT_DATA_DIR): test split, calibration")
    e.add_argument("--threshold", type=_threshold, metavar="T",
                   help="mask threshold (default: the model's val_best_threshold, else 0.5)")
    e.add_argument("--max-diff", type=float, metavar="D",
                   help="largest allowed |probability difference| (default 1e-3; int8: 0.1)")
    e.add_argument("--min-dice", type=float, metavar="D",
                   help="smallest allowed mask Dice (default 0.999; int8: 0.9)")
    e.add_argument("--tracking-uri", metavar="URI",
                   help="MLflow store (default: $MLFLOW_TRACKING_URI, else "
                        "sqlite:///<cwd>/mlflow.db)")
    e.add_argument("-v", "--verbose", action="store_true",
                   help="also TensorFlow's start-up lines and MLflow's progress bars")


def export_command(args: argparse.Namespace) -> int:
    """Run ``segkit export``; return the exit status."""
    from segkit import export

    limits = None
    if args.max_diff is not None or args.min_dice is not None:
        base = export.default_limits(args.quantize)
        limits = export.Limits(base.max_diff if args.max_diff is None else args.max_diff,
                               base.min_dice if args.min_dice is None else args.min_dice)
    request = export.Request(
        args.model, args.format, args.output, quantize=args.quantize,
        calibration=args.calibration, parity_images=args.parity_images,
        inputs=tuple(args.images), data=args.data, threshold=args.threshold, limits=limits,
        tracking_uri=args.tracking_uri)
    request.check()  # before TensorFlow starts
    with native_startup(args.verbose):
        result = export.export_uri(request)
    print("\n".join(result.lines()), flush=True)
    return 0


def _add_sync_parser(commands: argparse._SubParsersAction) -> None:
    s = commands.add_parser(
        "sync", help="finish the MLflow logging of a run whose tracking server was gone",
        description="Send a run folder's pending epoch metrics to its tracking server and, "
                    "when training and evaluation finished, log what the server lacks "
                    "(end-of-run metrics, evaluation files, TensorBoard logs, the model) and "
                    "end the run FINISHED. Safe to run again. Exit status: 0 done, 2 nothing "
                    "could be sent.")
    s.add_argument("run_dir", type=Path, metavar="RUN_DIR",
                   help="the run's folder (printed by the failed run; its segkit.run_dir tag)")
    s.add_argument("--tracking-uri", metavar="URI",
                   help="the tracking server, if not the one the run used")
    s.add_argument("-v", "--verbose", action="store_true",
                   help="also TensorFlow's start-up lines and MLflow's progress bars")


def sync_command(args: argparse.Namespace) -> int:
    """Run ``segkit sync``; return the exit status."""
    from segkit.sync import sync_run

    with native_startup(args.verbose):  # TensorFlow may start (to log the model)
        lines = sync_run(args.run_dir, args.tracking_uri)
    print("\n".join(lines), flush=True)
    return 0


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
    predict.check_output_dir(args.output)  # writable, before any prediction
    if args.with_truth is not None and not args.with_truth.is_dir():
        raise predict.PredictError(f"--with-truth {args.with_truth}: no such folder")
    tracking_uri = args.tracking_uri or predict.default_tracking_uri()
    with native_startup(args.verbose):  # TensorFlow starts here: its chatter is filtered
        model = predict.open_models(args.model, args.runtime, tracking_uri)
    sources = [predict.model_source(uri, tracking_uri) for uri in args.model]
    threshold, why = predict.resolve_threshold(args.model, args.threshold, sources=sources)
    tta, tta_why = predict.resolve_tta(args.model, args.tta, sources=sources)
    size = model.input_size
    what = args.model[0] if len(args.model) == 1 else f"ensemble of {len(args.model)} models"
    print(f"model {what} ({size}x{size}, runtime {model.runtime}); {len(paths)} input(s); "
          f"threshold {threshold:g} ({why}); TTA {'on' if tta else 'off'} ({tta_why})",
          flush=True)
    with logging_redirect_tqdm(loggers=[logging.getLogger("segkit")]):
        summary = predict.predict_files(
            model, paths, args.output, threshold=threshold, batch_size=args.batch_size,
            probabilities=args.probabilities, overlay=args.overlay, overwrite=args.overwrite,
            progress=not args.no_progress, tta=tta)
    if args.with_truth is not None:
        failed = {path for path, _ in summary.failed}
        report = predict.score_with_truth(
            model, [p for p in paths if p not in failed], args.with_truth, args.output,
            threshold=threshold, batch_size=args.batch_size, overwrite=args.overwrite,
            model_uri=args.model[0] if len(args.model) == 1 else args.model, tta=tta)
        print(f"scored {report['scored']} input(s) against {args.with_truth} "
              f"at their own resolution, threshold {threshold:g}:")
        print(predict.format_table(report["metrics"]))
    print("\n".join(summary.lines()))
    return 1 if summary.failed else 0


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point (``segkit``): returns the exit status."""
    args = build_parser().parse_args(argv)
    quiet_environment(args.verbose)
    _setup_logging()
    commands = {"sync": sync_command, "compare": compare_command, "predict": predict_command}
    commands["export"] = export_command
    command = commands[args.command]
    try:
        return command(args)
    except SegkitError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_status
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
