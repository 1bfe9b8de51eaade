"""Scale-out: trainer.strategy (default | mirrored | multi_worker), the custom loop that serves
MultiWorkerMirroredStrategy proven equal to model.fit, two worker processes training one
model into one MLflow run, the cluster launcher presets and tracking=server."""

from __future__ import annotations

import json
import re
import textwrap

import keras
import mlflow
import numpy as np
import pytest
import yaml
from mlflow.tracking import MlflowClient

from segkit.config import validate
from segkit.errors import ConfigError
from segkit.metric_names import internal, to_mlflow
from segkit.trainer import scaled_lr
from tests.helpers import (
    ROOT,
    Job,
    cli_env,
    free_port,
    random_data,
    restored_tracking_uri,
    start_early,
)


@pytest.fixture(autouse=True)
def _restore_tracking_uri():
    """Tests here point MLflow's global tracking URI (and, through it, os.environ) at the
    session's server: put both back for the tests that follow."""
    with restored_tracking_uri():
        yield


@pytest.fixture(scope="module", autouse=True)
def _start_processes_early(request):
    """The subprocess checks below (mirrored, sharding, the server runs) are independent:
    those the selected tests need start together with the module and run alongside the
    in-process tests; each test then waits for its own."""
    start_early(request, "mirrored_job", "shard_jobs", "server_jobs")


def _tf_config(ports: list[int], index: int) -> str:
    return json.dumps({"cluster": {"worker": [f"127.0.0.1:{p}" for p in ports]},
                       "task": {"type": "worker", "index": index}})


# ------------------------------------------------------------------------ config keys
def test_strategy_keys_default_and_validate(compose_cfg, monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    cfg = compose_cfg()
    assert (cfg.trainer.strategy, cfg.trainer.lr_scaling) == ("default", "none")
    validate(cfg)
    validate(compose_cfg("trainer.strategy=mirrored", "trainer.lr_scaling=linear"))
    for override, key in [("trainer.strategy=horovod", "trainer.strategy='horovod'"),
                          ("trainer.lr_scaling=sqrt", "trainer.lr_scaling='sqrt'"),
                          ("trainer.strategy=multi_worker", "TF_CONFIG")]:
        with pytest.raises(ConfigError, match=key):
            validate(compose_cfg(override))
    monkeypatch.setenv("TF_CONFIG", _tf_config([1, 2], 1))
    validate(compose_cfg("trainer.strategy=multi_worker"))
    with pytest.raises(ConfigError, match="trainer.resume is not supported"):
        validate(compose_cfg("trainer.strategy=multi_worker", "trainer.resume=auto"))
    monkeypatch.setenv("TF_CONFIG", _tf_config([1, 2], 2))  # index out of the cluster
    with pytest.raises(ConfigError, match="TF_CONFIG"):
        validate(compose_cfg("trainer.strategy=multi_worker"))


def test_lr_scaling_chief_and_global_batch():
    from segkit import distribute

    assert scaled_lr(1e-3, "none", 4) == 1e-3
    assert scaled_lr(1e-3, "linear", 4) == pytest.approx(4e-3)
    distribute.check_global_batch(8, 4)
    with pytest.raises(ConfigError, match="trainer.batch_size=6 is not divisible by the 4"):
        distribute.check_global_batch(6, 4)
    distribute.check_global_batch(4, 2, {"train": 10, "val": 8})  # last batches: 2 and 0
    with pytest.raises(ConfigError, match="leaves a last val batch of 1 image"):
        distribute.check_global_batch(4, 2, {"train": 8, "val": 9})

    class Resolver:
        def __init__(self, cluster, task_type, task_id):
            self.cluster, self.task_type, self.task_id = cluster, task_type, task_id

        def cluster_spec(self):
            class Spec:
                def as_dict(inner):
                    return self.cluster
            return Spec()

    class Strategy:
        def __init__(self, *args):
            self.cluster_resolver = Resolver(*args)

    workers = {"worker": ["a:1", "b:1"]}
    assert distribute.is_chief(Strategy(workers, "worker", 0))
    assert not distribute.is_chief(Strategy(workers, "worker", 1))
    with_chief = {"chief": ["c:1"], **workers}
    assert distribute.is_chief(Strategy(with_chief, "chief", 0))
    assert not distribute.is_chief(Strategy(with_chief, "worker", 0))
    assert distribute.is_chief(object())  # one-machine strategies have no cluster resolver


# ----------------------------------------------------- custom loop == model.fit (one device)
class Recorder(keras.callbacks.Callback):
    """Keeps every epoch's logs with the learning rate, and the train begin/end calls."""

    def __init__(self):
        super().__init__()
        self.epochs, self.events = [], []

    def on_train_begin(self, logs=None):
        self.events.append("train_begin")

    def on_epoch_end(self, epoch, logs=None):
        lr = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))
        self.epochs.append({**{k: float(v) for k, v in logs.items()}, "lr": lr})

    def on_train_end(self, logs=None):
        self.events.append("train_end")


