"""The pure parts of the benchmark scripts (benchmarks/common): FLOP counting, peak FLOP/s,
step timing arithmetic, the tracking ledger, the derived ratios, the table, the findings and
the Markdown writer. No timing is asserted."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys

import numpy as np
import pytest

from benchmarks.common import results
from benchmarks.common.assess import assess
from benchmarks.common.derive import derive
from benchmarks.common.findings import findings, fixes
from benchmarks.common.flops import count_flops, profiler_flops
from benchmarks.common.ledger import Ledger
from benchmarks.common.machine import parse_cpuinfo, peak_flops
from benchmarks.common.markdown import render_markdown
from benchmarks.common.timing import rotate, steady_step_s
from tests.helpers import ROOT


@pytest.fixture(scope="module")
def tiny():
    """8x8x3 -> conv 3x3 (4) -> max-pool 2 -> transposed conv 2x2/2 (2) -> conv 1x1 (1)."""
    import keras
    from keras import layers

    inp = keras.Input((8, 8, 3))
    x = layers.Conv2D(4, 3, padding="same", activation="relu", name="c1")(inp)
    x = layers.MaxPooling2D(2, name="pool")(x)
    x = layers.Conv2DTranspose(2, 2, strides=2, padding="same", name="up")(x)
    out = layers.Conv2D(1, 1, activation="sigmoid", name="head")(x)
    return keras.Model(inp, out)


# By hand, a multiply-add = 2 FLOP:
C1 = 2 * (8 * 8 * 4) * (3 * 3 * 3)      # 64 positions x 4 outputs x 27 inputs = 13,824
UP = 2 * (4 * 4 * 4) * (2 * 2 * 2)      # 16 inputs x 4 channels, each to 2x2x2 outputs = 1,024
HEAD = 2 * (8 * 8 * 1) * (1 * 1 * 2)    # 256
BIAS = 8 * 8 * 4 + 8 * 8 * 2 + 8 * 8 * 1  # one add per output of each biased layer = 448
POOL = (4 * 4 * 4) * 4                  # one compare per window element = 256


def test_count_flops_matches_a_hand_count(tiny):
    flops = count_flops(tiny)
    assert flops["per_layer"] == {"c1": C1, "up": UP, "head": HEAD}
    assert flops["conv"] == C1 + UP + HEAD == 15_104
    assert flops["other"] == BIAS + POOL
    assert flops["total"] == 15_104 + 704


def test_tensorflows_flop_registry_agrees(tiny):
    prof = profiler_flops(tiny, 8)
    assert prof["by_op_type"]["Conv2D"] == C1 + HEAD
    assert prof["by_op_type"]["Conv2DBackpropInput"] == UP
    assert prof["total"] == count_flops(tiny)["total"]
    assert prof["uncounted_compute_ops"] == []


def test_unet_forward_flops_by_hand():
    """Depth-1 U-Net, 16x16, 2 filters: each layer's formula written out."""
    from segkit.models import build_unet

    m = count_flops(build_unet(image_size=16, depth=1, filters=2))["per_layer"]
    assert m["enc0_conv1"] == 2 * 16 * 16 * 2 * 9 * 3
    assert m["enc0_conv2"] == 2 * 16 * 16 * 2 * 9 * 2
    assert m["bottleneck_conv1"] == 2 * 8 * 8 * 4 * 9 * 2
    assert m["bottleneck_conv2"] == 2 * 8 * 8 * 4 * 9 * 4
    assert m["up0"] == 2 * 8 * 8 * 4 * 4 * 2          # transposed 2x2 stride 2: 4 -> 2
    assert m["dec0_conv1"] == 2 * 16 * 16 * 2 * 9 * 4  # after concatenation: 2 + 2 channels
    assert m["dec0_conv2"] == 2 * 16 * 16 * 2 * 9 * 2
    assert m["mask"] == 2 * 16 * 16 * 1 * 2


def test_peak_flops_per_instruction_set():
    peak, why = peak_flops(2, 2.5, {"avx2", "fma"}, "float32")
    assert peak == 2 * 2.5e9 * 32 and "32 FLOP/cycle" in why
    assert peak_flops(4, 2.0, {"avx512f", "amx_bf16"}, "float32")[0] == 4 * 2e9 * 64
    assert peak_flops(4, 2.0, {"avx512f", "amx_bf16"}, "mixed_bfloat16")[0] == \
        4 * 2e9 * 1024
    assert peak_flops(2, 2.5, {"avx2", "fma"}, "mixed_bfloat16")[0] is None


