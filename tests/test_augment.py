"""Albumentations augmentation from conf/augment/*.yaml inside the tf.data pipeline."""

from __future__ import annotations

import numpy as np
import pytest
from omegaconf import OmegaConf

from segkit.data.augment import ALLOWED, build_compose, tf_augment
from segkit.data.augmentations import AUGMENTATIONS
from segkit.data.pipeline import make_dataset
from segkit.errors import ConfigError
from tests.helpers import ROOT, random_data

CONFIGS = sorted((ROOT / "conf" / "augment").glob("*.yaml"))
SPATIAL = {"HorizontalFlip", "VerticalFlip", "RandomRotate90", "Affine", "OneOf",
           "ElasticTransform", "GridDistortion"}


def _data(n: int = 16, size: int = 64):
    """Random images and rectangle masks; uint8 like the cached arrays."""
    return random_data(n, size)


def _batches(ds):
    return [(x.numpy(), y.numpy()) for x, y in ds]


def _strong():
    return OmegaConf.load(ROOT / "conf" / "augment" / "strong.yaml")


def test_options_and_allowlist():
    assert {p.stem for p in CONFIGS} == set(AUGMENTATIONS)
    import albumentations as A

    assert all(hasattr(A, name) for name in ALLOWED)


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_every_config_gives_a_working_pipeline(path):
    cfg = OmegaConf.load(path)
    assert cfg.name == path.stem
    images, masks = _data()
    batches = _batches(make_dataset(images, masks, 4, training=True, seed=1, augment=cfg))
    assert len(batches) == 4
    for x, y in batches:
        assert x.shape == (4, 64, 64, 3) and y.shape == (4, 64, 64, 1)
        assert x.dtype == np.float32 and y.dtype == np.float32
        assert set(np.unique(y)) <= {0.0, 1.0}
    if "transforms" in cfg:  # uint8 until batching, static shapes after numpy_function
        import tensorflow as tf

        image, mask = tf_augment(cfg)(tf.constant(images[0]), tf.constant(masks[0]),
                                      tf.constant(7, tf.int64))
        assert image.dtype == tf.uint8 and mask.dtype == tf.uint8
        assert image.shape == (64, 64, 3) and mask.shape == (64, 64, 1)


def test_image_and_mask_get_the_same_spatial_transform():
    """strong's spatial transforms, all forced on and nearest for the image too: an image that
    is the mask x 255 must still be exactly the mask x 255 afterwards."""
    cfg = _strong()

    def spatial(entries):
        out = []
        for e in entries:
            if e.name not in SPATIAL:
                continue
            e = OmegaConf.to_container(e)
            e["p"] = 1.0
            if e["name"] == "OneOf":
                e["transforms"] = spatial(OmegaConf.create(e["transforms"]))
                if not e["transforms"]:  # the blurs: nothing spatial left
                    continue
            elif e["name"] in ("Affine", "ElasticTransform", "GridDistortion"):
                e["interpolation"] = 0  # cv2.INTER_NEAREST
            out.append(e)
        return out

    transforms = spatial(cfg.transforms)
    assert {"Affine", "ElasticTransform", "GridDistortion"} <= {
        t["name"] for e in transforms for t in [e, *e.get("transforms", [])]}
    _, masks = _data()
    images = np.repeat(masks * 255, 3, axis=-1).astype(np.uint8)
    ds = make_dataset(images, masks, 16, training=True, seed=3,
                      augment={"name": "strong", "transforms": transforms})
    x, y = _batches(ds)[0]
    np.testing.assert_array_equal(x[..., :1], y * 255)
    np.testing.assert_array_equal(x[..., 0], x[..., 2])
    assert not any(np.array_equal(y[i], m) for i in range(16) for m in masks)  # all warped
    assert 0 < y.mean() < 1


def test_same_seed_same_batches_different_seed_different():
    images, masks = _data()

    def two_epochs(seed):
        ds = make_dataset(images, masks, 4, training=True, seed=seed, augment=_strong())
        return _batches(ds), _batches(ds)

    a, b, c = two_epochs(5), two_epochs(5), two_epochs(6)
    for epoch in range(2):
        for (xa, ya), (xb, yb) in zip(a[epoch], b[epoch], strict=True):
            np.testing.assert_array_equal(xa, xb)
            np.testing.assert_array_equal(ya, yb)
    assert not np.array_equal(a[0][0][0], c[0][0][0])
    # A new draw each epoch: sort the epoch's masks so only augmentation, not order, counts.
    def masks_of(epoch):
        return sorted(m.tobytes() for _, y in epoch for m in y)

    assert masks_of(a[0]) != masks_of(a[1])


def test_flips_and_none_still_take_a_name():
    images, masks = _data(4, 8)
    for name in ("none", "flips"):
        assert len(_batches(make_dataset(images, masks, 2, training=True, augment=name))) == 2
    with pytest.raises(ValueError, match="transforms"):
        make_dataset(images, masks, 2, training=True, augment="light")
    with pytest.raises(ValueError, match="unknown augmentation 'mixup'"):
        make_dataset(images, masks, 2, training=True, augment={"name": "mixup"})


@pytest.mark.parametrize("transforms, expected", [
    ([{"name": "HorizontalFlip"}, {"name": "Lambda"}],
     "augment.transforms[1].name='Lambda' is not an allowed transform: use one of OneOf, "),
    ([{"name": "OneOf", "transforms": [{"name": "GaussianBlur"}, {"name": "Resize"}]}],
     "augment.transforms[0].transforms[1].name='Resize' is not an allowed transform"),
    ([{"name": "GaussianBlur", "blur_lmit": 3}],
     "augment.transforms[0] (GaussianBlur): unknown argument(s) blur_lmit: GaussianBlur takes "
     "blur_limit, sigma_limit, p"),
    ([{"name": "VerticalFlip"}, {"name": "Affine", "scale": "big"}],
     "augment.transforms[1] (Affine): "),
    ([{"name": "HorizontalFlip", "p": 2}], "augment.transforms[0] (HorizontalFlip): "),
    ([], "augment.transforms must be a non-empty list"),
])
def test_bad_transforms_give_one_line_errors(transforms, expected):
    cfg = OmegaConf.create({"name": "strong", "transforms": transforms})
    with pytest.raises(ConfigError) as err:
        build_compose(cfg)
    msg = str(err.value)
    assert msg.startswith(expected) and "\n" not in msg
    images, masks = _data(4, 8)
    with pytest.raises(ConfigError):  # raised when the pipeline is built, not while iterating
        make_dataset(images, masks, 2, training=True, augment=cfg)
