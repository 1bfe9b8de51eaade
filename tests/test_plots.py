"""Report figures (segkit.plots) and the Markdown report (segkit.report), on synthetic data."""

from __future__ import annotations

import time
import warnings
from pathlib import Path

import numpy as np
import pytest
from matplotlib.figure import Figure
from PIL import Image

from segkit import plots
from segkit.markdown import write_report
from tests.helpers import random_data

KEYS = ("loss", "accuracy", "dice", "iou")


def check_png(path: Path, returned: Path) -> np.ndarray:
    """The PNG is where it should be, whole, plausibly large, alone; returns its RGB pixels."""
    assert returned == path
    assert path.is_file()
    with Image.open(path) as image:
        assert image.format == "PNG"
        image.load()  # decodes every pixel: a truncated file fails here
        width, height = image.size
        pixels = np.asarray(image.convert("RGB"))
    assert width > 300 and height > 300, (width, height)
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]  # no temp file left
    return pixels


def history(epochs: int, keys=KEYS) -> dict[str, list[float]]:
    x = np.arange(epochs, dtype=float)
    out = {}
    for i, key in enumerate(keys):
        out[key] = list(0.2 + 0.6 * np.exp(-x / 4) + 0.01 * i)
        out[f"val_{key}"] = list(0.25 + 0.6 * np.exp(-x / 5) + 0.01 * i)
    return out


def non_white(pixels: np.ndarray) -> float:
    return float((pixels.min(axis=2) < 200).mean())


def test_plot_history(tmp_path):
    path = tmp_path / "new" / "sub" / "history.png"  # parent folders do not exist yet
    check_png(path, plots.plot_history(history(12), path, best_epoch=7, monitor="val_dice"))


def test_plot_history_single_epoch(tmp_path):
    path = tmp_path / "h" / "history.png"
    check_png(path, plots.plot_history(history(1), path, best_epoch=0, monitor="val_loss"))


