"""Config checks that run before any data is read or any MLflow run is created.

Hydra already refuses unknown keys (the composed config is in struct mode) and unknown group
options; these checks catch values that are well-formed but impossible.
"""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from segkit.errors import SegkitError
from segkit.metrics import SCORE_KEYS, SUMMARY_KEYS
from segkit.targets import check_targets

# This module imports no TensorFlow/Keras, so a bad override fails within a second.
PRECISIONS = ("auto", "float32", "mixed_bfloat16", "mixed_float16")
ENCODERS = ("resnet50", "efficientnetb0", "mobilenetv2")  # model=encoder_unet
# The options each name key accepts (tests keep these equal to the builders' registries).
CHOICES = {
    "model.name": ("unet", "resunet", "attention_unet", "encoder_unet"),
    "loss.name": ("bce", "dice", "bce_dice", "focal", "tversky"),
    "optimizer.name": ("adam", "adamw", "sgd"),
    "augment.name": ("none", "flips", "light", "strong"),
    "split.name": ("official", "reference", "random"),
    "schedule.name": ("constant", "cosine", "plateau"),
}


STRATEGIES = ("default", "mirrored", "multi_worker")  # trainer.strategy (segkit.distribute)


def _tf_config_ok() -> bool:
    """TF_CONFIG parses and names this task within a cluster of workers."""
    import json
    import os

    try:
        tf_config = json.loads(os.environ.get("TF_CONFIG") or "null")
        cluster, task = tf_config["cluster"], tf_config["task"]
        return task["type"] in cluster and 0 <= int(task["index"]) < len(cluster[task["type"]])
    except (ValueError, TypeError, KeyError):
        return False


class ConfigError(SegkitError):
    """A config value that cannot work, named by its full key."""


def check_unet_args(image_size: int, depth: int, filters: int) -> None:
    """Raise ConfigError for shapes a U-Net cannot take (before any data is loaded)."""
    if depth < 1:
        raise ConfigError(f"model.depth={depth} must be >= 1")
    if filters < 1:
        raise ConfigError(f"model.filters={filters} must be >= 1")
    if image_size % (2**depth):
        raise ConfigError(
            f"data.image_size={image_size} is not divisible by 2^model.depth={2**depth}: "
            f"use a multiple of {2**depth} or a smaller depth"
        )


def register_resolvers(root: Path) -> None:
    """``${project_root:}``: the folder holding run.py and conf/ (outputs, mlflow.db go there)."""
    OmegaConf.register_new_resolver("project_root", lambda: str(root), replace=True)


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


