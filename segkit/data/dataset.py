"""Find image/mask pairs on disk, validate them, and decode them into fixed-size uint8 arrays."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from segkit.errors import SegkitError

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp")
MASK_THRESHOLD = 128  # Kvasir-SEG masks are JPEGs: values 0-8 and 246-255, so 128 splits them.
# A mask with more than this share of grey levels in 32-223 is not a binary mask (Kvasir-SEG
# has none at full resolution, under 1% after JPEG draft downscaling): warn, still threshold.
AMBIGUOUS_RANGE, AMBIGUOUS_SHARE = (32, 223), 0.05
_MAX_LISTED = 10


class DataError(SegkitError):
    """The dataset on disk is missing, incomplete or unreadable."""


@dataclass(frozen=True)
class Sample:
    """One image and its mask, paired by file stem."""

    name: str
    image: Path
    mask: Path


def listing(items: Sequence[str]) -> str:
    """The first items, comma-separated, then "and N more"."""
    shown = ", ".join(items[:_MAX_LISTED])
    more = len(items) - _MAX_LISTED
    return shown + (f" and {more} more" if more > 0 else "")


def _index(folder: Path) -> tuple[dict[str, Path], list[str]]:
    """Map stem -> file for the images in ``folder``; also return stems seen with two files."""
    by_stem: dict[str, Path] = {}
    clashes: list[str] = []
    for path in sorted(folder.iterdir()):
        if path.name.startswith(".") or path.suffix.lower() not in IMAGE_EXTENSIONS:
            continue
        if path.stem in by_stem:
            clashes.append(f"{by_stem[path.stem].name} / {path.name}")
        by_stem[path.stem] = path
    return by_stem, clashes


def discover(root: Path, images_dir: str = "images", masks_dir: str = "masks") -> list[Sample]:
    """Pair ``root/images/<stem>.*`` with ``root/masks/<stem>.*``, sorted by name.

    Raises DataError listing every unpaired or ambiguous file, so one run shows all problems.
    """
    root = Path(root)
    img_dir, mask_dir = root / images_dir, root / masks_dir
    for folder in (img_dir, mask_dir):
        if not folder.is_dir():
            raise DataError(
                f"{folder} does not exist: data.root must point to a folder holding "
                f"{images_dir}/ and {masks_dir}/ (set data.root or SEGKIT_DATA_DIR)"
            )
    images, img_clash = _index(img_dir)
    masks, mask_clash = _index(mask_dir)
    problems = []
    if not images:
        problems.append(f"no images ({', '.join(IMAGE_EXTENSIONS)}) in {img_dir}")
    if not masks:
        problems.append(f"no masks in {mask_dir}")
    if clashes := img_clash + mask_clash:
        problems.append(f"same name with two extensions: {listing(clashes)}")
    if no_mask := sorted(set(images) - set(masks)):
        problems.append(
            f"{len(no_mask)} image(s) without a mask in {mask_dir}: {listing(no_mask)}"
        )
    if no_image := sorted(set(masks) - set(images)):
        problems.append(
            f"{len(no_image)} mask(s) without an image in {img_dir}: {listing(no_image)}"
        )
    if problems:
        raise DataError(f"invalid dataset at {root}: " + "; ".join(problems))
    return [Sample(stem, images[stem], masks[stem]) for stem in sorted(images)]


def describe_unreadable(path: Path, exc: BaseException) -> str:
    """Why ``path`` would not open: ``is empty (0 bytes)`` for an empty file (Pillow calls it
    an unidentified image), else the error's type."""
    try:
        if path.stat().st_size == 0:
            return "is empty (0 bytes)"
    except OSError:
        pass
    return f"cannot be opened ({type(exc).__name__})"


def _header_sizes(s: Sample) -> tuple[dict[str, tuple[int, int]], list[str]]:
    """The image's and the mask's (width, height) from their headers, and what failed."""
    sizes, failed = {}, []
    for kind, path in (("image", s.image), ("mask", s.mask)):
        try:
            with Image.open(path) as opened:
                sizes[kind] = opened.size
        except (OSError, UnidentifiedImageError) as exc:
            failed.append(f"{kind} {path.name} {describe_unreadable(path, exc)}")
    return sizes, failed


