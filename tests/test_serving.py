"""MLflow serving: `mlflow models serve` of a training run's `serving` pyfunc on 127.0.0.1
answers a real image with the mask `segkit predict` writes, at the run's threshold or the
request's; a broken image gets its reason, the others their masks. The Keras flavour's own
pyfunc (raw tensors) gives the Keras model's probabilities."""

from __future__ import annotations

import base64
import io
import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import mlflow
import numpy as np
import pytest
from PIL import Image

from segkit.metric_names import internal
from tests.helpers import cli_env, free_port, segkit_cli, stop_group
from tests.helpers.tracking import tracking_uri

BIN = Path(sys.executable).parent  # mlflow, and uvicorn, which `mlflow models serve` runs


def post(url: str, body: dict) -> dict:
    request = urllib.request.Request(f"{url}/invocations", json.dumps(body).encode(),
                                     {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=120) as reply:
        return json.loads(reply.read())


def png(text: str) -> np.ndarray:
    with Image.open(io.BytesIO(base64.b64decode(text))) as im:
        return np.asarray(im)


@pytest.fixture(scope="module")
def served(smoke_run, tmp_path_factory):
    """`mlflow models serve -m runs:/<smoke run>/serving --env-manager local` on a free port."""
    log_path = tmp_path_factory.mktemp("serve") / "serve.log"
    port = free_port()
    env = cli_env(uri=smoke_run.uri, PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [str(BIN / "mlflow"), "models", "serve", "-m", f"runs:/{smoke_run.run_id}/serving",
             "--env-manager", "local", "-h", "127.0.0.1", "-p", str(port)],
            stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 240
        while True:
            try:
                with urllib.request.urlopen(f"{url}/ping", timeout=2):
                    break
            except OSError:
                assert proc.poll() is None, log_path.read_text()[-3000:]
                assert time.monotonic() < deadline, "the model server did not start"
                time.sleep(0.5)
        yield url
    finally:
        stop_group(proc)


@pytest.mark.e2e
def test_served_model_answers_with_segkit_predicts_masks(smoke_run, served, real_root,
                                                         tmp_path):
    image = sorted((real_root / "images").iterdir())[-1]  # a held-out test image
    res = segkit_cli("predict", "--model", smoke_run.model_uri, "--tracking-uri",
                     smoke_run.uri, "--probabilities", "16", "--output", tmp_path / "run",
                     "--no-progress", image, cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    with Image.open(tmp_path / "run" / f"{image.stem}_prob.png") as im:
        prob = np.asarray(im) / 65535.0
    # a threshold inside the image's probabilities, so that the mask is not one class
    t = round(float(np.median(prob)), 4)
    res = segkit_cli("predict", "--model", smoke_run.model_uri, "--tracking-uri",
                     smoke_run.uri, "--threshold", t, "--output", tmp_path / "at_t",
                     "--no-progress", image, cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]

    encoded = base64.b64encode(image.read_bytes()).decode()
    default = post(served, {"inputs": {"image": [encoded, "bm90IGFuIGltYWdl"]}})["predictions"]
    chosen = internal(smoke_run.run.data.metrics)["val_best_threshold"]
    assert default[0]["threshold"] == pytest.approx(chosen) and default[0]["error"] == ""
    with Image.open(tmp_path / "run" / f"{image.stem}_mask.png") as im:
        np.testing.assert_array_equal(png(default[0]["mask"]), np.asarray(im))
    assert "cannot identify image file" in default[1]["error"]  # b"not an image"
    assert default[1]["mask"] == ""

    rows = post(served, {"dataframe_records": [{"image": encoded}],
                         "params": {"threshold": t, "probabilities": True}})["predictions"]
    with Image.open(tmp_path / "at_t" / f"{image.stem}_mask.png") as im:
        expected = np.asarray(im)
    mask = png(rows[0]["mask"])
    np.testing.assert_array_equal(mask, expected)
    assert 0.05 < (mask > 0).mean() < 0.95 and rows[0]["threshold"] == t
    assert (rows[0]["height"], rows[0]["width"]) == mask.shape
    assert rows[0]["foreground"] == pytest.approx((mask > 0).mean())
    assert np.abs(png(rows[0]["probabilities"]) / 65535.0 - prob).max() <= 1 / 65535


@pytest.mark.e2e
def test_keras_flavour_pyfunc_takes_model_size_tensors(smoke_run):
    with tracking_uri(smoke_run.uri):
        pyfunc = mlflow.pyfunc.load_model(smoke_run.model_uri)
        model = mlflow.keras.load_model(smoke_run.model_uri)
    size = int(model.input_shape[1])
    x = np.random.default_rng(0).uniform(0, 255, (2, size, size, 3)).astype(np.float32)
    np.testing.assert_allclose(np.asarray(pyfunc.predict(x)),
                               np.asarray(model.predict_on_batch(x)), atol=1e-6)
