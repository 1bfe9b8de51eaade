"""Headless matplotlib figures for the evaluation report.

Every figure is a :class:`matplotlib.figure.Figure` made directly (never through pyplot), so
no global figure state is touched, no display is needed and figures can be drawn from
several threads at once; ``savefig`` renders PNGs with the Agg canvas. Each function writes
one PNG (dpi 120, tight bounding box) atomically (a temp file in the same folder, then
``os.replace``) and returns its path.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib import patheffects
from matplotlib.colors import to_rgba
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter, MaxNLocator

from segkit.fileio import atomic_path

DPI = 120
TITLE_SIZE = 12
LABEL_SIZE = 11
TICK_SIZE = 10
LEGEND_SIZE = 10
GRID = {"alpha": 0.3, "linewidth": 0.6}
TRUTH_COLOR = "lime"
PRED_COLOR = "magenta"

HISTORY_PANELS = (("loss", "loss"), ("accuracy", "pixel accuracy"), ("dice", "Dice"),
                  ("iou", "IoU"))


def _save(fig: Figure, path: Path | str, compress_level: int = 6) -> Path:
    """Write ``fig`` to ``path`` as a PNG through a temp file in the same folder."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=DPI, bbox_inches="tight",
                    pil_kwargs={"compress_level": compress_level})
    return Path(path)


def _style(ax, xlabel: str, ylabel: str, title: str | None = None) -> None:
    ax.set_xlabel(xlabel, fontsize=LABEL_SIZE)
    ax.set_ylabel(ylabel, fontsize=LABEL_SIZE)
    if title:
        ax.set_title(title, fontsize=TITLE_SIZE)
    ax.tick_params(labelsize=TICK_SIZE)
    ax.grid(True, **GRID)


def _nearest(values: np.ndarray, x: float) -> int:
    return int(np.argmin(np.abs(np.asarray(values, dtype=float) - x)))


def plot_history(history: dict[str, list[float]], path: Path, best_epoch: int | None = None,
                 monitor: str | None = None) -> Path:
    """Train and validation loss, accuracy, Dice and IoU per epoch, one panel each (2x2).

    Panels whose metric (and its ``val_`` twin) is not in ``history`` are hidden.
    ``best_epoch`` is a 0-based index, shown 1-based as a dashed line on every panel.
    Long because a figure is one linear pass of matplotlib calls.
    """
    # Fixed margins instead of a layout engine: constrained layout doubles the drawing time
    # of this 4-panel figure, and the tight bounding box trims the spare margin anyway.
    fig = Figure(figsize=(11, 8))
    axes = fig.subplots(2, 2, gridspec_kw={"left": 0.07, "right": 0.985, "bottom": 0.07,
                                           "top": 0.91, "wspace": 0.2, "hspace": 0.33}).ravel()
    shown = 0
    for ax, (key, label) in zip(axes, HISTORY_PANELS, strict=True):
        raw = [(history.get(key), "train", "C0"), (history.get(f"val_{key}"), "validation",
                                                   "C1")]
        series = [(np.asarray(v, dtype=float), name, color) for v, name, color in raw
                  if v is not None and len(v) > 0]
        if not series:
            ax.set_visible(False)
            continue
        shown += 1
        n = max(len(v) for v, _, _ in series)
        marker = "o" if n <= 30 else None
        for values, name, color in series:
            ax.plot(np.arange(1, len(values) + 1), values, color=color, marker=marker,
                    markersize=4, linewidth=1.8, label=name)
        if best_epoch is not None:
            ax.axvline(best_epoch + 1, color="0.35", linestyle="--", linewidth=1.2,
                       label=f"best epoch {best_epoch + 1}")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
        last = max(n, best_epoch + 1 if best_epoch is not None else 0)
        pad = max(0.5, 0.03 * last)
        ax.set_xlim(1 - pad, last + pad)  # epochs are 1-based: no tick at 0
        _style(ax, "epoch", label, label)
        ax.legend(fontsize=LEGEND_SIZE, loc="best", framealpha=0.85)
    if not shown:
        raise ValueError(f"history has none of {[k for k, _ in HISTORY_PANELS]}: "
                         f"{sorted(history)}")
    title = "Training history"
    if best_epoch is not None:
        title += f": best epoch {best_epoch + 1}"
        if monitor:
            title += f" (chosen by {monitor})"
    fig.suptitle(title, fontsize=TITLE_SIZE + 2)
    return _save(fig, path)


