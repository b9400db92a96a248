"""New parts: patch mode fitted on the earlier magnetic tiles (photograph order) must still see defects on
later tiles it has never seen, with a threshold that does not flag most of their good shots.

Tile-disjoint (ovdoc.runtime.groups.tile_groups; the later tiles start more than the similarity-link
window after the last fitted one), product path (`fit_bundle_images` with the tiles as groups ->
`Detector`), the product's patch defaults. A small window so it runs in seconds; its bounds come from
measurements (below), with margin.
"""

from __future__ import annotations

import sys

import cv2
import numpy as np
import pytest
from conftest import REPO

sys.path.insert(0, str(REPO / "benchmarks"))

# fitted on the defect-free shots of the first 10 defect-free tiles (86 shots: fewer than the bank size, so no
# coreset and a fit of seconds), scored on the next 10 tiles (40 good shots, 36 defect shots).
TRAIN_TILES, TEST_TILES = 10, 10
# Measured 2026-12-08 with the cross-fit threshold (the default since frozen-defaults-2026-12-08), fit seeds
# 0 (what this test runs) / 1 / 2: image AUROC 0.877 / 0.852 / 0.877, FPR 0.00 on all three at the calibrated
# threshold (1 % target), TPR 0.03-0.14 (ten tiles cannot support a 1 % target, so the threshold sits at the
# top of the calibration scores). Without whole tiles held out of the bank (the calibration leak the group
# protocol fixes) the FPR was 0.875 / 1.00 / 1.00. Bounds: AUROC 0.80 (about two seed-to-seed standard
# deviations below), FPR 0.10: at most one new tile's shots (4 of 40) flagged.
MIN_AUROC = 0.80
MAX_FPR = 0.10


@pytest.fixture(scope="module")
def scored(magnetic_tile_dir, tmp_path_factory):
    import accuracy

    from ovdoc.irmodels import imagenet_backbone
    from ovdoc.runtime.bundle import FitConfig, fit_bundle_images
    from ovdoc.runtime.detector import Detector

    split = accuracy.mt_photo_order(TRAIN_TILES, TEST_TILES)
    info = accuracy.mt_tiles()
    tile_of = dict(zip(map(str, info["paths"]), info["tiles"], strict=True))
    out = tmp_path_factory.mktemp("new-parts") / "tiles.bundle"
    manifest = fit_bundle_images(
        imagenet_backbone(), (cv2.imread(str(p)) for p in split["train"]), out, FitConfig(mode="patch"),
        progress=False, input_report={"keys": [("file", tile_of[str(p)]) for p in split["train"]]},
    )
    det = Detector.load(out)
    normal = det.score_samples([cv2.imread(str(p)) for p in split["test_normal"]])
    defect = det.score_samples([cv2.imread(str(p)) for p in split["test_defect"]])
    return split, manifest, det, normal, defect, tile_of


def test_the_later_tiles_are_new(scored):
    split, manifest, _, normal, defect, tile_of = scored
    train = {tile_of[str(p)] for p in split["train"]}
    later = {tile_of[str(p)] for p in split["test_normal"] + split["test_defect"]}
    assert not train & later
    assert len(normal) >= 40 and len(defect) >= 30  # enough shots for the bounds to mean something
    # the threshold was set on whole tiles held out of the bank, not on shots whose twins are in it
    method = manifest["threshold"]["method"]
    assert "kept out of the bank" in method and " images) kept out" not in method, method
    # and every bank image was scored against the bank less its fold of whole tiles (cross-fit)
    assert manifest["threshold"]["scores_from"] == "cross-fit" and "folds of whole" in method, method


def test_new_tiles_auroc_and_threshold_fpr_hold(scored):
    from ovdoc.runtime.evaluation import auc

    _, _, det, normal, defect, _ = scored
    value = auc(normal, defect)
    fpr = float(np.mean(normal > det.threshold_))
    assert value >= MIN_AUROC, f"image AUROC on new tiles {value:.4f} < {MIN_AUROC}"
    assert fpr <= MAX_FPR, f"FPR on new good tiles {fpr:.3f} > {MAX_FPR} at the 1 % target"
