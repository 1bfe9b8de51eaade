"""The results table: one row per measure (measure, value, target, met/missed, what limits
it), each row's words chosen by comparing the measured numbers with targets and noise."""

from __future__ import annotations

from collections.abc import Mapping

from benchmarks.common import SIZE
from benchmarks.common.derive import beyond_noise, median_run, noise_spread
from benchmarks.common.fmt import fmt, status, times
from benchmarks.common.ledger import NESTED
from benchmarks.common.machine import has_native_bf16
from benchmarks.common.timing import median

# What each target of the issue asks for (written for an AMX machine).
TARGETS = {
    "speedup_auto_vs_naive": 2.5,     # training with precision=auto vs the naive float32 fit
    "pipeline_overhead": 0.05,        # share of step time, augmentation on
    "warm_start_s": 3.0,              # 1000 images from the cache
    "predict_img_per_s": 60.0,        # model.predict at 256x256
    "tracking_share": 0.10,           # MLflow + plots, share of a smoke run's wall time
}
COMPUTE_BOUND = 0.25  # achieved share of peak FLOP/s above which a part is compute-bound


def row(measure: str, value: str, target: str = "–", ok: bool | None = None,
        limit: str = "") -> dict:
    return {"measure": measure, "value": value, "target": target, "status": status(ok),
            "limit": limit}


def part(res: Mapping, name: str) -> dict:
    return res.get(name) or {}


def assess(res: Mapping) -> list[dict]:
    """Table rows (measure, value, target, status, limit) from a results mapping."""
    rows: list[dict] = []
    for rows_of in (data_rows, training_rows, pipeline_rows, inference_rows, flops_rows,
                    tracking_rows):
        rows.extend(rows_of(res))
    return rows


# ------------------------------------------------------------------ data


def data_rows(res: Mapping) -> list[dict]:
    d = part(res, "data")
    if not d:
        return []
    nproc = part(res, "machine").get("nproc", "?")
    fp = fmt(d["fingerprint_s_median"])
    warm_target = TARGETS["warm_start_s"]
    return [
        row(f"Data: cold preparation, {d['pairs']} pairs (decode + resize)",
            f"{fmt(d['cold_s_median'])} s ({fmt(d['cold_img_per_s'], 0)} img/s)",
            limit=f"JPEG decoding (Pillow draft mode) on {nproc} threads; includes the sha256 "
                  f"fingerprint ({fp} s). Files were in the OS page cache (a truly cold disk "
                  "adds read time)."),
        row(f"Data: warm start from the cache, {d['pairs']} pairs",
            f"{fmt(d['warm_s_median'])} s ({fmt(d['warm_img_per_s'], 0)} img/s)",
            f"< {warm_target:g} s", d["warm_s_median"] < warm_target,
            f"sha256 of every file ({fp} s, the cache key) + np.load of "
            f"{fmt(d['cache_mb'], 0)} MB."),
        uint8_row(res, d),
        row("Data: peak resident memory (prepare only, own process)",
            f"{fmt(d['peak_rss_mb'], 0)} MB (after imports {fmt(d['rss_after_imports_mb'], 0)}"
            " MB)", limit=memory_limit(d)),
    ]


def uint8_row(res: Mapping, d: Mapping) -> dict:
    uint8 = d["dtypes"] == ["uint8"]
    return row("Data: held as uint8 until the batch is formed",
               f"{'yes' if uint8 else 'no'}: {fmt(d['uint8_mb'], 0)} MB uint8 "
               f"(as float32: {fmt(d['float32_mb'], 0)} MB)",
               "uint8 until batching", uint8 and res.get("pipeline_uint8_until_batch", False),
               "make_dataset slices uint8 arrays; the cast to float32 is mapped after batch().")


def memory_limit(d: Mapping) -> str:
    """Why the peak is what it is: how many copies of the dataset the process held."""
    copies = (d["peak_rss_mb"] - d["rss_after_imports_mb"]) / d["uint8_mb"]
    held = f"prepare() holds the whole set ({fmt(d['uint8_mb'], 0)} MB)"
    if copies >= 1.5:
        return (f"{held} and copies it into per-part arrays (fancy indexing), so "
                f"{times(copies)} the dataset at peak.")
    return f"{held} once: {copies:.1f}x the dataset at peak."


