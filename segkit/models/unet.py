"""U-Net (Ronneberger et al., 2015) as a short functional Keras model.

Also the pieces the other U-Net variants reuse: the option check, conv blocks, the
encoder/decoder skeleton (``unet_body``) with pluggable blocks and skip gates, upsampling
and the float32 sigmoid head.
"""

from __future__ import annotations

from collections.abc import Callable

import keras
from keras import layers

from segkit.models import UNetOptions


def check_unet_options(image_size: int, depth: int, filters: int, kernel_size: int,
                       dropout: float, upsampling: str, batch_norm: bool = False) -> None:
    """The builder checks its own arguments with the registry's rules (written once there)."""
    UNetOptions(depth, filters, kernel_size, batch_norm, dropout, upsampling).check(image_size)


def conv_bn(x, filters: int, kernel_size: int, batch_norm: bool, name: str, i: int):
    """Conv2D (no bias when a BatchNormalization follows) and the optional BN."""
    x = layers.Conv2D(filters, kernel_size, padding="same", use_bias=not batch_norm,
                      kernel_initializer="he_normal", name=f"{name}_conv{i}")(x)
    if batch_norm:
        x = layers.BatchNormalization(name=f"{name}_bn{i}")(x)
    return x


def conv_block(x, filters: int, kernel_size: int, batch_norm: bool, dropout: float, name: str):
    """Two (conv, BN?, ReLU), dropout after the first."""
    for i in (1, 2):
        x = conv_bn(x, filters, kernel_size, batch_norm, name, i)
        x = layers.Activation("relu", name=f"{name}_relu{i}")(x)
        if dropout and i == 1:
            x = layers.Dropout(dropout, name=f"{name}_drop")(x)
    return x


def upsample(x, filters: int, upsampling: str, name: str):
    """2x upsampling to ``filters`` channels: Conv2DTranspose, or bilinear + 1x1 conv."""
    if upsampling == "transpose":
        return layers.Conv2DTranspose(filters, 2, strides=2, padding="same", name=name)(x)
    x = layers.UpSampling2D(2, interpolation="bilinear", name=name)(x)
    return layers.Conv2D(filters, 1, name=f"{name}_proj")(x)


def mask_head(x):
    """1x1 conv to one sigmoid channel, float32 under any dtype policy."""
    return layers.Conv2D(1, 1, activation="sigmoid", dtype="float32", name="mask")(x)


def unet_body(x, depth: int, filters: int, upsampling: str, block: Callable,
              gate: Callable | None = None):
    """Encoder, bottleneck and decoder of a U-Net; ``block(x, filters, name)`` is each
    level's block, ``gate(skip, coarser, filters, name)`` (optional) filters each skip
    with the coarser decoder features before the concatenation."""
    skips = []
    for level in range(depth):
        x = block(x, filters * 2**level, f"enc{level}")
        skips.append(x)
        x = layers.MaxPooling2D(2, name=f"pool{level}")(x)
    x = block(x, filters * 2**depth, "bottleneck")
    for level in reversed(range(depth)):
        f = filters * 2**level
        skip = skips[level] if gate is None else gate(skips[level], x, f, f"att{level}")
        x = upsample(x, f, upsampling, f"up{level}")
        x = layers.Concatenate(name=f"skip{level}")([x, skip])
        x = block(x, f, f"dec{level}")
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
    check_unet_options(image_size, depth, filters, kernel_size, dropout, upsampling)
    inputs = keras.Input((image_size, image_size, channels), name="image")
    x = layers.Rescaling(1.0 / 255, name="rescale")(inputs)

    def block(x, f, name):
        return conv_block(x, f, kernel_size, batch_norm, dropout, name)

    x = unet_body(x, depth, filters, upsampling, block)
    return keras.Model(inputs, mask_head(x), name=f"unet_d{depth}_f{filters}")
