"""Robustness to a change of centre, simulated: a model's held-out mDice on the official test
split (120 images) under corruptions a new centre brings (colour, illumination, contrast,
blur, JPEG quality, sensor resolution, scale), each at 3 severities, fixed and seeded.

    python benchmarks/shift_eval.py --model runs:/<run_id>/model [--label cpu_best]
    python benchmarks/shift_eval.py --render-only      # RESULTS.md from the JSON

The corruptions are albumentations transforms with fixed parameters, applied to the test
images at the model's input size (and, for scale, to the masks with nearest interpolation);
scores at ``eval.threshold``, per image then averaged. No other centre's data is used. Each
``--label`` is one model's column in results/shift_eval.json and in RESULTS.md, so a model
trained with ``augment=shift`` can be set beside one trained without it.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.evaluation_cost import write_section  # noqa: E402

# corruption -> (what it simulates, [albumentations entry per severity 1..3])
SHIFTS: dict[str, tuple[str, list[dict]]] = {
    "hue": ("another white balance", [
        {"name": "HueSaturationValue", "hue_shift_limit": [h, h], "sat_shift_limit": [0, 0],
         "val_shift_limit": [0, 0]} for h in (5, 10, 18)]),
    "gamma": ("another light and sensor curve (darker)", [
        {"name": "RandomGamma", "gamma_limit": [g, g]} for g in (140, 180, 250)]),
    "contrast": ("a flatter exposure", [
        {"name": "RandomBrightnessContrast", "brightness_limit": [0, 0],
         "contrast_limit": [-c, -c]} for c in (0.2, 0.4, 0.6)]),
    "blur": ("defocus", [
        {"name": "GaussianBlur", "blur_limit": [k, k], "sigma_limit": [s, s]}
        for k, s in ((3, 0.8), (5, 1.5), (9, 3.0))]),
    "jpeg": ("a lossy archive", [
        {"name": "ImageCompression", "quality_range": [q, q]} for q in (50, 25, 10)]),
    "resolution": ("an older sensor (down- then up-sampled)", [
        {"name": "Downscale", "scale_range": [f, f]} for f in (0.5, 0.33, 0.2)]),
    "scale": ("another field of view (zoomed out)", [
        {"name": "Affine", "scale": [s, s]} for s in (0.85, 0.7, 0.55)]),
}
SECTION = "shift_eval"


def corrupt(images: np.ndarray, masks: np.ndarray, entry: dict,
            seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``entry`` (always applied) to every image and its mask, seeded per image."""
    from segkit.data.augment import build_compose

    compose = build_compose({"transforms": [{**entry, "p": 1.0}]})
    out_i, out_m = np.empty_like(images), np.empty_like(masks)
    for i, (image, mask) in enumerate(zip(images, masks, strict=True)):
        compose.set_random_state(np.random.default_rng(seed + i), random.Random(seed + i))
        done = compose(image=image, mask=mask)
        out_i[i], out_m[i] = done["image"], done["mask"]
    return out_i, out_m


def measure(model_uri: str, seed: int, overrides: list[str]) -> dict:
    """mDice on the clean test split and under every shift and severity."""
    from benchmarks.common.config import compose
    from segkit.data import prepare
    from segkit.evaluation import as_predictor, evaluate
    from segkit.experiment import load_for_evaluation

    model = load_for_evaluation(model_uri)
    cfg = compose(None, None, "split=official", *overrides)
    size = as_predictor(model).input_size
    data = prepare(cfg.data, cfg.split, image_size=size)
    images, masks, names = data.images["test"], data.masks["test"], data.names("test")

    def mdice(x: np.ndarray, y: np.ndarray, what: str) -> float:
        ev = evaluate(model, x, y, names, split=f"test ({what})", threshold=cfg.eval.threshold,
                      batch_size=cfg.eval.batch_size, bins=100, tta=cfg.eval.tta)
        return float(ev.metrics["mdice"])

    res = {"model_uri": model_uri, "image_size": size, "images": len(names), "seed": seed,
           "overrides": overrides, "clean": mdice(images, masks, "clean"), "shifts": {}}
    for name, (_, entries) in SHIFTS.items():
        res["shifts"][name] = [mdice(*corrupt(images, masks, e, seed), f"{name} {k + 1}")
                               for k, e in enumerate(entries)]
        print(f"{name}: " + ", ".join(f"{v:.4f}" for v in res["shifts"][name]), flush=True)
    res["mean_shifted"] = float(np.mean([v for vs in res["shifts"].values() for v in vs]))
    return res


def _describe(entry: dict) -> str:
    args = {k: (v[0] if isinstance(v, list) and v[0] == v[-1] else v)
            for k, v in entry.items() if k != "name" and v not in ([0, 0],)}
    return f"{entry['name']}(" + ", ".join(f"{k}={v}" for k, v in args.items()) + ")"


def render(results: dict[str, dict]) -> str:
    labels = list(results)
    head = " | ".join(labels)
    lines = ["## Robustness to a simulated change of centre", "",
             "Held-out mDice (official test split, 120 images, at the model's input size) "
             "under corruptions a new centre brings, each at 3 fixed severities "
             "(`python benchmarks/shift_eval.py --model URI --label NAME`; models: "
             + "; ".join(f"{k} `{v['model_uri']}`" for k, v in results.items()) + ").", "",
             f"| shift | severity | {head} |", "|---|---|" + "---|" * len(labels),
             "| none | – | " + " | ".join(f"{r['clean']:.4f}" for r in results.values()) + " |"]
    for name, (what, entries) in SHIFTS.items():
        for k, entry in enumerate(entries):
            cells = " | ".join(f"{r['shifts'][name][k]:.4f}" for r in results.values())
            lines.append(f"| {name} ({what}) | {k + 1}: `{_describe(entry)}` | {cells} |")
    lines.append("| mean over shifts | – | "
                 + " | ".join(f"{r['mean_shifted']:.4f}" for r in results.values()) + " |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", help="the model URI (runs:/<id>/model, models:/..., a path)")
    ap.add_argument("--label", default="model", help="this model's column (default model)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=ROOT / "results" / "shift_eval.json")
    ap.add_argument("--results-md", type=Path, default=ROOT / "RESULTS.md")
    ap.add_argument("--render-only", action="store_true")
    ap.add_argument("overrides", nargs="*", help="config overrides, e.g. eval.tta=true")
    args = ap.parse_args()
    results = json.loads(args.out.read_text()) if args.out.exists() else {}
    if not args.render_only:
        if not args.model:
            ap.error("--model is required unless --render-only")
        results[args.label] = measure(args.model, args.seed, args.overrides)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2))
    body = render(results)
    write_section(args.results_md, SECTION, body)
    print(body)


if __name__ == "__main__":
    main()