# ------------------------------------------------------------------ training


def training_rows(res: Mapping) -> list[dict]:
    tr = part(res, "training")
    if not tr:
        return []
    v = tr["variants"]
    rows = [auto_row(res, tr), float32_row(tr), naive_row(tr)]
    if "xla_float32" in v:
        rows.append(row(
            "Training: XLA (jit_compile=True), float32, in-memory tensors",
            f"{fmt(v['xla_float32']['img_per_s_median'])} img/s "
            f"(x{fmt(tr['xla_vs_no_xla'])} vs without XLA, paired median)",
            limit=f"compile {fmt(v['xla_float32']['warmup_fit_s'], 0)} s at the first step; "
                  + xla_verdict(tr)))
    return rows


def auto_row(res: Mapping, tr: Mapping) -> dict:
    auto, speed = tr["variants"]["segkit_auto"], tr["speedup_auto_vs_naive"]
    target = TARGETS["speedup_auto_vs_naive"]
    return row(f"Training: {auto['label']}",
               f"{fmt(auto['img_per_s_median'])} img/s (x{fmt(speed)} naive, paired median)",
               f">= {target:g}x naive", speed >= target, precision_note(res, tr) + ".")


def precision_note(res: Mapping, tr: Mapping) -> str:
    """What precision=auto could gain on this CPU, and where the step time goes."""
    flags = part(res, "machine").get("flags", [])
    policy = tr.get("auto_policy", "float32")
    if has_native_bf16(flags):
        return f"native bf16 on this CPU: auto = {policy}, the main lever"
    text = (f"this CPU has no native bf16 (no AMX/AVX512-BF16), so auto = {policy} and the "
            "expected 2x from bf16 is not available")
    equal = tr.get("speedup_float32_vs_naive")
    if equal is not None and not beyond_noise(equal, tr):
        text += ("; segkit and naive then run the same float32 convolutions, which take "
                 "almost all the step time")
    elif equal is not None:
        text += f"; at equal precision segkit runs at x{equal:.2f} naive, beyond this run's noise"
    return text


def float32_row(tr: Mapping) -> dict:
    f32 = tr["variants"]["segkit_float32"]
    limit = "float32 convolutions (see model cost)"
    if tr.get("noise_auto_vs_float32"):
        limit += (f"; auto/float32 = {fmt(tr['noise_auto_vs_float32'])} (paired median, "
                  + ", ".join(fmt(x) for x in tr.get("noise_auto_vs_float32_paired", []))
                  + " per repeat) for identical configurations: the run's noise level")
    return row(f"Training: {f32['label']}",
               f"{fmt(f32['img_per_s_median'])} img/s "
               f"(x{fmt(tr['speedup_float32_vs_naive'])} naive)", limit=limit + ".")


def naive_row(tr: Mapping) -> dict:
    naive = tr["variants"]["naive_float32"]
    ratios = tr.get("in_memory_vs_naive_paired", [])
    listed = ", x".join(fmt(x) for x in ratios)
    if ratios and min(ratios) > 1:
        fed = f"ran x{listed} faster per repeat"
    elif ratios and max(ratios) < 1:
        fed = f"ran at x{listed} the naive speed per repeat (slower)"
    else:
        fed = f"ran at x{listed} the naive speed per repeat (no consistent difference)"
    return row(f"Training: {naive['label']}", f"{fmt(naive['img_per_s_median'])} img/s",
               limit=f"holds all images as float32: {fmt(tr['naive_arrays_mb_per_1000'], 0)} MB "
                     "per 1000 images (4x segkit's uint8); Keras' NumPy adapter feeds it: the "
                     f"same model from in-memory tensors {fed}.")


