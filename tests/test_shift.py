"""Centre-shift robustness: the augment=shift and shift_mild presets (albumentations from
YAML, checked like the others) and benchmarks/shift_eval.py's fixed, seeded corruptions."""

from __future__ import annotations

import json

import numpy as np
import pytest

from benchmarks.shift_eval import SHIFTS, corrupt, render
from segkit.config import validate
from tests.helpers import random_data


@pytest.mark.parametrize("option", ["shift", "shift_mild"])
def test_the_shift_presets_compose_validate_and_keep_masks_binary(compose_cfg, option):
    from segkit.data.augment import build_compose

    cfg = compose_cfg(f"augment={option}")
    validate(cfg)
    names = [t["name"] for t in cfg.augment.transforms]
    for wanted in ("HueSaturationValue", "RandomGamma", "Affine", "Downscale",
                   "ImageCompression", "OneOf"):
        assert wanted in names
    compose = build_compose(cfg.augment)
    images, masks = random_data(6, 64, seed=1, masks="box")
    for image, mask in zip(images, masks, strict=True):
        out = compose(image=image, mask=mask)
        assert out["image"].shape == image.shape and out["image"].dtype == np.uint8
        assert set(np.unique(out["mask"])) <= {0, 1}


def test_corruptions_are_seeded_and_grow_with_severity():
    images, masks = random_data(4, 64, seed=0, masks="box", smooth=True)
    for name, (_, entries) in SHIFTS.items():
        assert len(entries) == 3, name
        again = corrupt(images, masks, entries[0], seed=3)
        first = corrupt(images, masks, entries[0], seed=3)
        assert np.array_equal(again[0], first[0]) and np.array_equal(again[1], first[1])
        change = [np.abs(corrupt(images, masks, e, 3)[0].astype(float) - images).mean()
                  for e in entries]
        assert change[0] > 0, name
        if name != "scale":  # zooming out moves content: its change is not monotone
            assert change[0] < change[1] <= change[2] * 1.05, (name, change)


def test_only_scale_moves_the_masks():
    images, masks = random_data(3, 64, seed=0, masks="box")
    for name, (_, entries) in SHIFTS.items():
        _, moved = corrupt(images, masks, entries[-1], seed=0)
        assert np.array_equal(moved, masks) == (name != "scale"), name
    _, zoomed = corrupt(images, masks, SHIFTS["scale"][1][-1], seed=0)
    assert zoomed.sum() == pytest.approx(masks.sum() * 0.55 ** 2, rel=0.2)


def test_the_results_section_lists_every_shift_and_model():
    res = {"m": {"model_uri": "runs:/x/model", "clean": 0.8, "mean_shifted": 0.7,
                 "shifts": {n: [0.79, 0.75, 0.6] for n in SHIFTS}}}
    text = render(json.loads(json.dumps(res)))
    assert "| none | – | 0.8000 |" in text and "| mean over shifts | – | 0.7000 |" in text
    assert text.count("| jpeg (") == 3
