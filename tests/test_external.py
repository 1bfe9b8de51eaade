"""External test sets (eval.external): folders of images/ + masks/ of other sizes and formats,
anti-aliased grey-edge masks, no split files; checked in validate; every image scored at its
original resolution against hand-computed values; one run per set, linked to its source."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import mlflow
import numpy as np
import pytest
from PIL import Image

from segkit.config import validate
from segkit.data.external import ExternalSet, external_sets, load_external
from segkit.errors import ConfigError
from tests.helpers import cli_env, run_py, tracking_uri

# (stem, image extension, mask extension, (width, height))
PAIRS = [("a01", ".png", ".png", (50, 40)), ("b02", ".jpg", ".png", (64, 48)),
         ("c03", ".tif", ".tif", (45, 37)), ("d04", ".png", ".jpg", (33, 61))]


def _grey_edge_mask(w: int, h: int, seed: int) -> np.ndarray:
    """An ellipse drawn at 4x and downsampled (Lanczos): grey, anti-aliased edges."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:4 * h, 0:4 * w]
    cy, cx = rng.uniform(0.35, 0.65) * 4 * h, rng.uniform(0.35, 0.65) * 4 * w
    inside = ((yy - cy) / (1.2 * h)) ** 2 + ((xx - cx) / (1.1 * w)) ** 2 <= 1
    big = Image.fromarray((inside * 255).astype(np.uint8))
    return np.asarray(big.resize((w, h), Image.Resampling.LANCZOS))


def make_centre(root: Path, pairs=PAIRS, empty: str | None = None) -> Path:
    """images/ + masks/ with mixed sizes and formats; ``empty``: that stem's mask is empty."""
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    rng = np.random.default_rng(0)
    for i, (stem, ext, mask_ext, (w, h)) in enumerate(pairs):
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(
            root / "images" / f"{stem}{ext}")
        mask = np.zeros((h, w), np.uint8) if stem == empty else _grey_edge_mask(w, h, i)
        Image.fromarray(mask).save(root / "masks" / f"{stem}{mask_ext}")
    return root


def truth_at_original(root: Path, stem: str) -> np.ndarray:
    """The mask file as written, read back with PIL and thresholded at 128 (by hand)."""
    (path,) = (root / "masks").glob(f"{stem}.*")
    return np.asarray(Image.open(path).convert("L")) >= 128


class Constant:
    """A stand-in predictor (segkit.runtimes.Predictor): one probability everywhere."""

    runtime, input_size = "tf", 32

    def __init__(self, value: float):
        self.value = value

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        return np.full((*batch.shape[:3], 1), self.value, np.float32)


def test_the_fixture_masks_have_grey_edges(tmp_path):
    root = make_centre(tmp_path / "c")
    grey = np.asarray(Image.open(root / "masks" / "a01.png"))
    assert ((grey > 0) & (grey < 255)).sum() > 10  # anti-aliased, not binary


def test_load_pairs_mixed_sizes_and_formats_at_the_model_size(tmp_path):
    root = make_centre(tmp_path / "c")
    ext = load_external(ExternalSet("c", root), 32)
    assert ext.names == ["a01", "b02", "c03", "d04"]
    assert ext.images.shape == (4, 32, 32, 3) and ext.masks.shape == (4, 32, 32, 1)
    assert set(np.unique(ext.masks)) <= {0, 1} and ext.masks.any()
    assert [s.mask.suffix for s in ext.samples] == [".png", ".png", ".tif", ".jpg"]


@pytest.mark.parametrize("setup, message", [
    ("missing", r"eval.external\[0\].root='.*nowhere' \(c\) has no images or masks/ folder"),
    ("unpaired", r"eval.external\[0\] \(c\): invalid dataset at .*1 image\(s\) without a mask"
                 r" in .*: zz9"),
    ("twice", r"eval.external / dataset: the name\(s\) c appear twice"),
    ("name", r"eval.external\[0\].name='c d' must be letters, digits"),
    ("keys", r"eval.external\[0\]=.* must be \{name: NAME, root: /path/to/folder\}"),
])
def test_validate_refuses_bad_sets_in_one_line(tmp_path, compose_cfg, setup, message):
    root = make_centre(tmp_path / "c")
    entry = f"{{name: c, root: '{root}'}}"
    entries = {"missing": f"[{{name: c, root: '{tmp_path / 'nowhere'}'}}]",
               "unpaired": f"[{entry}]", "twice": f"[{entry},{entry}]",
               "name": f"[{{name: 'c d', root: '{root}'}}]",
               "keys": f"[{{name: c, path: '{root}'}}]"}[setup]
    if setup == "unpaired":
        Image.new("RGB", (8, 8)).save(root / "images" / "zz9.png")
    cfg = compose_cfg(f"eval.external={entries}")
    with pytest.raises(ConfigError, match=message) as err:
        validate(cfg)
    assert "\n" not in str(err.value)


