"""`segkit predict` and segkit.predict: outputs equal direct predictions at each image's own
size, odd and broken inputs, skipping, threshold resolution from MLflow, --with-truth, errors."""

from __future__ import annotations

import json
import os
from pathlib import Path

import keras
import mlflow
import numpy as np
import pytest
from PIL import Image

from segkit.data.dataset import load_image
from segkit.evaluation import resize_probs
from segkit.models import build_unet
from segkit.predict import (
    OVERLAY_EDGE,
    PredictError,
    Summary,
    collect_inputs,
    load_model,
    overlay_image,
    predict_files,
    resolve_threshold,
)
from tests.helpers import segkit_cli, write_image

SIZE = 32


def write_rgb(path: Path, size=(SIZE, SIZE), seed: int = 0) -> Path:
    """A smooth random RGB image of ``size`` (w, h), so predictions vary across it."""
    return write_image(path, size, seed=seed, smooth=True)


@pytest.fixture(scope="module")
def model_path(tmp_path_factory) -> Path:
    """A tiny untrained U-Net whose output layer is scaled so probabilities spread over (0, 1)."""
    keras.utils.set_random_seed(0)
    model = build_unet(image_size=SIZE, depth=2, filters=4)
    kernel, bias = model.get_layer("mask").get_weights()
    model.get_layer("mask").set_weights([kernel * 5, bias])
    path = tmp_path_factory.mktemp("model") / "unet.keras"
    model.save(path)
    return path


@pytest.fixture(scope="module")
def model(model_path):
    return keras.saving.load_model(model_path, compile=False)


def reference(model, path: Path) -> np.ndarray:
    """Probabilities at the image's own size, computed directly, one image at a time."""
    h, w = load_image(path).shape[:2]
    prob = model.predict_on_batch(load_image(path, SIZE)[None].astype("float32"))[0, ..., 0]
    return resize_probs(np.asarray(prob, np.float32), (h, w))


def gap_threshold(probs) -> float:
    """A threshold near the median probability that no pixel comes within the widest gap's
    half of: batch-size rounding (~1e-7) can then never flip a pixel, so masks compare exactly."""
    values = np.unique(np.concatenate([p.ravel() for p in probs]))
    lo, hi = len(values) // 4, 3 * len(values) // 4
    gaps = np.diff(values[lo:hi])
    k = int(np.argmax(gaps))
    assert gaps[k] > 1e-5
    return round(float(values[lo + k] + gaps[k] / 2), 6)


def read(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im)


# ---------------------------------------------------------------- equality with direct use


@pytest.mark.e2e
def test_library_and_cli_outputs_equal_direct_prediction(tmp_path, model, model_path):
    images = [write_rgb(tmp_path / "imgs" / f"{n}.png", seed=i) for i, n in enumerate("abc")]
    probs = {p.stem: reference(model, p) for p in images}
    t = gap_threshold(probs.values())

    lib = predict_files(model, collect_inputs([str(tmp_path / "imgs")]), tmp_path / "lib",
                        threshold=t, batch_size=2, probabilities="8", progress=False)
    assert [p.stem for p in lib.done] == ["a", "b", "c"] and not lib.skipped + lib.failed
    res = segkit_cli("predict", "--model", model_path, "--output", tmp_path / "cli",
                     "--threshold", t, "--batch-size", 2, "--probabilities", 16,
                     str(tmp_path / "imgs" / "*.png"), cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "done 3, skipped 0, failed 0" in res.stdout
    assert f"threshold {t:g} (given with --threshold)" in res.stdout
    assert "img/s" in res.stderr or "s/img" in res.stderr  # the progress bar's rate

    foreground = []
    for stem, p in probs.items():
        expected = np.where(p >= t, 255, 0)
        for out in ("lib", "cli"):
            with Image.open(tmp_path / out / f"{stem}_mask.png") as im:
                assert im.mode == "L"
                np.testing.assert_array_equal(np.asarray(im), expected)
        foreground.append((expected > 0).mean())
        prob8 = read(tmp_path / "lib" / f"{stem}_prob.png").astype(int)
        assert np.abs(prob8 - np.round(p * 255)).max() <= 1
        prob16 = read(tmp_path / "cli" / f"{stem}_prob.png").astype(int)
        assert prob16.max() > 255  # really 16 bits
        assert np.abs(prob16 - np.round(p * 65535)).max() <= 1
    assert 0.05 < np.mean(foreground) < 0.95  # the masks are not trivially empty or full
    assert not list((tmp_path / "cli").glob(".*"))  # no temporary file left behind


def test_odd_inputs_get_masks_of_their_own_size(tmp_path, model):
    rgb = load_image(write_rgb(tmp_path / "src.png", size=(40, 30)))
    folder = tmp_path / "odd"
    folder.mkdir()
    Image.fromarray(rgb[..., 0]).save(folder / "gray.png")
    Image.fromarray(np.dstack([rgb, np.full(rgb.shape[:2], 128, np.uint8)])).save(
        folder / "rgba.png")
    Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE).save(folder / "pal.png")
    Image.fromarray(rgb).save(folder / "scan.tif")
    write_rgb(folder / "tiny.png", size=(5, 7), seed=3)
    write_rgb(folder / "wide.png", size=(1000, 40), seed=4)
    paths = collect_inputs([str(folder)])
    assert [p.name for p in paths] == ["gray.png", "pal.png", "rgba.png", "scan.tif",
                                       "tiny.png", "wide.png"]
    summary = predict_files(model, paths, tmp_path / "out", threshold=0.5, batch_size=1,
                            overlay=True, progress=False)
    assert len(summary.done) == 6 and not summary.failed
    for path in paths:
        with Image.open(path) as im:
            size = im.size
        mask_file = tmp_path / "out" / f"{path.stem}_mask.png"
        with Image.open(mask_file) as mk:
            assert (mk.mode, mk.size) == ("L", size), path.name
        mask = read(mask_file)
        assert set(np.unique(mask)) <= {0, 255}, path.name
        # batch_size=1 runs the same forward pass as the reference: exact equality.
        np.testing.assert_array_equal(mask, np.where(reference(model, path) >= 0.5, 255, 0))
        with Image.open(tmp_path / "out" / f"{path.stem}_overlay.png") as ov:
            assert (ov.mode, ov.size) == ("RGB", size), path.name


