"""Albumentations augmentation declared in YAML (``conf/augment/*.yaml``), run inside tf.data.

An augment config's ``transforms`` list, e.g.::

    transforms:
      - {name: HorizontalFlip, p: 0.5}
      - {name: OneOf, p: 0.3, transforms: [{name: GaussianBlur}, {name: MotionBlur}]}

becomes an ``albumentations.Compose``. Names are looked up only in albumentations' namespace
and only among ``ALLOWED`` (size-preserving spatial and pixel transforms, and the OneOf/SomeOf
containers), so a config cannot call anything else. The mask gets the image's spatial
transform with nearest interpolation (forced for every transform), so it stays {0, 1}.

TensorFlow is imported only by ``tf_augment``: a config check can call ``build_compose``
without paying for it.
"""

from __future__ import annotations

import inspect
import queue
import random
from collections.abc import Mapping
from typing import Any

import albumentations as A
import cv2
import numpy as np

from segkit.errors import ConfigError
from segkit.registry import plain

CONTAINERS = ("OneOf", "SomeOf")  # their entries hold a nested ``transforms`` list
# Transforms that keep the image size (the pipeline's shapes are static) and treat the mask
# as a label map. Anything else in albumentations is refused.
ALLOWED = CONTAINERS + (
    # spatial: applied to image and mask alike
    "HorizontalFlip", "VerticalFlip", "RandomRotate90", "Transpose", "D4", "Affine", "Rotate",
    "SafeRotate", "Perspective", "ElasticTransform", "GridDistortion", "OpticalDistortion",
    "CoarseDropout", "GridDropout",
    # pixel: image only
    "RandomBrightnessContrast", "HueSaturationValue", "ColorJitter", "RGBShift", "RandomGamma",
    "CLAHE", "GaussianBlur", "MotionBlur", "MedianBlur", "GaussNoise", "Sharpen",
    "ImageCompression", "Downscale",
)


def _one_line(err: Exception) -> str:
    """An instantiation error as one line: pydantic's report reduced to its first error per
    argument (a union type reports one error per alternative)."""
    cause = err.__cause__
    if cause is not None and hasattr(cause, "errors"):  # pydantic.ValidationError
        first: dict = {}
        for e in cause.errors():
            first.setdefault(e["loc"][0] if e["loc"] else "value", e)
        return "; ".join(f"{arg}: {e['msg']} (got {e['input']!r})" for arg, e in first.items())
    return " ".join(str(err).split())


def _build(entries: Any, where: str) -> list:
    """Instantiate a list of ``{name: ..., **kwargs}`` entries; errors name ``where[i]``."""
    if not isinstance(entries, (list, tuple)) or not entries:
        raise ConfigError(f"{where} must be a non-empty list of {{name: ..., p: ...}} entries")
    built = []
    for i, entry in enumerate(entries):
        key = f"{where}[{i}]"
        if not isinstance(entry, Mapping) or "name" not in entry:
            raise ConfigError(f"{key} must be a mapping with a name, got {entry!r}")
        kwargs = dict(entry)
        name = kwargs.pop("name")
        if name not in ALLOWED or not hasattr(A, name):
            raise ConfigError(f"{key}.name={name!r} is not an allowed transform: use one of "
                              f"{', '.join(ALLOWED)}")
        cls = getattr(A, name)
        if name in CONTAINERS:
            kwargs["transforms"] = _build(kwargs.get("transforms"), f"{key}.transforms")
        else:  # YAML lists -> tuples, the form of albumentations' (low, high) ranges
            kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in kwargs.items()}
        params = [p for p in inspect.signature(cls).parameters if p != "strict"]
        unknown = [k for k in kwargs if k not in params]
        if unknown:
            raise ConfigError(f"{key} ({name}): unknown argument(s) {', '.join(unknown)}: "
                              f"{name} takes {', '.join(params)}")
        try:
            built.append(cls(**kwargs))
        except (TypeError, ValueError) as err:
            raise ConfigError(f"{key} ({name}): {_one_line(err)}") from None
    return built


def _spec(cfg: Any) -> dict:
    """The augment config node (DictConfig or dict) as plain Python containers."""
    return plain(cfg)


def build_compose(cfg: Any) -> A.Compose:
    """The ``albumentations.Compose`` of ``cfg.transforms``; ConfigError (one line) if invalid."""
    transforms = _build(_spec(cfg).get("transforms"), "augment.transforms")
    return A.Compose(transforms, mask_interpolation=cv2.INTER_NEAREST)


def tf_augment(cfg: Any, seed: int = 0):
    """A tf.data map function ``(uint8 image, uint8 mask, int64 seed) -> (image, mask)``.

    The per-element seed reseeds the Compose that runs it (one per concurrent call, kept in a
    pool across epochs: a Compose is not thread-safe), so the result depends only on the
    element and its seed, never on which of tf.data's parallel threads ran it: the map can use
    ``num_parallel_calls=AUTOTUNE`` and stay reproducible.
    """
    import tensorflow as tf  # not at the top: config checks import this module without it

    spec = _spec(cfg)
    pool: queue.SimpleQueue = queue.SimpleQueue()
    pool.put(build_compose(spec))  # a bad config fails now, with its one-line error

    def apply(image: np.ndarray, mask: np.ndarray, seed: np.int64):
        try:
            compose = pool.get_nowait()
        except queue.Empty:  # more concurrent calls than ever before
            compose = build_compose(spec)
        s = int(seed) % 2**64
        # One generator pair shared by every transform: Compose.set_random_seed would seed each
        # transform with the same value, so e.g. both flips would always fire together.
        compose.set_random_state(np.random.default_rng(s), random.Random(s))
        try:
            out = compose(image=image, mask=mask)
        finally:
            pool.put(compose)
        if out["image"].shape != image.shape or out["mask"].shape != mask.shape:
            raise ValueError(f"augment.transforms changed the size {image.shape} -> "
                             f"{out['image'].shape}: transforms must keep the image size")
        return np.ascontiguousarray(out["image"]), np.ascontiguousarray(out["mask"])

    def fn(image: tf.Tensor, mask: tf.Tensor, seed: tf.Tensor):
        new_image, new_mask = tf.numpy_function(apply, [image, mask, seed], [tf.uint8, tf.uint8],
                                                stateful=False)
        new_image.set_shape(image.shape)  # numpy_function loses the static shapes
        new_mask.set_shape(mask.shape)
        return new_image, new_mask

    return fn
