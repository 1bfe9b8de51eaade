"""Reliability: interrupted runs resume, runs are deterministic on request, bad data and bad
tracking URIs fail early, and configs and model files cannot run arbitrary code."""

from __future__ import annotations

import json
import logging
import signal
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import keras
import numpy as np
import pytest
from mlflow.tracking import MlflowClient
from PIL import Image

from segkit.checkpoints import LAST, STATE, TrainingState
from segkit.config import validate
from segkit.data.cache import load_arrays
from segkit.data.dataset import DataError, decode_all, discover, load_image, load_mask
from segkit.errors import ConfigError
from segkit.metric_names import internal, to_mlflow
from segkit.targets import TargetError, instantiate_all
from segkit.tracking import check_reachable
from tests.helpers import (
    Job,
    cli_env,
    free_port,
    fresh_store,
    random_data,
    run_py,
    start_early,
    write_pair,
)

# --- data -----------------------------------------------------------------------------------

def test_empty_images_folder_is_named(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    with pytest.raises(DataError, match=r"no images .* in .*images"):
        discover(tmp_path)


def test_grey_and_rgba_images_become_rgb(tmp_path):
    Image.fromarray(np.full((6, 8), 77, np.uint8)).save(tmp_path / "g.png")
    Image.fromarray(np.full((6, 8, 4), (10, 20, 30, 0), np.uint8), "RGBA").save(tmp_path / "a.png")
    grey, rgba = load_image(tmp_path / "g.png"), load_image(tmp_path / "a.png", size=4)
    assert grey.shape == (6, 8, 3) and (grey == 77).all()
    assert rgba.shape == (4, 4, 3) and (rgba == (10, 20, 30)).all()


def test_16bit_and_palette_png_masks(tmp_path):
    wide = np.zeros((4, 4), np.uint16)
    wide[:2] = 65535
    Image.fromarray(wide).save(tmp_path / "m16.png")
    pal = Image.fromarray(np.array([[0, 1], [1, 0]], np.uint8), "P")
    pal.putpalette([0, 0, 0, 255, 255, 255] + [0] * 762)
    pal.save(tmp_path / "mp.png")
    assert load_mask(tmp_path / "m16.png")[..., 0].tolist() == [[1] * 4] * 2 + [[0] * 4] * 2
    assert load_mask(tmp_path / "mp.png")[..., 0].tolist() == [[0, 1], [1, 0]]


def test_non_binary_mask_warns_and_is_thresholded(tmp_path, caplog):
    write_pair(tmp_path, "ok")
    write_pair(tmp_path, "grey")
    ramp = np.tile(np.linspace(0, 255, 40).astype(np.uint8), (32, 1))
    Image.fromarray(ramp).save(tmp_path / "masks" / "grey.jpg")
    with caplog.at_level(logging.WARNING, logger="segkit.data.dataset"):
        _, masks = decode_all(discover(tmp_path), 16)
    assert "1 mask(s) are not binary" in caplog.text and "grey (" in caplog.text
    assert "ok (" not in caplog.text
    assert set(np.unique(masks)) <= {0, 1}


def _prepare_in_process(args) -> tuple[str, int]:
    root, cache = args
    images, masks, fp = load_arrays(discover(Path(root)), 32, Path(cache))
    return fp, int(images.sum()) + int(masks.sum())


def test_two_processes_preparing_one_cache_agree(synthetic_root, tmp_path):
    cache = tmp_path / "cache"
    with ProcessPoolExecutor(2) as pool:
        results = list(pool.map(_prepare_in_process, [(synthetic_root, cache)] * 2))
    assert results[0] == results[1]
    (entry,) = [p for p in cache.iterdir() if p.is_dir()]
    assert json.loads((entry / "manifest.json").read_text())["count"] == 12
    assert not [p for p in entry.iterdir() if ".tmp" in p.name]


# --- safety ---------------------------------------------------------------------------------

@pytest.mark.parametrize("override, message", [
    ("callbacks.extra=[{_target_:os.system,command:ls}]", "callbacks.extra[0]._target_='os.system'"
     " is not allowed"),
    ("+model_hook._target_=subprocess.call", "model_hook._target_='subprocess.call' is not"),
    ("callbacks.extra=[{_target_:segkit.config.validate}]", "is not a class"),
    ("callbacks.extra=[{_target_:keras.callbacks.NoSuchThing}]", "cannot be imported"),
])
def test_targets_outside_the_allowlist_are_refused(compose_cfg, override, message):
    with pytest.raises(TargetError, match=message.replace("[", r"\[").replace("]", r"\]")):
        validate(compose_cfg(override))


def test_allowed_target_is_instantiated(compose_cfg, tmp_path):
    cfg = compose_cfg(f"callbacks.extra=[{{_target_:keras.callbacks.CSVLogger,"
                      f"filename:{tmp_path}/log.csv}}]")
    validate(cfg)
    (cb,) = instantiate_all(cfg.callbacks.extra, "callbacks.extra")
    assert isinstance(cb, keras.callbacks.CSVLogger)
    with pytest.raises(TargetError, match=r"callbacks.extra\[0\] .*could not be created"):
        instantiate_all([{"_target_": "keras.callbacks.CSVLogger", "no_such_arg": 1}],
                        "callbacks.extra")


def test_models_load_in_safe_mode(tmp_path):
    from segkit.predict import PredictError, load_model

    inputs = keras.Input((8, 8, 3))
    outputs = keras.layers.Lambda(lambda x: x[..., :1])(inputs)
    path = tmp_path / "lambda.keras"
    keras.Model(inputs, outputs).save(path)
    with pytest.raises(PredictError, match="could not be loaded"):
        load_model(str(path))


def test_unreachable_tracking_server_fails_fast():
    uri = f"http://127.0.0.1:{free_port()}"
    start = time.perf_counter()
    with pytest.raises(ConfigError, match=f"tracking.uri={uri} is unreachable"):
        check_reachable(uri, timeout=2)
    assert time.perf_counter() - start < 10
    check_reachable("sqlite:///nowhere/mlflow.db")  # local stores are not probed


@pytest.mark.e2e
def test_cli_unreachable_server_fails_before_any_data(tmp_path):
    uri = f"http://127.0.0.1:{free_port()}"
    res = run_py("debug=smoke", f"hydra.run.dir={tmp_path}/out", "data.download=false",
                 env=cli_env(uri=uri, data=tmp_path / "no-data-here"), timeout=300)
    assert res.returncode == 2
    assert f"error: tracking.uri={uri} is unreachable" in res.stderr
    assert "no-data-here" not in res.stderr


# --- resume ---------------------------------------------------------------------------------

def _tiny_compiled():
    from segkit.models import build_unet

    model = build_unet(image_size=16, depth=1, filters=2)
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="binary_crossentropy")
    return model