def xla_verdict(tr: Mapping) -> str:
    """Whether XLA's gain stands out of this run's noise (identical configurations' spread)."""
    if tr["variants"].get("in_memory_float32", {}).get("jit_compile"):
        return ("Keras' jit_compile=auto already compiled the other variants with XLA on this "
                "device (it does on GPUs), so this compares XLA with XLA.")
    ratios = tr.get("xla_vs_no_xla_paired") or [tr["xla_vs_no_xla"]]
    spread = noise_spread(tr)
    span = f"{min(ratios):.2f}-{max(ratios):.2f}x per repeat"
    if max(ratios) < 1.0:
        return f"slower in every repeat ({span}): keep it off on this machine."
    if min(ratios) > spread:
        return (f"faster in every repeat ({span}), beyond the noise of identical "
                f"configurations (up to {spread:.2f}x): worth offering as an option.")
    return (f"{span}; identical configurations differed by up to {spread:.2f}x in this run, "
            "so measure again on an idle machine before recommending it.")


def pipeline_rows(res: Mapping) -> list[dict]:
    p = part(res, "training").get("pipeline")
    if not p:
        return []
    share, target = p["overhead_share"], TARGETS["pipeline_overhead"]
    return [row("Input pipeline overhead (flips) vs in-memory tensors, share of step time",
                f"{fmt(100 * share, 1)}% ({fmt(p['pipeline_step_s_median'], 3)} vs "
                f"{fmt(p['in_memory_step_s_median'], 3)} s/step)",
                f"< {100 * target:g}%", share < target,
                f"the pipeline alone makes {fmt(p['pipeline_alone_img_per_s'], 0)} img/s "
                f"(shuffle, flips, batch, cast), so its own cost is "
                f"{fmt(100 * p['own_cost_share'], 2)}% of a step; "
                + pipeline_verdict(res["training"]))]


def pipeline_verdict(tr: Mapping) -> str:
    """Whether the pipeline's measured overhead is larger than this run's noise."""
    p, spread = tr["pipeline"], noise_spread(tr) - 1
    if not tr.get("noise_auto_vs_float32_paired"):
        return ("this run has no noise estimate (auto is not float32 here), so a larger "
                "difference cannot be told from machine noise.")
    if p["overhead_share"] <= spread:
        return ("it runs on the cores the model saturates, and a step-time difference larger "
                "than that is machine noise (compare auto vs float32 above).")
    return (f"the difference exceeds this run's noise ({100 * spread:.0f}% between identical "
            "configurations): the pipeline's threads take more from the model than their "
            "own cost.")


# ------------------------------------------------------------------ inference and FLOPs


def inference_rows(res: Mapping) -> list[dict]:
    inf, fl = part(res, "inference"), part(res, "flops")
    if not inf:
        return []
    target = TARGETS["predict_img_per_s"]
    rows = [row(f"Inference: model.predict at {SIZE}x{SIZE}, batch {inf['batch']}",
                f"{fmt(inf['predict_img_per_s_median'])} img/s", f">= {target:g} img/s",
                inf["predict_img_per_s_median"] >= target, predict_limit(fl) + ".")]
    if "predict_xla_img_per_s_median" in inf:
        paired = inf["predict_xla_vs_predict_paired"]
        rows.append(row(
            f"Inference: the same with XLA (jit_compile=True), batch {inf['batch']}",
            f"{fmt(inf['predict_xla_img_per_s_median'])} img/s (x{fmt(median(paired))} "
            "paired median)",
            limit="per repeat x" + ", ".join(f"{x:.2f}" for x in paired)
                  + "; after the XLA compilation of the first batch."))
    rows.append(row(f"Inference: end to end at original resolution ({inf['e2e_images']} "
                    f"images, mean {fmt(inf['e2e_mean_megapixels'])} MP)",
                    f"{fmt(inf['e2e_img_per_s_median'])} img/s",
                    limit=f"the forward pass is {fmt(100 * inf['e2e_predict_share_median'], 0)}"
                          "% of the time; the rest is reading/resizing, resizing back and PNG "
                          "writing."))
    return rows


