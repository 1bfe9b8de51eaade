"""What the numbers say beyond the table (findings) and what segkit could change for each
missed target (fixes). Every conclusion is drawn from the measured numbers: a ratio against
a target, this run's noise, or the machine's flags, never written for one CPU."""

from __future__ import annotations

from collections.abc import Mapping

from benchmarks.common.assess import TARGETS, part
from benchmarks.common.config import default_epochs
from benchmarks.common.derive import beyond_noise, median_run, noise_spread
from benchmarks.common.machine import has_native_bf16

SMALL_SHARE = 0.02  # of a smoke run: per-epoch metric logging below this is "small"


def native(res: Mapping) -> bool:
    return has_native_bf16(part(res, "machine").get("flags", []))


def findings(res: Mapping) -> list[str]:
    """Distances to the hardware limit and what the ratios mean, then the fixes."""
    out = [ceiling_finding(res), feeding_finding(res), xla_finding(res), e2e_finding(res),
           tracking_cost_finding(res)]
    return [f for f in out if f] + list(res.get("fixes", []))


def fixes(res: Mapping) -> list[str]:
    """What segkit could change for each missed target, from this run's profile."""
    out = [training_fix(res), inference_fix(res), pipeline_fix(res), tracking_fix(res),
           memory_fix(res)]
    return [f for f in out if f]


# ------------------------------------------------------------------ findings


def ceiling_finding(res: Mapping) -> str | None:
    fl = part(res, "flops")
    peak, policy = fl.get("peak_flops"), fl.get("policy")
    if not (peak and fl.get("forward_flops")):
        return None
    target = TARGETS["predict_img_per_s"]
    need = target * fl["forward_flops"]
    text = (f"Hardware ceiling for this model on this CPU at {policy}: "
            f"{peak / fl['train_flops']:.1f} training img/s and "
            f"{peak / fl['forward_flops']:.1f} inference img/s at 100% of peak. The {target:g} "
            f"img/s inference target needs about {need / 1e9:.0f} GFLOP/s, "
            f"{need / peak:.1f}x this CPU's {policy} peak: ")
    if need <= peak:
        return text + f"reachable in principle, at {100 * need / peak:.0f}% of peak."
    if native(res):
        return text + "out of reach on this CPU even with native bf16: a GPU, or less arithmetic."
    return text + "out of reach without native low precision (AMX) or a GPU."


def feeding_finding(res: Mapping) -> str | None:
    tr = part(res, "training")
    if not tr:
        return None
    fed, equal = tr["in_memory_vs_naive"], tr["speedup_float32_vs_naive"]
    verdict = {1: "so the naive baseline loses that much to Keras' per-step slicing of NumPy "
                  "arrays. ",
               0: "so how the batches are fed makes no measurable difference here. ",
               -1: "so Keras' NumPy adapter is not what holds the naive baseline back. "}
    text = (f"segkit vs naive at the same precision (float32): x{equal:.2f}; fed from "
            f"in-memory tensors, the same model runs at x{fed:.2f} naive (though naive computes "
            f"fewer training metrics), {verdict[beyond_noise(fed, tr, 1.03)]}"
            "The pipeline's gains are memory (uint8 in memory, 4x less than float32 arrays) "
            f"and augmentation {augmentation_cost(tr)}, ")
    text += ("not arithmetic speed" if beyond_noise(equal, tr) <= 0 else
             f"and x{equal:.2f} speed at equal precision")
    if native(res):
        return text + "."
    return text + "; the speed-up the target asks for comes from bf16, which this CPU lacks."


def augmentation_cost(tr: Mapping) -> str:
    """"at no measurable cost" unless the pipeline's overhead beats the target and the noise."""
    share = tr["pipeline"]["overhead_share"]
    if share < TARGETS["pipeline_overhead"] or share <= noise_spread(tr) - 1:
        return "at no measurable cost"
    return f"at {100 * share:.1f}% of the step time"


def xla_finding(res: Mapping) -> str | None:
    tr = part(res, "training")
    if "xla_float32" not in tr.get("variants", {}):
        return None
    return (f"XLA: x{tr['xla_vs_no_xla']:.2f} against the same model without it, after a "
            f"{tr['variants']['xla_float32']['warmup_fit_s']:.0f} s first step.")


