"""Model builders: shapes, dtypes, parameter counts, save/load and option errors."""

from __future__ import annotations

import functools
import inspect

import keras
import numpy as np
import pytest
from omegaconf import OmegaConf

from segkit.errors import ConfigError
from segkit.models import (
    MODELS,
    build_attention_unet,
    build_encoder_unet,
    build_model,
    build_resunet,
    build_unet,
)
from segkit.precision import float32_copy
from tests.helpers import ROOT, random_data
from tests.helpers.policy import dtype_policy

BUILDERS = {name: MODELS.get(name).build_fn() for name in MODELS}


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
    with dtype_policy("mixed_bfloat16"):
        model = build_unet(image_size=16, depth=2, filters=2)
    assert model.get_layer("enc0_conv1").compute_dtype == "bfloat16"
    out = model(np.full((1, 16, 16, 3), 255.0, np.float32))
    assert out.dtype == "float32"
    assert float(np.min(out)) >= 0.0 and float(np.max(out)) <= 1.0


def test_bad_shapes_raise_config_errors():
    with pytest.raises(ConfigError, match="not divisible by 2\\^model.depth=16"):
        build_unet(image_size=40, depth=4)
    with pytest.raises(ConfigError, match="model.depth=0"):
        build_unet(image_size=32, depth=0)
    with pytest.raises(ConfigError, match="model.filters=0"):
        build_unet(image_size=32, filters=0)
    with pytest.raises(ConfigError, match="upsampling"):
        build_unet(image_size=32, upsampling="nearest")
    with pytest.raises(ConfigError, match="model.kernel_size=4"):
        build_unet(image_size=32, kernel_size=4)


def test_build_model_from_config():
    cfg = OmegaConf.create({"name": "unet", "depth": 2, "filters": 4, "kernel_size": 3,
                            "batch_norm": False, "dropout": 0.0, "upsampling": "transpose"})
    assert build_model(cfg, 32).output_shape == (None, 32, 32, 1)
    with pytest.raises(ConfigError, match="model.name"):
        build_model(OmegaConf.create({"name": "segformer"}), 32)
    with pytest.raises(ConfigError, match="model.filter is not an option"):  # +model.filter=8
        build_model(OmegaConf.create({"name": "unet", "filter": 8}), 32)


# Small settings of every builder (and every encoder) for quick tests.
VARIANTS = {
    "unet": {"depth": 2, "filters": 4},
    "resunet": {"depth": 2, "filters": 4, "batch_norm": True, "dropout": 0.1},
    "attention_unet": {"depth": 2, "filters": 4, "upsampling": "bilinear"},
    "encoder_unet-resnet50": {"encoder": "resnet50", "decoder_filters": [16, 8, 8, 4, 4]},
    "encoder_unet-efficientnetb0": {"encoder": "efficientnetb0",
                                    "decoder_filters": [16, 8, 8, 4, 4]},
    "encoder_unet-mobilenetv2": {"encoder": "mobilenetv2", "decoder_filters": [16, 8, 8, 4, 4],
                                 "upsampling": "transpose"},
}
# keras.applications encoders without their classifier (include_top=False).
ENCODER_PARAMS = {"resnet50": 23_587_712, "efficientnetb0": 4_049_571, "mobilenetv2": 2_257_984}


def _build(variant: str) -> keras.Model:
    return BUILDERS[variant.split("-")[0]](image_size=32, **VARIANTS[variant])


_built = functools.cache(_build)  # float32 builds, shared by the tests that only read them


def _images():
    return random_data(2, 32)[0].astype(np.float32)


def test_every_conf_model_composes_and_builds(compose_cfg):
    stems = {p.stem for p in (ROOT / "conf" / "model").glob("*.yaml")}
    assert stems == set(BUILDERS)
    for name in sorted(stems):
        cfg = compose_cfg(f"model={name}", "data.image_size=64")
        options = set(inspect.signature(BUILDERS[name]).parameters) - {"image_size", "channels"}
        assert set(cfg.model) - {"name"} == options  # every option is in the yaml, documented
        model = build_model(cfg.model, cfg.data.image_size)
        assert model.output_shape == (None, 64, 64, 1)


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_float32_probabilities_under_bf16_policy(variant):
    with dtype_policy("mixed_bfloat16"):
        model = _build(variant)
    assert model.input_shape == (None, 32, 32, 3)
    assert model.get_layer("dec0_conv1").compute_dtype == "bfloat16"
    out = model(_images())
    assert out.shape == (2, 32, 32, 1) and out.dtype == "float32"
    assert float(np.min(out)) >= 0.0 and float(np.max(out)) <= 1.0


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_float32_copy_of_a_bf16_model_computes_the_float32_models_output(variant):
    """Inference and exports run on float32_copy: every layer float32, the same weights, and
    the float32 build's output given those weights (a bf16 call differs by ~1e-3)."""
    with dtype_policy("mixed_bfloat16"):
        mixed = _build(variant)
    float32 = _build(variant)
    float32.set_weights(mixed.get_weights())
    copy = float32_copy(mixed)
    assert {layer.dtype_policy.name for layer in copy._flatten_layers()} == {"float32"}
    assert copy.count_params() == mixed.count_params() and copy.name == mixed.name
    x = _images()
    np.testing.assert_allclose(copy(x), float32(x), atol=1e-6)
    assert np.abs(np.asarray(mixed(x)) - np.asarray(float32(x))).max() > 1e-5
    assert float32_copy(float32) is float32  # already float32: no copy


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_save_load_round_trip_safe_mode(variant, tmp_path):
    model, x = _built(variant), _images()
    path = tmp_path / f"{variant}.keras"
    model.save(path)
    loaded = keras.models.load_model(path, safe_mode=True)
    assert loaded.count_params() == model.count_params()
    # Eager calls (no tf.function tracing of the large encoders): seconds faster.
    np.testing.assert_allclose(loaded(x, training=False), model(x, training=False), atol=1e-6)


