"""Command-line options the benchmark scripts share, and their defaults (full or --quick)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from benchmarks.common import DEFAULT_DATA, RESULTS

# Settings of a full run and of --quick (tiny, for checking the scripts only).
FULL = {"repeats": 3, "steps": 5, "warmup": 1, "train_images": 256, "predict_images": 64,
        "e2e_images": 50, "smoke_repeats": 2, "smoke_pairs": 24}
QUICK = {"repeats": 1, "steps": 2, "warmup": 1, "train_images": 32, "predict_images": 16,
         "e2e_images": 8, "smoke_repeats": 1, "smoke_pairs": 24}


def parser(doc: str) -> argparse.ArgumentParser:
    """A parser whose help is the script's docstring (what it measures, how, what it writes)."""
    return argparse.ArgumentParser(description=doc,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)


OUT_HELP = "results JSON this script merges its part into (default results/benchmarks.json)"


def add_common(ap: argparse.ArgumentParser, *, repeats: str = "repeats",
               out_help: str = OUT_HELP) -> None:
    """--data-dir, --repeats (whose defaults are those of the setting ``repeats``), --quick
    and --out (described by ``out_help``)."""
    ap.add_argument("--data-dir", type=Path,
                    default=Path(os.environ.get("SEGKIT_DATA_DIR") or DEFAULT_DATA),
                    help="the Kvasir-SEG folder (images/, masks/; default: "
                         "$SEGKIT_DATA_DIR or ../shared/data/kvasir-seg)")
    ap.add_argument("--repeats", type=int, default=None,
                    help=f"interleaved repeats; each figure is their median "
                         f"(default {FULL[repeats]}; --quick {QUICK[repeats]})")
    ap.add_argument("--quick", action="store_true",
                    help="tiny settings, to check the script (numbers not comparable)")
    ap.add_argument("--out", type=Path, default=RESULTS, help=out_help)


def add_cache_dir(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--cache-dir", type=Path, default=None,
                    help="segkit's decoded-array cache to prepare the data with (default: a "
                         "temporary folder, so the first preparation decodes every image)")


def setting(args: argparse.Namespace, name: str, option: str | None = None):
    """The option ``option`` (default: ``name``) as given, else the full or --quick default
    of the setting ``name``."""
    value = getattr(args, option or name, None)
    return value if value is not None else (QUICK if args.quick else FULL)[name]
