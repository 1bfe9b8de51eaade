"""Figures derived from the measurements: the training ratios (paired per repeat), the
achieved FLOP/s, this run's noise level, and the median smoke run."""

from __future__ import annotations

from collections.abc import Mapping

from benchmarks.common.timing import median, paired_ratios

RATIOS = {  # name: (numerator variant, denominator variant), throughputs
    "speedup_auto_vs_naive": ("segkit_auto", "naive_float32"),
    "speedup_float32_vs_naive": ("segkit_float32", "naive_float32"),
    "noise_auto_vs_float32": ("segkit_auto", "segkit_float32"),
    "in_memory_vs_naive": ("in_memory_float32", "naive_float32"),
    "xla_vs_no_xla": ("xla_float32", "in_memory_float32"),
}


def derive(res: dict) -> None:
    """Add the training ratios and the achieved FLOP/s to ``res`` (in place)."""
    if res.get("training"):
        training_ratios(res["training"])
    if res.get("flops"):
        achieved_flops(res["flops"], res.get("training") or {}, res.get("inference") or {})


def training_ratios(tr: dict) -> None:
    """Each ratio of RATIOS whose variants ran: the median of the paired (same-round) ratios,
    the ratios themselves and, beside them, the ratio of the medians. auto vs float32 is a
    noise estimate only when auto resolved to float32 (identical configurations)."""
    v = tr["variants"]
    for name, (a, b) in RATIOS.items():
        if a not in v or b not in v:
            continue
        if name == "noise_auto_vs_float32" and tr.get("auto_policy") != "float32":
            tr[name] = None  # not identical configurations: no noise estimate
            continue
        ratios = paired_ratios(v[a]["img_per_s"], v[b]["img_per_s"])
        tr[name] = median(ratios)
        tr[f"{name}_paired"] = ratios
        tr[f"{name}_of_medians"] = v[a]["img_per_s_median"] / v[b]["img_per_s_median"]


def achieved_flops(fl: dict, tr: Mapping, inf: Mapping) -> None:
    """FLOP/s achieved by segkit's training (precision=auto) and by model.predict."""
    auto = (tr.get("variants") or {}).get("segkit_auto")
    if auto:
        fl["achieved_train_flops"] = fl["train_flops"] * auto["img_per_s_median"]
    if inf.get("predict_img_per_s_median"):
        fl["achieved_predict_flops"] = fl["forward_flops"] * inf["predict_img_per_s_median"]


def noise_spread(tr: Mapping) -> float:
    """The largest factor between identical configurations (auto = float32) in this run."""
    noise = tr.get("noise_auto_vs_float32_paired") or []
    return max((max(x, 1 / x) for x in noise), default=1.0)


def beyond_noise(ratio: float, tr: Mapping, floor: float = 1.05) -> int:
    """+1 when ``ratio`` is above this run's noise, -1 when below its inverse, else 0; the
    noise is at least ``floor`` (a run without an estimate)."""
    spread = max(noise_spread(tr), floor)
    return 1 if ratio >= spread else -1 if ratio <= 1 / spread else 0


def median_run(tk: Mapping) -> dict:
    """The smoke run of median tracking share, among those that reused the MLflow store."""
    runs = tk["runs"][1:] or tk["runs"]
    return sorted(runs, key=lambda x: x["share"])[len(runs) // 2]
