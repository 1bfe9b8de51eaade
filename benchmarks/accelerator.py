"""Training and inference speed of segkit's models on an accelerator, on any Keras 3 backend.

    KERAS_BACKEND=jax python benchmarks/accelerator.py --out results/accelerator.json
    python benchmarks/accelerator.py --quick        # a tiny run, to check the script itself

For GPU machines where TensorFlow may be missing: it imports only Keras, NumPy and segkit's
model and loss code (no TensorFlow, no tf.data, no MLflow), so it measures the models'
arithmetic from random in-memory batches, not segkit's input pipeline. Every configuration is
compiled (XLA on JAX; ``jit_compile=True`` elsewhere) and timed after its compilation; the
policies are interleaved per repeat and each figure is the median of the repeats. Results are
written after every measurement, so a run cut short keeps what it measured.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# (name, builder keyword arguments, image size, training batches): the presets' models.
MODELS = {
    "reference": ({"depth": 4, "filters": 16}, 256, (8, 32)),
    "cpu_best": ({"depth": 4, "filters": 16, "batch_norm": True}, 128, (8,)),
    "best": ({"depth": 5, "filters": 32, "batch_norm": True, "dropout": 0.1}, 352, (16,)),
}
BUILDER = {"reference": "unet", "cpu_best": "unet", "best": "resunet"}
POLICIES = ("float32", "mixed_bfloat16", "mixed_float16")


def device_name() -> str:
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version",
                              "--format=csv,noheader"], capture_output=True, text=True,
                             timeout=30)
        if out.returncode == 0 and out.stdout.strip():
            return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return platform.processor() or platform.machine()


def build(name: str, policy: str):
    import keras

    from segkit.losses import BCEDice
    from segkit.models import MODELS as REGISTRY

    keras.mixed_precision.set_global_policy(policy)
    kwargs, size, _ = MODELS[name]
    model = REGISTRY.get(BUILDER[name]).build_fn()(image_size=size, **kwargs)
    model.compile(optimizer=keras.optimizers.AdamW(1e-3), loss=BCEDice(),
                  metrics=[keras.metrics.BinaryAccuracy(name="accuracy"),
                           keras.metrics.BinaryIoU(target_class_ids=[1], name="iou")],
                  jit_compile=True)
    return model


def timed(fn, steps: int) -> float:
    """Seconds per call of ``fn`` over ``steps`` calls (each returns host values: synced)."""
    start = time.perf_counter()
    for _ in range(steps):
        fn()
    return (time.perf_counter() - start) / steps


def measure(name: str, policy: str, batch: int, steps: int, predict_batch: int) -> dict:
    import keras
    import numpy as np

    size = MODELS[name][1]
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (batch, size, size, 3)).astype("float32")
    y = (rng.uniform(size=(batch, size, size, 1)) > 0.85).astype("float32")
    xp = rng.uniform(0, 255, (predict_batch, size, size, 3)).astype("float32")
    model = build(name, policy)
    t = time.perf_counter()
    model.train_on_batch(x, y)
    compile_s = time.perf_counter() - t
    model.train_on_batch(x, y)  # warm-up after compilation
    step_s = timed(lambda: model.train_on_batch(x, y), steps)
    t = time.perf_counter()
    np.asarray(model.predict_on_batch(xp))
    predict_compile_s = time.perf_counter() - t
    predict_s = timed(lambda: np.asarray(model.predict_on_batch(xp)), steps)
    out = {"model": name, "policy": policy, "image_size": size, "batch": batch,
           "params": int(model.count_params()), "train_compile_s": compile_s,
           "train_img_per_s": batch / step_s, "predict_batch": predict_batch,
           "predict_compile_s": predict_compile_s, "predict_img_per_s": predict_batch / predict_s}
    keras.backend.clear_session()
    return out


def summarise(rows: list[dict]) -> list[dict]:
    """Medians over repeats per (model, batch, policy), with bf16/f16 speed-ups vs float32."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["model"], r["batch"], r["policy"]), []).append(r)
    table = []
    for (model, batch, policy), rs in groups.items():
        table.append({"model": model, "batch": batch, "policy": policy,
                      "image_size": rs[0]["image_size"], "params": rs[0]["params"],
                      "repeats": len(rs),
                      "train_img_per_s": statistics.median(r["train_img_per_s"] for r in rs),
                      "predict_batch": rs[0]["predict_batch"],
                      "predict_img_per_s": statistics.median(r["predict_img_per_s"] for r in rs),
                      "train_compile_s": statistics.median(r["train_compile_s"] for r in rs)})
    base = {(t["model"], t["batch"]): t for t in table if t["policy"] == "float32"}
    for t in table:
        ref = base.get((t["model"], t["batch"]))
        if ref:
            t["train_vs_float32"] = t["train_img_per_s"] / ref["train_img_per_s"]
            t["predict_vs_float32"] = t["predict_img_per_s"] / ref["predict_img_per_s"]
    return table