def test_parse_cpuinfo():
    text = ("processor\t: 0\nmodel name\t: AMD EPYC\ncpu MHz\t\t: 2445.428\n"
            "flags\t\t: fpu avx2 fma\n\nprocessor\t: 1\nmodel name\t: AMD EPYC\n"
            "cpu MHz\t\t: 2000.0\nflags\t\t: fpu\n")
    info = parse_cpuinfo(text)
    assert info == {"model": "AMD EPYC", "mhz": 2445.428, "flags": {"fpu", "avx2", "fma"}}


def test_steady_step_time_skips_warmup_and_rotation():
    ends = [10.0, 12.0, 14.0, 16.0, 18.0]  # step ends; the first one's start is unknown
    assert steady_step_s(ends, 1) == 2.0
    assert steady_step_s(ends, 2) == 2.0
    with pytest.raises(ValueError):
        steady_step_s(ends[:1], 1)
    assert rotate(["a", "b", "c"], 1) == ["b", "c", "a"]
    assert rotate(["a", "b", "c"], 3) == ["a", "b", "c"]


def test_ledger_counts_nested_calls_once():
    ledger = Ledger()
    inner = ledger.wrap("mlflow", "inner", lambda: None)
    outer = ledger.wrap("mlflow", "outer", lambda: inner())
    context = ledger.wrap("fit", "fit", lambda: outer(), exclusive=False)
    context()
    assert ledger.calls == {"inner": 1, "outer": 1, "fit": 1}
    assert ledger.seconds["mlflow"] == pytest.approx(ledger.by_name["outer"])
    assert ledger.seconds["fit"] >= ledger.seconds["mlflow"]


def _results():
    """A results mapping shaped like a real run's, ratios derived as write_outputs does."""
    variant = {"policy": "float32", "feed": "x | y", "img_per_s": [3.0, 3.2],
               "img_per_s_median": 3.1, "warmup_fit_s": 9.0}
    res = {
        "started": "2025-01-01T00:00:00", "quick": False, "wall_s": 600.0,
        "command": "python benchmarks/pipeline.py",
        "machine": {"cpu": "AMD EPYC", "nproc": 2, "mhz": 2445.0, "flags": ["avx2", "fma"],
                    "memory_gb": 23.0, "lscpu": {}, "load_average_start": [1, 1, 1],
                    "load_average_end": [2, 2, 2]},
        "versions": {"tensorflow": "2.21.0"}, "settings": {"repeats": 3},
        "pipeline_uint8_until_batch": True,
        "data": {"pairs": 1000, "cold_s_median": 4.0, "cold_img_per_s": 250.0,
                 "warm_s_median": 0.6, "warm_img_per_s": 1600.0, "fingerprint_s_median": 0.2,
                 "cache_mb": 250.0, "dtypes": ["uint8"], "uint8_mb": 250.0,
                 "float32_mb": 1000.0, "peak_rss_mb": 560.0, "rss_after_imports_mb": 44.0},
        "training": {
            "variants": {name: {**variant, "label": name} for name in
                         ("segkit_auto", "segkit_float32", "naive_float32",
                          "in_memory_float32", "xla_float32")},
            "auto_policy": "float32", "naive_arrays_mb_per_1000": 1000.0,
            "pipeline": {"overhead_share": 0.02, "pipeline_step_s_median": 2.6,
                         "in_memory_step_s_median": 2.55, "pipeline_alone_img_per_s": 600.0,
                         "own_cost_share": 0.005}},
        "inference": {"batch": 8, "predict_img_per_s_median": 9.0, "e2e_images": 50,
                      "e2e_mean_megapixels": 0.4, "e2e_img_per_s_median": 7.0,
                      "e2e_predict_share_median": 0.9, "predict_xla_img_per_s_median": 11.0,
                      "predict_xla_vs_predict_paired": [1.1, 1.3, 1.2]},
        "flops": {"policy": "float32", "forward_flops": 6e9, "train_flops": 18e9,
                  "forward_flops_with_bias_pool": 6.1e9, "transpose_flops": 0.27e9,
                  "profiler_total": 6.1e9, "profiler_uncounted": [], "peak_flops": 156e9,
                  "peak_assumption": "2 cores x 2.45 GHz x 32 FLOP/cycle",
                  "achieved_train_flops": 55e9, "achieved_predict_flops": 54e9},
        "tracking": {"share_median": 0.3, "share_of_process_median": 0.2,
                     "mlflow_s_median": 3.0, "plots_s_median": 3.0, "wall_s_median": 20.0,
                     "runs": [{"share": 0.4, "by_name": {"mlflow.log_params": 1.0},
                               "phases": {"fit": 8.0}},
                              {"share": 0.3, "wall_s": 20.0,
                               "seconds": {"mlflow": 3.0, "plots": 3.0},
                               "by_name": {"segkit.plots.plot_gallery": 1.5,
                                           "segkit.data.prepare": 9.0},
                               "phases": {"build": 0.5, "fit": 9.0, "log_model": 1.0,
                                          "evaluate": 4.0}}],
                     "no_plots_runs": [{"share": 0.15}], "no_plots_share_median": 0.15,
                     "no_plots_wall_s_median": 16.0},
    }
    derive(res)
    return res