def _annotate_cells(ax, image, values: np.ndarray, texts: Sequence[Sequence[str]]) -> None:
    """Write ``texts`` on each cell in black or white, whichever contrasts with the cell."""
    for (i, j), value in np.ndenumerate(values):
        r, g, b, _ = image.cmap(image.norm(value)) if np.isfinite(value) else (1, 1, 1, 1)
        luminance = 0.299 * r + 0.587 * g + 0.114 * b
        ax.text(j, i, texts[i][j], ha="center", va="center", fontsize=LABEL_SIZE + 1,
                color="white" if luminance < 0.5 else "black")


def _matrix_axes(ax, title: str) -> None:
    labels = ["background", "polyp"]
    ax.set_xticks([0, 1], labels)
    ax.set_yticks([0, 1], labels, rotation=90, va="center")
    _style(ax, "predicted", "truth", title)
    ax.grid(False)


def plot_confusion(tp: float, fp: float, tn: float, fn: float, path: Path,
                   split: str = "test") -> Path:
    """Pixel confusion matrix: counts, and normalised by truth row (percentages)."""
    counts = np.array([[tn, fp], [fn, tp]], dtype=float)
    rows = counts.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        percent = np.where(rows > 0, 100 * counts / rows, np.nan)
    fig = Figure(figsize=(11, 4.6), layout="constrained")
    ax_counts, ax_norm = fig.subplots(1, 2)

    image = ax_counts.imshow(counts, cmap="Blues", vmin=0, vmax=max(counts.max(), 1))
    _annotate_cells(ax_counts, image, counts,
                    [[f"{int(round(v)):,}" for v in row] for row in counts])
    _matrix_axes(ax_counts, "counts (pixels)")
    bar = fig.colorbar(image, ax=ax_counts, shrink=0.9)
    bar.ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}"))
    bar.set_label("pixels", fontsize=LABEL_SIZE)
    bar.ax.tick_params(labelsize=TICK_SIZE)

    image = ax_norm.imshow(np.nan_to_num(percent), cmap="Blues", vmin=0, vmax=100)
    _annotate_cells(ax_norm, image, percent,
                    [["–" if np.isnan(v) else f"{v:.1f}%" for v in row] for row in percent])
    _matrix_axes(ax_norm, "normalised by truth (row %)")
    bar = fig.colorbar(image, ax=ax_norm, shrink=0.9)
    bar.set_label("% of truth row", fontsize=LABEL_SIZE)
    bar.ax.tick_params(labelsize=TICK_SIZE)

    fig.suptitle(f"Pixel confusion matrix, {split} split ({int(round(counts.sum())):,} pixels)",
                 fontsize=TITLE_SIZE + 1)
    return _save(fig, path)


def _curve(ax, x: np.ndarray, y: np.ndarray, name: str, score: str, value: float,
           why: str) -> None:
    """The curve labelled with its score; when the score is undefined (segkit.metrics gives
    NaN there), no curve (it would be a placeholder) but a note saying why."""
    if np.isfinite(value):
        ax.plot(np.asarray(x, dtype=float), np.asarray(y, dtype=float), color="C0",
                linewidth=2, label=f"{name} ({score} = {value:.4f})")
        return
    ax.text(0.5, 0.5, f"{score} undefined:\n{why}", ha="center", va="center",
            fontsize=LEGEND_SIZE, transform=ax.transAxes,
            bbox={"facecolor": "white", "edgecolor": "0.7"})


def plot_roc(fpr: np.ndarray, tpr: np.ndarray, auc: float, path: Path,
             split: str = "test") -> Path:
    """Pixel-level ROC curve with its AUC and the chance diagonal."""
    fig = Figure(figsize=(6, 6), layout="constrained")
    ax = fig.subplots()
    ax.plot([0, 1], [0, 1], color="0.5", linestyle="--", linewidth=1.2, label="chance")
    _curve(ax, fpr, tpr, "ROC", "AUC", auc, "the split has no positive (or no negative) pixel")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    ax.set_aspect("equal")
    _style(ax, "false positive rate (1 − specificity)", "true positive rate (sensitivity)",
           f"ROC curve, pixels, {split} split")
    ax.legend(fontsize=LEGEND_SIZE, loc="lower right", framealpha=0.9)
    return _save(fig, path)


