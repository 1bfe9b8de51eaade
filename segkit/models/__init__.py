"""Model builders, selected by ``cfg.model.name``."""

from __future__ import annotations

import inspect

import keras

from segkit.config import ConfigError
from segkit.models.attention_unet import build_attention_unet
from segkit.models.encoder_unet import build_encoder_unet
from segkit.models.resunet import build_resunet
from segkit.models.unet import build_unet

BUILDERS = {
    "unet": build_unet,
    "resunet": build_resunet,
    "attention_unet": build_attention_unet,
    "encoder_unet": build_encoder_unet,
}


def build_model(model_cfg, image_size: int) -> keras.Model:
    """Build the model named by ``model_cfg.name`` with the rest of ``model_cfg`` as arguments."""
    kwargs = {k: v for k, v in dict(model_cfg).items() if k != "name"}
    if model_cfg.name not in BUILDERS:
        raise ConfigError(
            f"model.name={model_cfg.name!r} is unknown: use one of {sorted(BUILDERS)}"
        )
    builder = BUILDERS[model_cfg.name]
    options = set(inspect.signature(builder).parameters) - {"image_size"}
    if unknown := sorted(set(kwargs) - options):
        raise ConfigError(f"model.{unknown[0]} is not an option of model={model_cfg.name}: "
                          f"remove it or use one of {', '.join(sorted(options))}")
    return builder(image_size=image_size, **kwargs)


__all__ = ["BUILDERS", "build_attention_unet", "build_encoder_unet", "build_model",
           "build_resunet", "build_unet"]