def test_derive_takes_medians_of_paired_ratios():
    res = {"training": {"auto_policy": "float32", "variants": {
        "segkit_auto": {"img_per_s": [2.0, 3.0, 9.0], "img_per_s_median": 3.0},
        "segkit_float32": {"img_per_s": [2.0, 2.0, 3.0], "img_per_s_median": 2.0},
        "naive_float32": {"img_per_s": [1.0, 2.0, 3.0], "img_per_s_median": 2.0}}}}
    derive(res)
    tr = res["training"]
    assert tr["speedup_auto_vs_naive_paired"] == [2.0, 1.5, 3.0]
    assert tr["speedup_auto_vs_naive"] == 2.0                 # median of the paired ratios
    assert tr["speedup_auto_vs_naive_of_medians"] == 1.5      # ratio of the medians
    assert tr["noise_auto_vs_float32"] == 1.5
    assert "xla_vs_no_xla" not in tr                           # variant not measured


def test_assess_marks_targets_met_and_missed():
    rows = assess(_results())

    def row(prefix):
        (found,) = [r for r in rows if r["measure"].startswith(prefix)]
        return found

    assert row("Data: warm start")["status"] == "met"                          # 0.6 s < 3 s
    assert row("Data: held as uint8")["status"] == "met"
    assert row("Training: segkit_auto")["status"] == "**missed**"              # 1.0x < 2.5x
    assert row("Training: naive")["status"] == "–"                             # no target
    assert row("Inference: model.predict")["status"] == "**missed**"           # 9 < 60 img/s
    assert row("Inference: the same with XLA")["value"] == "11.00 img/s (x1.20 paired median)"
    assert row("Tracking: MLflow +")["status"] == "**missed**"                 # 30% > 10%
    bare = row("Tracking: MLflow only")
    assert bare["status"] == "**missed**" and bare["value"] == "15.0% of 16.00 s"
    pipeline = row("Input pipeline")
    assert pipeline["status"] == "met" and pipeline["value"].startswith("2.0%")
    tracking = row("Tracking: MLflow +")
    assert "segkit.plots.plot_gallery 1.5 s" in tracking["limit"]
    # context timings (the run's phases, other wrapped functions) are not tracking costs
    assert "prepare" not in tracking["limit"] and "fit" not in tracking["limit"]
    assert "9.0" not in tracking["limit"]


def test_markdown_table_is_well_formed():
    res = _results()
    text = render_markdown(res)
    assert text.startswith("# Benchmarks\n")
    lines = text.splitlines()
    header = lines.index("| measure | value | target | status | what limits it |")
    table = []
    for line in lines[header:]:
        if not line.startswith("|"):
            break
        table.append(line)
    assert len(table) == 2 + len(assess(res))
    for line in table:  # every row has exactly 5 cells: escaped pipes do not split cells
        assert line.replace("\\|", "").count("|") == 6
    assert "x \\| y" in text  # a pipe in a value is escaped
    assert "Quick mode" not in text
    assert "Quick mode" in render_markdown({**res, "quick": True})


def test_findings_state_the_hardware_ceiling():
    found = findings(_results())
    ceiling = next(f for f in found if "ceiling" in f)
    assert "26.0 inference img/s" in ceiling  # 156e9 / 6e9
    assert "8.7 training img/s" in ceiling    # 156e9 / 18e9


