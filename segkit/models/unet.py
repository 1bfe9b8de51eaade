"""U-Net (Ronneberger et al., 2015) as a short functional Keras model."""

from __future__ import annotations

import keras
from keras import layers

from segkit.config import ConfigError, check_unet_args


def _conv_block(x, filters: int, kernel_size: int, batch_norm: bool, dropout: float, name: str):
    for i in (1, 2):
        x = layers.Conv2D(filters, kernel_size, padding="same", use_bias=not batch_norm,
                          kernel_initializer="he_normal", name=f"{name}_conv{i}")(x)
        if batch_norm:
            x = layers.BatchNormalization(name=f"{name}_bn{i}")(x)
        x = layers.Activation("relu", name=f"{name}_relu{i}")(x)
        if dropout and i == 1:
            x = layers.Dropout(dropout, name=f"{name}_drop")(x)
    return x


def build_unet(
    image_size: int = 256,
    depth: int = 4,
    filters: int = 16,
    kernel_size: int = 3,
    batch_norm: bool = False,
    dropout: float = 0.0,
    upsampling: str = "transpose",
    channels: int = 3,
) -> keras.Model:
    """U-Net with ``depth`` poolings, ``filters * 2**level`` channels per level.

    Input: float RGB in 0-255 (rescaled to [0, 1] by the first layer). Output: a float32
    sigmoid probability map (N, H, W, 1), float32 even under a mixed precision policy.
    """
    check_unet_args(image_size, depth, filters)
    if upsampling not in ("transpose", "bilinear"):
        raise ConfigError(
            f"model.upsampling={upsampling!r} is unknown: use transpose or bilinear"
        )
    inputs = keras.Input((image_size, image_size, channels), name="image")
    x = layers.Rescaling(1.0 / 255, name="rescale")(inputs)
    skips = []
    for level in range(depth):
        x = _conv_block(x, filters * 2**level, kernel_size, batch_norm, dropout, f"enc{level}")
        skips.append(x)
        x = layers.MaxPooling2D(2, name=f"pool{level}")(x)
    x = _conv_block(x, filters * 2**depth, kernel_size, batch_norm, dropout, "bottleneck")
    for level in reversed(range(depth)):
        f = filters * 2**level
        if upsampling == "transpose":
            x = layers.Conv2DTranspose(f, 2, strides=2, padding="same", name=f"up{level}")(x)
        else:
            x = layers.UpSampling2D(2, interpolation="bilinear", name=f"up{level}")(x)
            x = layers.Conv2D(f, 1, name=f"up{level}_proj")(x)
        x = layers.Concatenate(name=f"skip{level}")([x, skips[level]])
        x = _conv_block(x, f, kernel_size, batch_norm, dropout, f"dec{level}")
    outputs = layers.Conv2D(1, 1, activation="sigmoid", dtype="float32", name="mask")(x)
    return keras.Model(inputs, outputs, name=f"unet_d{depth}_f{filters}")
