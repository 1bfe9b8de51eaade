"""Split logic: official lists, seeded random splits, the validation carve-out."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from segkit.data.splits import PACKAGED_SPLITS, SplitError, make_split, read_list, subset


def cfg(**kw):
    base = {"name": "random", "test_fraction": 0.1, "val_fraction": 0.1, "seed": 42,
            "train_file": "train.txt", "test_file": "val.txt"}
    merged = {**base, **kw}
    for key in (("test_fraction",) if merged["name"] == "official"
                else ("train_file", "test_file")):
        merged.pop(key)  # each split takes only its own options
    return OmegaConf.create(merged)


NAMES = [f"n{i:04d}" for i in range(1000)]


def test_packaged_official_lists_are_880_120_disjoint():
    train, test = read_list(PACKAGED_SPLITS / "train.txt"), read_list(PACKAGED_SPLITS / "val.txt")
    assert (len(train), len(test)) == (880, 120)
    assert not set(train) & set(test)


def test_official_split_reads_root_lists_and_carves_validation(synthetic_root):
    names = [f"s{i:02d}" for i in range(12)]
    s = make_split(names, cfg(name="official", val_fraction=0.25), synthetic_root)
    assert s.test == tuple(f"s{i:02d}" for i in range(8, 12))
    assert len(s.train) == 6 and len(s.val) == 2
    assert set(s.train) | set(s.val) == {f"s{i:02d}" for i in range(8)}
    assert not set(s.train) & set(s.val)


def test_official_split_unknown_names_fail(synthetic_root):
    with pytest.raises(SplitError, match="name 2 image"):
        make_split([f"s{i:02d}" for i in range(10)], cfg(name="official"), synthetic_root)


def test_reference_split_is_900_100_and_seeded(tmp_path):
    a = make_split(NAMES, cfg(name="reference"), tmp_path)
    b = make_split(NAMES, cfg(name="reference"), tmp_path)
    assert a == b
    assert len(a.test) == 100 and len(a.train) + len(a.val) == 900 and len(a.val) == 90
    assert not (set(a.train) & set(a.test)) and not (set(a.val) & set(a.test))
    c = make_split(NAMES, cfg(name="reference", seed=7), tmp_path)
    assert set(c.test) != set(a.test)


def test_random_split_fractions(tmp_path):
    s = make_split(NAMES, cfg(test_fraction=0.25, val_fraction=0.2), tmp_path)
    assert s.sizes() == {"train": 600, "val": 150, "test": 250}


def test_bad_fraction_and_unknown_split(tmp_path):
    with pytest.raises(SplitError, match="split.val_fraction"):
        make_split(NAMES, cfg(val_fraction=1.0), tmp_path)
    with pytest.raises(SplitError, match="split.val_fraction"):
        make_split(NAMES, cfg(val_fraction=0.0), tmp_path)
    with pytest.raises(SplitError, match="unknown"):
        make_split(NAMES, cfg(name="nope"), tmp_path)


def test_read_list_strips_extensions_and_blank_lines(tmp_path):
    (tmp_path / "l.txt").write_text("a.jpg\n\nb\n c.PNG \nd.e\n")
    assert read_list(tmp_path / "l.txt") == ["a", "b", "c", "d.e"]


def test_subset_takes_first_n_of_each_part(tmp_path):
    s = subset(make_split(NAMES, cfg(), tmp_path), 3)
    assert s.sizes() == {"train": 3, "val": 3, "test": 3}


def kfold_cfg(**kw):
    base = {"name": "kfold", "base": "random", "folds": 5, "fold": 0, "train_file": "train.txt",
            "test_file": "val.txt", "test_fraction": 0.2, "seed": 42}
    return OmegaConf.create({**base, **kw})


def test_kfold_folds_partition_the_training_part_and_keep_the_test_part(tmp_path):
    splits = [make_split(NAMES, kfold_cfg(fold=k), tmp_path) for k in range(5)]
    tests = {s.test for s in splits}
    assert len(tests) == 1  # the held-out test part never moves
    vals = [set(s.val) for s in splits]
    train_part = set(splits[0].train) | vals[0]
    assert set().union(*vals) == train_part and sum(len(v) for v in vals) == len(train_part)
    assert not train_part & set(splits[0].test)
    for s, v in zip(splits, vals, strict=True):
        assert set(s.train) == train_part - v  # the other folds train
        assert abs(len(v) - len(train_part) / 5) < 1
    assert splits[2].name == "random.fold2of5"
    again = make_split(NAMES, kfold_cfg(fold=2), tmp_path)
    assert again == splits[2]  # seeded: reproducible


def test_kfold_over_the_official_lists(synthetic_root):
    names = [f"s{i:02d}" for i in range(12)]
    s = make_split(names, kfold_cfg(base="official", folds=4, fold=1), synthetic_root)
    assert s.test == tuple(f"s{i:02d}" for i in range(8, 12))
    assert len(s.val) == 2 and len(s.train) == 6


@pytest.mark.parametrize("kw, match", [({"fold": 5}, "split.fold=5 must be in 0..4"),
                                       ({"folds": 1}, "split.folds=1 must be >= 2"),
                                       ({"base": "nope"}, "split.base='nope' is unknown"),
                                       ({"folds": 900}, "more than the 800")])
def test_kfold_bad_options(tmp_path, kw, match):
    with pytest.raises(SplitError, match=match):
        make_split(NAMES, kfold_cfg(**kw), tmp_path)
