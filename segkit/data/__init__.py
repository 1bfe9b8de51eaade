"""Kvasir-SEG (or any images/ + masks/ folder): locate, pair, validate, split, cache, batch."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from segkit.data.cache import load_arrays
from segkit.data.dataset import DataError, Sample, discover
from segkit.data.download import ensure_dataset
from segkit.data.splits import Split, SplitError, make_split, subset

log = logging.getLogger(__name__)

PARTS = ("train", "val", "test")


@dataclass
class Prepared:
    """Decoded uint8 arrays of every part of the split, and what identifies them."""

    split: Split
    images: dict[str, np.ndarray]
    masks: dict[str, np.ndarray]
    fingerprint: str
    root: Path
    image_size: int
    samples: dict[str, Sample]  # name -> files, for scoring at original resolution

    def names(self, part: str) -> tuple[str, ...]:
        return getattr(self.split, part)


def warn_empty_masks(masks: dict[str, np.ndarray]) -> list[str]:
    """Warn, once per part, when every mask of the part is empty (no foreground pixel):
    training on it is silent otherwise, and some metrics are undefined there (see
    segkit.metrics). Returns the parts warned about."""
    empty = [part for part, m in masks.items() if len(m) and not m.any()]
    for part in empty:
        log.warning("all %d masks of the %s split are empty: Dice/IoU are 1 for an empty "
                    "prediction, AUC/AP/recall are undefined", len(masks[part]), part)
    return empty


def prepare(data_cfg, split_cfg, image_size: int | None = None) -> Prepared:
    """Everything from ``data.root`` to per-part arrays; downloads first if allowed and missing.

    ``image_size`` overrides ``data_cfg.image_size`` (a saved model dictates its own size).
    """
    size = image_size or data_cfg.image_size
    root = ensure_dataset(Path(data_cfg.root), url=data_cfg.url, sha256=data_cfg.sha256,
                          allow_download=data_cfg.download)
    samples = {s.name: s for s in discover(root)}
    split = subset(make_split(list(samples), split_cfg, root), data_cfg.limit)
    for part in PARTS:
        if not getattr(split, part):
            raise SplitError(f"the {part} part of split={split.name} is empty: "
                             "check split.* fractions and data.limit")
    wanted = sorted({n for part in PARTS for n in getattr(split, part)})
    cache_dir = Path(data_cfg.cache_dir) if data_cfg.cache_dir else None
    images, masks, fp = load_arrays([samples[n] for n in wanted], size, cache_dir,
                                    workers=data_cfg.workers)
    index = {n: i for i, n in enumerate(wanted)}
    part_images, part_masks = {}, {}
    for part in PARTS:
        rows = np.array([index[n] for n in getattr(split, part)], dtype=np.int64)
        part_images[part], part_masks[part] = images[rows], masks[rows]
    log.info("split %s: %s (dataset %s)", split.name, split.sizes(), fp[:12])
    warn_empty_masks(part_masks)
    return Prepared(split, part_images, part_masks, fp, root, size,
                    {n: samples[n] for n in wanted})


__all__ = ["DataError", "Prepared", "Sample", "Split", "SplitError", "discover", "prepare"]
