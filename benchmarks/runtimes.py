"""Inference runtimes on one machine, same images, one run: TensorFlow, TensorFlow with XLA,
ONNX Runtime, OpenVINO and their int8 (static quantization) variants.

    python benchmarks/runtimes.py [--model MODEL] [--data-dir DIR] [--repeats 3]
        [--e2e-images 50] [--train-images 256] [--train-epochs 4] [--quick]
        [--out results/runtimes.json] [--md BENCHMARKS.md]

The model is ``--model`` (anything ``segkit predict`` takes), else a reference U-Net
(conf/model/unet.yaml at 256x256) trained briefly here on the first ``--train-images``
training images, so that its masks are real and parity is judged on real decisions. Each
runtime is built with segkit's own code (``segkit.runtimes``, ``segkit export``'s int8
path: ONNX Runtime QDQ static quantization calibrated on 64 training images).

Measured per runtime, interleaved (the order rotates per repeat), medians of the repeats:
img/s at the model's size with batch 1 and batch 8, and end to end at original resolution
through ``segkit.predict.predict_files`` (read, resize, predict, resize back, write PNG);
the share of the float32 peak the batch-8 rate reaches (forward FLOPs counted by
benchmarks/common/flops.py, peak from benchmarks/flops.py). Parity on every held-out test
image (120): Dice between each runtime's masks and TensorFlow's, and each one's held-out
mDice (threshold 0.5, at the model's size). Writes ``--out`` and the runtimes section of
BENCHMARKS.md (``--md``, rendered again from results/benchmarks.json beside ``--out``, as
``pipeline.py --render-only`` does). About 10-15 minutes on an idle 2-core CPU; --quick
is for checking the script.
"""

from __future__ import annotations

import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from anywhere: benchmarks and segkit beside it
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from benchmarks.common import DEFAULT_DATA, cli, results  # noqa: E402
from benchmarks.common.config import check_dataset  # noqa: E402
from benchmarks.common.machine import machine  # noqa: E402
from benchmarks.common.timing import logger, median, rotate  # noqa: E402

TARGETS = {"float32_x_tf": 1.8, "float32_peak": 0.80, "int8_x_tf": 2.5, "int8_drop": 0.005,
           "parity_dice": 0.999}
KINDS = ("tf", "tf_xla", "onnx", "openvino", "onnx_int8", "openvino_int8")


def train_reference(size: int, train: list, images: int, epochs: int, log) -> object:
    """A reference U-Net (conf/model/unet.yaml) trained for ``epochs`` on ``images`` pairs,
    with BCE + Dice (conf/loss/bce_dice.yaml): a few epochs of plain BCE predict empty masks,
    which makes parity and the int8 mDice drop trivially perfect."""
    import keras
    from omegaconf import OmegaConf

    from segkit.export import load_images, load_masks
    from segkit.losses import build_loss
    from segkit.models import build_model

    keras.utils.set_random_seed(0)
    model = build_model(OmegaConf.load(ROOT / "conf" / "model" / "unet.yaml"), size)
    model.compile(keras.optimizers.Adam(1e-3),
                  build_loss(OmegaConf.load(ROOT / "conf" / "loss" / "bce_dice.yaml")))
    x = load_images([s.image for s in train[:images]], size)
    y = load_masks(train[:images], size).astype(np.float32)
    t = time.perf_counter()
    model.fit(x, y, batch_size=8, epochs=epochs, verbose=0)
    log(f"trained the reference U-Net: {images} images x {epochs} epochs, "
        f"{time.perf_counter() - t:.0f} s")
    return model


def build_runtimes(model, calibration: np.ndarray, workdir: Path, log) -> dict:
    """kind -> predictor, each built the way segkit builds it."""
    from segkit import runtimes
    from segkit.formats import write
    from segkit.quantize import onnx_to_openvino, quantize_onnx

    installed = runtimes.installed_runtimes()
    built: dict = {"tf": runtimes.KerasPredictor(model)}
    import keras

    xla = keras.models.clone_model(model)
    xla.set_weights(model.get_weights())
    built["tf_xla"] = runtimes.KerasPredictor(xla, jit_compile=True)
    if "onnx" in installed:
        fp32 = write(model, "onnx", workdir / "float32.onnx")
        built["onnx"] = runtimes.open_exported(fp32, "onnx")
        q = quantize_onnx(fp32, workdir / "int8.onnx", calibration)
        built["onnx_int8"] = runtimes.open_exported(q, "onnx")
        if "openvino" in installed:
            xml = onnx_to_openvino(q, workdir / "int8.xml")
            built["openvino_int8"] = runtimes.open_exported(xml, "openvino")
    if "openvino" in installed:
        built["openvino"] = runtimes.open_exported(write(model, "openvino",
                                                         workdir / "float32.xml"), "openvino")
    log(f"runtimes: {', '.join(k for k in KINDS if k in built)}")
    return {k: built[k] for k in KINDS if k in built}


