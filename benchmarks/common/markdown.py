"""BENCHMARKS.md from a results mapping: how it was run, on what, the table, the raw training
repeats, the findings, and the GPU and determinism sections written by their own scripts."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from benchmarks.common.assess import assess
from benchmarks.common.derive import RATIOS
from benchmarks.common.fmt import cell, fmt, loads
from benchmarks.common.machine import has_native_bf16
from benchmarks.common.timing import median, paired_ratios

COLUMNS = ("measure", "value", "target", "status", "limit")


def render_markdown(res: Mapping, rows: Sequence[Mapping] | None = None) -> str:
    """BENCHMARKS.md: how it was run, on what, the table, and the raw repeats."""
    rows = assess(res) if rows is None else rows
    lines = ["# Benchmarks", "", *intro(res), *machine_section(res), *table(rows),
             *settings_section(res), *training_section(res), *findings_section(res),
             *gpu_section(res), *determinism_section(res), *runtimes_section(res)]
    return "\n".join(lines)


def intro(res: Mapping) -> list[str]:
    lines = []
    if res.get("quick"):
        lines += ["**Quick mode** (`--quick`): few steps and images, for debugging only; "
                  "do not compare these numbers.", ""]
    return lines + [
        f"`{res.get('command', 'python benchmarks/pipeline.py')}` measured everything below in "
        f"one run ({res.get('started', '?')}, {fmt(res.get('wall_s'), 0)} s). Variants were "
        "interleaved (order rotated per repeat) and each figure is the median of the repeats; "
        "the machine is shared and noisy, so compare only within one run. The targets were "
        "written for an AMX machine.", ""]


def bf16_line(res: Mapping) -> str:
    m = res.get("machine", {})
    if has_native_bf16(m.get("flags", [])):
        return "yes"
    auto = (res.get("training") or {}).get("auto_policy", "float32")
    return ("no (no AMX, no AVX512-BF16): bf16 is emulated and slow, `precision=auto` picks "
            f"{auto}")


def machine_section(res: Mapping) -> list[str]:
    m, v = res.get("machine", {}), res.get("versions", {})
    flags = ", ".join(m.get("flags", [])) or "none"
    return ["## Machine", "",
            f"- {m.get('cpu', '?')}, {m.get('nproc', '?')} cores usable "
            f"({m.get('lscpu', {}).get('Hypervisor vendor', 'no')} hypervisor), "
            f"{fmt(m.get('mhz'), 0)} MHz, {m.get('memory_gb', '?')} GB memory; "
            f"flags that matter: {flags}.",
            f"- Native bf16: {bf16_line(res)}; GPU: {m.get('gpu') or 'none'}.",
            f"- Load average (1, 5, 15 min) at start {loads(m.get('load_average_start'))}, "
            f"at end {loads(m.get('load_average_end'))}"
            + (f"; {res['notes']}" if res.get("notes") else "") + ".",
            "- Versions: " + ", ".join(f"{k} {val}" for k, val in v.items()) + ".", ""]


def table(rows: Sequence[Mapping]) -> list[str]:
    lines = ["## Results", "", "| measure | value | target | status | what limits it |",
             "|:--|--:|:--|:--|:--|"]
    lines += ["| " + " | ".join(cell(r[k]) for k in COLUMNS) + " |" for r in rows]
    return lines + [""]


def settings_section(res: Mapping) -> list[str]:
    s = res.get("settings", {})
    if not s:
        return []
    return ["## Settings", "", "- " + ", ".join(f"{k}={val}" for k, val in s.items()) + ".", ""]


def training_section(res: Mapping) -> list[str]:
    tr = res.get("training")
    if not tr:
        return []
    v = tr["variants"]
    lines = ["## Training repeats (images/s, steady state)", "",
             "| variant | policy | fed from | per repeat | median |", "|:--|:--|:--|:--|--:|"]
    for name, var in v.items():
        runs = ", ".join(fmt(x) for x in var["img_per_s"])
        lines.append(f"| {cell(name)} | {var['policy']} | {cell(var['feed'])} | {runs} | "
                     f"{fmt(var['img_per_s_median'])} |")
    lines += ["", "Paired ratios of throughput (same round, run next to each other), per "
              "repeat and median; the table above uses these medians:", ""]
    for a, b in RATIOS.values():
        if a in v and b in v:
            ratios = paired_ratios(v[a]["img_per_s"], v[b]["img_per_s"])
            lines.append(f"- {a} / {b}: {', '.join(f'{x:.2f}' for x in ratios)} "
                         f"(median {median(ratios):.2f})")
    return lines + [""]


def findings_section(res: Mapping) -> list[str]:
    if not res.get("findings"):
        return []
    return ["## Findings", ""] + [f"- {f}" for f in res["findings"]] + [""]


def gpu_section(res: Mapping) -> list[str]:
    acc = res.get("accelerator_md")
    return ["## GPU", "", acc.strip(), ""] if acc else []


def runtimes_section(res: Mapping) -> list[str]:
    """The inference runtimes, when benchmarks/runtimes.py has written results/runtimes.json."""
    if not res.get("runtimes"):
        return []
    from benchmarks.runtimes import render

    return [render(res["runtimes"])]


def determinism_section(res: Mapping) -> list[str]:
    det = res.get("determinism")
    if not det:
        return []
    med = det["median_images_per_s"]
    return ["## Determinism (`trainer.deterministic=true`)", "",
            f"`python benchmarks/determinism_cost.py` (separate processes, reference U-Net "
            f"at {det['size']}x{det['size']}, batch {det['batch']}, float32): "
            f"{med['default']:.2f} img/s by default, {med['deterministic']:.2f} img/s "
            f"with op determinism, x{det['slowdown']:.2f} slower (medians, "
            f"{len(det['images_per_s']['default'])} interleaved repeats).", ""]