def test_the_dataset_group_adds_named_sets(tmp_path, compose_cfg):
    """dataset=[cvc_clinicdb,etis_larib] (conf/dataset/) with eval.external: three sets, in
    order; a dataset whose folder is missing names its own key."""
    roots = [make_centre(tmp_path / n) for n in ("a", "b", "c")]
    cfg = compose_cfg(f"eval.external=[{{name: own, root: '{roots[0]}'}}]",
                      "dataset=[cvc_clinicdb,etis_larib]",
                      f"dataset.cvc_clinicdb.root={roots[1]}",
                      f"dataset.etis_larib.root={roots[2]}")
    validate(cfg)
    sets = external_sets(cfg.eval.external, cfg.dataset)
    assert [(s.name, s.root) for s in sets] == [("own", roots[0]), ("cvc_clinicdb", roots[1]),
                                                ("etis_larib", roots[2])]
    cfg = compose_cfg("dataset=etis_larib", f"dataset.etis_larib.root={tmp_path / 'nowhere'}")
    with pytest.raises(ConfigError, match=r"^dataset.etis_larib.root='.*nowhere' \(etis_larib\) "
                                          r"has no images or masks/ folder: set "
                                          r"dataset.etis_larib.root to"):
        validate(cfg)


def test_an_empty_list_is_no_external_set(compose_cfg):
    cfg = compose_cfg()
    assert list(cfg.eval.external) == [] and external_sets(cfg.eval.external) == []
    validate(cfg)


def _report(tmp_path, compose_cfg, model, root, **eval_overrides):
    from segkit.report import report_external

    ext = load_external(ExternalSet("centre", root), 32)
    cfg = compose_cfg("eval.plots=false", "eval.bootstrap_draws=200",
                      *(f"eval.{k}={v}" for k, v in eval_overrides.items()))
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    with tracking_uri(uri):
        experiment_id = mlflow.MlflowClient(uri).create_experiment("external")
        with mlflow.start_run(experiment_id=experiment_id) as run:
            metrics = report_external(model, ext, cfg, tmp_path / "out")
    with open(tmp_path / "out" / "test_per_image.csv", newline="") as fh:
        rows = {r["name"]: r for r in csv.DictReader(fh)}
    return metrics, rows, mlflow.MlflowClient(uri).get_run(run.info.run_id)


def test_scored_at_original_resolution_against_hand_computed_dice(tmp_path, compose_cfg):
    root = make_centre(tmp_path / "c", empty="d04")
    metrics, rows, run = _report(tmp_path, compose_cfg, Constant(0.9), root)
    expected = {}
    for stem, *_ in PAIRS:  # everything predicted: Dice = 2|T| / (|T| + H*W) at full size
        truth = truth_at_original(root, stem)
        expected[stem] = 2 * truth.sum() / (truth.sum() + truth.size)
        assert float(rows[stem]["truth_fraction"]) == pytest.approx(truth.mean())
        assert float(rows[stem]["dice"]) == pytest.approx(expected[stem])
    assert expected["d04"] == 0  # the empty mask, all predicted
    assert metrics["test_mdice"] == pytest.approx(np.mean(list(expected.values())))
    assert float(rows["d04"]["nsd"]) == 0 and rows["d04"]["hd95"] == "nan"
    assert metrics["test_hd95_undefined"] == 1
    logged = {k.replace("/", "_"): v for k, v in run.data.metrics.items()}
    assert logged["test_mdice"] == pytest.approx(metrics["test_mdice"])
    assert metrics["test_mdice_ci_low"] <= metrics["test_mdice"] <= metrics["test_mdice_ci_high"]
    summary = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert summary["images"] == 4 and summary["dataset"] == "centre"
    assert "external test set centre" in (tmp_path / "out" / "report.md").read_text()


def test_nothing_predicted_scores_the_empty_mask_as_correct(tmp_path, compose_cfg):
    root = make_centre(tmp_path / "c", empty="d04")
    metrics, rows, _ = _report(tmp_path, compose_cfg, Constant(0.1), root, boundary="false")
    assert [float(rows[s]["dice"]) for s in ("a01", "b02", "c03", "d04")] == [0, 0, 0, 1]
    assert metrics["test_mdice"] == pytest.approx(0.25) and "hd95" not in rows["a01"]


