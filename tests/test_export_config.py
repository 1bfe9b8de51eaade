"""The fast lane of deployment: export.* config checked in validate, the parity figures
against hand counts, and which runtime reads what (no model is built here)."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from segkit.config import validate
from segkit.errors import ConfigError
from segkit.export import mask_dice, mean_dice, parity
from segkit.formats import format_of, output_path
from segkit.runtimes import choose_runtime, installed_runtimes


def test_export_formats_are_checked_in_validate(compose_cfg):
    validate(compose_cfg("export.formats=[]"))
    with pytest.raises(ConfigError, match=r"export.formats: 'tflite' is unknown"):
        validate(compose_cfg("export.formats=[tflite]"))
    with pytest.raises(ConfigError, match=r"export.min_dice=1.5"):
        validate(compose_cfg("export.min_dice=1.5"))


def test_a_format_whose_packages_are_missing_fails_validate(compose_cfg, monkeypatch):
    monkeypatch.setitem(sys.modules, "openvino", None)  # as if not installed
    with pytest.raises(ConfigError, match=r"pip install -e '\.\[deploy\]'"):
        validate(compose_cfg("export.formats=[openvino]"))


def test_parity_figures_match_hand_counts():
    ref = np.zeros((2, 4, 4), np.float32)
    ref[0, :2] = 0.9  # 8 foreground pixels in image 0, none in image 1
    got = ref.copy()
    got[0, 0, 0] = 0.2  # one pixel flips: |A & B| = 7, |A| + |B| = 15
    got[1, 3, 3] = 0.6  # one new pixel in image 1: |A| + |B| = 16
    p = parity(ref, got, 0.5)
    assert p["max_abs_diff"] == pytest.approx(0.7)
    assert p["mask_dice"] == pytest.approx(2 * 7 / 16)
    assert mask_dice(ref < 0, got < 0) == 1.0  # both empty
    truth = (ref >= 0.5)[..., None].astype(np.uint8)
    # image 0: Dice 2*7/(8+7); image 1: empty truth, one predicted pixel -> 0
    assert mean_dice(got, truth, 0.5) == pytest.approx((14 / 15 + 0.0) / 2)


def test_formats_by_name_and_the_runtimes_that_read_them(tmp_path):
    (tmp_path / "sm").mkdir()
    (tmp_path / "sm" / "saved_model.pb").write_bytes(b"")
    assert [format_of(p) for p in ("m.onnx", "m.XML", tmp_path / "sm", "m.keras")] == [
        "onnx", "openvino", "saved_model", None]
    assert output_path(tmp_path / "m", "openvino").name == "m.xml"
    assert choose_runtime("tf") == "tf"
    assert choose_runtime("auto") == installed_runtimes()[0]
    assert choose_runtime("auto", "saved_model") == "tf"
    with pytest.raises(ConfigError, match="cannot run a saved_model export"):
        choose_runtime("onnx", "saved_model")
    with pytest.raises(ConfigError, match="unknown"):
        choose_runtime("cuda")
