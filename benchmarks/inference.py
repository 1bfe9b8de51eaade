"""Inference speed of the reference U-Net: ``model.predict`` at 256x256 (also with XLA) and
end to end at original resolution through ``segkit.predict.predict_files``.

    python benchmarks/inference.py [--data-dir ../shared/data/kvasir-seg] [--repeats 3]
        [--predict-images 64] [--e2e-images 50] [--no-xla] [--cache-dir DIR] [--quick]
        [--out results/benchmarks.json]

The model is compiled by ``segkit.experiment.build_compiled`` with ``precision=auto`` (fresh
weights: the speed does not depend on them), saved, and loaded back with
``segkit.predict.load_model`` for the end-to-end part, which reads each test image, resizes
it, predicts, resizes the mask back and writes it as PNG. ``model.predict`` runs on the
first ``--predict-images`` test images (prepared at 256x256), end to end on the first
``--e2e-images`` test files. The kinds are interleaved (the order rotates per repeat); each
figure is the median of the repeats, after a warm-up (tracing, XLA compilation).

Writes the ``inference`` part of the results JSON (merged: other parts are kept): images/s
per repeat and medians for predict, predict with XLA and end to end, the share of the end-
to-end time spent in the forward pass, the model's load time and the images' mean size.
"""

from __future__ import annotations

import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from anywhere: benchmarks and segkit beside it
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from benchmarks.common import BATCH, cli, results  # noqa: E402
from benchmarks.common.config import check_dataset, prepared  # noqa: E402
from benchmarks.common.timing import logger, median, paired_ratios, rotate  # noqa: E402


class TimedModel:
    """A model whose ``predict_on_batch`` time is added up; everything else is the model's."""

    def __init__(self, model):
        self._model, self.predict_s = model, 0.0

    def __getattr__(self, name):
        return getattr(self._model, name)

    def predict_on_batch(self, x):
        t = time.perf_counter()
        out = np.asarray(self._model.predict_on_batch(x))
        self.predict_s += time.perf_counter() - t
        return out


def predict_models(model, x: np.ndarray, xla: bool) -> dict:
    """``predict``: the model; ``predict_xla``: the same weights compiled by XLA; warmed up."""
    import keras

    model.predict(x[:BATCH], batch_size=BATCH, verbose=0)  # warm-up: tracing
    models = {"predict": model}
    if xla:
        jit = keras.models.clone_model(model)
        jit.set_weights(model.get_weights())
        jit.compile(jit_compile=True)
        jit.predict(x[:BATCH], batch_size=BATCH, verbose=0)  # warm-up: XLA compilation
        models["predict_xla"] = jit
    return models


def loaded_copy(model, workdir: Path) -> tuple[TimedModel, float]:
    """``model`` saved and loaded back by ``segkit.predict.load_model`` (timed), wrapped."""
    from segkit.predict import load_model

    saved = workdir / "random_weights.keras"
    model.save(saved)
    t = time.perf_counter()
    loaded = load_model(str(saved))
    return TimedModel(loaded), time.perf_counter() - t


def end_to_end(timed: TimedModel, paths: Sequence[Path], out: Path) -> tuple[float, float]:
    """Images/s of ``predict_files`` over ``paths``, and the forward pass's share of it."""
    from segkit.predict import predict_files

    timed.predict_s = 0.0
    t = time.perf_counter()
    summary = predict_files(timed, paths, out, threshold=0.5, batch_size=BATCH,
                            progress=False, overwrite=True)
    wall = time.perf_counter() - t
    if summary.failed or len(summary.done) != len(paths):
        raise RuntimeError(f"predict_files: {summary.lines()}")
    return len(paths) / wall, timed.predict_s / wall


def predict_rate(model, x: np.ndarray) -> float:
    t = time.perf_counter()
    model.predict(x, batch_size=BATCH, verbose=0)
    return len(x) / (time.perf_counter() - t)


def mean_megapixels(paths: Sequence[Path]) -> float:
    from PIL import Image

    sizes = []
    for p in paths:
        with Image.open(p) as im:
            sizes.append(im.size)
    return float(np.mean([w * h for w, h in sizes]) / 1e6)