def e2e_finding(res: Mapping) -> str | None:
    inf = part(res, "inference")
    if not inf:
        return None
    return (f"End-to-end prediction spends {100 * inf['e2e_predict_share_median']:.0f}% of its "
            "time in the forward pass; reading the next batch while the model runs could hide "
            "at most the rest.")


def default_run_cost(res: Mapping) -> dict | None:
    """The smoke run's fixed tracking seconds against the default run's training time."""
    tk, tr = part(res, "tracking"), part(res, "training")
    images = (part(res, "data").get("split_sizes") or {}).get("train")
    if not (tk and tr and images):
        return None
    fixed = tk["mlflow_s_median"] + tk["plots_s_median"]
    img_s = tr["variants"]["segkit_auto"]["img_per_s_median"]
    epochs = tk.get("default_epochs") or default_epochs()
    epoch = images / img_s
    return {"fixed": fixed, "img_s": img_s, "images": images, "epochs": epochs,
            "epoch_s": epoch, "share": fixed / (epochs * epoch + fixed),
            "one_epoch_share": fixed / (epoch + fixed)}


def tracking_cost_finding(res: Mapping) -> str | None:
    c = default_run_cost(res)
    if c is None:
        return None
    return (f"Tracking is a fixed cost ({c['fixed']:.1f} s of MLflow and plots per run here) on "
            f"a smoke run whose training is a few seconds. On the default run ({c['images']} "
            f"training images at {c['img_s']:.1f} img/s: {c['epoch_s'] / 60:.1f} min per epoch, "
            f"{c['epochs']} epochs) the same cost would be {100 * c['share']:.2f}% of the wall "
            f"time ({100 * c['one_epoch_share']:.1f}% of a one-epoch run); "
            + metric_logging(part(res, "tracking")))


def metric_logging(tk: Mapping) -> str:
    """Per-epoch MLflow metric logging (inside fit) of the median smoke run, in words."""
    mid = median_run(tk)
    spent = mid["by_name"].get("mlflow.log_metrics", 0.0)
    if spent < SMALL_SHARE * mid["wall_s"]:
        return "per-epoch MLflow metric logging is in the fit time and is small."
    return (f"MLflow metric logging (per epoch inside the fit time, and the final scores) "
            f"took {spent:.1f} s of the {mid['wall_s']:.0f} s smoke run.")


# ------------------------------------------------------------------ fixes


def training_fix(res: Mapping) -> str | None:
    tr, target = part(res, "training"), TARGETS["speedup_auto_vs_naive"]
    if not tr or tr["speedup_auto_vs_naive"] >= target:
        return None
    equal = tr["speedup_float32_vs_naive"]
    same = not beyond_noise(equal, tr)
    text = (f"Training x{tr['speedup_auto_vs_naive']:.2f} naive (target {target:g}x): at equal "
            f"precision segkit's pipeline is x{equal:.2f} naive"
            + (", because both spend the step in the same float32 convolutions. " if same
               else ". "))
    if native(res):
        text += "Check that `auto` resolved to mixed_bfloat16. "
    elif same:
        text += (f"No code change reaches {target:g}x on this CPU: the factor needs native bf16 "
                 "(AMX), where `auto` already picks mixed_bfloat16. ")
    else:
        text += "The rest of the factor needs native bf16 (AMX), where `auto` picks it. "
    if tr.get("xla_vs_no_xla", 0) >= 1.05:
        text += (f"XLA measured x{tr['xla_vs_no_xla']:.2f} here: `trainer.jit_compile=true` "
                 "turns it on (`experiment=cpu_best` does; Keras' `auto`, the default, leaves "
                 "it off on CPUs and on on GPUs).")
    return text