def plot_pr(recall: np.ndarray, precision: np.ndarray, ap: float, path: Path,
            prevalence: float | None = None, split: str = "test") -> Path:
    """Pixel-level precision-recall curve with its average precision and chance baseline."""
    fig = Figure(figsize=(6, 6.6), layout="constrained")
    ax = fig.subplots()
    _curve(ax, recall, precision, "precision-recall", "AP", ap,
           "the split has no positive pixel")
    if prevalence is not None:
        ax.axhline(prevalence, color="0.5", linestyle="--", linewidth=1.2,
                   label=f"chance (prevalence {prevalence:.3f})")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    ax.set_aspect("equal")
    _style(ax, "recall (sensitivity)", "precision (positive predictive value)",
           f"Precision-recall curve, pixels, {split} split")
    # Below the axes: a PR curve can pass through any corner, so no inside spot is safe.
    ax.legend(fontsize=LEGEND_SIZE, loc="upper center", bbox_to_anchor=(0.5, -0.12),
              ncols=1, frameon=False)
    return _save(fig, path)


def plot_threshold_curves(thresholds: np.ndarray, curves: dict[str, np.ndarray], path: Path,
                          chosen: float | None = None, split: str = "validation") -> Path:
    """Scores (e.g. mDice, mIoU) against the probability threshold, the chosen one marked."""
    thresholds = np.asarray(thresholds, dtype=float)
    fig = Figure(figsize=(7.5, 5), layout="constrained")
    ax = fig.subplots()
    k = _nearest(thresholds, chosen) if chosen is not None and len(thresholds) else None
    for i, (name, values) in enumerate(curves.items()):
        values = np.asarray(values, dtype=float)
        color = f"C{i % 10}"
        label = name if k is None else f"{name} ({values[k]:.4f} at chosen)"
        ax.plot(thresholds, values, color=color, linewidth=1.8, label=label)
        if k is not None:
            ax.plot(thresholds[k], values[k], marker="o", markersize=8, color=color,
                    markeredgecolor="black", zorder=5)
    if chosen is not None:
        ax.axvline(chosen, color="0.35", linestyle="--", linewidth=1.2,
                   label=f"chosen threshold {chosen:.2f}")
    if len(thresholds):
        lo, hi = float(thresholds.min()), float(thresholds.max())
        pad = 0.02 * (hi - lo) if hi > lo else 0.05
        ax.set_xlim(lo - pad, hi + pad)
    _style(ax, "probability threshold", "score (mean over images)",
           f"Scores against threshold, {split} split")
    ax.legend(fontsize=LEGEND_SIZE, loc="best", framealpha=0.9)
    return _save(fig, path)


def plot_dice_histogram(dice: np.ndarray, path: Path, split: str = "test") -> Path:
    """Histogram of per-image Dice on [0, 1] (20 bins) with its mean and median."""
    dice = np.asarray(dice, dtype=float).ravel()
    fig = Figure(figsize=(7.5, 5), layout="constrained")
    ax = fig.subplots()
    ax.hist(dice, bins=list(np.linspace(0, 1, 21)), color="C0", alpha=0.8, edgecolor="white",
            label="images")
    if len(dice):
        mean, median = float(np.mean(dice)), float(np.median(dice))
        ax.axvline(mean, color="C3", linestyle="--", linewidth=1.8, label=f"mean {mean:.3f}")
        ax.axvline(median, color="C2", linestyle=":", linewidth=2,
                   label=f"median {median:.3f}")
    ax.set_xlim(0, 1)
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    _style(ax, "per-image Dice", "images",
           f"Per-image Dice, {split} split ({len(dice):,} images)")
    ax.legend(fontsize=LEGEND_SIZE, loc="upper left", framealpha=0.9)
    return _save(fig, path)


def _gray_rgb(mask: np.ndarray) -> np.ndarray:
    return np.repeat(np.where(mask, 255, 0).astype(np.uint8)[..., None], 3, axis=2)