def test_overlay_tints_the_region_and_draws_its_contour():
    image = np.full((20, 20, 3), 100, np.uint8)
    mask = np.zeros((20, 20), bool)
    mask[5:15, 5:15] = True
    out = overlay_image(image, mask)
    np.testing.assert_array_equal(out[~mask], image[~mask])  # outside: untouched
    np.testing.assert_array_equal(out[5, 5:15], np.tile(OVERLAY_EDGE, (10, 1)))  # contour
    tint = round(0.75 * 100 + 0.25 * 255)  # 25% magenta: red and blue up, green down
    np.testing.assert_array_equal(out[10, 10], [tint, 75, tint])
    assert (out[mask] == OVERLAY_EDGE).all(axis=1).sum() == 36  # the 10x10 square's border


def test_collect_inputs_files_folders_globs_without_duplicates(tmp_path):
    folder = tmp_path / "in"
    for name in ("b.PNG", "a.Jpg", "c.tiff", "notes.txt", ".hidden.png"):
        (folder / name).parent.mkdir(exist_ok=True)
        (folder / name).write_bytes(b"x")
    (folder / "sub").mkdir()
    (folder / "sub" / "deep.png").write_bytes(b"x")
    found = collect_inputs([str(folder / "c.tiff"), str(folder), str(folder / "*.PNG"),
                            str(folder / "notes.txt")])
    assert [p.name for p in found] == ["c.tiff", "a.Jpg", "b.PNG", "notes.txt"]
    with pytest.raises(PredictError, match="no such file"):
        collect_inputs([str(folder), str(tmp_path / "missing.png")])
    with pytest.raises(PredictError, match="no input images"):
        collect_inputs([str(tmp_path / "nothing*.png"), str(folder / "sub" / "*.jpg")])


# ---------------------------------------------------------------- failures and skipping


@pytest.mark.e2e
def test_corrupt_file_and_stem_clash_fail_by_name_the_rest_is_done(tmp_path, model_path):
    for i, name in enumerate(("a", "b")):
        write_rgb(tmp_path / "imgs" / f"{name}.png", seed=i)
    (tmp_path / "imgs" / "x.jpg").write_bytes(np.random.default_rng(0).bytes(3000))
    clash = write_rgb(tmp_path / "other" / "a.png", seed=5)
    out = tmp_path / "out"
    res = segkit_cli("predict", "--model", model_path, "--output", out, "--no-progress",
                     tmp_path / "imgs", clash, cwd=tmp_path)
    assert res.returncode == 1, res.stderr[-3000:]
    assert "done 2, skipped 0, failed 2" in res.stdout
    failed = [line for line in res.stdout.splitlines() if line.startswith("failed: ")]
    assert len(failed) == 2
    assert any(line.startswith(f"failed: {tmp_path / 'imgs' / 'x.jpg'}: ") for line in failed)
    assert any(line.startswith(f"failed: {clash}: same name as") for line in failed)
    assert sorted(p.name for p in out.iterdir()) == ["a_mask.png", "b_mask.png"]
    assert "Traceback" not in res.stderr