@pytest.mark.e2e
@pytest.mark.parametrize("schedule", ["cosine", "plateau"])
def test_custom_loop_equals_model_fit(compose_cfg, tmp_path, schedule):
    """From the same initial weights on the same batches (no shuffle, no augmentation), the
    custom loop under the default strategy and model.fit, with segkit's callbacks (early
    stopping, ReduceLROnPlateau, TensorBoard, the checkpointing TrainingState), end with the
    same weights, optimizer steps, learning rate and per-epoch logs (train and val_*)."""
    from segkit.callbacks import build_callbacks
    from segkit.data.pipeline import make_dataset
    from segkit.distribute import custom_fit
    from segkit.experiment import build_compiled

    cfg = compose_cfg("debug=smoke", "data.image_size=32", f"schedule={schedule}",
                      "trainer.epochs=3",
                      *(["schedule.patience=0"] if schedule == "plateau" else []))
    images, masks = random_data(8, 32, seed=0)
    vimages, vmasks = random_data(4, 32, seed=1)
    keras.utils.set_random_seed(0)
    a = build_compiled(cfg, "float32", 2)
    b = build_compiled(cfg, "float32", 2)
    b.set_weights(a.get_weights())
    recorded = []
    for name, model in (("fit", a), ("custom", b)):
        train = make_dataset(images, masks, 4, training=False)
        val = make_dataset(vimages, vmasks, 4, training=False)
        callbacks = build_callbacks(cfg.callbacks, tmp_path / name, None, None, cfg.schedule)
        rec = Recorder()
        callbacks.insert(-1, rec)  # TrainingState stays last
        if name == "fit":
            model.fit(train, validation_data=val, epochs=3, callbacks=callbacks, verbose=0,
                      shuffle=False)
        else:
            custom_fit(model, train, validation_data=val, epochs=3, callbacks=callbacks)
        recorded.append(rec)
        assert (tmp_path / name / "checkpoints" / "last.keras").is_file()
    rec_a, rec_b = recorded
    assert int(a.optimizer.iterations) == int(b.optimizer.iterations) == 6
    worst = max(float(np.max(np.abs(x - y))) for x, y in zip(a.get_weights(), b.get_weights(),
                                                                strict=True))
    print(f"custom loop vs fit ({schedule}): largest weight difference {worst:.3g}")
    assert worst <= 1e-6, worst
    assert rec_a.events == rec_b.events == ["train_begin", "train_end"]
    assert len(rec_a.epochs) == len(rec_b.epochs) == 3
    for la, lb in zip(rec_a.epochs, rec_b.epochs, strict=True):
        assert set(la) == set(lb) >= {"loss", "dice", "iou", "accuracy", "val_loss", "val_dice",
                                      "learning_rate"}
        for key in set(la) - {"epoch_seconds"}:
            assert lb[key] == pytest.approx(la[key], rel=1e-5, abs=1e-6), key
    assert [e["lr"] for e in rec_b.epochs] == [e["lr"] for e in rec_a.epochs]


@pytest.mark.e2e
def test_custom_loop_stops_when_a_callback_says_so(compose_cfg):
    from segkit.callbacks import TimeLimit
    from segkit.data.pipeline import make_dataset
    from segkit.distribute import custom_fit
    from segkit.experiment import build_compiled

    cfg = compose_cfg("debug=smoke", "data.image_size=32", "trainer.epochs=5")
    images, masks = random_data(4, 32)
    model = build_compiled(cfg, "float32", 1)
    rec, limit = Recorder(), TimeLimit(minutes=1e-9)
    custom_fit(model, make_dataset(images, masks, 4, training=False),
               validation_data=make_dataset(images, masks, 4, training=False), epochs=5,
               callbacks=[limit, rec])
    assert len(rec.epochs) == 1 and limit.stopped_early and model.stop_training


