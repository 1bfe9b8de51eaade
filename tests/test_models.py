"""U-Net shapes, dtypes and shape errors."""

from __future__ import annotations

import keras
import numpy as np
import pytest
from omegaconf import OmegaConf

from segkit.config import ConfigError
from segkit.models import build_model, build_unet


@pytest.mark.parametrize("depth", [1, 2, 3, 4])
def test_output_shape_over_depths(depth):
    model = build_unet(image_size=32, depth=depth, filters=2)
    out = model.predict_on_batch(np.zeros((2, 32, 32, 3), np.float32))
    assert out.shape == (2, 32, 32, 1)
    assert sum(isinstance(layer, keras.layers.MaxPooling2D) for layer in model.layers) == depth


def test_filters_double_per_level_and_bilinear_option():
    model = build_unet(image_size=16, depth=2, filters=3, upsampling="bilinear", batch_norm=True,
                       dropout=0.1)
    assert model.get_layer("enc0_conv1").filters == 3
    assert model.get_layer("enc1_conv1").filters == 6
    assert model.get_layer("bottleneck_conv1").filters == 12
    assert isinstance(model.get_layer("up0"), keras.layers.UpSampling2D)
    assert model.get_layer("enc0_bn1") is not None


def test_output_is_float32_probability_under_bf16_policy():
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_bfloat16")
    try:
        model = build_unet(image_size=16, depth=2, filters=2)
    finally:
        keras.config.set_dtype_policy(previous)
    assert model.get_layer("enc0_conv1").compute_dtype == "bfloat16"
    out = model(np.full((1, 16, 16, 3), 255.0, np.float32))
    assert out.dtype == "float32"
    assert 0.0 <= float(np.min(out)) and float(np.max(out)) <= 1.0


def test_bad_shapes_raise_config_errors():
    with pytest.raises(ConfigError, match="not divisible by 2\\^model.depth=16"):
        build_unet(image_size=40, depth=4)
    with pytest.raises(ConfigError, match="model.depth=0"):
        build_unet(image_size=32, depth=0)
    with pytest.raises(ConfigError, match="model.filters=0"):
        build_unet(image_size=32, filters=0)
    with pytest.raises(ConfigError, match="upsampling"):
        build_unet(image_size=32, upsampling="nearest")


def test_build_model_from_config():
    cfg = OmegaConf.create({"name": "unet", "depth": 2, "filters": 4, "kernel_size": 3,
                            "batch_norm": False, "dropout": 0.0, "upsampling": "transpose"})
    assert build_model(cfg, 32).output_shape == (None, 32, 32, 1)
    with pytest.raises(ConfigError, match="model.name"):
        build_model(OmegaConf.create({"name": "segformer"}), 32)
    with pytest.raises(ConfigError, match="model.filter is not an option"):  # +model.filter=8
        build_model(OmegaConf.create({"name": "unet", "filter": 8}), 32)
