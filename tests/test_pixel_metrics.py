"""Pixel AUROC and PRO against hand-computed cases (pure numpy + OpenCV: no OpenVINO, no data)."""

from __future__ import annotations

import numpy as np
import pytest

from ovdoc.errors import OvdocError
from ovdoc.runtime.pixel_metrics import (
    binarize_mask,
    downsample_pair,
    pixel_auroc,
    pixel_metrics,
    pro_score,
)


def two_regions() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A 20x20 anomalous image with a small region A (2x2) and a big one B (10x10), and a normal image."""
    mask = np.zeros((20, 20), np.uint8)
    mask[1:3, 1:3] = 255  # A: 4 px
    mask[8:18, 8:18] = 255  # B: 100 px
    a = np.zeros((20, 20), bool)
    a[1:3, 1:3] = True
    return mask, a, np.zeros((20, 20), np.uint8)


def test_perfect_and_inverted_maps():
    mask, _, normal = two_regions()
    perfect = [mask / 255.0, normal / 255.0]
    assert pixel_auroc(perfect, [mask, normal]) == pytest.approx(1.0)
    assert pro_score(perfect, [mask, normal]) == pytest.approx(1.0)
    inverted = [1.0 - m for m in perfect]
    assert pixel_auroc(inverted, [mask, normal]) == pytest.approx(0.0)
    # every mask-free pixel outranks every region pixel: PRO stays 0 until FPR 1
    assert pro_score(inverted, [mask, normal]) == pytest.approx(0.0)


def test_random_map_is_chance():
    rng = np.random.default_rng(0)
    masks = [(rng.random((64, 64)) < 0.2).astype(np.uint8) * 255 for _ in range(8)]
    maps = [rng.random((64, 64)) for _ in range(8)]
    assert pixel_auroc(maps, masks) == pytest.approx(0.5, abs=0.02)
    # PRO of a random map: PRO(t) = FPR(t) in expectation, integral of x over [0, 0.3] / 0.3 = 0.15
    assert pro_score(maps, masks) == pytest.approx(0.15, abs=0.02)


def test_map_that_covers_one_of_two_regions():
    """Region A (4 px) scored 1, region B (100 px) scored 0, background 0.5.

    PRO: at every FPR up to 1 exactly A is found -> mean overlap over the 2 regions = 0.5 (per region,
    not per pixel: pixel overlap would be 4/104). Pixel AUROC: a positive pixel beats all negatives
    with probability 4/104 (A), and none when in B -> 4/104.
    """
    mask, a, normal = two_regions()
    amap = np.where(a, 1.0, 0.5)
    amap[8:18, 8:18] = 0.0
    maps = [amap, np.full((20, 20), 0.5)]
    assert pro_score(maps, [mask, normal]) == pytest.approx(0.5)
    assert pixel_auroc(maps, [mask, normal]) == pytest.approx(4 / 104)
    m = pixel_metrics(maps, [mask, normal])
    assert m["n_regions"] == 2 and m["n_mask_pixels"] == 104 and m["n_normal_pixels"] == 2 * 400 - 104


def test_pro_integrates_to_the_fpr_limit():
    """Region found only after 10% of the background: PRO(FPR) = 0 up to 0.1, then 1 -> (0.3-0.1)/0.3."""
    mask = np.zeros((10, 10), np.uint8)
    mask[0, 0] = 255  # one 1-px region; 99 background pixels
    amap = np.zeros((10, 10))
    flat = amap.ravel()
    flat[1:11] = 2.0  # 10 background pixels (FPR 10/99) outrank the region
    flat[0] = 1.0
    fpr_at_region = 10 / 99
    # curve: (0,0) -> (10/99, 0) -> (10/99, 1) -> (1, 1): area up to 0.3 = 0.3 - 10/99
    assert pro_score([amap], [mask]) == pytest.approx((0.3 - fpr_at_region) / 0.3)
    assert pro_score([amap], [mask], fpr_limit=1.0) == pytest.approx(1 - fpr_at_region)


def test_auroc_matches_sklearn_with_ties():
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(1)
    masks = [rng.random((30, 40)) < 0.1 for _ in range(5)]
    maps = [np.round(rng.random((30, 40)) * 4 + m, 0) for m in masks]  # few levels: many ties
    labels, scores = np.concatenate([m.ravel() for m in masks]), np.concatenate([x.ravel() for x in maps])
    want = roc_auc_score(labels, scores)
    assert pixel_auroc(maps, masks) == pytest.approx(want, abs=1e-12)


def test_regions_are_8_connected_and_per_image():
    mask = np.zeros((6, 6), bool)
    mask[1, 1] = mask[2, 2] = True  # diagonal neighbours: one region
    other = np.zeros((6, 6), bool)
    other[4, 4] = True
    m = pixel_metrics([mask.astype(float), other.astype(float)], [mask, other])
    assert m["n_regions"] == 2 and m["pro"] == pytest.approx(1.0)


def test_undefined_without_regions_and_bad_input():
    normal = np.zeros((8, 8), np.uint8)
    m = pixel_metrics([np.random.default_rng(0).random((8, 8))], [normal])
    assert m["pixel_auroc"] is None and m["pro"] is None
    with pytest.raises(OvdocError, match="differs"):
        pixel_metrics([np.zeros((8, 8))], [np.zeros((8, 9), np.uint8)])
    with pytest.raises(OvdocError, match="NaN"):
        pixel_metrics([np.full((8, 8), np.nan)], [normal])


def test_binarize_and_downsample():
    mask = np.zeros((600, 250), np.uint8)
    mask[100:300, 50:60] = 200  # anti-aliased masks: > 127 counts
    mask[400, 100] = 255  # a 1-px defect must survive a 2.3x shrink
    mask[500, 10] = 100  # below the level: not a defect
    assert binarize_mask(mask).sum() == 200 * 10 + 1
    amap = np.random.default_rng(0).random((600, 250)).astype(np.float32)
    small_map, small_mask = downsample_pair(amap, mask)
    assert small_map.shape == small_mask.shape == (256, 107)
    import cv2

    assert cv2.connectedComponents(small_mask.astype(np.uint8))[0] - 1 == 2
    m, z = downsample_pair(np.zeros((100, 80)), None)  # small stays as is; no mask = all normal
    assert m.shape == (100, 80) and not z.any()
    with pytest.raises(OvdocError, match="differs"):
        downsample_pair(amap, mask[:, :200])


def _pro_by_definition(maps, masks, limit=0.3):
    """PRO straight from its definition: a loop over every distinct score as threshold (slow, obvious)."""
    import cv2

    regions = []
    for m, k in zip(maps, masks, strict=True):
        n, labels = cv2.connectedComponents(k.astype(np.uint8), connectivity=8)
        regions += [(m, labels == r) for r in range(1, n)]
    background = np.concatenate([m[~k] for m, k in zip(maps, masks, strict=True)])
    points = [(0.0, 0.0)]
    for t in np.unique(np.concatenate([m.ravel() for m in maps]))[::-1]:
        points.append((np.mean(background >= t), np.mean([np.mean(m[r] >= t) for m, r in regions])))
    x, y = np.array(points).T
    keep = x <= limit
    xs, ys = x[keep], y[keep]
    if xs[-1] < limit:
        i = np.flatnonzero(~keep)[0]
        xs = np.r_[xs, limit]
        ys = np.r_[ys, y[i - 1] + (y[i] - y[i - 1]) * (limit - x[i - 1]) / (x[i] - x[i - 1])]
    return float(np.sum(np.diff(xs) * (ys[1:] + ys[:-1]) / 2) / limit)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_pro_matches_its_definition(seed):
    rng = np.random.default_rng(seed)
    masks = []
    for _ in range(4):
        k = np.zeros((24, 24), bool)
        for _ in range(rng.integers(0, 3)):  # 0-2 blobs per image, some images normal
            y, x, h, w = rng.integers(0, 20), rng.integers(0, 20), rng.integers(1, 6), rng.integers(1, 6)
            k[y : y + h, x : x + w] = True
        masks.append(k)
    if not any(k.any() for k in masks):
        masks[0][3:6, 3:6] = True
    maps = [np.round(rng.random((24, 24)) * 6 + 2 * k, 0) for k in masks]  # few levels: ties everywhere
    assert pro_score(maps, masks) == pytest.approx(_pro_by_definition(maps, masks), abs=1e-12)