# -------------------------------------------- MirroredStrategy on two logical CPU devices
MIRRORED_SCRIPT = textwrap.dedent("""
    import json, sys
    import numpy as np
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import keras
    from hydra import compose, initialize_config_dir
    from segkit.config import register_resolvers
    from segkit.experiment import build_compiled, run_experiment
    from segkit.data.pipeline import make_dataset
    from segkit.distribute import custom_fit
    from tests.helpers import random_data

    root, data_root, tmp = sys.argv[1:4]
    register_resolvers(__import__("pathlib").Path(root))
    with initialize_config_dir(config_dir=root + "/conf", version_base="1.3"):
        cfg = compose("config", overrides=["debug=smoke", "data.image_size=32",
                                           "schedule=cosine", "trainer.epochs=2"])
    images, masks = random_data(8, 32)
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    keras.utils.set_random_seed(0)
    one = build_compiled(cfg, "float32", 2)
    fit, custom = (build_compiled(cfg, "float32", 2, strategy) for _ in range(2))
    fit.set_weights(one.get_weights())
    custom.set_weights(one.get_weights())
    logs = {}
    for name, model in (("one", one), ("fit", fit), ("custom", custom)):
        ds = make_dataset(images, masks, 4, training=False)
        if name == "custom":
            h = custom_fit(model, ds, validation_data=ds, epochs=2, verbose=0)
        else:
            h = model.fit(ds, validation_data=ds, epochs=2, verbose=0, shuffle=False)
        logs[name] = {k: [float(x) for x in v] for k, v in h.history.items()}

    def diff(a, b):
        return max(float(np.max(np.abs(x - y))) for x, y in zip(a.get_weights(),
                                                                 b.get_weights()))

    result = {"replicas": strategy.num_replicas_in_sync, "fit_vs_custom": diff(fit, custom),
              "mirrored_vs_one_device": diff(fit, one), "logs": logs}
    with initialize_config_dir(config_dir=root + "/conf", version_base="1.3"):
        cfg = compose("config", overrides=[
            "debug=smoke", "trainer.strategy=mirrored", "trainer.lr_scaling=linear",
            f"data.root={data_root}", f"data.cache_dir={tmp}/cache",
            f"tracking.uri=sqlite:///{tmp}/mlflow.db", "split.val_fraction=0.34",
            "callbacks.tensorboard.enabled=false", "eval.plots=false",
            "trainer.precision=float32"])
    result["objective"] = run_experiment(cfg, root=__import__("pathlib").Path(root),
                                         run_dir=__import__("pathlib").Path(tmp) / "out")
    print("RESULT " + json.dumps(result))
""")


@pytest.fixture(scope="module")
def mirrored_job(real_root, tmp_path_factory):
    """MIRRORED_SCRIPT, started; (job, its folder)."""
    tmp = tmp_path_factory.mktemp("mirrored")
    job = Job.python(MIRRORED_SCRIPT, ROOT, real_root, tmp)
    yield job, tmp
    job.kill()


@pytest.mark.e2e
def test_mirrored_on_two_logical_cpus(mirrored_job):
    """With 2 replicas: model.fit and the custom loop give the same weights; mirrored fit
    equals one-device fit up to float summation order; a smoke run with
    trainer.strategy=mirrored trains, logs and evaluates end to end."""
    job, tmp_path = mirrored_job
    res = job.wait(timeout=900)
    assert res.returncode == 0, res.stderr[-4000:]
    result = json.loads(res.stdout.split("RESULT ", 1)[1])
    print(json.dumps({k: v for k, v in result.items() if k != "logs"}))
    assert result["replicas"] == 2
    assert result["fit_vs_custom"] <= 1e-6
    assert result["mirrored_vs_one_device"] <= 1e-4  # 2 half-batch gradients summed vs 1
    for key, values in result["logs"]["fit"].items():
        np.testing.assert_allclose(result["logs"]["custom"][key], values, rtol=1e-5,
                                   atol=1e-6, err_msg=key)
    assert 0 <= result["objective"] <= 1
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    (run,) = client.search_runs([client.get_experiment_by_name("segkit-smoke").experiment_id])
    assert run.info.status == "FINISHED"
    assert run.data.tags["segkit.strategy"] == "MirroredStrategy"
    assert run.data.tags["segkit.replicas"] == "2"
    assert float(run.data.tags["segkit.effective_lr"]) == pytest.approx(2e-3)  # linear x2


