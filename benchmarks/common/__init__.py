"""Helpers shared by the benchmark scripts, one concept per module.

machine (the CPU, its peak FLOP/s, versions, memory), flops (counting a model's FLOPs),
timing (medians, step timing, interleaving), config (segkit's config and data), child (a
script measuring in a fresh process of itself), ledger (seconds spent in wrapped functions),
results (the shared results JSON), and the report: derive, assess, findings, markdown, report.
"""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before any script imports TensorFlow

ROOT = Path(__file__).resolve().parents[2]  # the checkout: segkit/, conf/, results/
BENCHMARKS = ROOT / "benchmarks"
RESULTS = ROOT / "results" / "benchmarks.json"
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "kvasir-seg"
SIZE, BATCH = 256, 8  # the reference U-Net's input and batch
MB = 1024 * 1024
