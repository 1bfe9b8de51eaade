"""Boundary metrics per image: the 95th-percentile Hausdorff distance (HD95) and the
normalized surface Dice (NSD, Nikolov et al. 2021), in pixels of the image they are given
(segkit scores them at each image's original resolution).

Conventions (as MONAI documents its own; Metrics Reloaded asks that they be stated):

- The boundary of a mask is its foreground pixels with a background 4-neighbour (or on the
  image border); distances are Euclidean, exact: nearest boundary pixel by a k-d tree
  (scipy.spatial.cKDTree), the same values as scipy.ndimage's exact distance transform at a
  fraction of its cost (the transform visits every pixel of the box, the tree only the
  boundary pixels; the tests check one against the other).
- HD95 = max(95th percentile of the distances from the predicted boundary to the true one,
  the same from the true boundary to the predicted one), MONAI's definition.
- NSD at tolerance ``tau`` = (predicted boundary pixels within ``tau`` of the true boundary
  + true boundary pixels within ``tau`` of the predicted one) / (all boundary pixels).
- Both masks empty: HD95 = 0 and NSD = 1 (nothing to find, nothing found).
  Exactly one empty: HD95 is undefined (NaN, left out of the mean and counted) and NSD = 0.

Memory and time: the boundaries are found on the bounding box of both masks plus ``tau``
(and a pixel), not the whole image, and the trees hold boundary pixels only.
"""

from __future__ import annotations

import numpy as np
from scipy.spatial import cKDTree


def _boundary(mask: np.ndarray) -> np.ndarray:
    """Foreground pixels with a background 4-neighbour (outside the array is background):
    ``mask`` minus its erosion by the 4-neighbourhood, with array shifts."""
    p = np.pad(mask, 1, constant_values=False)
    inner = p[1:-1, 1:-1] & p[:-2, 1:-1] & p[2:, 1:-1] & p[1:-1, :-2] & p[1:-1, 2:]
    return mask & ~inner


def _crop(pred: np.ndarray, truth: np.ndarray, margin: int) -> tuple[np.ndarray, np.ndarray]:
    both = pred | truth
    rows, cols = np.flatnonzero(both.any(axis=1)), np.flatnonzero(both.any(axis=0))
    r0, r1 = max(rows[0] - margin, 0), rows[-1] + margin + 1
    c0, c1 = max(cols[0] - margin, 0), cols[-1] + margin + 1
    return pred[r0:r1, c0:c1], truth[r0:r1, c0:c1]


def _distances(from_points: np.ndarray, to_points: np.ndarray) -> np.ndarray:
    """Distance from each of ``from_points`` (K, 2) to the nearest of ``to_points``. An
    unbalanced, uncompacted tree: built faster, and the queries give the same exact
    nearest distances (measured 30% less time per image on Kvasir-SEG's masks)."""
    tree = cKDTree(to_points, balanced_tree=False, compact_nodes=False)
    distances, _ = tree.query(from_points)
    return np.asarray(distances, dtype=np.float64)


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
    p_edge, t_edge = np.argwhere(_boundary(pred)), np.argwhere(_boundary(truth))
    d_pt, d_tp = _distances(p_edge, t_edge), _distances(t_edge, p_edge)
    hd95 = max(np.percentile(d_pt, 95), np.percentile(d_tp, 95))
    nsd = ((d_pt <= tau).sum() + (d_tp <= tau).sum()) / (d_pt.size + d_tp.size)
    return float(hd95), float(nsd)


def _box(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    """(row0, row1, col0, col1) of the mask's foreground, ends exclusive; None when empty."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if not rows.size:
        return None
    return int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1


def boundary_from_probs(prob: np.ndarray, truth: np.ndarray, threshold: float,
                        tau: float = 2.0) -> tuple[float, float]:
    """(HD95, NSD) of ``prob`` (model size) upsampled bilinearly to ``truth``'s size and
    thresholded, as segkit.evaluation.resize_probs would, but resizing only the box that can
    hold foreground: a bilinear value reaches ``threshold`` only next to a model pixel that
    does, so the box is the model-size foreground's, one model pixel wider, joined with the
    truth's, plus the NSD margin. Pillow's ``box`` keeps the full resize's sampling grid."""
    from PIL import Image

    (h, w), (sh, sw) = truth.shape, prob.shape
    small, whole = _box(prob >= threshold), _box(truth)
    if small is None:
        return boundary_scores(np.zeros_like(truth), truth, tau)
    sy, sx = h / sh, w / sw
    boxes = [(max(int((small[0] - 1) * sy), 0), min(int(np.ceil((small[1] + 1) * sy)), h),
              max(int((small[2] - 1) * sx), 0), min(int(np.ceil((small[3] + 1) * sx)), w))]
    boxes += [whole] if whole is not None else []
    m = int(np.ceil(tau)) + 1
    r0, r1 = max(min(b[0] for b in boxes) - m, 0), min(max(b[1] for b in boxes) + m, h)
    c0, c1 = max(min(b[2] for b in boxes) - m, 0), min(max(b[3] for b in boxes) + m, w)
    image = Image.fromarray(prob.astype(np.float32), mode="F")
    crop = np.asarray(image.resize((c1 - c0, r1 - r0), Image.Resampling.BILINEAR,
                                   box=(c0 / sx, r0 / sy, c1 / sx, r1 / sy)))
    return boundary_scores(crop >= threshold, truth[r0:r1, c0:c1], tau)