def _conv_params(cin, cout, k=1, bias=True):
    return k * k * cin * cout + (cout if bias else 0)


def test_parameter_counts_by_hand():
    depth, f = 3, 4
    unet = build_unet(32, depth, f).count_params()
    levels = [f * 2**i for i in range(depth)]
    # resunet = unet + a 1x1 projection shortcut (with bias, no BN) on every block.
    block_inputs = [3, *levels, *[2 * c for c in levels]]  # encoder, bottleneck, decoder
    block_outputs = [*levels, f * 2**depth, *levels]
    shortcuts = sum(_conv_params(i, o) for i, o in zip(block_inputs, block_outputs, strict=True))
    assert build_resunet(32, depth, f).count_params() == unet + shortcuts
    # attention_unet = unet + per level: theta (2x2, no bias), phi (1x1 from the coarser
    # 2c channels), psi (1x1 to one channel).
    gates = sum(_conv_params(c, c // 2, 2, bias=False) + _conv_params(2 * c, c // 2)
                + _conv_params(c // 2, 1) for c in levels)
    assert build_attention_unet(32, depth, f).count_params() == unet + gates


@pytest.mark.parametrize("encoder", sorted(ENCODER_PARAMS))
def test_encoder_unet_parameter_counts(encoder):
    model = _built(f"encoder_unet-{encoder}")
    features = model.get_layer(f"{encoder}_encoder")
    assert features.count_params() == ENCODER_PARAMS[encoder]
    decoder = model.count_params() - features.count_params()
    assert 0 < decoder < 300_000  # a 4-16 channel decoder on 2048-1280-channel features


def test_freeze_encoder_trains_only_the_decoder():
    model = build_encoder_unet(32, "mobilenetv2", decoder_filters=[8, 8, 8, 4, 4],
                               freeze_encoder=True)
    assert not model.get_layer("mobilenetv2_encoder").trainable_weights
    assert model.trainable_weights
    assert all(w.path.startswith(("up", "dec", "mask")) for w in model.trainable_weights)


@pytest.mark.parametrize("encoder, module", [("resnet50", "resnet50"),
                                             ("mobilenetv2", "mobilenet_v2")])
def test_encoder_preprocessing_matches_keras_applications(encoder, module):
    model = _built(f"encoder_unet-{encoder}")
    preprocess = keras.Model(model.input, model.get_layer("preprocess").output)
    x = _images()
    expected = getattr(keras.applications, module).preprocess_input(x.copy())
    np.testing.assert_allclose(preprocess(x), expected, atol=1e-5)
    assert not model.get_layer("preprocess").trainable_weights


@pytest.mark.parametrize("builder, kwargs, key", [
    (build_resunet, {"depth": 3, "image_size": 36}, "data.image_size=36"),
    (build_resunet, {"kernel_size": 2}, "model.kernel_size=2"),
    (build_attention_unet, {"dropout": 1.0}, "model.dropout=1.0"),
    (build_attention_unet, {"upsampling": "nearest"}, "model.upsampling='nearest'"),
    (build_attention_unet, {"filters": 0}, "model.filters=0"),
    (build_encoder_unet, {"encoder": "vgg16"}, "model.encoder='vgg16' is unknown: use one of"),
    (build_encoder_unet, {"encoder_weights": "coco"}, "model.encoder_weights='coco'"),
    (build_encoder_unet, {"image_size": 48}, "data.image_size=48 is not divisible by 32"),
    (build_encoder_unet, {"decoder_filters": [8, 8]}, "model.decoder_filters=\\[8, 8\\]"),
    (build_encoder_unet, {"upsampling": "nearest"}, "model.upsampling='nearest'"),
])
def test_bad_options_raise_one_line_config_errors(builder, kwargs, key):
    kwargs = {"image_size": 32, **kwargs}
    with pytest.raises(ConfigError, match=key) as err:
        builder(**kwargs)
    assert "\n" not in str(err.value)