def _rgb(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.dtype != np.uint8:
        image = np.clip(image * (255 if image.max(initial=0) <= 1 else 1), 0, 255)
        image = image.astype(np.uint8)
    if image.ndim == 2:
        image = image[..., None]
    if image.shape[2] == 1:
        image = np.repeat(image, 3, axis=2)
    return image[..., :3]


def plot_gallery(cases: list[dict], path: Path, threshold: float | None = None) -> Path:
    """One row per case: image, ground truth, prediction, and both outlines on the image.

    Each case has ``title``, ``image`` (uint8 HxWx3), ``truth`` and ``pred`` (bool HxW)
    and ``dice``. Each row is one axes showing the four panels side by side as one picture
    (outlines offset onto the fourth), which keeps six rows of 256x256 images well under a
    second: axes and images, not pixels, are what cost time in matplotlib. Long because a
    figure is one linear pass of matplotlib calls.
    """
    if not cases:
        raise ValueError("plot_gallery needs at least one case")
    n, width = len(cases), 9.0  # 9 in at 120 dpi shows four 256-px panels about 1:1
    aspect = max(np.shape(c["image"])[0] / (4.15 * np.shape(c["image"])[1]) for c in cases)
    # Inches: one strip, the row title and panel names above it, the space between rows,
    # and the legend on top.
    strip, titles, between, legend = width * 0.99 * aspect, 0.55, 0.15, 0.6
    height = legend + n * (strip + titles) + (n - 1) * between + 0.05
    fig = Figure(figsize=(width, height))
    grid = fig.add_gridspec(n, 1, left=0.005, right=0.995, bottom=0.05 / height,
                            top=1 - (legend + titles) / height,
                            hspace=(titles + between) / strip)
    columns = ("image", "ground truth", "prediction", "overlay")
    for r, case in enumerate(cases):
        image = _rgb(case["image"])
        truth = np.asarray(case["truth"], dtype=bool)
        pred = np.asarray(case["pred"], dtype=bool)
        h, w = image.shape[:2]
        gap = max(2, round(0.05 * w))
        white = np.full((h, gap, 3), 255, np.uint8)
        panels = [image, _gray_rgb(truth), _gray_rgb(pred), image]
        strip = np.concatenate([p for panel in panels for p in (panel, white)][:-1], axis=1)
        ax = fig.add_subplot(grid[r, 0])
        ax.imshow(strip, interpolation="nearest")
        offsets = [c * (w + gap) for c in range(4)]
        ys, xs = np.arange(h), np.arange(w) + offsets[3]
        for mask, color in ((truth, TRUTH_COLOR), (pred, PRED_COLOR)):
            if mask.any() and not mask.all():  # an empty or full mask has no outline
                lines = ax.contour(xs, ys, mask.astype(np.float32), levels=[0.5],
                                   colors=[color], linewidths=1.8)
                # A dark halo keeps the outline visible on bright or same-coloured tissue.
                lines.set_path_effects([patheffects.withStroke(linewidth=3.4,
                                                               foreground="black")])
        for x, name in zip(offsets, columns, strict=True):
            ax.text(x + w / 2, -0.02 * h, name, ha="center", va="bottom",
                    fontsize=LABEL_SIZE - 1)
        ax.set_xlim(-0.5, 4 * w + 3 * gap - 0.5)
        ax.set_ylim(h - 0.5, -0.5)
        ax.set_axis_off()
        ax.set_title(f"{case['title']}   Dice {float(case['dice']):.3f}", pad=18,
                     fontsize=TITLE_SIZE, fontweight="bold")
    handles = [Line2D([], [], color=to_rgba(TRUTH_COLOR), linewidth=2.5, label="truth"),
               Line2D([], [], color=to_rgba(PRED_COLOR), linewidth=2.5, label="prediction")]
    fig.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, 1), ncols=2,
               fontsize=LEGEND_SIZE, title_fontsize=LEGEND_SIZE,
               title="overlay outlines (green: truth, magenta: prediction"
               + (f" at threshold {threshold:g})" if threshold is not None else ")"))
    # Photographs compress poorly: zlib level 1 is 3x faster than 6 for a few % more bytes.
    return _save(fig, path, compress_level=1)