def predict_limit(fl: Mapping) -> str:
    """What bounds model.predict: the policy's convolutions and, with a peak, its ceiling."""
    policy, peak = fl.get("policy", "float32"), fl.get("peak_flops")
    if not peak or not fl.get("forward_flops"):
        return f"{policy} convolutions"
    ceiling = peak / fl["forward_flops"]
    used = fl.get("achieved_predict_flops", 0.0) / peak
    if used >= COMPUTE_BOUND:
        text = f"compute-bound {policy} convolutions"
    elif used:
        text = f"{policy} convolutions at {100 * used:.0f}% of peak (not compute-bound)"
    else:
        text = f"{policy} convolutions"
    if ceiling < TARGETS["predict_img_per_s"]:
        return text + (f"; even at 100% of this CPU's {policy} peak the ceiling is "
                       f"{fmt(ceiling, 1)} img/s")
    return text + f"; at 100% of this CPU's {policy} peak the ceiling is {fmt(ceiling, 1)} img/s"


def flops_rows(res: Mapping) -> list[dict]:
    fl = part(res, "flops")
    if not fl:
        return []
    g = {k: fmt(fl[k] / 1e9, 3) for k in ("forward_flops", "transpose_flops",
                                          "forward_flops_with_bias_pool", "profiler_total")}
    uncounted = (f" (uncounted: {', '.join(fl['profiler_uncounted'])})"
                 if fl["profiler_uncounted"] else "")
    rows = [row(f"Model cost: forward FLOPs per image ({SIZE}x{SIZE})",
                f"{g['forward_flops']} GFLOP (training ~3x: {fmt(fl['train_flops'] / 1e9, 1)})",
                limit=f"counted from layer shapes (multiply-add = 2 FLOP; convolutions "
                      f"{g['forward_flops']}, of which transposed {g['transpose_flops']}; with "
                      f"bias and pooling {g['forward_flops_with_bias_pool']}); TensorFlow's FLOP"
                      f" registry on the frozen graph: {g['profiler_total']} GFLOP{uncounted}.")]
    return rows + achieved_rows(fl)


def achieved_rows(fl: Mapping) -> list[dict]:
    peak, rows = fl.get("peak_flops"), []
    for key, label in (("train", "training"), ("predict", "inference")):
        if f"achieved_{key}_flops" not in fl:
            continue
        got = fl[f"achieved_{key}_flops"]
        of_peak = (f" = {fmt(100 * got / peak, 0)}% of peak {fmt(peak / 1e9, 0)} GFLOP/s"
                   if peak else "")
        rows.append(row(f"Model cost: achieved FLOP/s, {label} ({fl['policy']})",
                        f"{fmt(got / 1e9, 1)} GFLOP/s{of_peak}",
                        limit=fl["peak_assumption"] + "."))
    return rows


# ------------------------------------------------------------------ tracking


def tracking_rows(res: Mapping) -> list[dict]:
    tk = part(res, "tracking")
    if not tk:
        return []
    share, target = tk["share_median"], TARGETS["tracking_share"]
    rows = [row("Tracking: MLflow + evaluation plots, share of a smoke run",
                f"{fmt(100 * share, 1)}% (MLflow {fmt(tk['mlflow_s_median'])} s, plots "
                f"{fmt(tk['plots_s_median'])} s of {fmt(tk['wall_s_median'])} s)",
                f"< {100 * target:g}%", share < target,
                f"{fmt(100 * tk['share_of_process_median'], 1)}% of the whole process "
                "(imports included); " + tracking_note(tk))]
    if tk.get("no_plots_runs"):
        bare = tk["no_plots_share_median"]
        rows.append(row("Tracking: MLflow only (eval.plots=false), share of a smoke run",
                        f"{fmt(100 * bare, 1)}% of {fmt(tk['no_plots_wall_s_median'])} s",
                        f"< {100 * target:g}%", bare < target,
                        "run parameters, tags, metrics, the config and report artifacts and "
                        "the logged model: fixed seconds per run, against a smoke run's few "
                        "seconds of training."))
    return rows


def tracking_note(tk: Mapping) -> str:
    """The largest tracking costs of the median later smoke run, in words."""
    mid = median_run(tk)
    times_ = mid.get("top") or {k: v for k, v in mid["by_name"].items() if k not in NESTED}
    cost = {k: v for k, v in times_.items()
            if k.startswith(("mlflow", "segkit.tracking", "segkit.plots"))}
    top = sorted(cost.items(), key=lambda kv: -kv[1])[:3]
    return "largest: " + ", ".join(f"{k} {v:.1f} s" for k, v in top) + "."
