"""Small faults, each said in one line: all-empty masks (undefined metrics are NaN, with a
warning before training), a .keras file that is not a zip, an unwritable --output folder,
0-byte images and masks, and the best weights after a resume."""

from __future__ import annotations

import json
import logging
import os
import subprocess
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from tests.helpers import random_data, write_image, write_pair


# ------------------------------------------------------------------ all-empty masks
def _empty_dataset(root: Path, n: int = 12) -> Path:
    """``n`` pairs whose masks are all black, with official-style split lists."""
    for i in range(n):
        write_pair(root, f"e{i:02d}", seed=i)
        Image.new("L", (40, 32)).save(root / "masks" / f"e{i:02d}.jpg")
    (root / "splits").mkdir()
    (root / "splits" / "train.txt").write_text("\n".join(f"e{i:02d}" for i in range(8)) + "\n")
    (root / "splits" / "val.txt").write_text("\n".join(f"e{i:02d}" for i in range(8, n)) + "\n")
    return root


def test_all_empty_masks_warn_before_training(compose_cfg, tmp_path, caplog):
    from segkit.data import prepare

    root = _empty_dataset(tmp_path / "empty")
    cfg = compose_cfg("debug=smoke", f"data.root={root}", "data.cache_dir=null",
                      "split.val_fraction=0.25")
    with caplog.at_level(logging.WARNING, logger="segkit"):
        data = prepare(cfg.data, cfg.split)
    warned = [r.getMessage() for r in caplog.records if "masks of the" in r.getMessage()]
    sizes = data.split.sizes()
    assert warned == [f"all {sizes[part]} masks of the {part} split are empty: Dice/IoU are 1 "
                      "for an empty prediction, AUC/AP/recall are undefined"
                      for part in ("train", "val", "test")]


def test_metrics_undefined_without_positive_pixels_are_nan(tmp_path):
    from segkit import plots
    from segkit.evaluation import Evaluation, grid
    from segkit.metrics import ScoreHistogram, threshold_counts

    truth = np.zeros((3, 8, 8), bool)
    probs = np.random.default_rng(0).random((3, 8, 8)) * 0.6  # some pixels >= 0.5
    probs[0] = 0.0  # one image predicted empty: Dice 1 there, by convention
    hist = ScoreHistogram(100)
    hist.update(probs, truth)
    thresholds = grid(0.5)
    result = Evaluation("test", ["a", "b", "c"], thresholds,
                        threshold_counts(probs, truth, thresholds), hist)
    m = result.metrics
    for key in ("recall", "auc", "average_precision"):
        assert np.isnan(m[key]), key
    assert m["precision"] == 0.0 and m["specificity"] < 1.0  # defined: predictions were made
    assert result.per_image()[0]["dice"] == 1.0 and m["mdice"] < 1.0
    # the figures draw them without a number, rather than crash or show "nan"
    fpr, tpr, auc = hist.roc()
    assert plots.plot_roc(fpr, tpr, auc, tmp_path / "roc.png").stat().st_size > 1000
    recall, precision, ap = hist.pr()
    assert plots.plot_pr(recall, precision, ap, tmp_path / "pr.png",
                         prevalence=hist.prevalence()).stat().st_size > 1000


# ------------------------------------------------------------------ segkit predict
@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    from segkit.models.unet import build_unet

    path = tmp_path_factory.mktemp("model") / "tiny.keras"
    build_unet(image_size=32, depth=1, filters=2).save(path)
    return path


def test_predict_scores_against_empty_masks_as_undefined(tmp_path, tiny_model):
    """metrics.json stays strict JSON (null, not NaN) and the table says "undefined"."""
    import keras

    from segkit.predict import format_table, score_with_truth

    paths = [write_image(tmp_path / "in" / f"{s}.png", (40, 32), seed=i)
             for i, s in enumerate("ab")]
    for path in paths:
        (tmp_path / "masks").mkdir(exist_ok=True)
        Image.new("L", (40, 32)).save(tmp_path / "masks" / path.name)
    model = keras.saving.load_model(tiny_model, compile=False, safe_mode=True)
    score_with_truth(model, paths, tmp_path / "masks", tmp_path, threshold=0.5)

    def no_nan(token: str) -> float:
        raise AssertionError(f"{token} in metrics.json")

    report = json.loads((tmp_path / "metrics.json").read_text(), parse_constant=no_nan)
    metrics = report["metrics"]
    assert metrics["recall"] is None and metrics["auc"] is None
    assert metrics["average_precision"] is None and metrics["mdice"] is not None
    rows = dict(line.split()[:2] for line in format_table(metrics).splitlines()[1:])
    assert rows["recall"] == rows["auc"] == "undefined"
    assert rows["mdice"] == f"{metrics['mdice']:.4f}"


