"""U-Net decoder on a ``keras.applications`` encoder (ResNet50, EfficientNetB0, MobileNetV2).

Only built-in Keras layers, so a saved model loads (``safe_mode=True``) without segkit.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import layers

from segkit.models import ENCODERS, EncoderUNetOptions
from segkit.models.unet import conv_block, mask_head, upsample

CAFFE_BGR_MEAN = (103.939, 116.779, 123.68)  # keras.applications.imagenet_utils, mode="caffe"


def _preprocess(x, encoder: str):
    """The encoder's ``keras.applications.<module>.preprocess_input`` as built-in layers."""
    if encoder == "resnet50":  # caffe: RGB -> BGR, minus the ImageNet BGR mean (a fixed 1x1 conv)
        layer = layers.Conv2D(3, 1, trainable=False, dtype="float32", name="preprocess")
        x = layer(x)
        layer.set_weights([np.eye(3, dtype="float32")[::-1].reshape(1, 1, 3, 3),
                           -np.array(CAFFE_BGR_MEAN, "float32")])
        return x
    if encoder == "mobilenetv2":  # tf: 0-255 -> [-1, 1]
        return layers.Rescaling(1 / 127.5, offset=-1.0, dtype="float32", name="preprocess")(x)
    return x  # EfficientNet takes 0-255: it rescales and normalises inside the application


def build_encoder_unet(
    image_size: int = 256,
    encoder: str = "resnet50",
    encoder_weights: str | None = None,
    freeze_encoder: bool = False,
    decoder_filters=(256, 128, 64, 32, 16),
    batch_norm: bool = True,
    upsampling: str = "bilinear",
) -> keras.Model:
    """U-Net decoder (upsample, concatenate the encoder features of that stride, conv block)
    from the encoder's stride-32 features back to full resolution.

    Input: float RGB in 0-255, preprocessed inside the model as the encoder expects.
    Output: a float32 sigmoid probability map (N, H, W, 1). ``encoder_weights="imagenet"``
    downloads the weights (once, into ``~/.keras/models``); ``freeze_encoder`` also keeps the
    encoder's BatchNormalization statistics fixed.
    """
    EncoderUNetOptions(encoder, encoder_weights, freeze_encoder, tuple(decoder_filters),
                       batch_norm, upsampling).check(image_size)
    filters = list(decoder_filters)
    constructor, names = ENCODERS[encoder]
    base = getattr(keras.applications, constructor)(
        include_top=False, weights=encoder_weights, input_shape=(image_size, image_size, 3))
    features = keras.Model(base.input, [base.get_layer(n).output for n in names],
                           name=f"{encoder}_encoder")
    features.trainable = not freeze_encoder

    inputs = keras.Input((image_size, image_size, 3), name="image")
    *skips, x = features(_preprocess(inputs, encoder))
    for level, f in zip(range(4, -1, -1), filters, strict=True):  # level: log2(stride)
        x = upsample(x, f, upsampling, f"up{level}")
        if level:
            x = layers.Concatenate(name=f"skip{level}")([x, skips[level - 1]])
        x = conv_block(x, f, 3, batch_norm, 0.0, f"dec{level}")
    return keras.Model(inputs, mask_head(x), name=f"encoder_unet_{encoder}")
