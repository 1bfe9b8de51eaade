"""Precision choice, optimizers, callbacks and the input pipeline."""

from __future__ import annotations

import numpy as np
import pytest
from omegaconf import OmegaConf

from segkit.callbacks import TimeLimit, build_callbacks
from segkit.data.pipeline import make_dataset
from segkit.errors import SegkitError
from segkit.optimizers import build_optimizer
from segkit.precision import cpu_has_bf16, resolve_precision
from segkit.schedules import build_schedule
from segkit.schedules.cosine import TimeCosine
from tests.helpers import random_data


def test_cpu_bf16_detection_from_flags():
    assert cpu_has_bf16("flags : fpu sse avx2 amx_bf16 amx_tile")
    assert cpu_has_bf16("flags : avx512f avx512_bf16")
    assert not cpu_has_bf16("flags : fpu sse avx2 fma")


def test_resolve_precision():
    assert resolve_precision("float32") == "float32"
    assert resolve_precision("mixed_float16") == "mixed_float16"
    assert resolve_precision("auto") == ("mixed_bfloat16" if cpu_has_bf16() else "float32")
    with pytest.raises(SegkitError, match="trainer.precision"):
        resolve_precision("fp8")


def test_optimizers_from_config():
    adam = build_optimizer(OmegaConf.create({"name": "adam", "lr": 0.01, "clipnorm": 1.0}))
    assert float(adam.learning_rate) == pytest.approx(0.01) and adam.clipnorm == 1.0
    sgd = build_optimizer(OmegaConf.create({"name": "sgd", "lr": 0.1, "momentum": 0.8,
                                            "nesterov": True, "clipnorm": None}))
    assert sgd.momentum == 0.8 and sgd.nesterov
    adamw = build_optimizer(OmegaConf.create({"name": "adamw", "lr": 1e-3,
                                              "weight_decay": 0.01, "clipnorm": None}))
    assert adamw.weight_decay == 0.01
    with pytest.raises(SegkitError, match="optimizer.name"):
        build_optimizer(OmegaConf.create({"name": "lion", "lr": 1e-3}))


def test_callbacks_follow_enabled_flags(compose_cfg, tmp_path):
    cfg = compose_cfg("callbacks.tensorboard.enabled=false", "schedule=constant")
    names = [type(cb).__name__ for cb in build_callbacks(cfg.callbacks, tmp_path, 5,
                                                         schedule_cfg=cfg.schedule)]
    assert names == ["EpochTimer", "DivergenceGuard", "TimeLimit", "EarlyStopping",
                     "TrainingState"]
    cfg = compose_cfg("callbacks.early_stopping.enabled=false")  # schedule=plateau by default
    names = [type(cb).__name__ for cb in build_callbacks(cfg.callbacks, tmp_path,
                                                         schedule_cfg=cfg.schedule)]
    assert names == ["EpochTimer", "DivergenceGuard", "ReduceLROnPlateau", "TensorBoard",
                     "TrainingState"]


def test_cosine_schedule_warms_up_then_decays(compose_cfg):
    cfg = compose_cfg("schedule=cosine", "schedule.warmup_epochs=2", "schedule.min_lr_ratio=0.1",
                      "optimizer.lr=0.01")
    opt = build_optimizer(cfg.optimizer, build_schedule(cfg.schedule), steps_per_epoch=10,
                          epochs=12)
    sched = opt._learning_rate
    lr = [float(sched(step)) for step in (0, 10, 20, 70, 120)]
    assert lr[0] == pytest.approx(1e-4)  # warmup starts at lr / 100
    assert lr[2] == pytest.approx(0.01)  # the peak at the end of warmup (20 steps)
    assert lr[3] == pytest.approx(0.001 + 0.009 * 0.5 * (1 + np.cos(np.pi * 0.5)), rel=1e-5)
    assert lr[4] == pytest.approx(0.001)  # min_lr_ratio * lr at the last step
    assert lr[0] < lr[1] < lr[2]
    assert float(build_optimizer(cfg.optimizer).learning_rate) == pytest.approx(0.01)


