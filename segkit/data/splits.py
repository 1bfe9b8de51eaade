"""Train / validation / test splits by sample name: official lists, seeded random splits."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from segkit.data.dataset import IMAGE_EXTENSIONS, listing
from segkit.errors import ConfigError
from segkit.registry import Registry

# The official Kvasir-SEG 880/120 lists ship with segkit, so a fresh download (whose zip has
# no splits/) still gets the published split; a copy at <root>/splits/ takes precedence.
PACKAGED_SPLITS = Path(__file__).parent / "splits" / "kvasir_seg"


class SplitError(ConfigError):
    """A split definition that cannot be applied to the dataset."""


SPLITS = Registry("split")


def _check_fraction(key: str, value: float) -> None:
    if not 0 < value < 1:
        raise SplitError(f"{key}={value} must be in (0, 1)")


@SPLITS.register("official", "segkit.data.splits:official_parts")
@dataclass(frozen=True)
class OfficialOptions:
    """The published lists (``<data.root>/splits/`` or segkit's packaged copy)."""

    train_file: str
    test_file: str
    val_fraction: float
    seed: int

    def check(self) -> None:
        _check_val_fraction(self.val_fraction)


# stacked decorators run bottom-up: listed here in reverse of the registry order
@SPLITS.register("random", "segkit.data.splits:shuffled_parts")
@SPLITS.register("reference", "segkit.data.splits:shuffled_parts")
@dataclass(frozen=True)
class ShuffledOptions:
    """A seeded shuffle holding out ``test_fraction`` of all images."""

    test_fraction: float
    val_fraction: float
    seed: int

    def check(self) -> None:
        _check_val_fraction(self.val_fraction)
        _check_fraction("split.test_fraction", self.test_fraction)


# stacked decorators run bottom-up: listed here in reverse of the registry order
@SPLITS.register("kfold", "segkit.data.splits:kfold_parts")
@dataclass(frozen=True)
class KFoldOptions:
    """Fold ``fold`` of ``folds`` over the training part of the ``base`` split: that fold is
    the validation part, the other folds train, and the base split's test part stays the
    held-out test. Folds are a seeded shuffle (``seed``), so every seed of a sweep and every
    fold of one cross-validation see the same folds."""

    base: str
    folds: int
    fold: int
    train_file: str
    test_file: str
    test_fraction: float
    seed: int

    def check(self) -> None:
        if self.base not in ("official", "reference", "random"):
            raise SplitError(f"split.base={self.base!r} is unknown: use official, reference "
                             "or random")
        if self.folds < 2:
            raise SplitError(f"split.folds={self.folds} must be >= 2")
        if not 0 <= self.fold < self.folds:
            raise SplitError(f"split.fold={self.fold} must be in 0..{self.folds - 1} "
                             f"(0-based, split.folds={self.folds})")
        if self.base != "official":
            _check_fraction("split.test_fraction", self.test_fraction)


def _check_val_fraction(value: float) -> None:
    if not 0 < value < 1:
        raise SplitError(f"split.val_fraction={value} must be in (0, 1): early stopping and "
                         "model selection need a validation carve-out")


def check_split(split_cfg: Any) -> None:
    """Check a ``split`` config node before any data is read."""
    SPLITS.options(split_cfg)


@dataclass(frozen=True)
class Split:
    """Names in each part. ``val`` is carved out of the training part for early stopping and
    model selection; ``test`` is the held-out split that only evaluation touches."""

    name: str
    train: tuple[str, ...]
    val: tuple[str, ...]
    test: tuple[str, ...]

    def sizes(self) -> dict[str, int]:
        return {"train": len(self.train), "val": len(self.val), "test": len(self.test)}


def read_list(path: Path) -> list[str]:
    """Names from a split file: one per line, image extension optional, blank lines ignored."""
    if not path.is_file():
        raise SplitError(f"split file {path} not found: check split.train_file / split.test_file")
    names = [Path(line.strip()) for line in path.read_text().splitlines() if line.strip()]
    return [n.stem if n.suffix.lower() in IMAGE_EXTENSIONS else n.name for n in names]


def _shuffled(names: Sequence[str], seed: int) -> list[str]:
    order = np.random.default_rng(seed).permutation(len(names))
    return [names[i] for i in order]


def _carve(train: Sequence[str], val_fraction: float, seed: int) -> tuple[list, list]:
    """Seeded validation carve-out of the training names (both parts sorted, val never empty)."""
    shuffled = _shuffled(sorted(train), seed)
    n_val = max(1, int(round(len(shuffled) * val_fraction)))
    if n_val >= len(shuffled):
        raise SplitError(
            f"split.val_fraction={val_fraction} leaves no training samples out of {len(train)}"
        )
    return sorted(shuffled[n_val:]), sorted(shuffled[:n_val])


def official_parts(train_file: str, test_file: str, names: Sequence[str], root: Path,
                   **_: Any) -> tuple[list[str], list[str]]:
    """Train and test names from the published lists, checked against the dataset."""
    available = set(names)
    folder = Path(root) / "splits"
    if not (folder / Path(train_file).name).is_file():
        folder = PACKAGED_SPLITS
    train = read_list(folder / train_file)
    test = read_list(folder / test_file)
    unknown = sorted((set(train) | set(test)) - available)
    if unknown:
        raise SplitError(f"split lists in {folder} name {len(unknown)} image(s) not in {root}: "
                         f"{listing(unknown)}; use split=random or fix the lists")
    if overlap := sorted(set(train) & set(test)):
        raise SplitError(f"split lists in {folder} overlap on {len(overlap)} name(s)")
    return train, test


def shuffled_parts(test_fraction: float, seed: int, names: Sequence[str],
                   **_: Any) -> tuple[list[str], list[str]]:
    """A seeded shuffle: the first ``test_fraction`` of it is the test part."""
    shuffled = _shuffled(sorted(names), seed)
    n_test = int(round(len(shuffled) * test_fraction))
    return shuffled[n_test:], shuffled[:n_test]


def kfold_parts(base: str, folds: int, fold: int, train_file: str, test_file: str,
                test_fraction: float, seed: int, names: Sequence[str], root: Path
                ) -> tuple[list[str], list[str], list[str]]:
    """(train, validation, test): the base split's training part cut into ``folds`` seeded
    folds, fold ``fold`` validating."""
    if base == "official":
        train, test = official_parts(train_file, test_file, names, root)
    else:
        train, test = shuffled_parts(test_fraction, seed, names)
    shuffled = _shuffled(sorted(train), seed)
    if len(shuffled) < folds:
        raise SplitError(f"split.folds={folds} is more than the {len(shuffled)} training "
                         "images: use fewer folds")
    parts = np.array_split(np.array(shuffled, dtype=object), folds)
    val = sorted(str(n) for n in parts[fold])
    rest = sorted(str(n) for k, part in enumerate(parts) if k != fold for n in part)
    return rest, val, test


def make_split(names: Sequence[str], cfg: Any, root: Path) -> Split:
    """Build the split named by ``cfg.name`` (official | reference | random) over ``names``.

    official: train/test from the published lists; reference and random: seeded shuffles
    with ``cfg.test_fraction`` held out. All carve ``cfg.val_fraction`` of train for validation.
    """
    if cfg.name not in SPLITS:
        raise SplitError(f"split.name={cfg.name!r} is unknown: use one of {', '.join(SPLITS)}")
    parts = SPLITS.build(cfg, names=names, root=root)
    if len(parts) == 3:  # the split chose its own validation part (kfold)
        train, val, test = parts
    else:
        train, val = _carve(parts[0], cfg.val_fraction, cfg.seed)
        test = parts[1]
    name = f"{cfg.base}.fold{cfg.fold}of{cfg.folds}" if cfg.name == "kfold" else cfg.name
    return Split(name, tuple(train), tuple(val), tuple(sorted(test)))


def subset(split: Split, limit: int | None) -> Split:
    """The first ``limit`` names of each part (for smoke runs); the split itself when None."""
    if not limit:
        return split
    return Split(split.name, split.train[:limit], split.val[:limit], split.test[:limit])
