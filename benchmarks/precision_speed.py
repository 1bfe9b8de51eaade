"""Training and prediction throughput of the reference U-Net per precision policy.

    python benchmarks/precision_speed.py [--steps 10] [--repeats 3] [--out FILE.json]

Same run, interleaved repeats, medians: the machine is shared and noisy, so only ratios
within one run mean much. Data are random in-memory tensors, so this measures the model,
not the input pipeline.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from segkit.models import build_unet  # noqa: E402
from segkit.precision import cpu_has_bf16, resolve_precision  # noqa: E402
from segkit.training_metrics import training_metrics  # noqa: E402


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def compiled(policy: str, size: int) -> keras.Model:
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(policy)
    try:
        model = build_unet(image_size=size, depth=4, filters=16)
    finally:
        keras.config.set_dtype_policy(previous)
    model.compile(keras.optimizers.Adam(1e-3), keras.losses.BinaryCrossentropy(),
                  metrics=training_metrics())
    return model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--policies", nargs="+", default=["float32", "mixed_bfloat16"])
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default="results/precision_speed.json")
    args = ap.parse_args()

    rng = np.random.default_rng(0)
    n = args.batch * args.steps
    x = rng.integers(0, 256, (n, args.size, args.size, 3)).astype(np.float32)
    y = (rng.random((n, args.size, args.size, 1)) < 0.15).astype(np.float32)
    models = {p: compiled(p, args.size) for p in args.policies}
    for model in models.values():  # warm-up: tracing and first-step allocation
        model.fit(x[: 2 * args.batch], y[: 2 * args.batch], batch_size=args.batch, verbose=0)
        model.predict(x[: args.batch], batch_size=args.batch, verbose=0)
    train, predict = {p: [] for p in models}, {p: [] for p in models}
    for _ in range(args.repeats):  # interleaved, so drifts in machine load hit every policy
        for p, model in models.items():
            t = time.perf_counter()
            model.fit(x, y, batch_size=args.batch, epochs=1, verbose=0, shuffle=False)
            train[p].append(n / (time.perf_counter() - t))
            t = time.perf_counter()
            model.predict(x, batch_size=args.batch, verbose=0)
            predict[p].append(n / (time.perf_counter() - t))
    result = {
        "cpu": cpu_name(), "cores": os.cpu_count(), "native_bf16": cpu_has_bf16(),
        "auto_policy": resolve_precision("auto"), "image_size": args.size,
        "batch": args.batch, "steps": args.steps, "repeats": args.repeats,
        "train_img_per_s": {p: statistics.median(v) for p, v in train.items()},
        "predict_img_per_s": {p: statistics.median(v) for p, v in predict.items()},
        "train_runs": train, "predict_runs": predict,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(f"{result['cpu']} ({result['cores']} cores), native bf16: {result['native_bf16']}, "
          f"auto -> {result['auto_policy']}")
    for p in models:
        print(f"{p:>15}: train {result['train_img_per_s'][p]:6.2f} img/s, "
              f"predict {result['predict_img_per_s'][p]:6.2f} img/s (median of {args.repeats})")
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
