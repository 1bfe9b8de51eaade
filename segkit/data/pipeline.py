"""tf.data input pipelines over in-memory uint8 arrays (cast to float only per batch)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import numpy as np
import tensorflow as tf

from segkit.data.augmentations import AUGMENTATIONS
from segkit.registry import plain


def _flips(image: tf.Tensor, mask: tf.Tensor, seed: tf.Tensor):
    """Random horizontal/vertical flip and 90-degree rotation, identical for image and mask."""
    both = tf.concat([image, mask], axis=-1)
    seeds = tf.random.experimental.stateless_split(seed, 3)
    both = tf.image.stateless_random_flip_left_right(both, seeds[0])
    both = tf.image.stateless_random_flip_up_down(both, seeds[1])
    k = tf.random.stateless_uniform([], seeds[2], 0, 4, dtype=tf.int32)
    both = tf.image.rot90(both, k)
    return both[..., :3], both[..., 3:]


def _to_float(images: tf.Tensor, masks: tf.Tensor):
    # Pixels stay in 0-255: the model's first layer rescales to [0, 1], so a saved model
    # takes raw RGB and prediction needs no separate preprocessing step.
    return tf.cast(images, tf.float32), tf.cast(masks, tf.float32)


def no_augment(spec: Mapping[str, Any], seed: int) -> None:
    """``augment=none``: no map function."""
    return None


def flips_augment(spec: Mapping[str, Any], seed: int):
    """``augment=flips``: seeded flips and 90-degree rotations of image and mask together."""
    base = tf.constant(seed, tf.int64)
    return lambda image, mask, s: _flips(image, mask, tf.stack([s, base]))


def _augment_fn(augment: str | Mapping[str, Any], seed: int):
    """The map function ``(image, mask, int64 element seed) -> (image, mask)``, or None."""
    spec = {"name": augment} if isinstance(augment, str) else plain(augment)
    name = spec.get("name")
    if name not in AUGMENTATIONS:
        raise ValueError(f"unknown augmentation {name!r}: use one of "
                         f"{', '.join(AUGMENTATIONS)}")
    entry = AUGMENTATIONS.get(name)
    if "transforms" in {f.name for f in dataclasses.fields(entry.options)} and (
            spec.get("transforms") is None):
        raise ValueError(f"augment={name} needs its transforms list: pass the augment config "
                         f"node (conf/augment/{name}.yaml), not the name alone")
    return entry.build_fn()(spec, seed)


def make_dataset(
    images: np.ndarray,
    masks: np.ndarray,
    batch_size: int,
    *,
    training: bool,
    seed: int = 0,
    augment: str | Mapping[str, Any] = "none",
) -> tf.data.Dataset:
    """Batches of (float32 image 0-255, float32 mask {0,1}).

    ``augment`` is the augment config node (``name``, and ``transforms`` for albumentations
    options) or just a name. Training pipelines shuffle the whole set every epoch (seeded) and
    augment; evaluation pipelines keep the order so predictions line up with names.

    Augmentation is reproducible and parallel: every element gets its own int64 seed from
    ``Dataset.random(seed)``, which draws new seeds every epoch and the same ones in every run
    with the same ``seed``, so the parallel map's result does not depend on thread timing.
    """
    fn = _augment_fn(augment, seed)
    ds = tf.data.Dataset.from_tensor_slices((images, masks))
    if training:
        ds = ds.shuffle(len(images), seed=seed, reshuffle_each_iteration=True)
        if fn is not None:
            seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True)
            ds = tf.data.Dataset.zip((ds, seeds)).map(
                lambda pair, s: fn(pair[0], pair[1], s), num_parallel_calls=tf.data.AUTOTUNE)
    ds = ds.batch(batch_size).map(_to_float, num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)
