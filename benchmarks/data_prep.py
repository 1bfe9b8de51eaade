"""Data preparation: cold and warm ``segkit.data.prepare`` of every Kvasir-SEG pair, and the
peak resident memory of a process doing only that.

    python benchmarks/data_prep.py [--data-dir ../shared/data/kvasir-seg] [--repeats 3]
                                   [--workdir DIR] [--quick] [--out results/benchmarks.json]

Per repeat: one cold preparation (decode + resize into an empty cache, as a first run does),
then two warm starts from that cache, and the sha256 fingerprint (the cache key) alone. The
measurement runs in a fresh process of this script (``--child``, below), which imports no
TensorFlow, so its peak resident memory (``ru_maxrss``) is the preparation's own.

Writes the ``data`` part of the results JSON (merged: other parts are kept): seconds per
call and their medians, images/s, dtypes and sizes (uint8 and as float32), the cache entry
and its size, resident memory after imports and at peak, the split sizes. The last cache is
kept under ``--workdir`` (given) for the other scripts' ``--cache-dir``; without
``--workdir`` everything goes to a temporary folder that is removed.

``--child --child-out FILE --workdir DIR`` measures in this process instead and writes only
FILE (the raw result), leaving the results JSON alone.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from anywhere: benchmarks and segkit beside it
    sys.path.insert(0, str(ROOT))

from benchmarks.common import MB, cli, results  # noqa: E402
from benchmarks.common.child import add_child_options, run_child, write_child  # noqa: E402
from benchmarks.common.config import check_dataset, compose  # noqa: E402
from benchmarks.common.machine import rss_mb  # noqa: E402
from benchmarks.common.timing import median, seconds  # noqa: E402


def time_prepares(data_dir: Path, cache_root: Path, repeats: int) -> dict:
    """Per repeat: a cold prepare into ``cache_root/cold<r>``, two warm ones, a fingerprint."""
    from segkit.data import prepare
    from segkit.data.cache import fingerprint
    from segkit.data.dataset import discover

    t: dict = {"cold_s": [], "warm_s": [], "fingerprint_s": [], "peak_rss_mb": None}
    data = None
    for r in range(repeats):
        cfg = compose(data_dir, cache_root / f"cold{r}", "split=official")
        del data  # each call starts with nothing held, as a new run does
        start = time.perf_counter()
        data = prepare(cfg.data, cfg.split)
        t["cold_s"].append(time.perf_counter() - start)
        t["peak_rss_mb"] = t["peak_rss_mb"] or rss_mb()  # one cold prepare, as a run does
        for _ in range(2):
            del data
            start = time.perf_counter()
            data = prepare(cfg.data, cfg.split)
            t["warm_s"].append(time.perf_counter() - start)
        samples = discover(data.root)
        t["fingerprint_s"].append(seconds(lambda s=samples: fingerprint(s)))
        if r < repeats - 1:
            shutil.rmtree(cache_root / f"cold{r}", ignore_errors=True)
    t["data"] = data
    return t


def describe(t: dict, entry: Path, base_rss: float) -> dict:
    """The ``data`` part from the timings ``t`` and the prepared arrays they left."""
    data = t.pop("data")
    n = sum(len(data.names(p)) for p in ("train", "val", "test"))
    arrays = [*data.images.values(), *data.masks.values()]
    nbytes = sum(a.nbytes for a in arrays)
    cold, warm = median(t["cold_s"]), median(t["warm_s"])
    return {
        "pairs": n, "image_size": data.image_size, "cold_s": t["cold_s"], "warm_s": t["warm_s"],
        "fingerprint_s": t["fingerprint_s"], "cold_s_median": cold, "warm_s_median": warm,
        "fingerprint_s_median": median(t["fingerprint_s"]),
        "cold_img_per_s": n / cold, "warm_img_per_s": n / warm,
        "dtypes": sorted({str(a.dtype) for a in arrays}),
        "uint8_mb": nbytes / MB, "float32_mb": 4 * nbytes / MB,
        "cache_entry": str(entry), "cache_mb": sum(f.stat().st_size for f in entry.iterdir()) / MB,
        "rss_after_imports_mb": base_rss, "peak_rss_mb": t["peak_rss_mb"],
        "peak_rss_all_calls_mb": rss_mb(),
        "split_sizes": data.split.sizes(), "fingerprint": data.fingerprint,
    }


def child(data_dir: Path, workdir: Path, repeats: int) -> dict:
    """The measurement, in this process."""
    import segkit.data  # noqa: F401 (its imports are in the baseline, as in a run)

    base_rss = rss_mb()
    t = time_prepares(data_dir, workdir, repeats)
    last = workdir / f"cold{repeats - 1}"
    entry = next(p for p in last.iterdir() if p.is_dir())
    return describe(t, entry, base_rss)


def measure(data_dir: Path, workdir: Path, repeats: int) -> dict:
    """The measurement in a fresh process of this script."""
    result, _ = run_child(Path(__file__), [f"--data-dir={data_dir}", f"--workdir={workdir}",
                                           f"--repeats={repeats}"])
    return result


def main(argv: list[str] | None = None) -> None:
    ap = cli.parser(__doc__)
    cli.add_common(ap)
    ap.add_argument("--workdir", type=Path, default=None,
                    help="where the caches go (kept); default: a temporary folder (removed)")
    add_child_options(ap)
    args = ap.parse_args(argv)
    data_dir, repeats = check_dataset(args.data_dir), cli.setting(args, "repeats")
    if args.child and args.workdir is None:
        ap.error("--child needs --workdir")
    if args.child:
        return write_child(args.child_out, child(data_dir, args.workdir, repeats))
    stamp = results.Provenance("data_prep.py", sys.argv[1:] if argv is None else argv)
    with tempfile.TemporaryDirectory(prefix="segkit-bench-data-") as tmp:
        part = measure(data_dir, args.workdir or Path(tmp), repeats)
    part["measured"] = stamp.stamp()
    results.update(args.out, {"data": part})
    print(f"data: cold {part['cold_s_median']:.2f} s, warm {part['warm_s_median']:.2f} s, "
          f"peak RSS {part['peak_rss_mb']:.0f} MB -> {args.out}")


if __name__ == "__main__":
    main()
