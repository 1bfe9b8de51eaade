"""The augmentation registry: ``augment.name`` -> options (checked here) -> the tf.data map
function that applies it (built by ``segkit.data.pipeline.make_dataset``).

``none`` and ``flips`` are built in (tf.image); ``light``, ``strong``, ``shift`` (a change
of centre: colour, illumination, scale, blur, resolution, JPEG quality) and ``shift_mild``
(the same changes, about half as often, light's affine jitter) are albumentations
transforms declared in their YAML's ``transforms`` list (``segkit.data.augment``). This module
imports neither TensorFlow nor albumentations until a check or a build needs them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from segkit.registry import Registry

AUGMENTATIONS = Registry("augment")


# stacked decorators run bottom-up: listed here in reverse of the registry order
@AUGMENTATIONS.register("flips", "segkit.data.pipeline:flips_augment")
@AUGMENTATIONS.register("none", "segkit.data.pipeline:no_augment")
@dataclass(frozen=True)
class BuiltinOptions:
    """A built-in augmentation: no options."""


# stacked decorators run bottom-up: listed here in reverse of the registry order
@AUGMENTATIONS.register("shift_mild", "segkit.data.augment:tf_augment")
@AUGMENTATIONS.register("shift", "segkit.data.augment:tf_augment")
@AUGMENTATIONS.register("strong", "segkit.data.augment:tf_augment")
@AUGMENTATIONS.register("light", "segkit.data.augment:tf_augment")
@dataclass(frozen=True)
class TransformsOptions:
    """An albumentations pipeline: ``transforms`` is its list of ``{name: ..., **kwargs}``."""

    transforms: list[Any]

    def check(self) -> None:
        # albumentations (1.3 s to import) only for the options that use it
        from segkit.data.augment import build_compose

        build_compose({"transforms": self.transforms})  # unknown transform or argument: here


def check_augment(augment_cfg: Any) -> None:
    """Check an ``augment`` config node (an unknown transform fails here, not mid-run)."""
    AUGMENTATIONS.options(augment_cfg)