def validate(cfg: DictConfig) -> None:
    """Raise ConfigError naming the key and the fix for the first impossible value."""
    m, t, d, s = cfg.model, cfg.trainer, cfg.data, cfg.split
    for key, options in CHOICES.items():
        value = OmegaConf.select(cfg, key)
        _require(value in options,
                 f"{key}={value!r} is unknown: use one of {', '.join(options)}")
    _require(isinstance(d.image_size, int) and d.image_size >= 8,
             f"data.image_size={d.image_size} must be an integer >= 8")
    if m.name == "encoder_unet":
        _require(d.image_size % 32 == 0, f"data.image_size={d.image_size} is not divisible by "
                 "32, which model=encoder_unet needs: use a multiple of 32")
        _require(m.encoder in ENCODERS, f"model.encoder={m.encoder!r} is unknown: use one of "
                 f"{', '.join(ENCODERS)}")
    else:  # the U-Net family: unet, resunet, attention_unet
        check_unet_args(d.image_size, m.depth, m.filters)
        _require(m.kernel_size >= 1 and m.kernel_size % 2 == 1,
                 f"model.kernel_size={m.kernel_size} must be a positive odd integer")
        _require(0 <= m.dropout < 1, f"model.dropout={m.dropout} must be in [0, 1)")
    _require(cfg.optimizer.lr > 0, f"optimizer.lr={cfg.optimizer.lr} must be > 0")
    _require(t.epochs >= 1, f"trainer.epochs={t.epochs} must be >= 1")
    _require(t.max_minutes is None or t.max_minutes > 0,
             f"trainer.max_minutes={t.max_minutes} must be > 0 or null")
    _require(t.batch_size >= 1, f"trainer.batch_size={t.batch_size} must be >= 1")
    _require(t.precision in PRECISIONS,
             f"trainer.precision={t.precision!r} is unknown: use one of {', '.join(PRECISIONS)}")
    _require(0 < s.val_fraction < 1, f"split.val_fraction={s.val_fraction} must be in (0, 1): "
             "early stopping and model selection need a validation carve-out")
    if s.name != "official":
        _require(0 < s.test_fraction < 1,
                 f"split.test_fraction={s.test_fraction} must be in (0, 1)")
    _require(0 < cfg.eval.threshold < 1, f"eval.threshold={cfg.eval.threshold} must be in (0, 1)")
    _require(cfg.task in ("train", "evaluate"), f"task={cfg.task!r} is unknown: use train or "
             "evaluate")
    _require(cfg.task != "evaluate" or bool(cfg.model_uri),
             "task=evaluate needs model_uri=<runs:/RUN_ID/model | models:/NAME/VERSION | path>")
    _require(cfg.eval.bins >= 10, f"eval.bins={cfg.eval.bins} must be >= 10")
    _require(isinstance(cfg.eval.get("plots", True), bool),
             f"eval.plots={cfg.eval.get('plots')!r} must be true or false")
    objectives = [f"val_{k}" for k in SUMMARY_KEYS + SCORE_KEYS]
    _require(cfg.objective in objectives,
             f"objective={cfg.objective!r} must be a validation metric (the held-out split "
             f"never selects models): use one of {', '.join(objectives)}")
    _require(d.limit is None or d.limit >= 1, f"data.limit={d.limit} must be >= 1 or null")
    sc = cfg.schedule
    if sc.name == "cosine":
        _require(sc.warmup_epochs >= 0, f"schedule.warmup_epochs={sc.warmup_epochs} must be >= 0")
        _require(sc.get("over", "epochs") in ("epochs", "time"),
                 f"schedule.over={sc.get('over')!r} is unknown: use epochs or time")
        _require(sc.get("over", "epochs") == "epochs" or bool(t.max_minutes),
                 "schedule.over=time needs trainer.max_minutes (the budget the cosine decays "
                 "over): set it, or use schedule.over=epochs")
        _require(0 <= sc.min_lr_ratio < 1,
                 f"schedule.min_lr_ratio={sc.min_lr_ratio} must be in [0, 1)")
    if sc.name == "plateau":
        _require(0 < sc.factor < 1, f"schedule.factor={sc.factor} must be in (0, 1)")
    _require(t.get("jit_compile", "auto") in ("auto", True, False),
             f"trainer.jit_compile={t.get('jit_compile')!r} must be auto, true or false")
    resume = t.get("resume")
    _require(resume is None or (isinstance(resume, str) and bool(resume.strip())),
             f"trainer.resume={resume!r} must be an MLflow run id, auto, or null")
    _require(cfg.task == "train" or resume is None,
             "trainer.resume applies to task=train only: drop it")
    strategy = t.get("strategy", "default")
    _require(strategy in STRATEGIES,
             f"trainer.strategy={strategy!r} is unknown: use one of {', '.join(STRATEGIES)}")
    _require(t.get("lr_scaling", "none") in ("none", "linear"),
             f"trainer.lr_scaling={t.get('lr_scaling')!r} is unknown: use none or linear")
    _require(strategy != "multi_worker" or resume is None,
             "trainer.resume is not supported with trainer.strategy=multi_worker yet: drop it")
    if strategy == "multi_worker" and cfg.task == "train":
        _require(_tf_config_ok(), "trainer.strategy=multi_worker needs TF_CONFIG in the "
                 "environment: JSON with cluster.worker (host:port list) and task.index")
    check_targets(cfg)  # a _target_ outside segkit's allowlist never gets imported
    if cfg.augment.get("transforms") is not None:
        from segkit.data.augment import build_compose  # albumentations, no TensorFlow

        build_compose(cfg.augment)  # an unknown transform or argument fails here, not mid-run


def check_batch_size(batch_size: int, train_size: int) -> None:
    """Once the split is known: a batch larger than the training set cannot fill one step."""
    _require(batch_size <= train_size,
             f"trainer.batch_size={batch_size} is larger than the training set ({train_size} "
             "images): lower trainer.batch_size or use more data")
