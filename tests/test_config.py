"""The config tree composes, presets apply, and impossible values fail before any work."""

from __future__ import annotations

import os

import pytest

from segkit.config import validate
from segkit.errors import ConfigError
from segkit.trainer import check_batch_size
from tests.helpers import ROOT, cli_env, run_py


def test_default_config_is_the_reference_shape_and_valid(compose_cfg):
    cfg = compose_cfg()
    validate(cfg)
    assert (cfg.data.image_size, cfg.model.name, cfg.loss.name, cfg.optimizer.name) == (
        256, "unet", "bce", "adam")
    assert cfg.split.name == "official" and cfg.objective == "val_mdice"
    assert cfg.tracking.uri.startswith("sqlite:///") or "MLFLOW_TRACKING_URI" in os.environ


def test_env_var_sets_data_root(compose_cfg, monkeypatch, tmp_path):
    monkeypatch.setenv("SEGKIT_DATA_DIR", str(tmp_path))
    assert compose_cfg().data.root == str(tmp_path)
    monkeypatch.delenv("SEGKIT_DATA_DIR")
    assert compose_cfg().data.root == f"{ROOT}/data/kvasir-seg"


def test_presets_compose(compose_cfg):
    ref = compose_cfg("experiment=reference")
    assert (ref.trainer.epochs, ref.trainer.batch_size, ref.optimizer.lr) == (30, 8, 1e-3)
    assert ref.callbacks.early_stopping.enabled and ref.loss.name == "bce"
    best, epochs = compose_cfg("experiment=cpu_best"), compose_cfg("experiment=cpu_best_epochs")
    assert (best.trainer.max_minutes, best.schedule.over) == (60, "time")
    assert (epochs.trainer.epochs, epochs.trainer.max_minutes, epochs.schedule.over) == (
        100, None, "epochs")
    assert best.augment.name == "shift_mild" and not epochs.trainer.jit_compile
    for key in ("model", "loss", "optimizer", "augment", "data", "split", "eval"):
        assert epochs[key] == best[key], key  # the same recipe, only the budget differs
    smoke = compose_cfg("debug=smoke")
    validate(smoke)
    assert smoke.data.image_size == 64 and smoke.trainer.epochs <= 2


@pytest.mark.parametrize("override, key", [
    ("model.depth=0", "model.depth"),
    ("model.filters=0", "model.filters"),
    ("data.image_size=100", "data.image_size=100"),
    ("optimizer.lr=0", "optimizer.lr"),
    ("trainer.batch_size=0", "trainer.batch_size"),
    ("trainer.precision=fp8", "trainer.precision"),
    ("objective=test_mdice", "objective"),
    ("eval.threshold=1.5", "eval.threshold"),
    ("eval.plots=maybe", "eval.plots"),
    ("schedule=cosine schedule.over=steps", "schedule.over='steps' is unknown"),
    ("schedule=cosine schedule.over=time", "schedule.over=time needs trainer.max_minutes"),
    ("augment.name=mixup", "augment.name"),
    ("loss.name=focalish", "loss.name"),
    ("model=encoder_unet data.image_size=48", "not divisible by 32"),
    ("model=encoder_unet model.encoder=vgg", "model.encoder='vgg' is unknown"),
    ("task=predict", "task"),
    ("task=evaluate", "model_uri"),
])
def test_impossible_values_fail_validation(compose_cfg, override, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        validate(compose_cfg(*override.split()))


def test_batch_larger_than_training_set():
    with pytest.raises(ConfigError, match="trainer.batch_size=16 is larger"):
        check_batch_size(16, 10)
    check_batch_size(10, 10)


@pytest.mark.e2e
@pytest.mark.parametrize("override, expected", [
    ("model.filter=32", "error: model.filter is not a config key (did you mean filters?)"),
    ("loss=focalish", "error: loss=focalish is not an option (did you mean focal?): use one "
                      "of bce, bce_dice, dice, focal, tversky"),
    ("model.depth=0", "error: model.depth=0 must be >= 1"),
])
def test_cli_rejects_before_any_work(tmp_path, override, expected):
    res = run_py(override, "data.root=/nonexistent", f"hydra.run.dir={tmp_path}/out",
                 env=cli_env(uri=f"sqlite:///{tmp_path}/never.db"), timeout=300)
    assert res.returncode == 2
    assert expected in res.stderr
    assert len((res.stdout + res.stderr).strip().splitlines()) == 1  # one line, nothing else
    assert "Traceback" not in res.stderr
    assert not (tmp_path / "never.db").exists()  # no MLflow store was touched


def test_every_registry_matches_its_conf_group():
    """Each extension point has one registry; its options are exactly the YAML files of its
    config group (adding one means its YAML and its builder, nothing else)."""
    from segkit.data.augmentations import AUGMENTATIONS
    from segkit.data.splits import SPLITS
    from segkit.losses import LOSSES
    from segkit.models import MODELS
    from segkit.optimizers import OPTIMIZERS
    from segkit.schedules import SCHEDULES

    conf = ROOT / "conf"
    for group, registry in (("model", MODELS), ("loss", LOSSES), ("optimizer", OPTIMIZERS),
                            ("augment", AUGMENTATIONS), ("split", SPLITS),
                            ("schedule", SCHEDULES)):
        assert {p.stem for p in (conf / group).glob("*.yaml")} == set(registry), group
        assert registry.key == group
