"""Sweep groups: repeats of one configuration summarised with a t interval."""

from __future__ import annotations

import math

import pytest
from scipy import stats

from segkit.sweep.groups import format_groups, group_key, group_rows


def _row(overrides, mdice, status="FINISHED"):
    return {"overrides": overrides, "status": status, "test_mdice": mdice,
            "val_mdice": mdice - 0.01}


def test_the_group_key_drops_seed_and_fold_only():
    assert group_key("model=unet seed=2 split.fold=3") == "model=unet"
    assert group_key("seed=1") == "(base config)"
    assert group_key("optimizer.lr=1e-3 model=resunet") == "model=resunet optimizer.lr=1e-3"


def test_one_row_per_configuration_with_its_interval():
    rows = [_row("model=unet seed=1", 0.80), _row("model=unet seed=2", 0.82),
            _row("model=unet seed=3", 0.84), _row("model=resunet seed=1", 0.85),
            _row("model=resunet seed=2", 0.87), _row("model=resunet seed=3", math.nan,
                                                       "FAILED")]
    groups = {g["configuration"]: g for g in group_rows(rows, ["model", "seed"])}
    unet, resunet = groups["model=unet"], groups["model=resunet"]
    assert unet["runs"] == 3 and resunet["runs"] == 2  # the failed run is not a score
    half = stats.t.ppf(0.975, 2) * 0.02 / math.sqrt(3)
    assert unet["test_mdice_mean"] == pytest.approx(0.82)
    assert (unet["test_mdice_ci_low"], unet["test_mdice_ci_high"]) == pytest.approx(
        (0.82 - half, 0.82 + half))
    assert (unet["test_mdice_min"], unet["test_mdice_max"]) == (0.80, 0.84)
    assert unet["test_mdice_median"] == 0.82 and resunet["test_mdice_median"] == pytest.approx(0.86)
    assert unet["val_mdice_mean"] == pytest.approx(0.81)
    line = format_groups([unet], "test_mdice")[0]
    assert line.startswith("  model=unet: test_mdice 0.8200 ± 0.0200 over 3 runs, 95% t "
                           f"interval [{0.82 - half:.4f}, {0.82 + half:.4f}], median 0.8200")


def test_a_configuration_with_one_run_has_no_spread():
    """One finished run: its value, and no "± nan" or nan interval on the console."""
    rows = [_row("model=unet seed=1", 0.80), _row("model=unet seed=2", 0.82),
            _row("model=resunet seed=1", 0.85), _row("model=resunet seed=2", math.nan,
                                                       "FAILED")]
    groups = {g["configuration"]: g for g in group_rows(rows, ["model", "seed"])}
    line = format_groups([groups["model=resunet"]], "test_mdice")[0]
    assert line == ("  model=resunet: test_mdice 0.8500 from 1 run "
                    "(no std or interval from one run)")
    assert "nan" not in " ".join(format_groups(list(groups.values()), "test_mdice"))


def test_no_groups_without_a_repeated_key():
    assert group_rows([_row("model=unet", 0.8)], ["model"]) == []
