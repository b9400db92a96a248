"""Per-image intensity normalisation (`PreprocessSpec.intensity`, `ovdoc fit --intensity`): one exposure
change of a part gives (nearly) the same model input, the option lives in the bundle, and bundles without
it load as before."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from _runtime_helpers import build_seed_ir, error_line, ovdoc_cli, tile_files, write_pngs

from ovdoc.runtime.preprocess import PreprocessSpec


def _tile(magnetic_tile_dir) -> np.ndarray:
    return cv2.imread(str(tile_files(magnetic_tile_dir)[0]))


def test_mean_makes_an_exposure_change_vanish(magnetic_tile_dir):
    """A tile and its 2x darker copy: near-equal prepared input with `mean` (and `meanstd`), not with none;
    prepare_at (the live loop's fused path) applies it as prepare does."""
    bright = _tile(magnetic_tile_dir)
    dark = (bright.astype(np.float32) / 2).round().astype(np.uint8)
    gap = {}
    for mode in ("none", "mean", "meanstd"):
        spec = PreprocessSpec(96, 128, "RGB", resize="stretch", intensity=mode)
        a, b = spec.prepare(bright).astype(np.float32), spec.prepare(dark).astype(np.float32)
        gap[mode] = float(np.abs(a - b).mean())
        res = (bright.shape[1] // 2, bright.shape[0] // 2)
        assert np.abs(spec.prepare_at(bright, res).astype(np.float32)
                      - spec.prepare(cv2.resize(bright, res, interpolation=cv2.INTER_AREA))).mean() < 4.0
    assert gap["none"] > 20.0, gap  # the darker copy is far from the original without normalisation
    assert gap["mean"] < 1.5 and gap["meanstd"] < 1.5, gap  # and a rounding apart with it
    prepared = PreprocessSpec(96, 128, "RGB", resize="stretch", intensity="mean").prepare(dark)
    assert prepared.dtype == np.uint8 and abs(float(prepared.mean()) - 128.0) < 3.0


def test_record_without_the_field_reads_as_none_and_none_is_not_written():
    old = {"height": 96, "width": 96, "color": "RGB", "mean": [0, 0, 0], "std": [255, 255, 255],
           "resize": "center_crop"}  # a manifest's preprocessing before the option existed
    spec = PreprocessSpec.from_dict(old)
    assert spec.intensity == "none" and spec.to_dict() == old  # new default bundles: byte for byte as before
    assert PreprocessSpec.from_dict(old | {"intensity": "mean"}).to_dict()["intensity"] == "mean"


@pytest.fixture(scope="module")
def fitted(seed_dir, magnetic_tile_dir, tmp_path_factory) -> dict:
    """One IR and 12 normal tiles; a bundle fitted through `ovdoc fit --intensity mean`, one without it."""
    from ovdoc.runtime.bundle import fit_bundle

    root = tmp_path_factory.mktemp("intensity")
    ir = build_seed_ir(seed_dir, root / "ir")
    good = write_pngs([cv2.imread(str(p)) for p in tile_files(magnetic_tile_dir)[:12]], root / "good")
    done = ovdoc_cli("fit", str(ir), "--normal", str(good), "--out", str(root / "mean.bundle"),
                     "--intensity", "mean", "--json")
    assert done.returncode == 0, done.stderr[-2000:]
    fit_bundle(ir, good, root / "plain.bundle", progress=False)
    return {"cli": json.loads(done.stdout), "mean": root / "mean.bundle", "plain": root / "plain.bundle"}


def test_intensity_round_trips_through_a_bundle(fitted, magnetic_tile_dir):
    """fit --intensity mean -> manifest -> Detector.load: the detector prepares frames with it, and the
    model's own record (rt_info) says so too; a darker copy of a tile scores as the tile does."""
    from ovdoc.runtime.detector import Detector
    from ovdoc.runtime.ir import read_ir

    assert fitted["cli"]["intensity"] == "mean"
    manifest = json.loads((fitted["mean"] / "manifest.json").read_text())
    assert manifest["preprocess"]["intensity"] == "mean"
    _, ir_spec, _ = read_ir(fitted["mean"] / manifest["model"]["file"])
    assert ir_spec.intensity == "mean"
    det = Detector.load(fitted["mean"])
    assert det.preprocess.intensity == "mean"
    tile = cv2.imread(str(tile_files(magnetic_tile_dir)[40]))  # not among the 12 fitted
    dark = (tile.astype(np.float32) / 2).round().astype(np.uint8)
    s_mean = det.score_samples([tile, dark])
    plain = Detector.load(fitted["plain"])
    s_plain = plain.score_samples([tile, dark])
    # relative to each bundle's threshold: the exposure change moves the plain bundle's score, not this one's
    assert abs(s_mean[1] - s_mean[0]) / det.threshold_ < 0.2 * abs(s_plain[1] - s_plain[0]) / plain.threshold_


def test_bundle_without_the_field_loads_as_before(fitted):
    from ovdoc.runtime.detector import Detector

    manifest = json.loads((fitted["plain"] / "manifest.json").read_text())
    assert "intensity" not in manifest["preprocess"]
    assert Detector.load(fitted["plain"]).preprocess.intensity == "none"


def test_bad_intensity_is_one_line(tmp_path):
    done = ovdoc_cli("fit", "--normal", str(tmp_path), "--out", str(tmp_path / "b"), "--intensity", "max")
    assert done.returncode != 0
    assert "--intensity" in error_line(done) and "'max' is not one of" in done.stderr