def inference_fix(res: Mapping) -> str | None:
    inf, fl, target = part(res, "inference"), part(res, "flops"), TARGETS["predict_img_per_s"]
    if not inf or inf["predict_img_per_s_median"] >= target:
        return None
    text = f"Inference {inf['predict_img_per_s_median']:.1f} img/s (target {target:g}): "
    if fl.get("peak_flops"):
        ceiling = fl["peak_flops"] / fl["forward_flops"]
        text += (f"the {fl['policy']} ceiling of this CPU is {ceiling:.1f} img/s for "
                 f"{fl['forward_flops'] / 1e9:.2f} GFLOP/image, so "
                 + (f"no code change reaches {target:g} here; " if ceiling < target else
                    f"{target:g} needs {100 * target / ceiling:.0f}% of peak; "))
    return text + ("what would: bf16 on AMX or a GPU (the policy is in the saved model), or "
                   "less arithmetic (128x128 input: 4x fewer FLOPs; `model.filters=8`: about "
                   "4x fewer).")


def pipeline_fix(res: Mapping) -> str | None:
    tr = part(res, "training")
    p = tr.get("pipeline") or {}
    if not p or p["overhead_share"] < TARGETS["pipeline_overhead"]:
        return None
    text = (f"Input pipeline: measured {100 * p['overhead_share']:.1f}% but its own cost is "
            f"{100 * p['own_cost_share']:.2f}% of a step: ")
    if p["overhead_share"] <= noise_spread(tr) - 1:
        return text + ("the difference is noise on this shared machine, not the pipeline; "
                       "rerun on an idle machine.")
    return text + ("the difference exceeds this run's noise, so the pipeline's threads compete "
                   "with the model for the cores; rerun on an idle machine to confirm, then "
                   "give the pipeline fewer threads.")


def tracking_fix(res: Mapping) -> str | None:
    tk, target = part(res, "tracking"), TARGETS["tracking_share"]
    if not tk or tk["share_median"] < target:
        return None
    mid, bare = median_run(tk), tk.get("no_plots_share_median")
    t = mid["by_name"]
    plots = sorted(((k.split(".")[-1], v) for k, v in t.items()
                    if k.startswith("segkit.plots.")), key=lambda kv: -kv[1])
    return (
        f"Tracking {100 * tk['share_median']:.0f}% of a smoke run (target {100 * target:g}%): "
        f"fixed costs against a {mid['wall_s']:.0f} s run. Plots "
        f"{mid['seconds'].get('plots', 0):.1f} s ("
        + ", ".join(f"{k} {v:.1f}" for k, v in plots[:3]) + "): `eval.plots=false` skips them "
        "(metrics, CSVs and report.md are still logged)"
        + (f", which leaves {100 * bare:.0f}% for MLflow" if bare is not None else "")
        + f"; of that, `segkit.tracking.log_model` takes "
        f"{t.get('segkit.tracking.log_model', 0.0):.1f} s (a clone, a predict for the "
        "signature, the Keras save, MLmodel files) and `segkit.tracking.setup_experiment` "
        f"{t.get('segkit.tracking.setup_experiment', 0.0):.1f} s (opening the sqlite store). "
        + per_run_note(res, bare))


def per_run_note(res: Mapping, bare: float | None) -> str:
    """How the smoke run's fixed seconds weigh on a real run, and whether a smoke run can
    meet the target at all."""
    c = default_run_cost(res)
    text = "These are seconds per run, not per epoch: on a real run they are "
    text += ("a fraction of a percent" if c and c["share"] < 0.01 else
             f"{100 * c['share']:.1f}% of the default run" if c else "a smaller share")
    text += " (see Findings). "
    target = TARGETS["tracking_share"]
    if bare is None:
        return text.rstrip()
    if bare >= target:
        return text + (f"A smoke run cannot reach {100 * target:g}% while it logs a model and "
                       "trains for a few seconds.")
    return text + "Without plots a smoke run meets the target."


def memory_fix(res: Mapping) -> str | None:
    d = part(res, "data")
    if not (d.get("peak_rss_mb") and d["peak_rss_mb"] > 1.6 * d["uint8_mb"] + 100):
        return None
    return (f"Data memory: peak {d['peak_rss_mb']:.0f} MB for a {d['uint8_mb']:.0f} MB dataset "
            "on a cold preparation: `segkit.data.prepare` keeps the decoded set and copies it "
            "into per-part arrays with fancy indexing (`images[rows]`). Warm starts "
            "memory-map the cache entry and hold the set once; decoding straight into the "
            "per-part arrays would do the same for the cold path.")
