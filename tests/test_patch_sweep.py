"""benchmarks/magnetic_tile_patch_sweep.py: the pixel breakdown tells a confounded data set from a sharp
map, and re-running some rows keeps the others' records (each with the command that made it)."""

from __future__ import annotations

import sys

import numpy as np
from conftest import REPO

sys.path.insert(0, str(REPO / "benchmarks"))

import magnetic_tile_patch_sweep as sweep  # noqa: E402


def _maps(defect_background: float, seed: int = 0) -> tuple[list, list, int]:
    """20 normal and 20 defect 120x160 maps, each with its own level (images differ), each defect image
    with a 20x20 defect scored +1."""
    rng = np.random.default_rng(seed)
    maps, masks = [], []
    for i in range(40):
        m = rng.normal(rng.normal(1.0, 0.05), 0.05, (120, 160)).astype(np.float32)
        k = np.zeros((120, 160), bool)
        if i >= 20:
            m += defect_background  # the whole defect image, off the mask too
            k[10:30, 10:30] = True
            m[k] += 1.0
        maps.append(m)
        masks.append(k)
    return maps, masks, 20


def test_pixel_breakdown_separates_a_confounded_background_from_a_sharp_map():
    sharp = sweep.pixel_breakdown(*_maps(0.0))
    confounded = sweep.pixel_breakdown(*_maps(0.3))
    # defect pixels top everything in both
    assert sharp["vs_normal_images"] > 0.99 and confounded["vs_normal_images"] > 0.99
    # far from the masks, a sharp map's defect images look normal; a confounded one's do not
    assert 0.3 <= sharp["far_from_mask_image_auroc"] <= 0.7
    assert confounded["far_from_mask_image_auroc"] == 1.0
    assert sharp["far_from_mask_images"] == confounded["far_from_mask_images"] == 20
    off = "defect_images_off_mask"
    assert confounded["mean_map"][off] > sharp["mean_map"][off] + 0.2


def test_rerunning_some_rows_keeps_the_other_records():
    first, second, third = list(sweep.ROWS)[:3]
    previous = {"command": "old command", "seeds": [0, 1, 2], "date": "2026-12-06",
                "rows": {first: {"pixel_auroc": [0.9, 0.0]}, second: {"pixel_auroc": [0.8, 0.0]},
                         "a row since removed": {"pixel_auroc": [0.1, 0.0]}}}
    fresh = {second: {"pixel_auroc": [0.85, 0.0], "command": "new command"},
             third: {"pixel_auroc": [0.7, 0.0], "command": "new command"}}
    merged = sweep.merge_records(fresh, previous)
    assert list(merged) == [first, second, third]  # ROWS order, the removed row gone
    assert merged[first]["command"] == "old command" and merged[first]["seeds"] == [0, 1, 2]
    assert merged[second] == fresh[second] and merged[third]["command"] == "new command"


def test_defect_free_band_keeps_clear_of_the_defect():
    mask = np.zeros((300, 200), bool)
    mask[40:60, 150:170] = True  # near the top right
    x, y, w, h = sweep.defect_free_band(mask, margin=30)
    assert (x, w) == (0, 200) and y + h == 300  # a full-width band along the bottom edge
    assert y >= 60 + 30 and h >= 0.3 * 300
    band = np.zeros_like(mask)
    band[y : y + h, x : x + w] = True
    assert not (band & mask).any()
    everywhere = np.zeros((300, 200), bool)
    everywhere[::50, ::50] = True  # defects all over: no band is clear
    assert sweep.defect_free_band(everywhere, margin=30) is None


def test_the_defaults_row_is_what_ovdoc_fit_builds(magnetic_tile_dir):
    import cv2

    from ovdoc.runtime import patch
    from ovdoc.runtime.bundle import default_patch_size

    config, d = patch.PatchConfig(), sweep.D
    assert (d.reduce, d.dim, d.coreset, d.nprobe, d.normalise) == (
        config.reduce, config.dim, config.coreset, config.nprobe, config.normalise)
    assert d.layers == patch.DEFAULT_LAYERS and d.sigma == patch.MAP_SIGMA_CELLS
    assert d.index == "ivf" and d.coreset >= patch.IVF_MIN_BANK  # what index="auto" picks for this bank
    # the input `ovdoc fit --mode patch` picks for the normal tiles (their median aspect)
    normals = sorted((magnetic_tile_dir / "MT_Free").glob("Imgs/*.jpg"))[::10]
    shapes = [cv2.imread(str(f), cv2.IMREAD_GRAYSCALE).shape for f in normals]
    aspects = [w / h for h, w in shapes]
    assert default_patch_size(aspects) == d.size
