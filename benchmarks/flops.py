"""Model cost: the reference U-Net's FLOPs per image and this machine's peak FLOP/s.

    python benchmarks/flops.py [--out results/benchmarks.json]

Counts the forward FLOPs of the configured U-Net (``model.depth``/``model.filters`` of
conf/, 256x256) from its layer shapes (a multiply-add = 2 FLOP), cross-checked with
TensorFlow's FLOP registry on the frozen forward graph; training is taken as ~3x the forward
pass. The peak is computed from the CPU's cores, clock and instruction set for the policy
``precision=auto`` resolves to (none on a GPU machine). No timing: nothing here is noisy.

Writes the ``flops`` part of the results JSON (merged: other parts are kept). The achieved
FLOP/s are derived from it and the ``training`` and ``inference`` parts when the report is
rendered (``benchmarks/pipeline.py --render-only``).
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from anywhere: benchmarks and segkit beside it
    sys.path.insert(0, str(ROOT))

from benchmarks.common import RESULTS, SIZE, cli, results  # noqa: E402
from benchmarks.common.config import compose  # noqa: E402
from benchmarks.common.flops import count_flops, profiler_flops, transpose_flops  # noqa: E402
from benchmarks.common.machine import gpu_names, machine, peak_flops  # noqa: E402


def machine_peak(policy: str) -> tuple[float | None, str]:
    """This machine's peak FLOP/s for ``policy`` and the assumption behind it."""
    if gpu_names():
        return None, "GPU: peak not computed"
    m = machine()
    if not m["mhz"]:
        return None, "CPU clock unknown: peak not computed"
    return peak_flops(m["nproc"], m["mhz"] / 1000, set(m["flags"]), policy)


def model_cost(depth: int, filters: int, policy: str) -> dict:
    """The ``flops`` part for the U-Net of ``depth`` and ``filters`` at SIZE x SIZE."""
    import keras

    from segkit.models import build_unet

    ref = build_unet(image_size=SIZE, depth=depth, filters=filters)
    hand, prof = count_flops(ref), profiler_flops(ref, SIZE)
    peak, why = machine_peak(policy)
    fwd = hand["conv"]
    cost = {"policy": policy, "forward_flops": fwd, "forward_flops_with_bias_pool": hand["total"],
            "train_flops": 3 * fwd, "profiler_total": prof["total"],
            "profiler_by_op_type": prof["by_op_type"],
            "profiler_uncounted": prof["uncounted_compute_ops"],
            "transpose_flops": transpose_flops(ref, hand["per_layer"]),
            "peak_flops": peak, "peak_assumption": why, "per_layer": hand["per_layer"]}
    keras.backend.clear_session()
    return cost


def main(argv: list[str] | None = None) -> None:
    ap = cli.parser(__doc__)
    ap.add_argument("--out", type=Path, default=RESULTS, help=cli.OUT_HELP)
    ap.add_argument("--quick", action="store_true", help="accepted for symmetry: no effect")
    args = ap.parse_args(argv)
    from segkit.precision import resolve_precision

    stamp = results.Provenance("flops.py", sys.argv[1:] if argv is None else argv)
    cfg = compose(None, None)
    part = model_cost(cfg.model.depth, cfg.model.filters, resolve_precision("auto"))
    part["measured"] = stamp.stamp()
    results.update(args.out, {"flops": part})
    peak = part["peak_flops"]
    print(f"forward {part['forward_flops'] / 1e9:.3f} GFLOP/img (profiler "
          f"{part['profiler_total'] / 1e9:.3f}); peak "
          f"{f'{peak / 1e9:.0f} GFLOP/s' if peak else 'not computed'} -> {args.out}")


if __name__ == "__main__":
    main()
