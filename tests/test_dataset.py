"""Pairing, validation, decoding and the on-disk cache."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from segkit.data.cache import load_arrays
from segkit.data.dataset import DataError, decode_all, discover, load_mask, load_truth
from tests.helpers import write_pair


def test_pairs_by_stem_sorted(synthetic_root):
    samples = discover(synthetic_root)
    assert [s.name for s in samples] == [f"s{i:02d}" for i in range(12)]
    assert all(s.image.stem == s.mask.stem == s.name for s in samples)


def test_missing_mask_and_missing_image_listed_together(tmp_path):
    for n in ("a", "b", "c"):
        write_pair(tmp_path, n)
    (tmp_path / "masks" / "b.jpg").unlink()
    (tmp_path / "images" / "c.jpg").unlink()
    with pytest.raises(DataError) as err:
        discover(tmp_path)
    msg = str(err.value)
    assert "1 image(s) without a mask" in msg and "b" in msg
    assert "1 mask(s) without an image" in msg and "c" in msg


def test_missing_folder_names_the_fix(tmp_path):
    with pytest.raises(DataError, match="data.root"):
        discover(tmp_path / "nowhere")


def test_same_stem_two_extensions_is_refused(tmp_path):
    write_pair(tmp_path, "a")
    write_pair(tmp_path, "a", ext=".png")
    with pytest.raises(DataError, match="a.jpg / a.png"):
        discover(tmp_path)


def test_size_mismatch_and_corrupt_file_listed(tmp_path):
    write_pair(tmp_path, "ok")
    write_pair(tmp_path, "big")
    Image.new("L", (10, 10)).save(tmp_path / "masks" / "big.jpg")
    write_pair(tmp_path, "broken")
    (tmp_path / "images" / "broken.jpg").write_bytes(b"not a jpeg at all")
    with pytest.raises(DataError) as err:
        decode_all(discover(tmp_path), size=16)
    msg = str(err.value)
    assert "big (image 40x32, mask 10x10)" in msg
    assert "broken" in msg and "ok" not in msg.replace("broken", "")


def test_mask_threshold_at_128(tmp_path):
    arr = np.array([[0, 8, 127, 128], [200, 246, 255, 100]], np.uint8)
    Image.fromarray(arr).save(tmp_path / "m.png")
    out = load_mask(tmp_path / "m.png")
    assert out.shape == (2, 4, 1) and out.dtype == np.uint8
    np.testing.assert_array_equal(out[..., 0], [[0, 0, 0, 1], [1, 1, 1, 0]])


def test_rgb_jpeg_masks_decode_as_luma_with_the_same_truth(real_root, tmp_path):
    # Original-size masks decode to the JPEG's luma channel (no colour conversion): the truth
    # is that of RGB -> "L" -> >= 128, on real Kvasir-SEG masks (RGB JPEGs) and on an RGB
    # JPEG with anti-aliased grey edges.
    ramp = np.tile(np.linspace(0, 255, 64), (48, 1)).astype(np.uint8)
    Image.fromarray(np.stack([ramp] * 3, -1)).save(tmp_path / "edge.jpg", quality=75)
    paths = sorted((real_root / "masks").glob("*.jpg"))[:6] + [tmp_path / "edge.jpg"]
    for path in paths:
        with Image.open(path) as im:
            assert im.mode == "RGB"
            expected = np.asarray(im.convert("L")) >= 128
        truth = load_truth(path)
        assert truth.dtype == bool and truth.shape == expected.shape
        assert (truth != expected).sum() <= expected.size * 1e-3  # JPEG rounding at 127/128
        np.testing.assert_array_equal(load_mask(path)[..., 0], truth)


def test_decode_resizes_and_binarizes(synthetic_root):
    images, masks = decode_all(discover(synthetic_root)[:3], size=16)
    assert images.shape == (3, 16, 16, 3) and images.dtype == np.uint8
    assert masks.shape == (3, 16, 16, 1) and set(np.unique(masks)) <= {0, 1}
    # The rectangle covers rows h/4..h/2 and columns w/4..w/2: a quarter by a quarter.
    assert masks[0, 6, 6, 0] == 1 and masks[0, 0, 0, 0] == 0 and masks[0, 12, 12, 0] == 0


def test_cache_hit_skips_decoding_and_rebuilds_when_truncated(synthetic_root, tmp_path,
                                                            monkeypatch):
    samples = discover(synthetic_root)
    cache = tmp_path / "cache"
    first = load_arrays(samples, 16, cache)
    import segkit.data.cache as cache_mod

    def fail(*a, **k):
        raise AssertionError("decoded although the cache was warm")

    monkeypatch.setattr(cache_mod, "decode_all", fail)
    second = load_arrays(samples, 16, cache)
    np.testing.assert_array_equal(first[0], second[0])
    assert first[2] == second[2]

    entry = next(p for p in cache.iterdir() if p.is_dir())
    data = (entry / "images.npy").read_bytes()
    (entry / "images.npy").write_bytes(data[: len(data) // 2])  # a truncated cache file
    monkeypatch.undo()
    third = load_arrays(samples, 16, cache)
    np.testing.assert_array_equal(first[0], third[0])


def test_cache_key_changes_with_content(synthetic_root, tmp_path):
    samples = discover(synthetic_root)[:2]
    _, _, fp1 = load_arrays(samples, 16, tmp_path / "c")
    write_pair(synthetic_root, "s00", seed=99)  # same name, new pixels
    images, _, fp2 = load_arrays(samples, 16, tmp_path / "c")
    assert fp1 != fp2
    assert len([p for p in (tmp_path / "c").iterdir() if p.is_dir()]) == 2
