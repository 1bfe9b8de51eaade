"""U-Net decoder on a ``keras.applications`` encoder (ResNet50, EfficientNetB0, MobileNetV2).

Only built-in Keras layers, so a saved model loads (``safe_mode=True``) without segkit.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import layers

from segkit.config import ConfigError
from segkit.models.unet import check_upsampling, conv_block, mask_head, upsample

# name: (keras.applications constructor, its layers at strides 2, 4, 8, 16 and 32)
ENCODERS = {
    "resnet50": ("ResNet50", ("conv1_relu", "conv2_block3_out", "conv3_block4_out",
                              "conv4_block6_out", "conv5_block3_out")),
    "efficientnetb0": ("EfficientNetB0", ("block2a_expand_activation",
                                          "block3a_expand_activation",
                                          "block4a_expand_activation",
                                          "block6a_expand_activation", "top_activation")),
    "mobilenetv2": ("MobileNetV2", ("block_1_expand_relu", "block_3_expand_relu",
                                    "block_6_expand_relu", "block_13_expand_relu", "out_relu")),
}
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
    if encoder not in ENCODERS:
        raise ConfigError(f"model.encoder={encoder!r} is unknown: use one of "
                          f"{', '.join(ENCODERS)}")
    if encoder_weights not in (None, "imagenet"):
        raise ConfigError(f"model.encoder_weights={encoder_weights!r} is unknown: use null "
                          "(random initialisation) or imagenet")
    if image_size < 32 or image_size % 32:
        raise ConfigError(f"data.image_size={image_size} is not divisible by 32 (the stride of "
                          f"model.encoder={encoder}): use a multiple of 32")
    filters = list(decoder_filters)
    if len(filters) != 5 or not all(isinstance(f, int) and f >= 1 for f in filters):
        raise ConfigError(f"model.decoder_filters={filters} must be 5 positive integers (the "
                          "channels at strides 16, 8, 4, 2, 1), e.g. [256, 128, 64, 32, 16]")
    check_upsampling(upsampling)

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
