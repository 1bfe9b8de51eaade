"""The speed cost of ``trainer.deterministic=true`` (TensorFlow op determinism).

    python benchmarks/determinism_cost.py [--size 128] [--steps 20] [--repeats 3]

Op determinism is process-wide and cannot be switched off again, so each measurement is a
fresh subprocess (training steps of the reference U-Net on random in-memory data, float32);
the two settings are interleaved and the medians compared, in one run on one machine.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

CHILD = """
import os, sys, time
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
import keras, numpy as np, tensorflow as tf
from segkit.models import build_unet
size, steps, det = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3] == "1"
keras.utils.set_random_seed(0)
if det:
    tf.config.experimental.enable_op_determinism()
model = build_unet(image_size=size)
model.compile(keras.optimizers.Adam(1e-3), keras.losses.BinaryCrossentropy())
rng = np.random.default_rng(0)
x = rng.uniform(0, 255, (8, size, size, 3)).astype("float32")
y = (rng.uniform(size=(8, size, size, 1)) > 0.5).astype("float32")
for _ in range(3):
    model.train_on_batch(x, y)  # tracing and warm-up
start = time.perf_counter()
for _ in range(steps):
    model.train_on_batch(x, y)
print(8 * steps / (time.perf_counter() - start))
"""


def measure(size: int, steps: int, deterministic: bool) -> float:
    out = subprocess.run([sys.executable, "-c", CHILD, str(size), str(steps),
                          "1" if deterministic else "0"], capture_output=True, text=True,
                         check=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    return float(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default="results/determinism_cost.json")
    args = ap.parse_args()
    runs: dict[str, list[float]] = {"default": [], "deterministic": []}
    for r in range(args.repeats):
        order = [False, True] if r % 2 == 0 else [True, False]
        for det in order:
            runs["deterministic" if det else "default"].append(
                measure(args.size, args.steps, det))
    med = {k: statistics.median(v) for k, v in runs.items()}
    result = {"size": args.size, "batch": 8, "steps": args.steps, "images_per_s": runs,
              "median_images_per_s": med,
              "slowdown": med["default"] / med["deterministic"]}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(f"train img/s, median of {args.repeats}: default {med['default']:.2f}, "
          f"deterministic {med['deterministic']:.2f} (x{result['slowdown']:.2f} slower)")


if __name__ == "__main__":
    main()