def rate(predictor, x: np.ndarray, batch: int, images: int) -> float:
    """img/s over ``images`` images in batches of ``batch`` (one warm-up batch first)."""
    xb = np.asarray(np.resize(x, (batch, *x.shape[1:])), np.float32)
    predictor(xb)
    n, t = 0, time.perf_counter()
    while n < images:
        predictor(xb)
        n += batch
    return n / (time.perf_counter() - t)


def end_to_end(predictor, paths: list, out: Path) -> float:
    from segkit.predict import predict_files

    t = time.perf_counter()
    summary = predict_files(predictor, paths, out, threshold=0.5, batch_size=8,
                            progress=False, overwrite=True)
    if summary.failed:
        raise RuntimeError(summary.lines())
    return len(paths) / (time.perf_counter() - t)


def time_all(built: dict, x: np.ndarray, paths: list, repeats: int, quick: bool,
             workdir: Path, log) -> dict:
    """Interleaved img/s of every kind: batch 1, batch 8, end to end."""
    rates: dict = {k: {"b1": [], "b8": [], "e2e": []} for k in built}
    n1, n8 = (4, 16) if quick else (24, 96)
    for k in built:  # warm-up: tracing, XLA compilation, first-run allocations
        rate(built[k], x, 8, 8)
    for r in range(repeats):
        for k in rotate(list(built), r):
            rates[k]["b1"].append(rate(built[k], x, 1, n1))
            rates[k]["b8"].append(rate(built[k], x, 8, n8))
            rates[k]["e2e"].append(end_to_end(built[k], paths, workdir / f"e2e-{k}"))
        log(f"  repeat {r + 1}/{repeats}: " + ", ".join(
            f"{k} {rates[k]['b8'][-1]:.1f}" for k in built) + " img/s (batch 8)")
    return rates


def parity_all(built: dict, test_x: np.ndarray, test_y: np.ndarray) -> dict:
    """Per kind: held-out mDice, and Dice / max |diff| against TensorFlow's masks."""
    from segkit.export import mask_dice, mean_dice, probabilities

    ref = probabilities(built["tf"], test_x)
    out = {}
    for k, predictor in built.items():
        p = ref if k == "tf" else probabilities(predictor, test_x)
        out[k] = {"mdice": mean_dice(p, test_y, 0.5),
                  "mask_dice_vs_tf": mask_dice(p >= 0.5, ref >= 0.5),
                  "max_abs_diff_vs_tf": float(np.abs(p - ref).max())}
    return out


def flops_and_peak(model) -> tuple[float, float | None, str]:
    from benchmarks.common.flops import count_flops
    from benchmarks.flops import machine_peak

    peak, why = machine_peak("float32")
    return float(count_flops(model)["conv"]), peak, why


def summarize(rates: dict, parity: dict, flops: float, peak: float | None) -> dict:
    kinds = {}
    tf8 = median(rates["tf"]["b8"])
    for k, r in rates.items():
        b8 = median(r["b8"])
        kinds[k] = {"b1": median(r["b1"]), "b8": b8, "e2e": median(r["e2e"]),
                    "x_tf": b8 / tf8, "peak_share": b8 * flops / peak if peak else None,
                    **parity[k], "mdice_drop": parity["tf"]["mdice"] - parity[k]["mdice"],
                    "repeats": r}
    return kinds


def measure(args, workdir: Path, log: Callable[[str], None]) -> dict:
    from segkit.export import calibration_images, load_images, load_masks, split_samples
    from segkit.runtimes import load_keras

    root = check_dataset(args.data_dir)
    size = args.size
    if args.model:
        model = load_keras(args.model)
        size = int(model.input_shape[1])
    else:
        train = split_samples(root, "train")
        model = train_reference(size, train, cli.setting(args, "train_images"),
                                args.train_epochs or (1 if args.quick else 4), log)
    test = split_samples(root, "test")[: 8 if args.quick else None]
    test_x, test_y = load_images([s.image for s in test], size), load_masks(test, size)
    built = build_runtimes(model, calibration_images(root, 16 if args.quick else 64, size),
                           workdir, log)
    paths = [s.image for s in test][: cli.setting(args, "e2e_images")]
    rates = time_all(built, test_x, paths, cli.setting(args, "repeats"), args.quick,
                     workdir, log)
    flops, peak, why = flops_and_peak(model)
    found = machine()
    flags = set(found["flags"])
    return {"int8_flags": sorted(flags & {"avx512_vnni", "avx_vnni", "amx_int8"}),
            "cpu": found["cpu"], "cpu_flags": found["flags"],
            "model": args.model or "reference U-Net trained here", "size": size,
            "test_images": len(test), "e2e_images": len(paths), "forward_flops": flops,
            "peak_flops": peak, "peak_assumption": why, "quick": args.quick,
            "kinds": summarize(rates, parity_all(built, test_x, test_y), flops, peak)}


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.0f}%"


