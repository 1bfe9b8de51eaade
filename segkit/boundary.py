"""Boundary metrics per image: the 95th-percentile Hausdorff distance (HD95) and the
normalized surface Dice (NSD, Nikolov et al. 2021), in pixels of the image they are given
(segkit scores them at each image's original resolution).

Conventions (as MONAI documents its own; Metrics Reloaded asks that they be stated):

- The boundary of a mask is its foreground pixels with a background 4-neighbour (or on the
  image border); distances are Euclidean, from scipy.ndimage's exact distance transform.
- HD95 = max(95th percentile of the distances from the predicted boundary to the true one,
  the same from the true boundary to the predicted one), MONAI's definition.
- NSD at tolerance ``tau`` = (predicted boundary pixels within ``tau`` of the true boundary
  + true boundary pixels within ``tau`` of the predicted one) / (all boundary pixels).
- Both masks empty: HD95 = 0 and NSD = 1 (nothing to find, nothing found).
  Exactly one empty: HD95 is undefined (NaN, left out of the mean and counted) and NSD = 0.

Memory: the distance transforms run on the bounding box of both masks plus ``tau`` (and a
pixel), not on the whole image.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

FOUR = ndimage.generate_binary_structure(2, 1)


def _boundary(mask: np.ndarray) -> np.ndarray:
    padded = np.pad(mask, 1, constant_values=False)
    inner = ndimage.binary_erosion(padded, structure=FOUR)[1:-1, 1:-1]
    return mask & ~inner


def _crop(pred: np.ndarray, truth: np.ndarray, margin: int) -> tuple[np.ndarray, np.ndarray]:
    rows, cols = np.nonzero(pred | truth)
    r0, r1 = max(rows.min() - margin, 0), rows.max() + margin + 1
    c0, c1 = max(cols.min() - margin, 0), cols.max() + margin + 1
    return pred[r0:r1, c0:c1], truth[r0:r1, c0:c1]


def _distances(from_edge: np.ndarray, to_edge: np.ndarray) -> np.ndarray:
    """Distance from each pixel of ``from_edge`` to the nearest pixel of ``to_edge``."""
    return ndimage.distance_transform_edt(~to_edge)[from_edge]


def boundary_scores(pred: np.ndarray, truth: np.ndarray, tau: float = 2.0
                    ) -> tuple[float, float]:
    """(HD95, NSD at ``tau`` pixels) of one binary prediction against its truth."""
    pred, truth = np.asarray(pred, bool), np.asarray(truth, bool)
    if pred.shape != truth.shape:
        raise ValueError(f"masks differ in size: {pred.shape} vs {truth.shape}")
    if not pred.any() and not truth.any():
        return 0.0, 1.0
    if not pred.any() or not truth.any():
        return float("nan"), 0.0
    pred, truth = _crop(pred, truth, int(np.ceil(tau)) + 1)
    p_edge, t_edge = _boundary(pred), _boundary(truth)
    d_pt, d_tp = _distances(p_edge, t_edge), _distances(t_edge, p_edge)
    hd95 = max(np.percentile(d_pt, 95), np.percentile(d_tp, 95))
    nsd = ((d_pt <= tau).sum() + (d_tp <= tau).sum()) / (d_pt.size + d_tp.size)
    return float(hd95), float(nsd)