def check_sizes(samples: Sequence[Sample]) -> None:
    """Read only the headers and raise DataError listing pairs whose sizes differ or won't
    open (naming the image or the mask, and an empty file as empty)."""
    mismatched, unreadable = [], []
    for s in samples:
        sizes, failed = _header_sizes(s)
        if failed:
            unreadable.append(f"{s.name} ({', '.join(failed)})")
        elif sizes["image"] != sizes["mask"]:
            (iw, ih), (mw, mh) = sizes["image"], sizes["mask"]
            mismatched.append(f"{s.name} (image {iw}x{ih}, mask {mw}x{mh})")
    problems = []
    if mismatched:
        problems.append(f"{len(mismatched)} image/mask size mismatch(es): {listing(mismatched)}")
    if unreadable:
        problems.append(f"{len(unreadable)} unreadable pair(s): {listing(unreadable)}")
    if problems:
        raise DataError("; ".join(problems) + "; fix or remove these files")


def load_image(path: Path, size: int | None = None) -> np.ndarray:
    """Decode an image file to uint8 RGB (H, W, 3), resized (bilinear) to size x size if given."""
    with Image.open(path) as opened:
        if size is not None:
            opened.draft("RGB", (size, size))  # JPEG DCT-domain downscale: far cheaper decoding
        im = opened.convert("RGB")
        if size is not None and im.size != (size, size):
            im = im.resize((size, size), Image.Resampling.BILINEAR)
        return np.asarray(im, dtype=np.uint8)


def _grey8(mk: Image.Image) -> Image.Image:
    """8-bit grey levels from any mask mode (16-bit and float masks are scaled to 0-255)."""
    if mk.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
        arr = np.asarray(mk, dtype=np.float64)
        top = 65535.0 if arr.max() > 255 else 255.0
        return Image.fromarray(np.clip(arr / top * 255.0, 0, 255).astype(np.uint8))
    return mk.convert("L")


def _mask_grey(path: Path, size: int | None, ambiguity: bool = True) -> tuple[np.ndarray, float]:
    """8-bit grey levels of a mask, resized if asked, and the share of non-binary levels
    (NaN when ``ambiguity`` is false: not measured). An RGB JPEG decodes to its luma
    channel directly (Pillow's draft "L": no colour conversion, a third of the time), the
    same grey levels as RGB -> "L" to within JPEG rounding (identical on Kvasir-SEG's masks)."""
    with Image.open(path) as opened:
        opened.draft("L", (size, size) if size is not None else opened.size)
        mk = _grey8(opened)
        grey = np.asarray(mk)
        ambiguous = float("nan")
        if ambiguity:
            lo, hi = AMBIGUOUS_RANGE
            ambiguous = float(((grey >= lo) & (grey <= hi)).mean()) if grey.size else 0.0
        if size is not None and mk.size != (size, size):
            grey = np.asarray(mk.resize((size, size), Image.Resampling.BILINEAR))
        return grey, ambiguous


def load_mask(path: Path, size: int | None = None) -> np.ndarray:
    """Decode a mask to {0,1} uint8 (H, W, 1): grey levels resized bilinearly, then >= 128."""
    return load_truth(path, size).astype(np.uint8)[..., None]


def load_truth(path: Path, size: int | None = None) -> np.ndarray:
    """A mask as booleans (H, W): what scoring compares with (see :func:`load_mask`)."""
    grey, _ = _mask_grey(path, size, ambiguity=False)
    return grey >= MASK_THRESHOLD


def decode_all(
    samples: Sequence[Sample], size: int, workers: int = 2
) -> tuple[np.ndarray, np.ndarray]:
    """Decode and resize every pair into (N, size, size, 3) images and (N, size, size, 1) masks.

    Pillow releases the GIL while decoding and resizing, so threads use every core. All
    undecodable files are collected and reported together in one DataError.
    """
    check_sizes(samples)
    images = np.empty((len(samples), size, size, 3), np.uint8)
    masks = np.empty((len(samples), size, size, 1), np.uint8)
    failed: list[str] = []
    grey: list[str] = []

    def work(i: int) -> None:
        try:
            images[i] = load_image(samples[i].image, size)
            mask, ambiguous = _mask_grey(samples[i].mask, size)
            masks[i] = (mask >= MASK_THRESHOLD)[..., None]
            if ambiguous > AMBIGUOUS_SHARE:
                grey.append(f"{samples[i].name} ({ambiguous:.0%})")
        except (OSError, UnidentifiedImageError, ValueError) as exc:
            failed.append(f"{samples[i].name} ({exc})")

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        list(pool.map(work, range(len(samples))))
    if grey:
        log.warning("%d mask(s) are not binary (share of grey levels %d-%d): %s; they are "
                    "thresholded at %d: check they are masks, not images", len(grey),
                    *AMBIGUOUS_RANGE, listing(sorted(grey)), MASK_THRESHOLD)
    if failed:
        raise DataError(
            f"{len(failed)} file(s) could not be decoded: {listing(sorted(failed))}; "
            "replace or remove them"
        )
    return images, masks