def verdicts(res: dict) -> list[str]:
    """The issue's targets, checked against the figures, each with what limits it."""
    k = res["kinds"]
    floats = [n for n in ("onnx", "openvino") if n in k]
    lines = []
    if floats:
        best = max(floats, key=lambda n: k[n]["b8"])
        ok = (k[best]["x_tf"] >= TARGETS["float32_x_tf"]
              and (k[best]["peak_share"] or 0) >= TARGETS["float32_peak"])
        lines.append(f"Best float32 runtime: {best}, x{k[best]['x_tf']:.2f} TensorFlow at "
                     f"{_pct(k[best]['peak_share'])} of float32 peak (targets x1.8 and 80%): "
                     f"{'met' if ok else 'missed'}.")
    ints = [n for n in ("onnx_int8", "openvino_int8") if n in k]
    if ints:
        best = max(ints, key=lambda n: k[n]["b8"])
        ok = (k[best]["x_tf"] >= TARGETS["int8_x_tf"]
              and k[best]["mdice_drop"] <= TARGETS["int8_drop"])
        lines.append(f"Best int8: {best}, x{k[best]['x_tf']:.2f} TensorFlow, held-out mDice "
                     f"drop {k[best]['mdice_drop']:+.4f} (targets x2.5 and <= 0.005): "
                     f"{'met' if ok else 'missed'}. This CPU's int8 dot-product flags: "
                     f"{', '.join(res.get('int8_flags', [])) or 'none (no VNNI, no AMX)'}.")
    bad = [n for n in k if "int8" not in n and k[n]["mask_dice_vs_tf"] < TARGETS["parity_dice"]]
    lines.append("Float32 parity (mask Dice vs TensorFlow >= 0.999 on every test image): "
                 + ("met." if not bad else f"missed by {', '.join(bad)}."))
    return lines


def render(res: dict) -> str:
    """The BENCHMARKS.md section."""
    lines = ["## Inference runtimes (`benchmarks/runtimes.py`)", ""]
    if res.get("quick"):
        lines += ["**Quick mode**: tiny settings, for checking the script only.", ""]
    lines += [f"`{res['command']}`: {res['model']} at {res['size']}x{res['size']}; img/s "
              f"medians of interleaved repeats; end to end on {res['e2e_images']} test files at "
              f"original resolution; parity on {res['test_images']} held-out images (threshold "
              f"0.5). Peak: {res['peak_assumption']}."
              + (f" CPU: {res['cpu']} ({', '.join(res.get('cpu_flags', []))}); compare"
                 " its figures with each other, not with sections measured on another"
                 " machine." if res.get("cpu") else ""), "",
              "| runtime | batch 1 img/s | batch 8 img/s | x TF | % of float32 peak | end to "
              "end img/s | mask Dice vs TF | max abs diff | held-out mDice |",
              "|:--|--:|--:|--:|--:|--:|--:|--:|--:|"]
    for name, k in res["kinds"].items():
        lines.append(f"| {name} | {k['b1']:.1f} | {k['b8']:.1f} | {k['x_tf']:.2f} | "
                     f"{_pct(k['peak_share'])} | {k['e2e']:.1f} | {k['mask_dice_vs_tf']:.5f} | "
                     f"{k['max_abs_diff_vs_tf']:.1e} | {k['mdice']:.4f} |")
    lines += ["", *[f"- {v}" for v in verdicts(res)], ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = cli.parser(__doc__)
    cli.add_common(ap, out_help="results JSON (default results/runtimes.json)")
    ap.set_defaults(out=ROOT / "results" / "runtimes.json")
    ap.add_argument("--model", help="a model segkit predict takes (default: train one here)")
    ap.add_argument("--size", type=int, default=256, help="input side of the trained model")
    ap.add_argument("--train-images", type=int, default=None,
                    help="training images of the reference model (default 256; quick 32)")
    ap.add_argument("--train-epochs", type=int, default=None, help="default 4; quick 1")
    ap.add_argument("--e2e-images", type=int, default=None,
                    help="test files predicted end to end (default 50; quick 8)")
    ap.add_argument("--md", type=Path, default=ROOT / "BENCHMARKS.md",
                    help="the BENCHMARKS.md rendered again (default: the checkout's)")
    args = ap.parse_args(argv)
    args.data_dir = args.data_dir or DEFAULT_DATA
    stamp = results.Provenance("runtimes.py", sys.argv[1:] if argv is None else argv)
    with tempfile.TemporaryDirectory(prefix="segkit-bench-runtimes-") as tmp:
        res = measure(args, Path(tmp), logger())
    res["measured"] = stamp.stamp()
    res["command"] = "python benchmarks/runtimes.py " + " ".join(
        sys.argv[1:] if argv is None else argv)
    results.save(args.out, res)
    print(render(res))
    rerender(args.out, args.md)


def rerender(out: Path, md: Path) -> None:
    """BENCHMARKS.md rendered again (as ``pipeline.py --render-only``), now with the
    runtimes section, when ``out``'s folder holds the pipeline's benchmarks.json."""
    from benchmarks.common.report import write_outputs

    main_results = Path(out).parent / "benchmarks.json"
    if not main_results.is_file():
        print(f"no {main_results}: {md} left as it is (run benchmarks/pipeline.py)")
        return
    write_outputs(results.load(main_results), main_results, md)
    print(f"written {out}; {md} rendered again with the runtimes section")


if __name__ == "__main__":
    main()