SHARD_SCRIPT = textwrap.dedent("""
    import json, os, sys
    import numpy as np
    index, ports, out = int(sys.argv[1]), sys.argv[2].split(","), sys.argv[3]
    os.environ["TF_CONFIG"] = json.dumps({
        "cluster": {"worker": [f"127.0.0.1:{p}" for p in ports]},
        "task": {"type": "worker", "index": index}})
    import tensorflow as tf
    from segkit.data.pipeline import make_dataset
    from segkit.distribute import build_strategy, distribute_dataset
    strategy = build_strategy("multi_worker")
    # image k: value k in channel 0, a pattern in 1-2 (shows flips), mask 1 left of centre
    images = np.zeros((10, 4, 4, 3), np.uint8)
    images[..., 0] = np.arange(10)[:, None, None]
    images[..., 1:] = np.arange(4 * 4 * 2).reshape(4, 4, 2)
    masks = np.zeros((10, 4, 4, 1), np.uint8)
    masks[:, :, :2] = 1

    def pipeline():
        return make_dataset(images, masks, 4, training=True, seed=3, augment="flips")

    shares = distribute_dataset(strategy, pipeline())
    for epoch in range(2):
        batches = [[t.numpy() for t in strategy.experimental_local_results(b)[0]]
                   for b in shares]
        np.savez(f"{out}/w{index}_e{epoch}.npz", *[a for b in batches for a in b])
    ds = pipeline()  # what one process iterates
    for epoch, batches in enumerate([list(ds), list(ds)]):
        np.savez(f"{out}/plain{index}_e{epoch}.npz", *[t.numpy() for b in batches for t in b])
""")


@pytest.fixture(scope="module")
def shard_jobs(tmp_path_factory):
    """SHARD_SCRIPT as two workers on 127.0.0.1, started; (jobs, their folder)."""
    tmp = tmp_path_factory.mktemp("shard")
    ports = ",".join(str(free_port()) for _ in range(2))
    jobs = [Job.python(SHARD_SCRIPT, i, ports, tmp, merge=True) for i in range(2)]
    yield jobs, tmp
    for job in jobs:
        job.kill()


@pytest.mark.e2e
def test_multi_worker_sharding_splits_each_global_batch(shard_jobs):
    """Under multi_worker every worker reads the same shuffled, augmented pipeline and keeps
    its half of each global batch: the two shares together are exactly the batches one
    process sees, epoch after epoch (reshuffled and re-augmented alike), nothing dropped or
    seen twice. (So the 2-worker vs 1-process difference in the test below is float
    summation order, not data.)"""
    jobs, tmp_path = shard_jobs
    for job in jobs:
        res = job.wait(timeout=300)
        assert res.returncode == 0, res.stdout[-3000:]

    def arrays(name):
        with np.load(tmp_path / f"{name}.npz") as f:
            return [f[f"arr_{i}"] for i in range(len(f.files))]

    orders = []
    for epoch in range(2):
        plain = arrays(f"plain0_e{epoch}")
        np.testing.assert_array_equal(np.concatenate(plain[0::2]),
                                      np.concatenate(arrays(f"plain1_e{epoch}")[0::2]))
        w0, w1 = arrays(f"w0_e{epoch}"), arrays(f"w1_e{epoch}")
        assert len(w0) == len(w1) == len(plain) == 6  # 3 global batches: 4 + 4 + 2 images
        for b in range(3):
            for part in (0, 1):  # images, masks
                joined = np.concatenate([w0[2 * b + part], w1[2 * b + part]])
                np.testing.assert_array_equal(joined, plain[2 * b + part])
            assert len(w0[2 * b]) == len(w1[2 * b])  # each worker: half of the global batch
        orders.append(np.concatenate(plain[0::2]))
    assert sorted(a.sum() for a in orders[0]) == sorted(a.sum() for a in orders[1])
    assert not np.array_equal(orders[0], orders[1])  # reshuffled / re-augmented per epoch


# ---------------------------------------------------------------- shared tracking server
# The same smoke training for the single process and the two workers: float32 and op
# determinism, so the only difference left is how each step's batch is split.
COMMON = ("debug=smoke", "eval.plots=false", "tracking=server", "split.val_fraction=0.34",
          "trainer.precision=float32", "trainer.deterministic=true")


def _start(args, env, out) -> Job:
    return Job.run_py(*COMMON, *args, f"hydra.run.dir={out}", env=env, cwd=ROOT, merge=True)