@pytest.mark.e2e
def test_state_keeps_optimizer_and_callback_counters(tmp_path):
    images, masks = random_data(4, 16, masks="noise")
    x, y = images.astype("float32"), masks.astype("float32")
    es = keras.callbacks.EarlyStopping(monitor="loss", patience=50)
    rl = keras.callbacks.ReduceLROnPlateau(monitor="loss", patience=50)
    model = _tiny_compiled()
    state = TrainingState(tmp_path, "loss", "min", callbacks=[es, rl])
    model.fit(x, y, epochs=3, verbose=0, callbacks=[es, rl, state])
    saved = json.loads((tmp_path / STATE).read_text())
    assert saved["epochs"] == 3 and len(saved["history"]["loss"]) == 3
    assert saved["callbacks"]["EarlyStopping"]["best"] == pytest.approx(es.best)
    restored = keras.saving.load_model(tmp_path / LAST, safe_mode=True)
    assert int(restored.optimizer.iterations) == int(model.optimizer.iterations) == 3
    for a, b in zip(restored.optimizer.variables, model.optimizer.variables, strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    es2 = keras.callbacks.EarlyStopping(monitor="loss", patience=50)
    again = TrainingState(tmp_path, "loss", "min", callbacks=[es2], restored=saved)
    es2.on_train_begin()
    again.on_train_begin()
    assert es2.best == pytest.approx(es.best) and es2.wait == es.wait


@pytest.mark.e2e
def test_sigterm_then_resume_finishes_the_same_run(real_root, smoke_cache, tmp_path):
    """SIGTERM after the first epoch (the run frozen by SIGSTOP from the moment that epoch
    is seen, so it cannot end meanwhile): KILLED, a resume hint; `trainer.resume=auto`
    finishes the same run to its last epoch; a FINISHED run is not resumed again."""
    epochs = 5
    uri = fresh_store(tmp_path / "mlflow.db")
    env = cli_env(uri=uri, data=real_root)
    common = ["debug=smoke", "eval.plots=false", f"data.cache_dir={smoke_cache}",
              "split.val_fraction=0.34", f"trainer.epochs={epochs}",
              "callbacks.early_stopping.enabled=false", "callbacks.tensorboard.enabled=false"]
    first = Job.run_py(*common, f"hydra.run.dir={tmp_path}/first", env=env)
    proc = first.proc
    state = tmp_path / "first" / "checkpoints" / STATE
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if state.is_file() and json.loads(state.read_text())["epochs"] >= 1:
            break
        time.sleep(0.1)
    proc.send_signal(signal.SIGSTOP)  # no epoch ends from here to the SIGTERM
    proc.send_signal(signal.SIGTERM)
    proc.send_signal(signal.SIGCONT)
    res = first.wait(timeout=120)
    out, err = res.stdout, res.stderr
    assert res.returncode != 0
    client = MlflowClient(uri)
    (run,) = client.search_runs([client.get_experiment_by_name("segkit-smoke").experiment_id])
    assert run.info.status == "KILLED"
    assert f"trainer.resume={run.info.run_id}" in out + err
    done = json.loads(state.read_text())["epochs"]
    assert 1 <= done < epochs

    res = run_py(*common, f"hydra.run.dir={tmp_path}/second", "trainer.resume=auto", env=env)
    assert res.returncode == 0, res.stderr[-3000:]
    (run,) = client.search_runs([run.info.experiment_id])
    assert run.info.status == "FINISHED"
    assert internal(run.data.metrics)["epochs_run"] == epochs
    assert run.data.tags["segkit.resumed_after_epoch"] == str(done)
    steps = [m.step for m in client.get_metric_history(run.info.run_id, to_mlflow("loss"))]
    assert sorted(set(steps)) == list(range(1, epochs + 1))
    assert "test_mdice" in internal(run.data.metrics)
    # a finished run cannot be resumed again
    res = run_py(*common, f"trainer.resume={run.info.run_id}", f"hydra.run.dir={tmp_path}/x",
                 env=env, timeout=300)
    assert res.returncode == 2 and "the run is FINISHED, nothing to resume" in res.stderr


DETERMINISTIC = "reliability-deterministic"  # the runs' experiment on the session's server


@pytest.fixture(scope="module")
def deterministic_jobs(mlflow_server, real_root, smoke_cache, tmp_path_factory):
    """Two runs of one deterministic config (augmentation and dropout on), started at once
    and logging to the session's tracking server (which takes concurrent writers)."""
    tmp = tmp_path_factory.mktemp("deterministic")
    env = cli_env(uri=mlflow_server, data=real_root)
    jobs = [Job.run_py("debug=smoke", "trainer.deterministic=true", "eval.plots=false",
                       "augment=flips", "model.dropout=0.2", f"data.cache_dir={smoke_cache}",
                       "split.val_fraction=0.34", "callbacks.tensorboard.enabled=false",
                       f"tracking.experiment={DETERMINISTIC}", f"hydra.run.dir={tmp}/{name}",
                       env=env) for name in ("a", "b")]
    yield jobs
    for job in jobs:
        job.kill()


@pytest.fixture(scope="module", autouse=True)
def _start_runs_early(request):
    """The two deterministic runs train while the tests before theirs run."""
    start_early(request, "deterministic_jobs")


@pytest.mark.e2e
def test_deterministic_runs_give_identical_metrics(mlflow_server, deterministic_jobs):
    for job in deterministic_jobs:
        res = job.wait()
        assert res.returncode == 0, res.stderr[-3000:]
    client = MlflowClient(mlflow_server)
    a, b = client.search_runs([client.get_experiment_by_name(DETERMINISTIC).experiment_id])
    keys = [k for k in internal(a.data.metrics) if k.startswith(("test_", "val_", "loss"))]
    assert len(keys) > 20
    ma, mb = internal(a.data.metrics), internal(b.data.metrics)
    assert {k: ma[k] for k in keys} == {k: mb[k] for k in keys}
    assert a.data.tags["segkit.config_hash"] == b.data.tags["segkit.config_hash"]
