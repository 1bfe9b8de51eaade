"""External test sets (``eval.external`` and the ``dataset`` group): any folder of ``images/``
+ ``masks/`` from another centre (CVC-ClinicDB, ETIS-Larib, ...), every pair a test image,
scored at its own resolution.

No split files; images and masks are paired by file stem (segkit.data.dataset.discover: an
unpaired or doubled file is one DataError listing them all), may have any size and any of
PNG, JPEG, TIFF or BMP, and masks are thresholded at 128 like Kvasir-SEG's (anti-aliased grey
edges included). The model-size arrays are decoded (and cached) as for Kvasir-SEG; the
original masks are read again, one at a time, when the predictions are scored.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from segkit.data.cache import load_arrays
from segkit.data.dataset import DataError, Sample, discover
from segkit.errors import ConfigError

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")  # a run name, tag and folder name
KEYS = ("name", "root")


@dataclass(frozen=True)
class ExternalSet:
    """One entry of ``eval.external``: its name (names its run) and its folder."""

    name: str
    root: Path


@dataclass
class ExternalData:
    """An external set's pairs, decoded at the model's size (the originals stay on disk)."""

    source: ExternalSet
    samples: list[Sample]
    images: np.ndarray  # (N, S, S, 3) uint8
    masks: np.ndarray  # (N, S, S, 1) {0, 1}
    fingerprint: str

    @property
    def names(self) -> list[str]:
        return [s.name for s in self.samples]


def _entry(key: str, entry: Any) -> ExternalSet:
    if not isinstance(entry, Mapping) or set(entry) != set(KEYS):
        raise ConfigError(f"{key}={entry!r} must be {{name: NAME, root: /path/to/folder}} "
                          "(a folder holding images/ and masks/)")
    name, root = str(entry["name"]), Path(str(entry["root"])).expanduser()
    if not NAME.fullmatch(name):
        raise ConfigError(f"{key}.name={name!r} must be letters, digits, '_', '-' or '.' "
                          "(it names the run and its folder)")
    missing = [sub for sub in ("images", "masks") if not (root / sub).is_dir()]
    if missing:
        raise ConfigError(f"{key}.root={str(root)!r} ({name}) has no {' or '.join(missing)}/ "
                          f"folder: set {key}.root to the folder holding images/ and masks/")
    try:
        discover(root)  # pairs by stem; lists every unpaired or doubled file
    except DataError as exc:
        raise ConfigError(f"{key} ({name}): {exc}") from None
    return ExternalSet(name, root)


def external_sets(entries: Sequence[Any] | None,
                  datasets: Mapping[str, Any] | None = None) -> list[ExternalSet]:
    """The checked external sets: the ``eval.external`` list (entries ``{name, root}``) and
    the ``dataset`` group's selections (``{name: {root}}``, conf/dataset/), names unique, each
    root a folder whose images and masks pair up. ConfigError (one line) otherwise."""
    if entries is None:
        entries = []
    if isinstance(entries, (str, Mapping)) or not isinstance(entries, Sequence):
        raise ConfigError(f"eval.external={entries!r} must be a list of "
                          "{name: NAME, root: /path} entries ([] for none)")
    sets = [_entry(f"eval.external[{i}]", e) for i, e in enumerate(entries)]
    for name, entry in (datasets or {}).items():
        if not isinstance(entry, Mapping) or set(entry) != {"root"}:
            raise ConfigError(f"dataset.{name}={entry!r} must be {{root: /path/to/folder}} "
                              f"(see conf/dataset/)")
        sets.append(_entry(f"dataset.{name}", {"name": name, "root": entry["root"]}))
    names = [s.name for s in sets]
    if doubled := sorted({n for n in names if names.count(n) > 1}):
        raise ConfigError(f"eval.external / dataset: the name(s) {', '.join(doubled)} appear "
                          "twice: each external set needs its own name")
    return sets


def load_external(source: ExternalSet, image_size: int, cache_dir: Path | None = None,
                  workers: int = 2) -> ExternalData:
    """Pair, check and decode ``source`` at ``image_size`` (cached under ``cache_dir``)."""
    samples = discover(source.root)
    images, masks, fp = load_arrays(samples, image_size, cache_dir, workers=workers)
    return ExternalData(source, samples, images, masks, fp)