@pytest.mark.e2e
def test_rerun_skips_existing_outputs_and_overwrite_rewrites_them(tmp_path, model, model_path):
    for i, name in enumerate("ab"):
        write_rgb(tmp_path / "imgs" / f"{name}.png", seed=i)
    out = tmp_path / "out"
    first = predict_files(model, collect_inputs([str(tmp_path / "imgs")]), out, threshold=0.5,
                          overlay=True, progress=False)
    assert len(first.done) == 2
    files = sorted(out.iterdir())
    assert len(files) == 4
    old = 1_000_000_000  # mtimes far in the past: any rewrite shows, however coarse the clock
    for f in files:
        os.utime(f, ns=(old, old))
    before = {f: (f.read_bytes(), f.stat().st_ino) for f in files}

    res = segkit_cli("predict", "--model", model_path, "--output", out, "--overlay",
                     tmp_path / "imgs", cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "done 0, skipped 2, failed 0" in res.stdout
    assert res.stderr.count("skipped ") == 2 and "--overwrite" in res.stderr
    for f in files:
        assert (f.read_bytes(), f.stat().st_ino) == before[f] and f.stat().st_mtime_ns == old

    res = segkit_cli("predict", "--model", model_path, "--output", out, "--overlay", "--overwrite",
                     tmp_path / "imgs", cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "done 2, skipped 0, failed 0" in res.stdout
    for f in files:
        assert f.stat().st_mtime_ns != old
        assert f.stat().st_ino != before[f][1]  # replaced by rename, not written in place
        assert f.read_bytes() == before[f][0]  # same model, same inputs: same pixels
    assert sorted(out.iterdir()) == files


def test_summary_lines():
    s = Summary(done=[Path("a.png")], skipped=[], failed=[(Path("x.jpg"), "broken")])
    assert s.lines() == ["done 1, skipped 0, failed 1", "failed: x.jpg: broken"]


# ---------------------------------------------------------------- MLflow models, threshold


@pytest.fixture(scope="module")
def store(tmp_path_factory, model):
    """A sqlite store with one training run (model logged and registered as segkit-test,
    val_best_threshold 0.3, alias champion) and one run that logged no threshold."""
    from mlflow.tracking import MlflowClient

    from segkit.tracking import log_model, setup_experiment

    previous = mlflow.get_tracking_uri()
    tmp = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{tmp}/mlflow.db"
    experiment = setup_experiment(uri, "predict-test")
    sample = np.zeros((1, SIZE, SIZE, 3), np.float32)
    with mlflow.start_run(experiment_id=experiment) as run:
        logged_uri = log_model(model, sample, registered_name="segkit-test")
        mlflow.log_metric("val_best_threshold", 0.3)
    with mlflow.start_run(experiment_id=experiment) as bare:
        mlflow.log_metric("val_mdice", 0.5)
    MlflowClient(uri).set_registered_model_alias("segkit-test", "champion", "1")
    yield {"uri": uri, "run": run.info.run_id, "bare": bare.info.run_id, "logged": logged_uri,
           "dir": tmp}
    mlflow.set_tracking_uri(previous)


def test_threshold_explicit_wins_then_training_run_then_default(store, model_path):
    uri, run = store["uri"], store["run"]
    runs_uri = f"runs:/{run}/model"
    assert resolve_threshold(runs_uri, 0.7, tracking_uri=uri) == (0.7, "given with --threshold")
    for model_uri in (runs_uri, "models:/segkit-test/1", "models:/segkit-test@champion",
                      store["logged"]):
        value, why = resolve_threshold(model_uri, None, tracking_uri=uri)
        assert value == 0.3, model_uri
        assert why == f"val_best_threshold of training run {run}", model_uri
    value, why = resolve_threshold(f"runs:/{store['bare']}/model", None, tracking_uri=uri)
    assert value == 0.5 and "logged no val_best_threshold" in why
    value, why = resolve_threshold(str(model_path), None)
    assert value == 0.5 and why.startswith("default")


def test_logged_and_registered_models_load(store, model):
    x = load_image(write_rgb(store["dir"] / "in.png"), SIZE)[None].astype("float32")
    expected = model.predict_on_batch(x)
    for model_uri in (f"runs:/{store['run']}/model", "models:/segkit-test/1"):
        loaded = load_model(model_uri, store["uri"])
        np.testing.assert_allclose(loaded.predict_on_batch(x), expected, atol=1e-6)
    with pytest.raises(PredictError, match="could not be loaded") as err:
        load_model("models:/segkit-test/7", store["uri"])
    assert "models:/<name>@<alias>" in str(err.value) and "\n" not in str(err.value)


@pytest.mark.e2e
def test_cli_uses_the_training_runs_threshold(store, tmp_path):
    image = write_rgb(tmp_path / "in.png")
    res = segkit_cli("predict", "--model", f"runs:/{store['run']}/model", "--tracking-uri",
                     store["uri"], "--output", tmp_path / "out", "--no-progress", image,
                     cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    assert f"threshold 0.3 (val_best_threshold of training run {store['run']})" in res.stdout
    assert (tmp_path / "out" / "in_mask.png").is_file()


# ---------------------------------------------------------------- --with-truth


@pytest.mark.e2e
def test_with_truth_writes_metrics_equal_to_hand_computed_dice(tmp_path, model, model_path):
    sizes = {"a": (32, 32), "b": (48, 40), "c": (20, 26), "d": (32, 32)}
    images = {s: write_rgb(tmp_path / "imgs" / f"{s}.png", size=wh, seed=i)
              for i, (s, wh) in enumerate(sizes.items())}
    truth = {}
    (tmp_path / "masks").mkdir()
    for i, stem in enumerate("abc"):  # d has no mask; masks of any image extension pair up
        w, h = sizes[stem]
        m = np.zeros((h, w), np.uint8)
        m[i + 2: h // 2 + i * 3, 3: w - 4 - i] = 255
        truth[stem] = m > 0
        Image.fromarray(m).save(tmp_path / "masks" / f"{stem}.{'bmp' if i else 'png'}")
    t = gap_threshold(reference(model, p) for p in images.values())
    out = tmp_path / "out"
    res = segkit_cli("predict", "--model", model_path, "--output", out, "--threshold", t,
                     "--with-truth", tmp_path / "masks", "--no-progress", tmp_path / "imgs",
                     cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "no mask" in res.stderr and str(images["d"]) in res.stderr

    dice = {}
    for stem in "abc":
        pred = read(out / f"{stem}_mask.png") == 255
        assert pred.shape == truth[stem].shape
        inter, total = (pred & truth[stem]).sum(), pred.sum() + truth[stem].sum()
        dice[stem] = 1.0 if total == 0 else 2 * inter / total
    assert len(set(dice.values())) == 3  # distinct, so a mix-up of images would show
    report = json.loads((out / "metrics.json").read_text())
    assert report["scored"] == 3 and len(report["unscored"]) == 1
    assert report["threshold"] == t
    assert report["metrics"]["mdice"] == pytest.approx(np.mean(list(dice.values())), abs=1e-9)
    assert {r["name"]: r["dice"] for r in report["per_image"]} == pytest.approx(dice, abs=1e-9)
    for key in ("miou", "pixel_accuracy", "pixel_dice", "precision", "recall", "auc"):
        assert key in report["metrics"] and f"\n{key} " in res.stdout
    assert f"{report['metrics']['mdice']:.4f}" in res.stdout


# ---------------------------------------------------------------- errors


@pytest.mark.e2e
def test_bad_model_and_no_inputs_exit_2_with_one_line(tmp_path):
    write_rgb(tmp_path / "in.png")
    res = segkit_cli("predict", "--model", tmp_path / "missing.keras", "--output", tmp_path / "out",
                     tmp_path / "in.png", cwd=tmp_path)
    assert res.returncode == 2
    assert "error: model" in res.stderr and "missing.keras" in res.stderr
    assert "runs:/<run_id>/model" in res.stderr and "Traceback" not in res.stderr
    (tmp_path / "empty").mkdir()
    res = segkit_cli("predict", "--model", tmp_path / "missing.keras", "--output", tmp_path / "out",
                     tmp_path / "empty", str(tmp_path / "*.jpg"), cwd=tmp_path)
    assert res.returncode == 2
    assert "error: no input images" in res.stderr and "Traceback" not in res.stderr
    assert not (tmp_path / "out").exists()


def test_unloadable_model_file_and_missing_store_raise_predict_error(tmp_path):
    bad = tmp_path / "bad.keras"
    bad.write_bytes(b"not a zip")
    with pytest.raises(PredictError, match="is not a Keras archive") as err:
        load_model(str(bad))
    assert "\n" not in str(err.value)
    with pytest.raises(PredictError, match="does not exist"):
        load_model("models:/segkit-unet/1", f"sqlite:///{tmp_path}/none.db")
    assert not (tmp_path / "none.db").exists()
