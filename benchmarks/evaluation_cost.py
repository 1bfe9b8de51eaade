"""The cost of the evidence: the evaluation step of one model on the official split (88
validation + 120 held-out test images), with and without the bootstrap intervals
(``eval.bootstrap_draws``) and the boundary metrics (``eval.boundary``, HD95/NSD at each
image's original resolution).

    python benchmarks/evaluation_cost.py --model runs:/<run_id>/model [--repeats 3]
    python benchmarks/evaluation_cost.py --render-only   # RESULTS.md from the JSON

The step measured is what a run's ``evaluate`` phase does: ``segkit.report.evaluate_and_report``
(scoring, figures, CSVs, report, logging into a throwaway MLflow store), in one process, the
variants interleaved (``off``, ``bootstrap``, ``boundary``, ``both``, the order rotating per
repeat) after one warm-up; medians compared. Target: ``both`` under 10% above ``off``.
Writes results/evaluation_cost.json and its section of RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

VARIANTS = {"off": ("eval.boundary=false", "eval.bootstrap_draws=0"),
            "bootstrap": ("eval.boundary=false", "eval.bootstrap_draws=10000"),
            "boundary": ("eval.boundary=true", "eval.bootstrap_draws=0"),
            "both": ("eval.boundary=true", "eval.bootstrap_draws=10000")}
TARGET = 0.10  # the bar: extra time under 10% of the evaluation step
SECTION = "evaluation_cost"


def write_section(path: Path, name: str, body: str) -> None:
    """Replace the text between ``<!-- name:begin -->`` and ``<!-- name:end -->`` in
    ``path`` (appended at the end when the markers are absent)."""
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    text = path.read_text() if path.exists() else ""
    block = f"{begin}\n{body.rstrip()}\n{end}"
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        text = head + block + rest.split(end, 1)[1]
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    path.write_text(text)


def _time_step(model, data, cfg, out: Path) -> float:
    import mlflow

    from segkit.report import evaluate_and_report

    with mlflow.start_run():
        start = time.perf_counter()
        evaluate_and_report(model, data, cfg, out)
        return time.perf_counter() - start


def measure(model_uri: str, repeats: int, extra: list[str]) -> dict:
    """Seconds of the evaluation step per variant and repeat (interleaved)."""
    import mlflow

    from benchmarks.common.config import compose
    from segkit.data import prepare
    from segkit.evaluation import as_predictor
    from segkit.experiment import load_for_evaluation

    model = load_for_evaluation(model_uri)
    tmp = Path(tempfile.mkdtemp(prefix="evaluation_cost-"))
    cfgs = {v: compose(None, None, "split=official", *o, *extra) for v, o in VARIANTS.items()}
    size = as_predictor(model).input_size
    data = prepare(cfgs["off"].data, cfgs["off"].split, image_size=size)
    mlflow.set_tracking_uri(f"sqlite:///{tmp}/mlflow.db")
    mlflow.set_experiment("evaluation_cost")
    _time_step(model, data, cfgs["both"], tmp / "warmup")  # tracing, first figures
    seconds: dict[str, list[float]] = {v: [] for v in VARIANTS}
    names = list(VARIANTS)
    for r in range(repeats):
        for v in names[r % len(names):] + names[:r % len(names)]:
            seconds[v].append(_time_step(model, data, cfgs[v], tmp / f"{v}-{r}"))
            print(f"repeat {r + 1}/{repeats} {v}: {seconds[v][-1]:.2f} s", flush=True)
    median = {v: statistics.median(s) for v, s in seconds.items()}
    extra_share = {v: median[v] / median["off"] - 1 for v in VARIANTS if v != "off"}
    # Paired: each variant against "off" of the same repeat (run back to back), which
    # cancels the drift of a shared host between repeats; the verdict uses it.
    paired = {v: sorted(s / o - 1 for s, o in zip(seconds[v], seconds["off"], strict=True))
              for v in VARIANTS if v != "off"}
    return {"model_uri": model_uri, "image_size": size, "overrides": extra,
            "images": {"val": len(data.images["val"]), "test": len(data.images["test"])},
            "repeats": repeats, "seconds": seconds, "median_seconds": median,
            "extra_share": extra_share, "paired_extra": paired, "target": TARGET,
            "command": " ".join(["python", "benchmarks/evaluation_cost.py", *sys.argv[1:]]),
            "cpu_count": os.cpu_count(), "load_average": os.getloadavg()}


def render(res: dict) -> str:
    med, share = res["median_seconds"], res["extra_share"]
    paired = {v: (statistics.median(d), d[0], d[-1])
              for v, d in res.get("paired_extra", {}).items()}
    both = paired["both"][0] if paired else share["both"]
    verdict = "under" if both < res["target"] else "OVER"
    setting = " ".join(o for o in res["overrides"] if o.startswith("eval.")) or "default eval"
    lines = [f"## Cost of the evidence: intervals and boundary metrics ({setting})", "",
             f"The evaluation step (`segkit.report.evaluate_and_report`: {res['images']['val']}"
             f" validation + {res['images']['test']} test images at {res['image_size']}x"
             f"{res['image_size']}, figures, CSVs, report, MLflow logging) of one model, "
             f"median of {res['repeats']} interleaved repeats in one process "
             f"(`{res['command']}`; load average at the end {res['load_average'][0]:.1f} on "
             f"{res['cpu_count']} cores):", "",
             "| variant | seconds | extra | extra, paired per repeat (median, min to max) |",
             "|---|---|---|---|"]
    labels = {"off": "neither", "bootstrap": "bootstrap intervals (10,000 draws)",
              "boundary": "HD95 + NSD at original resolution", "both": "both (the default)"}
    for v, label in labels.items():
        pair = (f"{paired[v][0]:+.1%} ({paired[v][1]:+.1%} to {paired[v][2]:+.1%})"
                if v in paired else "–")
        lines.append(f"| {label} | {med[v]:.2f} | "
                     f"{'–' if v == 'off' else f'{share[v]:+.1%}'} | {pair} |")
    lines += ["", f"Extra time of both: {both:+.1%} of the evaluation step"
                  f"{' (paired median)' if paired else ''}, {verdict} the "
                  f"{res['target']:.0%} target."]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", help="the model URI (runs:/<id>/model, models:/..., a path)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", type=Path, default=ROOT / "results" / "evaluation_cost.json")
    ap.add_argument("--results-md", type=Path, default=ROOT / "RESULTS.md")
    ap.add_argument("--section", default=SECTION,
                    help="the RESULTS.md section it writes (one per eval setting measured)")
    ap.add_argument("--render-only", action="store_true")
    ap.add_argument("overrides", nargs="*", help="config overrides, e.g. eval.tta=true")
    args = ap.parse_args()
    if args.render_only:
        res = json.loads(args.out.read_text())
    else:
        if not args.model:
            ap.error("--model is required unless --render-only")
        res = measure(args.model, args.repeats, args.overrides)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(res, indent=2))
    body = render(res)
    write_section(args.results_md, args.section, body)
    print(body)


if __name__ == "__main__":
    main()
