"""Residual U-Net: the U-Net skeleton with residual blocks (He et al., 2016) at each level."""

from __future__ import annotations

import keras
from keras import layers

from segkit.models.unet import check_unet_options, conv_bn, mask_head, unet_body


def residual_block(x, filters: int, kernel_size: int, batch_norm: bool, dropout: float,
                   name: str):
    """(conv, BN?, ReLU, dropout?, conv, BN?) + 1x1 projection shortcut (BN?), then ReLU."""
    shortcut = layers.Conv2D(filters, 1, use_bias=not batch_norm, kernel_initializer="he_normal",
                             name=f"{name}_short")(x)
    if batch_norm:
        shortcut = layers.BatchNormalization(name=f"{name}_short_bn")(shortcut)
    x = conv_bn(x, filters, kernel_size, batch_norm, name, 1)
    x = layers.Activation("relu", name=f"{name}_relu1")(x)
    if dropout:
        x = layers.Dropout(dropout, name=f"{name}_drop")(x)
    x = conv_bn(x, filters, kernel_size, batch_norm, name, 2)
    x = layers.Add(name=f"{name}_add")([x, shortcut])
    return layers.Activation("relu", name=f"{name}_relu2")(x)


def build_resunet(
    image_size: int = 256,
    depth: int = 4,
    filters: int = 16,
    kernel_size: int = 3,
    batch_norm: bool = False,
    dropout: float = 0.0,
    upsampling: str = "transpose",
    channels: int = 3,
) -> keras.Model:
    """U-Net of residual blocks; same options, input (RGB 0-255) and output (float32
    sigmoid map) as ``build_unet``."""
    check_unet_options(image_size, depth, filters, kernel_size, dropout, upsampling)
    inputs = keras.Input((image_size, image_size, channels), name="image")
    x = layers.Rescaling(1.0 / 255, name="rescale")(inputs)

    def block(x, f, name):
        return residual_block(x, f, kernel_size, batch_norm, dropout, name)

    x = unet_body(x, depth, filters, upsampling, block)
    return keras.Model(inputs, mask_head(x), name=f"resunet_d{depth}_f{filters}")