def plot_paired(a: np.ndarray, b: np.ndarray, labels: tuple[str, str], metric: str,
                path: Path) -> Path:
    """Two models on the same images: per-image scatter of B against A (the diagonal is a
    tie) and the histogram of the differences B - A with their mean."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    fig = Figure(figsize=(11, 4.8), layout="constrained")
    left, right = fig.subplots(1, 2)
    left.scatter(a, b, s=14, alpha=0.6, color="C0", edgecolors="none")
    left.plot([0, 1], [0, 1], color="grey", linewidth=1, linestyle="--", label="tie")
    left.set_xlim(-0.02, 1.02)
    left.set_ylim(-0.02, 1.02)
    left.set_aspect("equal")
    left.legend(loc="lower right", fontsize=LEGEND_SIZE)
    _style(left, f"{metric}: {labels[0]}", f"{metric}: {labels[1]}", "per image")
    diff = b - a
    right.hist(diff, bins=30, color="C1", alpha=0.8, edgecolor="white")
    right.axvline(0, color="grey", linewidth=1, linestyle="--")
    right.axvline(float(diff.mean()), color="C3", linewidth=2,
                  label=f"mean {float(diff.mean()):+.4f}")
    right.legend(fontsize=LEGEND_SIZE)
    _style(right, f"{metric} difference ({labels[1]} - {labels[0]})", "images",
           "paired differences")
    return _save(fig, path)


__all__ = ["plot_confusion", "plot_dice_histogram", "plot_gallery", "plot_history", "plot_paired",
           "plot_pr",
           "plot_roc", "plot_threshold_curves"]


# --------------------------------------------------------------------------- sweep summary
def _sorted_values(values: Sequence[str]) -> list[str]:
    unique = list(dict.fromkeys(values))
    try:
        return sorted(unique, key=float)
    except ValueError:
        return unique


def _numeric(values: Sequence[str]) -> np.ndarray | None:
    try:
        return np.array([float(v) for v in values])
    except ValueError:
        return None


def _log_scale(x: np.ndarray) -> bool:
    return bool(len(x) and np.all(x > 0) and x.max() / x.min() > 10)


def plot_sweep(values: dict[str, list[str]], obj: np.ndarray, labels: Sequence[str],
               objective: str, path: Path, direction: str = "maximize") -> Path:
    """A sweep's objective (NaN: a failed job) over its swept parameters (``values``: key ->
    one value per job): a heat map for two parameters on a grid, objective against the value
    for one, parallel coordinates for more (or two continuous ones), objective per job
    (``labels``) for none."""
    fig = Figure(figsize=(8, 5.5))
    ax = fig.add_subplot()
    swept = list(values)
    grid = len(swept) == 2 and all(len(set(v)) <= 16 for v in values.values())
    if not len(labels):
        ax.text(0.5, 0.5, "no jobs ran", ha="center", va="center", transform=ax.transAxes)
    elif grid:
        _heat_map(fig, ax, values[swept[1]], values[swept[0]], obj, swept[1], swept[0],
                  objective, direction)
    elif len(swept) >= 2:
        _parallel(fig, ax, [values[k] for k in swept], obj, list(swept), objective)
    elif len(swept) == 1:
        _one_param(ax, values[swept[0]], obj, swept[0], objective)
    else:
        _one_param(ax, list(labels), obj, "job", objective)
    ax.set_title(f"{objective} over the sweep ({int(np.isfinite(obj).sum())} of {len(labels)} "
                 "jobs finished)", fontsize=12)
    return _save(fig, path)


def _heat_map(fig, ax, xs, ys, obj, xkey, ykey, objective, direction) -> None:
    cols, lines = _sorted_values(xs), _sorted_values(ys)
    cells = np.full((len(lines), len(cols)), np.nan)
    ran = np.zeros(cells.shape, bool)
    pick = np.fmin if direction == "minimize" else np.fmax
    for x, y, v in zip(xs, ys, obj, strict=True):
        i, j = lines.index(y), cols.index(x)
        ran[i, j] = True
        cells[i, j] = pick(cells[i, j], v)  # repeated settings: the best of them
    ax.set_facecolor("0.85")
    image = ax.imshow(np.ma.masked_invalid(cells), cmap="viridis", aspect="auto")
    fig.colorbar(image, ax=ax, label=objective)
    finite = cells[np.isfinite(cells)]
    middle = (finite.min() + finite.max()) / 2 if finite.size else 0
    for i in range(len(lines)):
        for j in range(len(cols)):
            value = cells[i, j]
            text = f"{value:.3f}" if np.isfinite(value) else ("failed" if ran[i, j] else "")
            color = "black" if not np.isfinite(value) or value > middle else "white"
            ax.text(j, i, text, ha="center", va="center", fontsize=10, color=color)
    ax.set_xticks(range(len(cols)), cols)
    ax.set_yticks(range(len(lines)), lines)
    ax.set_xlabel(xkey, fontsize=11)
    ax.set_ylabel(ykey, fontsize=11)


def _one_param(ax, xs, obj, key, objective) -> None:
    numeric = _numeric(xs)
    if numeric is not None and len(set(xs)) > 8:
        x = numeric
        if _log_scale(x):
            ax.set_xscale("log")
    else:
        order = _sorted_values(xs)
        x = np.array([order.index(v) for v in xs], float)
        ax.set_xticks(range(len(order)), order, rotation=30 if len(order) > 4 else 0,
                      ha="right" if len(order) > 4 else "center")
    ok = np.isfinite(obj)
    ax.scatter(x[ok], obj[ok], s=50, color="tab:blue", label="finished", zorder=3)
    if (~ok).any():
        low = np.nanmin(obj) if ok.any() else 0.0
        ax.scatter(x[~ok], np.full((~ok).sum(), low), marker="x", s=60, color="tab:red",
                   label="failed", zorder=3)
        ax.legend(fontsize=10)
    ax.set_xlabel(key, fontsize=11)
    ax.set_ylabel(objective, fontsize=11)
    ax.grid(True, alpha=0.3, linewidth=0.6)


def _parallel(fig, ax, columns, obj, keys, objective) -> None:
    """Parallel coordinates: one vertical axis per parameter (scaled to [0, 1]; log for
    positive values over a decade; categories evenly spaced) and the objective last.

    Long because a figure is one linear pass of matplotlib calls; splitting it would only
    pass the axes around."""
    from matplotlib import colormaps
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    scaled, ticks = [], []
    for values in columns:
        numeric = _numeric(values)
        if numeric is not None:
            x = np.log10(numeric) if _log_scale(numeric) else numeric
            lo, hi = x.min(), x.max()
            scaled.append((x - lo) / (hi - lo) if hi > lo else np.full(len(x), 0.5))
            ticks.append([(0.0, f"{numeric.min():.3g}"), (1.0, f"{numeric.max():.3g}")])
        else:
            order = _sorted_values(values)
            step = 1 / max(len(order) - 1, 1)
            scaled.append(np.array([order.index(v) * step for v in values]))
            ticks.append([(i * step, v) for i, v in enumerate(order)])
    ok = np.isfinite(obj)
    lo, hi = (obj[ok].min(), obj[ok].max()) if ok.any() else (0.0, 1.0)
    norm = Normalize(lo, hi if hi > lo else lo + 1e-9)
    scaled.append(np.where(ok, norm(np.nan_to_num(obj, nan=lo)), np.nan))
    ticks.append([(0.0, f"{lo:.3f}"), (1.0, f"{hi:.3f}")])
    cmap = colormaps["viridis"]
    xs = np.arange(len(scaled))
    data = np.array(scaled)
    for j in range(data.shape[1]):
        if ok[j]:
            ax.plot(xs, data[:, j], color=cmap(norm(obj[j])), linewidth=1.8, alpha=0.9)
        else:
            ax.plot(xs[:-1], data[:-1, j], color="tab:red", linestyle="--", linewidth=1,
                    alpha=0.7)
    for i, axis_ticks in enumerate(ticks):
        ax.axvline(i, color="0.3", linewidth=0.8)
        for y, label in axis_ticks:
            ax.text(i + 0.03, y, label, fontsize=8, va="center")
    ax.set_xticks(xs, [*keys, objective], rotation=20, ha="right")
    ax.set_yticks([])
    ax.set_ylim(-0.05, 1.05)
    bar = fig.colorbar(ScalarMappable(norm=norm, cmap=cmap), ax=ax)
    bar.set_label(f"{objective} (red dashed: failed)")
