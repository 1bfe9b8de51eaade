"""`segkit predict` on every runtime: predictions through ONNX Runtime, OpenVINO and a
SavedModel equal TensorFlow's, with and without TTA; an exported file as --model (threshold
from its parity.json); TTA by hand and by default from the source run; runtime errors."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import keras
import mlflow
import numpy as np
import pytest
from PIL import Image

from segkit.data.dataset import load_image
from segkit.evaluation import predict_probs, resize_probs
from segkit.models import build_unet
from segkit.predict import collect_inputs, model_source, predict_files, resolve_tta
from segkit.runtimes import KerasPredictor, installed_runtimes, open_predictor
from tests.helpers import segkit_cli, write_image
from tests.helpers.tracking import fresh_store

SIZE = 32
THRESHOLD = 0.42  # recorded in every export's parity.json (as `segkit export` does)
# format -> the Python packages that write it
WRITERS = {"onnx": ("onnx", "tf2onnx", "onnxruntime"), "openvino": ("openvino",),
           "saved_model": ()}
FORMATS = [f for f, needs in WRITERS.items()
           if all(importlib.util.find_spec(m) is not None for m in needs)]
READERS = {"onnx": ("onnx", "openvino"), "openvino": ("openvino",), "saved_model": ("tf",)}
PAIRS = [(f, r) for f in FORMATS for r in READERS[f] if r in installed_runtimes()]


@pytest.fixture(scope="module")
def model() -> keras.Model:
    """A tiny untrained U-Net whose output layer is scaled so probabilities spread over (0, 1)."""
    keras.utils.set_random_seed(1)
    model = build_unet(image_size=SIZE, depth=2, filters=4)
    kernel, bias = model.get_layer("mask").get_weights()
    model.get_layer("mask").set_weights([kernel * 5, bias])
    return model


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> list[Path]:
    folder = tmp_path_factory.mktemp("imgs")
    sizes = [(SIZE, SIZE), (48, 40), (23, 37)]
    return [write_image(folder / f"im{i}.png", wh, seed=i, smooth=True)
            for i, wh in enumerate(sizes)]


@pytest.fixture(scope="module")
def exports(model, images, tmp_path_factory) -> dict[str, Path]:
    """The model exported (segkit.export.export_model, parity checked) in every installed
    format, each in its own folder with its parity.json (threshold THRESHOLD recorded)."""
    from segkit.export import export_model

    root = tmp_path_factory.mktemp("exports")
    x = np.stack([load_image(p, SIZE) for p in images]).astype(np.float32)
    source = root / "model.keras"
    model.save(source)
    found = {"keras": source}
    for fmt in FORMATS:
        result = export_model(model, fmt, root / fmt / "model", images=x, threshold=THRESHOLD,
                              record={"source_model": str(source), "threshold": THRESHOLD})
        assert result.passed, result.lines()
        found[fmt] = result.path
    return found


def probs_at_own_size(predictor, path: Path, tta: bool = False) -> np.ndarray:
    """One image's probabilities at its own size, predicted alone."""
    h, w = load_image(path).shape[:2]
    prob = predict_probs(predictor, load_image(path, SIZE)[None], tta)[0]
    return resize_probs(prob, (h, w))


def read(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im)


# ---------------------------------------------------------------- runtimes equal TensorFlow


@pytest.mark.parametrize(("fmt", "runtime"), PAIRS, ids=[f"{f}-{r}" for f, r in PAIRS])
def test_each_runtime_writes_what_tensorflow_writes(fmt, runtime, model, images, exports,
                                                    tmp_path):
    predictor = open_predictor(exports[fmt], runtime)
    assert predictor.runtime == runtime and predictor.input_size == SIZE
    tf = KerasPredictor(model)
    for tta in (False, True):
        expected = {p: probs_at_own_size(tf, p, tta) for p in images}
        t = round(float(np.median(np.concatenate([e.ravel() for e in expected.values()]))), 6)
        out = tmp_path / f"tta{tta}"
        summary = predict_files(predictor, collect_inputs([str(p) for p in images]), out,
                                threshold=t, probabilities="16", tta=tta, progress=False)
        assert len(summary.done) == len(images) and not summary.failed
        foreground = []
        for path, want in expected.items():
            got = read(out / f"{path.stem}_prob.png").astype(int)
            assert got.shape == want.shape
            # float32 runtimes agree with TensorFlow to ~1e-6: within one 16-bit level
            assert np.abs(got - np.round(want * 65535)).max() <= 1, (fmt, runtime, tta)
            near = np.abs(want - t) < 1e-5  # a pixel this close may fall either way
            mask = read(out / f"{path.stem}_mask.png") == 255
            np.testing.assert_array_equal(mask[~near], (want >= t)[~near])
            foreground.append(mask.mean())
        assert 0.2 < np.mean(foreground) < 0.8  # the masks are not trivially one class


def test_keras_model_on_auto_runs_the_fastest_runtime_installed(model, exports, images):
    predictor = open_predictor(exports["keras"], "auto")
    assert predictor.runtime == installed_runtimes()[0]
    x = np.stack([load_image(p, SIZE) for p in images])
    np.testing.assert_allclose(predict_probs(predictor, x), predict_probs(KerasPredictor(model), x),
                               atol=2e-5)