def test_cosine_over_time_follows_the_clock_and_resumes(compose_cfg, tmp_path):
    """schedule.over=time: the rate is a function of the budget share spent (and of the
    step during warmup), set before every step; a resumed run counts its earlier time."""
    import keras

    sched = TimeCosine(peak=0.01, min_ratio=0.1, warmup_steps=4, minutes=10.0)
    assert sched.rate(0, 0.0) == pytest.approx(0.01 / 4)         # warmup step 1 of 4
    assert sched.rate(3, 0.0) == pytest.approx(0.01)             # warmup done, f = 0
    assert sched.rate(50, 300.0) == pytest.approx(0.001 + 0.009 * 0.5)  # half the budget
    assert sched.rate(90, 600.0) == pytest.approx(0.001)         # budget spent: the minimum
    assert sched.rate(99, 900.0) == pytest.approx(0.001)         # past it: stays there

    cfg = compose_cfg("schedule=cosine", "schedule.over=time", "schedule.warmup_epochs=0",
                      "schedule.min_lr_ratio=0.1", "optimizer.lr=0.01",
                      "trainer.max_minutes=10")
    opt = build_optimizer(cfg.optimizer, build_schedule(cfg.schedule, cfg.trainer.max_minutes),
                          steps_per_epoch=10, epochs=3)
    assert float(opt.learning_rate) == pytest.approx(0.01)  # a plain variable the callback sets
    now = [0.0]
    callbacks = build_callbacks(cfg.callbacks, tmp_path, 10.0, {"train_seconds": 300.0},
                                cfg.schedule, peak_lr=0.01, steps_per_epoch=10)
    (time_cosine,) = [cb for cb in callbacks if isinstance(cb, TimeCosine)]
    time_cosine.clock = lambda: now[0]
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(optimizer=opt, loss="mse")
    time_cosine.set_model(model)
    time_cosine.on_train_begin()
    time_cosine.on_train_batch_begin(0)              # 300 s of 600 already spent: f = 0.5
    assert float(model.optimizer.learning_rate) == pytest.approx(0.0055)
    now[0] = 300.0
    time_cosine.on_train_batch_begin(1)
    assert float(model.optimizer.learning_rate) == pytest.approx(0.001)
    ramp = TimeCosine(peak=0.01, min_ratio=0.1, warmup_steps=2, minutes=10.0,
                      clock=lambda: 0.0)
    ramp.set_model(model)
    model.optimizer.iterations.assign(0)
    ramp.on_train_begin()
    seen = []
    for i in range(3):  # the step is counted by the callback across batches
        ramp.on_train_batch_begin(i)
        seen.append(float(model.optimizer.learning_rate))
    assert seen == pytest.approx([0.005, 0.01, 0.01])
    with pytest.raises(SegkitError, match="schedule.over=time needs trainer.max_minutes"):
        build_callbacks(cfg.callbacks, tmp_path, None, None, cfg.schedule)


def test_time_limit_stops_when_next_epoch_would_overrun():
    class Model:
        stop_training = False

    limit = TimeLimit(minutes=1e-9)
    limit.set_model(Model())
    limit.on_train_begin()
    limit.on_epoch_end(0)
    assert limit.stopped_early and limit.model.stop_training


def test_pipeline_batches_floats_and_augments_image_and_mask_together():
    images, _ = random_data(6, 8)
    masks = (images[..., :1] > 127).astype(np.uint8)  # the mask is a function of the pixels
    originals = {im.tobytes() for im in images.astype(np.float32)}

    def run(augment):
        batches = list(make_dataset(images, masks, 4, training=True, seed=1, augment=augment))
        assert [len(b[0]) for b in batches] == [4, 2]
        seen = []
        for x, y in batches:
            assert x.dtype == "float32" and y.dtype == "float32"
            np.testing.assert_array_equal(y.numpy(), (x.numpy()[..., :1] > 127).astype("f4"))
            seen.extend(im.tobytes() for im in x.numpy())
        return seen

    assert set(run("none")) == originals  # shuffled, untouched
    flipped = run("flips")
    assert any(im not in originals for im in flipped)  # some were flipped or rotated


def test_eval_pipeline_keeps_order():
    images = np.arange(5, dtype=np.uint8).reshape(5, 1, 1, 1).repeat(3, axis=-1)
    masks = np.zeros((5, 1, 1, 1), np.uint8)
    xs = np.concatenate([x.numpy() for x, _ in make_dataset(images, masks, 2, training=False)])
    np.testing.assert_array_equal(xs[:, 0, 0, 0], [0, 1, 2, 3, 4])