def _predict(*args: object) -> tuple[int, str, str]:
    """`segkit predict` in this process: (exit status, stdout, stderr)."""
    import contextlib
    import io

    from segkit.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = main(["predict", "--no-progress", *map(str, args)])
    return status, out.getvalue(), err.getvalue()


@pytest.mark.parametrize("content", [b"", b"not a zip archive"])
def test_keras_file_that_is_not_a_zip_is_named_so(tmp_path, content):
    model = tmp_path / "model.keras"
    model.write_bytes(content)
    image = write_image(tmp_path / "in" / "a.png", (40, 32))
    status, _, err = _predict("--model", model, "--output", tmp_path / "out", image)
    assert status == 2
    assert err.startswith(f"error: model '{model}' is not a Keras archive: the file ")
    assert ("is empty (0 bytes)" if not content else "is not a zip archive") in err
    assert "File not found" not in err and len(err.strip().splitlines()) == 1


def test_output_that_is_a_file_fails_before_any_prediction(tmp_path, tiny_model):
    images = [write_image(tmp_path / "in" / f"{s}.png", (40, 32), seed=i)
              for i, s in enumerate("abc")]
    out = tmp_path / "taken"
    out.write_text("keep me")
    status, stdout, err = _predict("--model", tiny_model, "--output", out, *images)
    assert status == 2 and stdout == ""
    assert err == (f"error: output folder {out} cannot be written (it is a file, not a folder)"
                   ": choose another --output, or make it writable\n")
    assert out.read_text() == "keep me"


def _make_unwritable(folder: Path) -> bool:
    """Make ``folder`` unwritable for this process: chmod for a user, `chattr +i` for root
    (when the filesystem and the capabilities allow it)."""
    if os.geteuid() != 0:
        folder.chmod(0o500)
    else:
        subprocess.run(["chattr", "+i", str(folder)], capture_output=True, check=False)
    try:
        (folder / "probe").touch()
    except OSError:
        return True
    (folder / "probe").unlink()
    return False


def _make_writable(folder: Path) -> None:
    if os.geteuid() == 0:
        subprocess.run(["chattr", "-i", str(folder)], capture_output=True, check=False)
    folder.chmod(0o755)


def test_unwritable_output_folder_fails_before_any_prediction(tmp_path, tiny_model):
    images = [write_image(tmp_path / "in" / f"{s}.png", (40, 32), seed=i)
              for i, s in enumerate("abc")]
    out = tmp_path / "read-only"
    out.mkdir()
    (out / "old_mask.png").write_bytes(b"kept")
    try:
        if not _make_unwritable(out):
            pytest.skip("no way to make a folder unwritable here (chmod as root, no chattr)")
        status, stdout, err = _predict("--model", tiny_model, "--output", out, *images)
    finally:
        _make_writable(out)
    assert status == 2 and stdout == ""  # no model line, no summary, no failure per input
    assert err.startswith(f"error: output folder {out} cannot be written (")
    assert len(err.strip().splitlines()) == 1
    assert sorted(p.name for p in out.iterdir()) == ["old_mask.png"]


# ------------------------------------------------------------------ 0-byte files
@pytest.mark.parametrize("kind", ["image", "mask"])
def test_empty_image_or_mask_is_named_empty(tmp_path, kind):
    from segkit.data.dataset import DataError, check_sizes, discover

    write_pair(tmp_path, "ok", seed=1)
    write_pair(tmp_path, "bad", seed=2)
    (tmp_path / f"{kind}s" / "bad.jpg").write_bytes(b"")
    with pytest.raises(DataError) as info:
        check_sizes(discover(tmp_path))
    assert f"1 unreadable pair(s): bad ({kind} bad.jpg is empty (0 bytes))" in str(info.value)
    assert "UnidentifiedImageError" not in str(info.value)


