"""The one maker of random images and masks (arrays, or files under images/ and masks/)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

MASKS = ("box", "fixed", "noise")


def _shape(size: int | tuple[int, int]) -> tuple[int, int]:
    return (size, size) if isinstance(size, int) else size


def _smooth(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w]
    base = rng.integers(0, 256, 3) + 120 * np.sin(xx[..., None] / 4 + yy[..., None] / 5
                                                  + rng.random(3) * 6)
    return np.clip(base + rng.normal(0, 20, (h, w, 3)), 0, 255).astype(np.uint8)


def random_data(n: int, size: int | tuple[int, int], *, seed: int = 0, masks: str = "box",
                smooth: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """``n`` random uint8 RGB images (n, h, w, 3) and binary uint8 masks (n, h, w, 1) of 0/1;
    ``size``: an int (square) or (h, w).

    Images: uniform noise over 0..255, or ``smooth=True``: a random sine pattern plus a
    little noise, so that a model's probabilities vary smoothly across the image. Masks
    (drawn after the images, so the images never depend on them): ``box`` a h/3 x w/4
    rectangle at a random place per image, ``fixed`` rows h/4..h/2 by columns w/4..w/2 in
    every image, ``noise`` each pixel foreground with probability 0.4."""
    if masks not in MASKS:
        raise ValueError(f"masks={masks!r}: use one of {MASKS}")
    h, w = _shape(size)
    rng = np.random.default_rng(seed)
    if smooth:
        images = np.stack([_smooth(rng, h, w) for _ in range(n)])
    else:
        images = rng.integers(0, 256, (n, h, w, 3), dtype=np.uint8)
    if masks == "noise":
        return images, (rng.random((n, h, w, 1)) < 0.4).astype(np.uint8)
    out = np.zeros((n, h, w, 1), np.uint8)
    for i in range(n):
        if masks == "fixed":
            out[i, h // 4: h // 2, w // 4: w // 2] = 1
        else:
            r, c = rng.integers(1, (h // 2, w // 2))
            out[i, r: r + h // 3, c: c + w // 4] = 1
    return images, out


def write_image(path: Path, size: tuple[int, int], *, seed: int = 0,
                smooth: bool = False) -> Path:
    """One random RGB image of ``size`` (w, h) saved at ``path`` (folders made)."""
    w, h = size
    (image,), _ = random_data(1, (h, w), seed=seed, smooth=smooth)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path)
    return path


def write_pair(root: Path, name: str, size: tuple[int, int] = (40, 32), *, ext: str = ".jpg",
               mask_ext: str = ".jpg", seed: int = 0) -> None:
    """A random RGB image and its ``fixed`` rectangle mask (0/255) of ``size`` (w, h) under
    root/images and root/masks."""
    w, h = size
    (image,), (mask,) = random_data(1, (h, w), seed=seed, masks="fixed")
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(root / "images" / f"{name}{ext}")
    Image.fromarray(mask[..., 0] * 255).save(root / "masks" / f"{name}{mask_ext}")
