"""HD95 and NSD against hand-computed cases, a brute-force reference, and the empty-mask
conventions."""

from __future__ import annotations

import math

import numpy as np
import pytest

from segkit.boundary import boundary_scores


def square(size=32, top=10, left=10, side=10):
    m = np.zeros((size, size), bool)
    m[top:top + side, left:left + side] = True
    return m


def brute(pred, truth, tau):
    """Reference: boundary pixels by their 4-neighbours, all pairwise distances."""
    def edge(m):
        p = np.pad(m, 1)
        inner = p[1:-1, 1:-1] & p[:-2, 1:-1] & p[2:, 1:-1] & p[1:-1, :-2] & p[1:-1, 2:]
        return np.argwhere(m & ~inner)

    a, b = edge(pred), edge(truth)
    d = np.sqrt(((a[:, None, :] - b[None, :, :]) ** 2).sum(-1))
    d_ab, d_ba = d.min(axis=1), d.min(axis=0)
    hd95 = max(np.percentile(d_ab, 95), np.percentile(d_ba, 95))
    nsd = ((d_ab <= tau).sum() + (d_ba <= tau).sum()) / (len(d_ab) + len(d_ba))
    return hd95, nsd


def test_identical_masks_are_perfect():
    assert boundary_scores(square(), square()) == (0.0, 1.0)


def test_a_shift_by_hand():
    """A 10x10 square against itself moved 3 px right: the left and right edges are 3 px
    apart, the top and bottom rows overlap except at their 3 outer pixels."""
    hd95, nsd = boundary_scores(square(left=13), square(), tau=2)
    assert hd95 == pytest.approx(3.0)
    # Each boundary has 36 pixels. Within 2 px of the other boundary: 9 of each 10-pixel
    # row (the overlap 7, then 1 and 2 px past the corner), 4 of the 8 inner-facing column
    # pixels (1 and 2 px from the other square's top and bottom rows; 3 px from its side),
    # none of the outer column (3 px away): 22 of 36, the same both ways by symmetry.
    assert nsd == pytest.approx(44 / 72)


@pytest.mark.parametrize("seed", range(5))
def test_random_shapes_match_the_brute_force_reference(seed):
    rng = np.random.default_rng(seed)
    pred = np.zeros((40, 50), bool)
    truth = np.zeros((40, 50), bool)
    for m in (pred, truth):
        for _ in range(3):
            r, c = rng.integers(0, 35), rng.integers(0, 45)
            m[r:r + rng.integers(2, 15), c:c + rng.integers(2, 15)] = True
    hd95, nsd = boundary_scores(pred, truth, tau=1.5)
    ref_hd95, ref_nsd = brute(pred, truth, 1.5)
    assert hd95 == pytest.approx(ref_hd95) and nsd == pytest.approx(ref_nsd)


def test_masks_touching_the_image_border():
    truth = np.zeros((20, 20), bool)
    truth[:, :8] = True  # the image border counts as a boundary
    pred = np.zeros((20, 20), bool)
    pred[:, :10] = True
    assert boundary_scores(pred, truth, tau=1) == pytest.approx(brute(pred, truth, 1))


def test_empty_mask_conventions():
    empty = np.zeros((16, 16), bool)
    assert boundary_scores(empty, empty) == (0.0, 1.0)
    hd95, nsd = boundary_scores(square(16, 2, 2, 5), empty)
    assert math.isnan(hd95) and nsd == 0.0
    hd95, nsd = boundary_scores(empty, square(16, 2, 2, 5))
    assert math.isnan(hd95) and nsd == 0.0
    with pytest.raises(ValueError, match="differ in size"):
        boundary_scores(empty, np.zeros((8, 8), bool))
