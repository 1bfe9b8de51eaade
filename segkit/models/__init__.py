"""The model registry: ``model.name`` -> options (checked here) -> builder (imported on use).

This module imports no Keras: ``segkit.config.validate`` checks a model config through it in
milliseconds. Each builder (``unet.py``, ``resunet.py``, ...) checks its own arguments through
the same options class, so every rule is written once, here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from segkit.errors import ConfigError
from segkit.registry import Registry

if TYPE_CHECKING:
    import keras

MODELS = Registry("model")
UPSAMPLINGS = ("transpose", "bilinear")
# model=encoder_unet: name -> (keras.applications constructor, its layers at strides 2, 4, 8,
# 16 and 32, whose outputs feed the decoder's skips)
ENCODERS: dict[str, tuple[str, tuple[str, ...]]] = {
    "resnet50": ("ResNet50", ("conv1_relu", "conv2_block3_out", "conv3_block4_out",
                              "conv4_block6_out", "conv5_block3_out")),
    "efficientnetb0": ("EfficientNetB0", ("block2a_expand_activation",
                                          "block3a_expand_activation",
                                          "block4a_expand_activation",
                                          "block6a_expand_activation", "top_activation")),
    "mobilenetv2": ("MobileNetV2", ("block_1_expand_relu", "block_3_expand_relu",
                                    "block_6_expand_relu", "block_13_expand_relu", "out_relu")),
}


def _check_upsampling(upsampling: str) -> None:
    if upsampling not in UPSAMPLINGS:
        raise ConfigError(f"model.upsampling={upsampling!r} is unknown: use transpose or "
                          "bilinear")


# stacked decorators run bottom-up: listed here in reverse of the registry order
@MODELS.register("attention_unet", "segkit.models.attention_unet:build_attention_unet")
@MODELS.register("resunet", "segkit.models.resunet:build_resunet")
@MODELS.register("unet", "segkit.models.unet:build_unet")
@dataclass(frozen=True)
class UNetOptions:
    """The U-Net family (unet, resunet, attention_unet): ``depth`` poolings, ``filters``
    channels at the first level, doubled per level."""

    depth: int
    filters: int
    kernel_size: int
    batch_norm: bool
    dropout: float
    upsampling: str

    def check(self, image_size: int) -> None:
        """ConfigError naming the key for any option a U-Net-shaped model cannot take."""
        if self.depth < 1:
            raise ConfigError(f"model.depth={self.depth} must be >= 1")
        if self.filters < 1:
            raise ConfigError(f"model.filters={self.filters} must be >= 1")
        if image_size % (2**self.depth):
            raise ConfigError(
                f"data.image_size={image_size} is not divisible by 2^model.depth="
                f"{2**self.depth}: use a multiple of {2**self.depth} or a smaller depth")
        if self.kernel_size < 1 or self.kernel_size % 2 == 0:
            raise ConfigError(f"model.kernel_size={self.kernel_size} must be a positive odd "
                              "integer")
        if not 0 <= self.dropout < 1:
            raise ConfigError(f"model.dropout={self.dropout} must be in [0, 1)")
        _check_upsampling(self.upsampling)


@MODELS.register("encoder_unet", "segkit.models.encoder_unet:build_encoder_unet")
@dataclass(frozen=True)
class EncoderUNetOptions:
    """A U-Net decoder on a ``keras.applications`` encoder (stride 32)."""

    encoder: str
    encoder_weights: str | None
    freeze_encoder: bool
    decoder_filters: tuple[int, ...]
    batch_norm: bool
    upsampling: str

    def check(self, image_size: int) -> None:
        if self.encoder not in ENCODERS:
            raise ConfigError(f"model.encoder={self.encoder!r} is unknown: use one of "
                              f"{', '.join(ENCODERS)}")
        if self.encoder_weights not in (None, "imagenet"):
            raise ConfigError(f"model.encoder_weights={self.encoder_weights!r} is unknown: use "
                              "null (random initialisation) or imagenet")
        if image_size < 32 or image_size % 32:
            raise ConfigError(f"data.image_size={image_size} is not divisible by 32 (the stride "
                              f"of model.encoder={self.encoder}): use a multiple of 32")
        filters = list(self.decoder_filters)
        if len(filters) != 5 or not all(isinstance(f, int) and f >= 1 for f in filters):
            raise ConfigError(f"model.decoder_filters={filters} must be 5 positive integers "
                              "(the channels at strides 16, 8, 4, 2, 1), e.g. [256, 128, 64, "
                              "32, 16]")
        _check_upsampling(self.upsampling)


def check_model(model_cfg: Any, image_size: int) -> None:
    """Check a ``model`` config node without building anything (no Keras import)."""
    MODELS.options(model_cfg, image_size=image_size)


def build_model(model_cfg: Any, image_size: int) -> keras.Model:
    """Build the model named by ``model_cfg.name`` with the rest of ``model_cfg`` as arguments."""
    return MODELS.build(model_cfg, image_size=image_size)


_BUILDERS = {"build_unet": "unet", "build_resunet": "resunet",
             "build_attention_unet": "attention_unet", "build_encoder_unet": "encoder_unet"}


def __getattr__(name: str) -> Any:
    """``from segkit.models import build_unet`` (and the other builders) without importing
    Keras when only the registry is needed (PEP 562)."""
    if name in _BUILDERS:
        return MODELS.get(_BUILDERS[name]).build_fn()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["ENCODERS", "MODELS", "EncoderUNetOptions", "UNetOptions", "build_model",
           "check_model"]