def time_kinds(models: dict, timed: TimedModel, x: np.ndarray, paths: Sequence[Path],
               repeats: int, workdir: Path, log: Callable[[str], None]) -> dict:
    """Images/s of every predict kind and end to end, interleaved, ``repeats`` times."""
    rates: dict[str, list[float]] = {k: [] for k in [*models, "e2e", "e2e_predict_share"]}
    for r in range(repeats):
        for kind in rotate([*models, "e2e"], r):
            if kind in models:
                rates[kind].append(predict_rate(models[kind], x))
                continue
            rate, share = end_to_end(timed, paths, workdir / f"e2e{r}")
            rates["e2e"].append(rate)
            rates["e2e_predict_share"].append(share)
        log(f"  repeat {r + 1}/{repeats}: "
            + ", ".join(f"{k} {rates[k][-1]:.1f} img/s" for k in models)
            + f", end to end {rates['e2e'][-1]:.1f} img/s")
    return rates


def inference(model, images: np.ndarray, paths: Sequence[Path], repeats: int, workdir: Path,
              log: Callable[[str], None], xla: bool = True) -> dict:
    """model.predict at 256x256 (also with XLA) and ``predict_files`` end to end."""
    x = images.astype(np.float32)
    models = predict_models(model, x, xla)
    timed, load_s = loaded_copy(model, workdir)
    predict_files_warmup(timed, paths, workdir)
    rates = time_kinds(models, timed, x, paths, repeats, workdir, log)
    out = {"predict_images": len(x), "batch": BATCH, "predict_img_per_s": rates["predict"],
           "predict_img_per_s_median": median(rates["predict"]), "e2e_images": len(paths),
           "e2e_img_per_s": rates["e2e"], "e2e_img_per_s_median": median(rates["e2e"]),
           "e2e_predict_share": rates["e2e_predict_share"],
           "e2e_predict_share_median": median(rates["e2e_predict_share"]),
           "load_model_s": load_s, "e2e_mean_megapixels": mean_megapixels(paths)}
    if "predict_xla" in rates:
        out["predict_xla_img_per_s"] = rates["predict_xla"]
        out["predict_xla_img_per_s_median"] = median(rates["predict_xla"])
        out["predict_xla_vs_predict_paired"] = paired_ratios(rates["predict_xla"],
                                                             rates["predict"])
    return out


def predict_files_warmup(timed: TimedModel, paths: Sequence[Path], workdir: Path) -> None:
    from segkit.predict import predict_files

    predict_files(timed, paths[:BATCH], workdir / "warmup", threshold=0.5, progress=False)


def measure(args, workdir: Path, log: Callable[[str], None]) -> dict:
    import keras

    from segkit.experiment import build_compiled
    from segkit.precision import resolve_precision

    cfg, data = prepared(check_dataset(args.data_dir), args.cache_dir or workdir / "cache")
    keras.utils.set_random_seed(0)
    model = build_compiled(cfg, resolve_precision("auto"), max(1, len(data.split.train) // BATCH))
    test = data.names("test")
    paths = [data.samples[n].image for n in test][: cli.setting(args, "e2e_images")]
    images = data.images["test"][: cli.setting(args, "predict_images")]
    log(f"inference: {len(images)} images at {cfg.data.image_size}, {len(paths)} end to end")
    return inference(model, images, paths, cli.setting(args, "repeats"), workdir, log,
                     xla=not args.no_xla)


def main(argv: list[str] | None = None) -> None:
    ap = cli.parser(__doc__)
    cli.add_common(ap)
    cli.add_cache_dir(ap)
    ap.add_argument("--predict-images", type=int, default=None,
                    help="test images model.predict runs on (default 64; quick 16)")
    ap.add_argument("--e2e-images", type=int, default=None,
                    help="test files predicted end to end (default 50; quick 8)")
    ap.add_argument("--no-xla", action="store_true", help="skip predict with jit_compile=True")
    args = ap.parse_args(argv)
    stamp = results.Provenance("inference.py", sys.argv[1:] if argv is None else argv)
    with tempfile.TemporaryDirectory(prefix="segkit-bench-inference-") as tmp:
        part = measure(args, Path(tmp), logger())
    part["measured"] = stamp.stamp()
    results.update(args.out, {"inference": part})
    print(f"inference: predict {part['predict_img_per_s_median']:.1f} img/s, end to end "
          f"{part['e2e_img_per_s_median']:.1f} img/s -> {args.out}")


if __name__ == "__main__":
    main()