def _one_run(uri: str, experiment: str):
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    assert exp is not None, f"no experiment {experiment}"
    return client.search_runs([exp.experiment_id])


@pytest.fixture(scope="module")
def server_jobs(mlflow_server, real_root, smoke_cache, tmp_path_factory):
    """Started at once, all logging to the session's tracking server: one process (default
    strategy, global batch 4; experiment dist-single) and two processes on 127.0.0.1 with
    trainer.strategy=multi_worker (1 replica each, global batch 4 = 2 per worker;
    experiment dist-multi). Returns (single job, worker jobs, their folder)."""
    tmp = tmp_path_factory.mktemp("dist")
    env = cli_env(uri=mlflow_server, data=real_root)
    env.pop("TF_CONFIG", None)
    single = _start(["tracking.experiment=dist-single", f"data.cache_dir={smoke_cache}"], env,
                    tmp / "single")
    ports = [free_port(), free_port()]
    workers = [_start(["trainer.strategy=multi_worker", "tracking.experiment=dist-multi",
                       f"data.cache_dir={smoke_cache}"],
                      {**env, "TF_CONFIG": _tf_config(ports, index)}, tmp / f"w{index}")
               for index in (0, 1)]
    yield single, workers, tmp
    for job in (single, *workers):
        job.kill()


@pytest.fixture(scope="module")
def single_run(mlflow_server, server_jobs):
    """The single process's finished run and its seconds."""
    single, _, _ = server_jobs
    res = single.wait(timeout=900)
    assert res.returncode == 0, res.stdout[-4000:]
    (run,) = _one_run(mlflow_server, "dist-single")
    return run, single.seconds


@pytest.mark.e2e
def test_smoke_run_against_a_tracking_server(mlflow_server, single_run):
    run, seconds = single_run
    print(f"smoke run against an mlflow server: {seconds:.0f} s")
    assert run.info.status == "FINISHED"
    assert run.data.params["tracking.uri"] == mlflow_server
    assert "val_mdice" in internal(run.data.metrics) and "test_mdice" in internal(run.data.metrics)
    model_uri = run.data.tags["segkit.model_uri"]
    mlflow.set_tracking_uri(mlflow_server)
    model = mlflow.keras.load_model(model_uri)  # its artifacts came back through the server
    assert model.output_shape == (None, 64, 64, 1)
    assert model_uri.startswith("models:/m-")  # MLflow 3: a LoggedModel
    logged = mlflow.get_logged_model(model_uri[len("models:/"):])
    # uploaded through the server (proxied artifacts), not written by the client to a path
    assert logged.artifact_location.startswith("mlflow-artifacts:"), logged.artifact_location