# ---------------------------------------------------------------- TTA


class Ramp:
    """A fake predictor: the red channel / 255 times a per-pixel weight 1, 2, 3, 4 (row by
    row), so every flip gives a different answer."""

    runtime, input_size = "fake", 2

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        weight = np.array([[1.0, 2.0], [3.0, 4.0]], np.float32)
        return (batch[..., :1] / 255.0 * weight[None, ..., None]).astype(np.float32)


def test_tta_averages_the_four_flips_by_hand():
    image = np.zeros((1, 2, 2, 3), np.uint8)
    image[0, 0, 1, 0] = 255  # red at the top right
    # identity: 2 at the top right; horizontal flip: red at top left, weight 1, flipped back
    # to the top right; vertical: bottom right, 4; both: bottom left, 3. Mean: 10 / 4.
    np.testing.assert_allclose(predict_probs(Ramp(), image), [[[0, 2], [0, 0]]])
    np.testing.assert_allclose(predict_probs(Ramp(), image, tta=True), [[[0, 2.5], [0, 0]]])


def test_tta_default_comes_from_the_source_runs_eval_tta(tmp_path, exports):
    uri = fresh_store(tmp_path / "mlflow.db")
    client = mlflow.MlflowClient(uri)  # no global state: the runs go where they are told
    experiment = client.create_experiment("tta")
    ids = {}
    for name, tta in (("on", "True"), ("off", "False"), ("old", None)):
        run_id = client.create_run(experiment).info.run_id
        if tta is not None:
            client.log_param(run_id, "eval.tta", tta)
        client.log_metric(run_id, "val/best_threshold", 0.35)
        ids[name] = f"runs:/{run_id}/model"
    assert resolve_tta(ids["on"], None, tracking_uri=uri) == (
        True, f"eval.tta of training run {ids['on'].split('/')[1]}")
    assert resolve_tta(ids["off"], None, tracking_uri=uri)[0] is False
    assert resolve_tta(ids["on"], False, tracking_uri=uri) == (False, "given with --no-tta")
    assert resolve_tta(ids["off"], True, tracking_uri=uri) == (True, "given with --tta")
    value, why = resolve_tta(ids["old"], None, tracking_uri=uri)  # a run from before eval.tta
    assert value is False and why.startswith("default")
    value, why = resolve_tta([ids["on"], ids["off"]], None, tracking_uri=uri)  # an ensemble
    assert value is False and "differ" in why
    assert resolve_tta([ids["on"], ids["on"]], None, tracking_uri=uri)[0] is True
    assert resolve_tta(str(exports["keras"]), None)[0] is False  # a file: no run, off
    source = model_source(ids["on"], uri)  # the new metric key reads as val_best_threshold
    assert (source.threshold, source.tta) == (0.35, True)


# ---------------------------------------------------------------- the CLI


@pytest.mark.e2e
def test_cli_predicts_an_exported_file_with_its_threshold_and_tta(model, images, exports,
                                                                   tmp_path):
    fmt = "onnx" if "onnx" in exports else FORMATS[0]
    runtime = "onnx" if fmt == "onnx" else "auto"
    res = segkit_cli("predict", "--model", exports[fmt], "--runtime", runtime, "--tta",
                     "--probabilities", "16", "--output", tmp_path / "out", "--no-progress",
                     *images, cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    line = res.stdout.splitlines()[0]
    folder = exports[fmt] if exports[fmt].is_dir() else exports[fmt].parent  # SavedModel: in it
    parity = folder / "parity.json"
    assert f"threshold {THRESHOLD:g} (the export's {parity})" in line, line
    assert "TTA on (given with --tta)" in line and f"({SIZE}x{SIZE}, runtime " in line
    tf = KerasPredictor(model)
    for path in images:
        expected = probs_at_own_size(tf, path, tta=True)
        got = read(tmp_path / "out" / f"{path.stem}_prob.png").astype(int)
        assert np.abs(got - np.round(expected * 65535)).max() <= 1


@pytest.mark.e2e
def test_cli_runtime_errors_are_one_line_exit_2(exports, images, tmp_path):
    fmt = next(f for f in FORMATS if "tf" not in READERS[f])  # onnx or openvino
    res = segkit_cli("predict", "--model", exports[fmt], "--runtime", "tf", "--output",
                     tmp_path / "out", images[0], cwd=tmp_path)
    assert res.returncode == 2, res.stderr[-3000:]
    assert res.stderr.startswith(f"error: --runtime tf cannot run a {fmt} export")
    assert len(res.stderr.strip().splitlines()) == 1 and not (tmp_path / "out").exists()
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not a graph")
    res = segkit_cli("predict", "--model", broken, "--output", tmp_path / "out", images[0],
                     cwd=tmp_path)
    assert res.returncode == 2 and "Traceback" not in res.stderr
    # (OpenVINO's parsers may print their own native line first: not segkit's to hide)
    last = res.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: model '{broken}' could not be read by runtime "), last