def _row(res, prefix):
    (found,) = [r for r in assess(res) if r["measure"].startswith(prefix)]
    return found


def test_findings_follow_the_numbers():
    """A conclusion is stated only while the numbers support it, else another one."""
    res = _results()
    ceiling = next(f for f in findings(res) if "ceiling" in f)
    assert "2.3x this CPU's float32 peak: out of reach without native low precision" in ceiling
    res["flops"]["peak_flops"] = 400e9  # 60 img/s x 6 GFLOP = 360 GFLOP/s: within the peak
    ceiling = next(f for f in findings(res) if "ceiling" in f)
    assert "0.9x this CPU's float32 peak: reachable in principle, at 90% of peak." in ceiling
    res["machine"]["flags"] = ["avx512f", "amx_bf16"]
    res["flops"]["peak_flops"] = 156e9
    ceiling = next(f for f in findings(res) if "ceiling" in f)
    assert "out of reach on this CPU even with native bf16" in ceiling


def test_table_words_follow_the_numbers():
    res = _results()
    res["training"]["in_memory_vs_naive_paired"] = [1.1, 1.2]
    assert "tensors ran x1.10, x1.20 faster per repeat." in _row(res, "Training: naive")["limit"]
    res["training"]["in_memory_vs_naive_paired"] = [1.06, 0.94]
    assert "ran at x1.06, x0.94 the naive speed per repeat (no consistent difference)." in \
        _row(res, "Training: naive")["limit"]
    memory = _row(res, "Data: peak resident memory")["limit"]
    assert "so about twice the dataset at peak" in memory          # (560 - 44) / 250 = 2.06
    res["data"]["peak_rss_mb"] = 340.0
    memory = _row(res, "Data: peak resident memory")["limit"]
    assert "once: 1.2x the dataset at peak" in memory               # (340 - 44) / 250 = 1.18


def test_pipeline_verdict_compares_with_the_noise():
    """2% overhead: beyond the noise of identical configurations when they agree exactly,
    machine noise when they differed by 12.5% in the same run."""
    res = _results()
    assert "exceeds this run's noise" in _row(res, "Input pipeline")["limit"]
    res["training"]["variants"]["segkit_float32"]["img_per_s"] = [3.0, 3.6]  # auto: 3.0, 3.2
    derive(res)
    assert res["training"]["noise_auto_vs_float32_paired"] == pytest.approx([1.0, 3.2 / 3.6])
    assert "is machine noise" in _row(res, "Input pipeline")["limit"]


def test_tracking_fix_and_default_run_cost():
    res = _results()
    res["data"]["split_sizes"] = {"train": 792}
    res["tracking"]["default_epochs"] = 30
    found = findings({**res, "fixes": fixes(res)})
    cost = next(f for f in found if f.startswith("Tracking is a fixed cost"))
    # 6 s against 30 epochs of 792 / 3.1 s (+ the 6 s): 0.08%; one epoch: 2.3%
    assert "(6.0 s of MLflow and plots per run here)" in cost
    assert "0.08% of the wall time (2.3% of a one-epoch run)" in cost
    assert "metric logging is in the fit time and is small" in cost
    fix = next(f for f in found if f.startswith("Tracking 30% of a smoke run (target 10%)"))
    assert "Plots 3.0 s (plot_gallery 1.5)" in fix and "leaves 15% for MLflow" in fix
    assert "a fraction of a percent" in fix
    assert "A smoke run cannot reach 10%" in fix                # 15% without plots
    res["tracking"]["no_plots_share_median"] = 0.05
    fix = next(f for f in fixes(res) if f.startswith("Tracking"))
    assert fix.endswith("Without plots a smoke run meets the target.")


def test_results_parts_are_merged(tmp_path):
    out = tmp_path / "benchmarks.json"
    results.update(out, {"data": {"pairs": 1}, "_private": 1})
    results.update(out, {"training": {"np": np.float64(2.5)}})
    assert results.load(out) == {"data": {"pairs": 1}, "training": {"np": 2.5}}
    results.update(out, {"data": {"pairs": 2}})
    assert results.load(out)["data"] == {"pairs": 2} and "training" in results.load(out)


@pytest.mark.parametrize("script", ["pipeline.py", "data_prep.py", "train_throughput.py",
                                    "inference.py", "flops.py", "tracking_overhead.py"])