@pytest.mark.e2e
def test_two_workers_train_one_model_into_one_run(mlflow_server, server_jobs, single_run):
    """Two processes on 127.0.0.1 with trainer.strategy=multi_worker (1 replica each, global
    batch 4 = 2 per worker) produce one MLflow run and one model, only from the chief, and
    the same metrics as one process with the same global batch."""
    _, workers, folder = server_jobs
    results = [job.wait(timeout=900) for job in workers]
    seconds = max(job.seconds for job in workers)
    outputs = [res.stdout for res in results]
    for res in results:
        assert res.returncode == 0, res.stdout[-4000:]
    digests = [re.findall(r"weights after training: sha256 (\w+)", out) for out in outputs]
    assert len(digests[0]) == 1 and digests[0] == digests[1]  # both workers: same weights
    runs = _one_run(mlflow_server, "dist-multi")
    assert len(runs) == 1  # the worker made none
    (run,) = runs
    assert run.info.status == "FINISHED"
    tags = run.data.tags
    assert tags["segkit.strategy"] == "MultiWorkerMirroredStrategy"
    assert (tags["segkit.replicas"], tags["segkit.workers"]) == ("2", "2")
    assert json.loads(tags["segkit.tf_config_task"]) == ["worker", 0]
    client = MlflowClient(mlflow_server)
    mlflow.set_tracking_uri(mlflow_server)
    models = mlflow.search_logged_models(experiment_ids=[run.info.experiment_id],
                                         output_format="list")
    # the Keras model and the serving pyfunc (segkit.serving), both from the chief's run alone
    assert sorted(m.name for m in models) == ["model", "serving"]
    assert {m.source_run_id for m in models} == {run.info.run_id}
    # only the chief's run folder has checkpoints
    assert (folder / "w0" / "checkpoints" / "best.keras").is_file()
    assert not (folder / "w1" / "checkpoints").exists()
    history = client.get_metric_history(run.info.run_id, to_mlflow("loss"))
    assert [h.step for h in history] == [1, 2]

    single, _ = single_run
    def values(run_id, key):
        return [h.value for h in sorted(client.get_metric_history(run_id, to_mlflow(key)),
                                        key=lambda h: h.step)]

    per_epoch = {k: [values(r.info.run_id, k) for r in (single, run)]
                 for k in ("loss", "dice", "val_loss", "val_dice")}
    final = {k: (internal(single.data.metrics)[k], internal(run.data.metrics)[k])
             for k in ("val_mdice", "test_mdice", "test_pixel_accuracy")}
    print(f"two workers: {seconds:.0f} s; one process vs two workers, per epoch: "
          + "; ".join(f"{k} {a} / {b}" for k, (a, b) in per_epoch.items())
          + "; evaluated: " + ", ".join(f"{k} {a:.6f} / {b:.6f}" for k, (a, b) in final.items()))
    # Same data order (test_multi_worker_sharding_splits_each_global_batch), float32,
    # deterministic ops; what differs is float summation order (two half-batch gradients
    # all-reduced instead of one batch), which Adam amplifies where gradients are near 0.
    # Measured here: the first epoch's logs and the evaluated (best-epoch) model agree to
    # 1e-6; in the second epoch the loss moved by ~3e-4 and the pooled pixel Dice by ~6e-3
    # (a barely trained smoke model predicts ~0.5 everywhere, so tiny weight differences
    # flip many pixels).
    for key, (a, b) in per_epoch.items():
        assert len(a) == len(b) == 2
        tolerance = 1e-3 if "loss" in key else 2e-2
        np.testing.assert_allclose(b, a, atol=tolerance, err_msg=key)
        assert b[0] == pytest.approx(a[0], abs=1e-5), key
    for key, (a, b) in final.items():
        assert b == pytest.approx(a, abs=1e-3), key


# ---------------------------------------------------------------- cluster launcher presets
LAUNCHERS = ROOT / "conf" / "hydra" / "launcher"


def test_slurm_preset_composes(compose_cfg):
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=["hydra/launcher=slurm_gpu",
                                           "hydra.launcher.partition=gpu"],
                      return_hydra_config=True)
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("submitit_launcher.SlurmLauncher")
    assert (launcher.partition, launcher.gpus_per_task, launcher.timeout_min) == ("gpu", 1, 240)
    assert launcher.cpus_per_task == 8 and launcher.tasks_per_node == 1


# hydra-ray-launcher 1.2.2, hydra_plugins/hydra_ray_launcher/_config.py: the `ray` launcher
# is RayLauncherConf(_target_, ray: RayConf(init: dict for ray.init(), remote: dict for
# ray.remote()))
RAY_LAUNCHER_KEYS = {"ray": {"init", "remote"}}
RAY_REMOTE_OPTIONS = {"num_cpus", "num_gpus", "resources", "memory", "max_calls",
                      "max_retries", "accelerator_type", "runtime_env", "scheduling_strategy"}


def test_ray_preset_has_the_plugins_keys():
    preset = yaml.safe_load((LAUNCHERS / "ray_cluster.yaml").read_text())
    assert preset["defaults"] == ["ray", "_self_"]
    body = {k: v for k, v in preset.items() if k != "defaults"}
    assert set(body) == set(RAY_LAUNCHER_KEYS)
    assert set(body["ray"]) <= RAY_LAUNCHER_KEYS["ray"]
    assert set(body["ray"]["remote"]) <= RAY_REMOTE_OPTIONS
    assert body["ray"]["init"]["address"] == "auto"


def test_ray_preset_composes_when_the_plugin_is_installed():
    pytest.importorskip("hydra_plugins.hydra_ray_launcher",
                        reason="hydra-ray-launcher is in the `cluster` extra, not in dev")
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=["hydra/launcher=ray_cluster"],
                      return_hydra_config=True)
    assert cfg.hydra.launcher._target_.endswith("ray_launcher.RayLauncher")
    assert cfg.hydra.launcher.ray.remote.num_gpus == 1


def test_tracking_server_preset(compose_cfg, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert compose_cfg("tracking=server").tracking.uri == "http://127.0.0.1:5000"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow.example.org:5000")
    assert compose_cfg("tracking=server").tracking.uri == "http://mlflow.example.org:5000"