def test_plot_history_hides_missing_panel(tmp_path):
    full = check_png(tmp_path / "a" / "h.png",
                     plots.plot_history(history(6), tmp_path / "a" / "h.png"))
    partial = check_png(tmp_path / "b" / "h.png",
                        plots.plot_history(history(6, KEYS[:3]), tmp_path / "b" / "h.png"))
    # The IoU panel is the bottom-right quarter: drawn in one, blank in the other.
    h, w = full.shape[:2]
    assert non_white(full[h // 2 + 40:, w // 2 + 40:]) > 0.02
    h, w = partial.shape[:2]
    assert non_white(partial[h // 2 + 40:, w // 2 + 40:]) < 0.002


def test_plot_history_train_only_and_empty(tmp_path):
    path = tmp_path / "t" / "h.png"
    check_png(path, plots.plot_history({"loss": [0.9, 0.5, 0.4]}, path))
    with pytest.raises(ValueError, match="history has none"):
        plots.plot_history({"lr": [0.1]}, tmp_path / "e" / "h.png")
    assert not (tmp_path / "e" / "h.png").exists()


def test_plot_confusion(tmp_path):
    path = tmp_path / "c" / "confusion.png"
    check_png(path, plots.plot_confusion(1234567.0, 23456.0, 9876543.0, 34567.0, path,
                                         split="validation"))


def test_plot_confusion_empty_row(tmp_path):
    """No polyp pixels at all: the normalised row is undefined, the figure still renders."""
    path = tmp_path / "c" / "confusion.png"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_png(path, plots.plot_confusion(0.0, 10.0, 90.0, 0.0, path))


def roc_curve(power: float) -> tuple[np.ndarray, np.ndarray, float]:
    fpr = np.linspace(0, 1, 200)
    tpr = fpr ** power
    return fpr, tpr, float(np.trapezoid(tpr, fpr))


def test_plot_roc(tmp_path):
    path = tmp_path / "r" / "roc.png"
    check_png(path, plots.plot_roc(*roc_curve(0.2), path))


def test_figures_are_deterministic_and_follow_their_inputs(tmp_path):
    same_a = plots.plot_roc(*roc_curve(0.2), tmp_path / "a" / "roc.png").read_bytes()
    same_b = plots.plot_roc(*roc_curve(0.2), tmp_path / "b" / "roc.png").read_bytes()
    other = plots.plot_roc(*roc_curve(0.6), tmp_path / "c" / "roc.png").read_bytes()
    assert same_a == same_b  # so the difference below comes from the inputs alone
    assert other != same_a


def test_plot_pr(tmp_path):
    recall = np.linspace(1, 0, 200)
    precision = 0.1 + 0.85 * (1 - recall ** 5)
    with_base = check_png(tmp_path / "a" / "pr.png",
                          plots.plot_pr(recall, precision, 0.83, tmp_path / "a" / "pr.png",
                                        prevalence=0.1))
    without = check_png(tmp_path / "b" / "pr.png",
                        plots.plot_pr(recall, precision, 0.83, tmp_path / "b" / "pr.png"))
    assert with_base.shape[0] > without.shape[0]  # one more legend line below the axes


def test_plot_threshold_curves(tmp_path):
    thresholds = np.round(np.arange(0.05, 0.96, 0.05), 2)
    curves = {"mDice": 0.8 - (thresholds - 0.4) ** 2, "mIoU": 0.7 - (thresholds - 0.4) ** 2}
    path = tmp_path / "t" / "thresholds.png"
    check_png(path, plots.plot_threshold_curves(thresholds, curves, path, chosen=0.42))
    path = tmp_path / "u" / "thresholds.png"
    check_png(path, plots.plot_threshold_curves(thresholds, curves, path))


def test_plot_dice_histogram(tmp_path):
    dice = np.random.default_rng(0).beta(5, 1.5, 100)
    path = tmp_path / "d" / "dice.png"
    check_png(path, plots.plot_dice_histogram(dice, path))


def disk(size: int, cy: int, cx: int, r: int) -> np.ndarray:
    y, x = np.mgrid[:size, :size]
    return (y - cy) ** 2 + (x - cx) ** 2 < r ** 2


def case(title: str, truth: np.ndarray, pred: np.ndarray, *, image=None, dice=0.5) -> dict:
    if image is None:
        (image,), _ = random_data(1, truth.shape, seed=len(title))
    return {"title": title, "image": image, "truth": truth, "pred": pred, "dice": dice}


def test_plot_gallery_with_empty_masks(tmp_path):
    empty = np.zeros((64, 64), bool)
    cases = [case("worst: cju0a", disk(64, 30, 30, 12), disk(64, 34, 36, 14), dice=0.412),
             case("empty truth", empty, disk(64, 20, 20, 8), dice=0.0),
             case("empty prediction", disk(64, 40, 40, 10), empty, dice=0.0),
             case("both empty", empty, empty, dice=1.0),
             case("full prediction", disk(64, 40, 40, 10), np.ones((64, 64), bool))]
    path = tmp_path / "g" / "gallery.png"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "No contour levels were found" and the like
        check_png(path, plots.plot_gallery(cases, path))


def test_plot_gallery_draws_both_outlines(tmp_path):
    """On a black image, the overlay shows green (truth) and magenta (prediction) lines."""
    black = np.zeros((128, 128, 3), np.uint8)
    truth, pred = disk(128, 50, 50, 30), disk(128, 70, 75, 30)

    def outline_pixels(c: dict, folder: str) -> tuple[int, int]:
        pixels = check_png(tmp_path / folder / "g.png",
                           plots.plot_gallery([c], tmp_path / folder / "g.png")).astype(int)
        strip = pixels[pixels.shape[0] // 3:]  # below the legend and the row title
        r, g, b = strip[..., 0], strip[..., 1], strip[..., 2]
        green = int(((g > 180) & (r < 90) & (b < 90)).sum())
        magenta = int(((r > 180) & (b > 180) & (g < 90)).sum())
        return green, magenta

    green, magenta = outline_pixels(case("both", truth, pred, image=black), "a")
    assert green > 200 and magenta > 200
    green, magenta = outline_pixels(case("none", truth & False, pred & False, image=black), "b")
    assert green == 0 and magenta == 0


def test_plot_gallery_mixed_sizes_and_rejects_nothing(tmp_path):
    tall = case("tall", np.zeros((90, 60), bool), disk(90, 40, 30, 10)[:, :60])
    square = case("square", disk(64, 30, 30, 10), disk(64, 30, 34, 10))
    path = tmp_path / "g" / "gallery.png"
    check_png(path, plots.plot_gallery([tall, square], path))
    with pytest.raises(ValueError, match="at least one case"):
        plots.plot_gallery([], tmp_path / "none" / "gallery.png")


def test_gallery_of_six_256_images_is_quick(tmp_path):
    images, _ = random_data(6, 256, seed=1)
    cases = [case(f"case {i}", disk(256, 100 + 5 * i, 120, 40), disk(256, 110, 125, 45),
                  image=images[i]) for i in range(6)]
    plots.plot_gallery(cases[:1], tmp_path / "warm" / "g.png")  # font cache, imports
    start = time.perf_counter()
    plots.plot_gallery(cases, tmp_path / "g" / "gallery.png")
    # About 1 s here on a busy 2-core machine; the bound catches gross regressions only.
    assert time.perf_counter() - start < 5


def test_failed_save_keeps_old_file_and_leaves_no_temp(tmp_path, monkeypatch):
    path = tmp_path / "r" / "roc.png"
    plots.plot_roc(*roc_curve(0.3), path)
    before = path.read_bytes()

    def broken(self, fname, **kwargs):
        Path(fname).write_bytes(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(Figure, "savefig", broken)
    with pytest.raises(OSError, match="disk full"):
        plots.plot_roc(*roc_curve(0.7), path)
    assert path.read_bytes() == before
    assert [p.name for p in path.parent.iterdir()] == ["roc.png"]


# --- report -------------------------------------------------------------------------------

METRICS = {
    "validation": {"mdice": 0.81234, "miou": 0.7, "tp": 1234567.0, "images": 200.0,
                   "threshold": 0.45},
    "test": {"mdice": 0.79, "tp": 2345.0, "fp": 12.5, "images": 1000.0, "auc": 0.95},
}
PLOTS = {"Training history": "history.png", "Worst and best cases": "gallery.png"}
NOTES = ["threshold 0.45 chosen on validation mDice", "model: U-Net, 32 filters"]


def table_rows(text: str) -> dict[str, list[str]]:
    rows = {}
    for line in text.splitlines():
        if line.startswith("|") and not line.startswith("|:"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            rows[cells[0]] = cells[1:]
    return rows


@pytest.fixture
def report(tmp_path) -> str:
    path = tmp_path / "out" / "report.md"
    assert write_report(path, title="Kvasir-SEG evaluation", metrics=METRICS, plots=PLOTS,
                        notes=NOTES) == path
    assert [p.name for p in path.parent.iterdir()] == ["report.md"]  # no temp file left
    return path.read_text(encoding="utf-8")


def test_report_heading_and_notes(report):
    lines = report.splitlines()
    assert lines[0] == "# Kvasir-SEG evaluation"
    for note in NOTES:
        assert f"- {note}" in lines
    assert lines.index(f"- {NOTES[0]}") < lines.index(f"- {NOTES[1]}")


def test_report_table(report):
    rows = table_rows(report)
    assert rows["metric"] == ["validation", "test"]  # one column per split, in order
    assert list(rows)[1:] == ["mdice", "miou", "tp", "images", "threshold", "fp", "auc"]
    assert rows["tp"] == ["1,234,567", "2,345"]
    assert rows["mdice"] == ["0.8123", "0.7900"]
    assert rows["images"] == ["200", "1,000"]
    assert rows["miou"] == ["0.7000", "–"]
    assert rows["fp"] == ["–", "12.5000"]  # a count that is not whole keeps its decimals
    assert rows["auc"] == ["–", "0.9500"]
    assert all(len(cells) == 2 for cells in rows.values())


def test_report_embeds_every_plot_with_caption(report):
    lines = report.splitlines()
    for caption, file in PLOTS.items():
        assert f"## {caption}" in lines
        assert f"![{caption}]({file})" in lines
        assert lines.index(f"## {caption}") < lines.index(f"![{caption}]({file})")
    # after the table
    assert max(i for i, line in enumerate(lines) if line.startswith("|")) < lines.index(
        "## Training history")


def test_report_without_notes_and_rewrite(tmp_path):
    path = tmp_path / "report.md"
    write_report(path, title="first", metrics=METRICS, plots={})
    write_report(path, title="second", metrics={"test": {"tp": 5.0}}, plots={})
    text = path.read_text(encoding="utf-8")
    assert text.startswith("# second\n")
    assert not any(line.startswith("- ") for line in text.splitlines())
    assert table_rows(text) == {"metric": ["test"], "tp": ["5"]}
    assert [p.name for p in tmp_path.iterdir()] == ["report.md"]
