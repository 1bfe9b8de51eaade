"""Attention U-Net (Oktay et al., 2018): additive attention gates on the skip connections."""

from __future__ import annotations

import keras
from keras import layers

from segkit.models.unet import check_unet_options, conv_block, mask_head, unet_body


def attention_gate(skip, gating, filters: int, name: str):
    """Weight ``skip`` (H x W, ``filters`` channels) by a [0, 1] map computed from it and the
    coarser decoder features ``gating`` (H/2 x W/2): sigmoid(psi(relu(theta(skip) +
    phi(gating)))), upsampled bilinearly, with ``filters // 2`` intermediate channels.

    As in the paper's code, theta is a 2x2 stride-2 conv, so the sum is taken at the gating
    resolution; its final 1x1 conv + BN on the gated skip is left out (the decoder block
    convolves it next).
    """
    inter = max(filters // 2, 1)
    theta = layers.Conv2D(inter, 2, strides=2, use_bias=False, name=f"{name}_theta")(skip)
    phi = layers.Conv2D(inter, 1, name=f"{name}_phi")(gating)
    a = layers.Add(name=f"{name}_add")([theta, phi])
    a = layers.Activation("relu", name=f"{name}_relu")(a)
    a = layers.Conv2D(1, 1, activation="sigmoid", name=f"{name}_psi")(a)
    a = layers.UpSampling2D(2, interpolation="bilinear", name=f"{name}_up")(a)
    return layers.Multiply(name=f"{name}_gate")([skip, a])  # broadcast over channels


def build_attention_unet(
    image_size: int = 256,
    depth: int = 4,
    filters: int = 16,
    kernel_size: int = 3,
    batch_norm: bool = False,
    dropout: float = 0.0,
    upsampling: str = "transpose",
    channels: int = 3,
) -> keras.Model:
    """U-Net with an attention gate on each skip connection; same options, input (RGB
    0-255) and output (float32 sigmoid map) as ``build_unet``."""
    check_unet_options(image_size, depth, filters, kernel_size, dropout, upsampling)
    inputs = keras.Input((image_size, image_size, channels), name="image")
    x = layers.Rescaling(1.0 / 255, name="rescale")(inputs)

    def block(x, f, name):
        return conv_block(x, f, kernel_size, batch_norm, dropout, name)

    x = unet_body(x, depth, filters, upsampling, block, gate=attention_gate)
    return keras.Model(inputs, mask_head(x), name=f"attention_unet_d{depth}_f{filters}")