def test_empty_input_image_in_predict_is_named_empty(tmp_path, tiny_model):
    good = write_image(tmp_path / "in" / "a.png", (40, 32))
    empty = tmp_path / "in" / "b.png"
    empty.write_bytes(b"")
    status, stdout, _ = _predict("--model", tiny_model, "--output", tmp_path / "out",
                                 good, empty)
    assert status == 1
    assert f"failed: {empty}: the image is empty (0 bytes)" in stdout.splitlines()
    assert (tmp_path / "out" / "a_mask.png").is_file()


# ------------------------------------------------------------------ best weights, resume
class _Script:
    """A Keras callback, first in the list, that writes a scripted ``val_dice`` into each
    epoch's logs (so the best epoch is known), keeps each epoch's weights, and raises
    KeyboardInterrupt (Ctrl-C) at the start of epoch ``stop_at``."""

    def __new__(cls, scores: dict[int, float], weights: dict, stop_at: int | None = None):
        import keras

        class Script(keras.callbacks.Callback):
            def on_epoch_begin(self, epoch, logs=None):
                if epoch == stop_at:
                    raise KeyboardInterrupt

            def on_epoch_end(self, epoch, logs=None):
                logs["val_dice"] = scores[epoch]
                weights[epoch] = self.model.get_weights()

        return Script()


@pytest.mark.e2e
@pytest.mark.parametrize("checkpoint", [False, True])
def test_resumed_run_evaluates_the_best_epochs_weights(compose_cfg, tmp_path, monkeypatch,
                                                       caplog, capsys, checkpoint):
    """Epoch 2 is the best (val_dice 0.9); Ctrl-C after epoch 3; the resumed epochs 4-6 are
    worse. The model fit() returns must hold epoch 2's weights, and no line may name
    another epoch, with callbacks.checkpoint.enabled true or false."""
    import keras

    from segkit import experiment
    from segkit.checkpoints import LAST, STATE

    cfg = compose_cfg("debug=smoke", "trainer.epochs=6", "trainer.verbose=0",
                      "callbacks.tensorboard.enabled=false", "callbacks.early_stopping.patience=50",
                      f"callbacks.checkpoint.enabled={str(checkpoint).lower()}")
    images, masks = random_data(12, 64, seed=0)
    data = SimpleNamespace(images={"train": images[:8], "val": images[8:]},
                           masks={"train": masks[:8], "val": masks[8:]},
                           split=SimpleNamespace(train=tuple("abcdefgh")))
    scores = {0: 0.5, 1: 0.9, 2: 0.6, 3: 0.7, 4: 0.65, 5: 0.6}
    weights: dict[int, list] = {}
    script = {"stop_at": 3}
    original = experiment.build_callbacks
    monkeypatch.setattr(experiment, "build_callbacks", lambda *a, **k: [
        _Script(scores, weights, script["stop_at"]), *original(*a, **k)])
    model = experiment.build_compiled(cfg, "float32", 2)
    with pytest.raises(KeyboardInterrupt):
        experiment.fit(cfg, model, data, tmp_path, chief=False)
    restored = json.loads((tmp_path / "checkpoints" / STATE).read_text())
    assert restored["epochs"] == 3

    script["stop_at"] = None
    model = keras.saving.load_model(tmp_path / "checkpoints" / LAST, safe_mode=True)
    with caplog.at_level(logging.INFO, logger="segkit"):
        experiment.fit(cfg, model, data, tmp_path, restored, chief=False)
    assert sorted(weights) == [0, 1, 2, 3, 4, 5]
    for got, want in zip(model.get_weights(), weights[1], strict=True):
        np.testing.assert_array_equal(got, want)
    assert "Restoring model weights" not in capsys.readouterr().out
    assert "evaluating the weights of epoch 2, the best val_dice (0.9000)" in caplog.text