@pytest.mark.e2e
def test_evaluate_logs_one_linked_run_per_set(tmp_path, smoke_run):
    """`run.py task=evaluate eval.external=[...] dataset=...` on the session's smoke model: a
    run per set (one from the list, one from the dataset group), named and tagged by it and
    linked to the source run, with the per-image CSV."""
    from segkit.metric_names import internal

    roots = {"centre_b": make_centre(tmp_path / "b"),
             "cvc_clinicdb": make_centre(tmp_path / "c", pairs=PAIRS[:2])}
    res = run_py("task=evaluate", f"model_uri={smoke_run.model_uri}",
                 f"eval.external=[{{name: centre_b, root: '{roots['centre_b']}'}}]",
                 "dataset=cvc_clinicdb", f"dataset.cvc_clinicdb.root={roots['cvc_clinicdb']}",
                 "eval.plots=false", "tracking.experiment=external",
                 f"hydra.run.dir={tmp_path}/out", env=cli_env(uri=smoke_run.uri))
    assert res.returncode == 0, res.stderr[-3000:]
    assert "external centre_b: 4 images at original resolution: mDice" in res.stdout
    client = mlflow.MlflowClient(smoke_run.uri)
    exp = client.get_experiment_by_name("external")
    runs = {r.info.run_name: r for r in client.search_runs([exp.experiment_id])}
    assert set(runs) == {"external centre_b", "external cvc_clinicdb"}
    for name, root in roots.items():
        run = runs[f"external {name}"]
        assert run.data.tags["segkit.dataset"] == name
        assert run.data.tags["segkit.source_run_id"] == smoke_run.run_id
        folder = tmp_path / "out" / "external" / name / "evaluation"
        rows = list(csv.DictReader((folder / "test_per_image.csv").read_text().splitlines()))
        assert len(rows) == (4 if name == "centre_b" else 2)
        for row in rows:
            truth = truth_at_original(root, row["name"])
            assert float(row["truth_fraction"]) == pytest.approx(truth.mean())
        metrics = internal(run.data.metrics)
        assert metrics["test_mdice"] == pytest.approx(np.mean([float(r["dice"]) for r in rows]))
        assert "evaluation/test_per_image.csv" in {
            f"evaluation/{a.path.split('/')[-1]}" for a in client.list_artifacts(
                run.info.run_id, "evaluation")}


@pytest.mark.e2e
def test_a_bad_set_fails_before_any_run(tmp_path):
    res = run_py("debug=smoke", f"eval.external=[{{name: x, root: '{tmp_path}/none'}}]",
                 f"hydra.run.dir={tmp_path}/out", env=cli_env(uri=f"sqlite:///{tmp_path}/m.db"),
                 timeout=120)
    assert res.returncode == 2
    assert "eval.external[0].root=" in res.stderr and "has no images or masks/" in res.stderr
    assert not (tmp_path / "m.db").exists()


def test_boxed_resize_gives_the_full_resize_scores():
    """boundary_from_probs resizes only the box that can hold foreground: the same HD95/NSD
    as resizing the whole map (segkit.evaluation.resize_probs) then scoring, over random
    shapes, sizes and empty cases."""
    from segkit.boundary import boundary_from_probs, boundary_scores
    from segkit.evaluation import resize_probs

    rng = np.random.default_rng(0)
    for k in range(60):
        side, h, w = (int(v) for v in rng.integers((16, 30, 30), (64, 200, 200)))
        yy, xx = np.mgrid[0:side, 0:side] / side
        prob = np.clip(1 - np.hypot(yy - rng.uniform(), xx - rng.uniform()) / rng.uniform(0.1, 0.5)
                       + rng.normal(0, 0.1, (side, side)), 0, 1).astype(np.float32)
        prob = np.full_like(prob, 0.1) if k % 7 == 0 else prob
        ty, tx = np.mgrid[0:h, 0:w]
        truth = np.hypot(ty / h - rng.uniform(), tx / w - rng.uniform()) < rng.uniform(0.05, 0.4)
        truth = np.zeros_like(truth) if k % 11 == 0 else truth
        full = boundary_scores(resize_probs(prob, (h, w)) >= 0.5, truth, 2.0)
        assert boundary_from_probs(prob, truth, 0.5, 2.0) == pytest.approx(full, nan_ok=True)