def test_each_script_documents_itself(script):
    """--help prints the module docstring: what it measures, how to run it, what it writes."""
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), "--help"],
                         capture_output=True, text=True, timeout=120, cwd="/")
    assert out.returncode == 0, out.stderr
    assert f"python benchmarks/{script}" in out.stdout
    assert "results/benchmarks.json" in out.stdout and "writes" in out.stdout.lower()
    if script in ("data_prep.py", "tracking_overhead.py"):  # they run themselves as --child
        assert "--child" in out.stdout and "--child-out" in out.stdout


def test_render_only_reproduces_the_committed_report(tmp_path):
    """BENCHMARKS.md and results/benchmarks.json are what --render-only makes of the
    measurements in results/benchmarks.json."""
    for name in ("benchmarks.json", "determinism_cost.json", "accelerator.md", "runtimes.json"):
        if (ROOT / "results" / name).is_file():
            shutil.copy(ROOT / "results" / name, tmp_path / name)
    out, md = tmp_path / "benchmarks.json", tmp_path / "BENCHMARKS.md"
    res = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "pipeline.py"),
                          "--render-only", f"--out={out}", f"--md={md}"],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert md.read_text() == (ROOT / "BENCHMARKS.md").read_text()
    assert out.read_text() == (ROOT / "results" / "benchmarks.json").read_text()


def test_accelerator_summary_medians_and_speedups():
    """benchmarks/accelerator.py: medians over repeats and each policy's ratio to float32
    of the same model and batch, rendered as one table row each."""
    spec = importlib.util.spec_from_file_location("bench_accelerator",
                                                  ROOT / "benchmarks" / "accelerator.py")
    acc = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(acc)

    def row(policy, train, predict):
        return {"model": "reference", "policy": policy, "image_size": 256, "batch": 8,
                "params": 1_940_000, "train_img_per_s": train, "predict_batch": 64,
                "predict_img_per_s": predict, "train_compile_s": 10.0}

    rows = [row("float32", 100, 1000), row("float32", 300, 1000), row("float32", 200, 3000),
            row("mixed_bfloat16", 400, 1500)]
    table = {t["policy"]: t for t in acc.summarise(rows)}
    assert table["float32"]["train_img_per_s"] == 200 and table["float32"]["repeats"] == 3
    assert table["float32"]["predict_img_per_s"] == 1000
    assert table["mixed_bfloat16"]["train_vs_float32"] == pytest.approx(2.0)
    assert table["mixed_bfloat16"]["predict_vs_float32"] == pytest.approx(1.5)
    text = acc.render({"command": "python benchmarks/accelerator.py --notes 'x y'",
                       "device": "GPU X", "keras": "3", "backend": "jax", "started": "now",
                       "wall_s": 5.0, "notes": "x y", "table": list(table.values())})
    assert text.startswith("`python benchmarks/accelerator.py` on **GPU X**")
    assert "| reference (1.9 M) | 256 | 8 | mixed_bfloat16 | 400 | 2.00 | 1500 (64) | 1.50 |" \
        in text


def test_run_summary_groups_repeats_by_hand():
    """benchmarks/run_summary.py: several runs of one preset (seeds) summarised as a group;
    a figure one run lacks is left out of that figure's statistics."""
    from benchmarks.run_summary import group

    rows = [{"test_mdice": 0.80, "test_mhd95": 30.0}, {"test_mdice": 0.86, "test_mhd95": None},
            {"test_mdice": 0.83, "test_mhd95": 20.0}]
    g = group(rows)
    assert set(g) == {"test_mdice", "test_mhd95"}
    assert g["test_mdice"]["median"] == 0.83 and g["test_mdice"]["n"] == 3.0
    assert g["test_mdice"]["mean"] == pytest.approx(0.83)
    assert g["test_mdice"]["std"] == pytest.approx(0.03)  # deviations -0.03, +0.03, 0
    half = 4.302653 * 0.03 / 3 ** 0.5  # t(0.975, 2 df)
    assert (g["test_mdice"]["ci_low"], g["test_mdice"]["ci_high"]) == pytest.approx(
        (0.83 - half, 0.83 + half), abs=1e-6)
    assert (g["test_mhd95"]["n"], g["test_mhd95"]["median"]) == (2.0, 25.0)
