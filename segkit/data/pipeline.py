"""tf.data input pipelines over in-memory uint8 arrays (cast to float only per batch)."""

from __future__ import annotations

import numpy as np
import tensorflow as tf


def _flips(image: tf.Tensor, mask: tf.Tensor, seed: tf.Tensor):
    """Random horizontal/vertical flip and 90-degree rotation, identical for image and mask."""
    both = tf.concat([image, mask], axis=-1)
    seeds = tf.random.experimental.stateless_split(seed, 3)
    both = tf.image.stateless_random_flip_left_right(both, seeds[0])
    both = tf.image.stateless_random_flip_up_down(both, seeds[1])
    k = tf.random.stateless_uniform([], seeds[2], 0, 4, dtype=tf.int32)
    both = tf.image.rot90(both, k)
    return both[..., :3], both[..., 3:]


AUGMENTATIONS = {"none": None, "flips": _flips}


def _to_float(images: tf.Tensor, masks: tf.Tensor):
    # Pixels stay in 0-255: the model's first layer rescales to [0, 1], so a saved model
    # takes raw RGB and prediction needs no separate preprocessing step.
    return tf.cast(images, tf.float32), tf.cast(masks, tf.float32)


def make_dataset(
    images: np.ndarray,
    masks: np.ndarray,
    batch_size: int,
    *,
    training: bool,
    seed: int = 0,
    augment: str = "none",
) -> tf.data.Dataset:
    """Batches of (float32 image 0-255, float32 mask {0,1}).

    Training pipelines shuffle the whole set every epoch (seeded) and augment; evaluation
    pipelines keep the order so predictions line up with names.
    """
    if augment not in AUGMENTATIONS:
        raise ValueError(f"unknown augmentation {augment!r}: use one of {sorted(AUGMENTATIONS)}")
    ds = tf.data.Dataset.from_tensor_slices((images, masks))
    if training:
        ds = ds.shuffle(len(images), seed=seed, reshuffle_each_iteration=True)
        fn = AUGMENTATIONS[augment]
        if fn is not None:
            counter = tf.data.Dataset.counter(start=seed)
            ds = tf.data.Dataset.zip((ds, counter)).map(
                lambda pair, i: fn(pair[0], pair[1], tf.stack([i, tf.constant(seed, tf.int64)])),
                num_parallel_calls=tf.data.AUTOTUNE,
            )
    ds = ds.batch(batch_size).map(_to_float, num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)