def render(res: dict) -> str:
    """The Markdown section BENCHMARKS.md includes (benchmarks/pipeline.py)."""
    command = res["command"].split(" --notes ")[0]  # the notes follow the sentence
    version = f", {res['backend_version']}" if res.get("backend_version") else ""
    lines = [f"`{command}` on **{res['device']}** (Keras {res['keras']}, backend "
             f"`{res['backend']}`{version}; {res['started']}, {res['wall_s']:.0f} s). "
             f"{res.get('notes', '')}".strip(), "",
             "| model | input | batch | policy | train img/s | x float32 | predict img/s "
             "(batch) | x float32 | first-step compile |",
             "|:--|--:|--:|:--|--:|--:|--:|--:|--:|"]
    for t in res["table"]:
        lines.append(
            f"| {t['model']} ({t['params'] / 1e6:.1f} M) | {t['image_size']} | {t['batch']} | "
            f"{t['policy']} | {t['train_img_per_s']:.0f} | "
            f"{t.get('train_vs_float32', float('nan')):.2f} | {t['predict_img_per_s']:.0f} "
            f"({t['predict_batch']}) | {t.get('predict_vs_float32', float('nan')):.2f} | "
            f"{t['train_compile_s']:.0f} s |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=ROOT / "results" / "accelerator.json")
    ap.add_argument("--steps", type=int, default=20, help="timed steps per measurement")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--models", default=",".join(MODELS), help="comma-separated: "
                    + ", ".join(MODELS))
    ap.add_argument("--policies", default=",".join(POLICIES))
    ap.add_argument("--predict-batch", type=int, default=64)
    ap.add_argument("--quick", action="store_true", help="tiny sizes, to check the script")
    ap.add_argument("--notes", default="")
    args = ap.parse_args(argv)
    if args.quick:
        for name, (kw, _, _) in list(MODELS.items()):
            MODELS[name] = ({**kw, "filters": 4, "depth": 2}, 32, (2,))
        args.steps, args.repeats, args.predict_batch = 2, 1, 4

    import keras

    backend = keras.backend.backend()
    version = ""
    if backend == "jax":
        import jax

        version = f"jax {jax.__version__}, devices {[d.device_kind for d in jax.devices()]}"
    res = {"command": shlex.join(["python", "benchmarks/accelerator.py",
                                  *(argv if argv is not None else sys.argv[1:])]),
           "started": time.strftime("%Y-%m-%dT%H:%M:%S"), "device": device_name(),
           "keras": keras.__version__, "backend": backend, "backend_version": version,
           "notes": args.notes, "rows": [], "errors": []}
    t0 = time.perf_counter()
    policies = args.policies.split(",")
    for r in range(args.repeats):
        for name in args.models.split(","):
            for batch in MODELS[name][2]:
                order = policies[r % len(policies):] + policies[:r % len(policies)]
                for policy in order:
                    try:
                        row = measure(name, policy, batch, args.steps, args.predict_batch)
                    except Exception as exc:  # noqa: BLE001 - one failing policy is a result
                        res["errors"].append(f"{name} batch {batch} {policy}: "
                                             f"{type(exc).__name__}: {str(exc)[:300]}")
                        print(res["errors"][-1], flush=True)
                        continue
                    res["rows"].append(row)
                    print(f"[{time.perf_counter() - t0:5.0f}s] {name} b{batch} {policy}: "
                          f"train {row['train_img_per_s']:.1f} img/s (compile "
                          f"{row['train_compile_s']:.0f} s), predict "
                          f"{row['predict_img_per_s']:.1f} img/s", flush=True)
                    res["wall_s"] = time.perf_counter() - t0
                    res["table"] = summarise(res["rows"])
                    args.out.parent.mkdir(parents=True, exist_ok=True)
                    args.out.write_text(json.dumps(res, indent=2) + "\n")
    res["wall_s"] = time.perf_counter() - t0
    res["table"] = summarise(res["rows"])
    args.out.write_text(json.dumps(res, indent=2) + "\n")
    args.out.with_suffix(".md").write_text(render(res))
    print(render(res))


if __name__ == "__main__":
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    main()
