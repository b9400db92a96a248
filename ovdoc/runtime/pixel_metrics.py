"""Pixel-level accuracy of anomaly maps against ground-truth masks: pixel AUROC and PRO (MVTec AD protocol).

Pure numpy + OpenCV, no OpenVINO, so it is testable against hand-computed cases.

- Maps and masks are first brought to a bounded size (longer side <= `MAX_SIDE` = 256 px, aspect kept):
  a 600x250 tile then costs 256x107 pixels, which keeps a few hundred images to ~10 M pixels and one
  sort. Masks are binarised at > 127, shrunk with area averaging and kept where >= half covered (a
  region that would vanish keeps the cells it touches instead: PRO counts regions).
- Pixel AUROC: every pixel of every image is a sample, positive where the mask is set; ties count 1/2
  (trapezoids between distinct score levels), exactly what `sklearn.metrics.roc_auc_score` computes.
- PRO (per-region overlap; Bergmann et al., MVTec AD, IJCV 2021): ground-truth regions are the
  8-connected components of each mask (cv2.connectedComponents). At each threshold t, PRO(t) = mean over
  all regions of all images of the share of the region's pixels with score >= t, and FPR(t) = share of
  all mask-free pixels (normal images and the background of anomalous ones) with score >= t. The
  PRO-over-FPR curve is integrated from FPR 0 to `FPR_LIMIT` = 0.3 (linear interpolation at 0.3) and
  divided by 0.3, so a perfect map scores 1.0. Every distinct score is a threshold (no binning); only
  the mask pixels are argsorted, the rest is one np.sort + searchsorted (26 M pixels: a few seconds).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from ovdoc.errors import OvdocError

MAX_SIDE = 256
FPR_LIMIT = 0.3
MASK_LEVEL = 127  # mask pixels above this are anomalous (the magnetic-tile masks are anti-aliased 0..255)


def binarize_mask(mask: np.ndarray) -> np.ndarray:
    """uint8/bool/float mask (HxW, or HxWxC: any channel) -> bool; > 127 for 8-bit masks, > 0.5 for floats."""
    m = np.asarray(mask)
    if m.ndim == 3:
        m = m.max(axis=2)
    if m.dtype == bool:
        return m
    if np.issubdtype(m.dtype, np.floating):
        return m > 0.5
    return m > MASK_LEVEL


def bounded_shape(shape: tuple[int, ...], max_side: int = MAX_SIDE) -> tuple[int, int]:
    """(h, w) scaled so the longer side is at most `max_side` (never enlarged)."""
    h, w = int(shape[0]), int(shape[1])
    scale = min(1.0, max_side / max(h, w))
    return max(1, round(h * scale)), max(1, round(w * scale))


def downsample_pair(
    amap: np.ndarray, mask: np.ndarray | None, max_side: int = MAX_SIDE
) -> tuple[np.ndarray, np.ndarray]:
    """A frame-sized map and its mask (None = all normal) -> float32 map and bool mask of bounded size."""
    amap = np.asarray(amap, np.float32)
    if amap.ndim != 2:
        raise OvdocError(f"an anomaly map must be 2-D, got shape {amap.shape}")
    h, w = bounded_shape(amap.shape, max_side)
    small_map = amap if (h, w) == amap.shape else cv2.resize(amap, (w, h), interpolation=cv2.INTER_AREA)
    if mask is None:
        return small_map, np.zeros((h, w), bool)
    binary = binarize_mask(mask)
    if binary.shape != amap.shape:
        raise OvdocError(f"mask shape {binary.shape} differs from the map's {amap.shape}")
    if (h, w) == binary.shape:
        return small_map, binary
    cover = cv2.resize(binary.astype(np.float32), (w, h), interpolation=cv2.INTER_AREA)
    small_mask = cover >= 0.5
    # a region (e.g. a 1-px blowhole) that no cell covers by half keeps the cells it touches: PRO counts
    # regions, so shrinking must not delete one
    n, labels = cv2.connectedComponents(binary.astype(np.uint8), connectivity=8)
    if n > 1:
        ys, xs = np.nonzero(binary)
        region = labels[ys, xs]
        cy, cx = ys * h // binary.shape[0], xs * w // binary.shape[1]
        kept = np.bincount(region, weights=small_mask[cy, cx], minlength=n) > 0
        lost = ~kept[region]
        small_mask[cy[lost], cx[lost]] = True
    return small_map, small_mask


@dataclass
class PixelCurves:
    """Operating points at every distinct score, from the highest threshold down (plus the (0, 0) start)."""

    fpr: np.ndarray  # share of mask-free pixels at or above the threshold
    tpr: np.ndarray  # share of mask pixels at or above the threshold
    pro: np.ndarray  # mean over regions of the share of the region at or above the threshold
    n_regions: int
    n_positive: int
    n_negative: int


def pixel_curves(maps: Sequence[np.ndarray], masks: Sequence[np.ndarray]) -> PixelCurves:
    """ROC and PRO curves over all pixels of all images (maps and masks already the same, bounded size).

    Only the (few) mask pixels are argsorted; the mask-free pixels are sorted once (np.sort, no index
    array) and counted with searchsorted. Between two distinct mask-pixel scores only the FPR moves, so
    the operating points at each distinct mask-pixel score s -- (FPR just above s, previous TPR/PRO) and
    (FPR at s, TPR/PRO at s) -- trace exactly the curve through every distinct score, ties included.
    """
    if len(maps) != len(masks) or not len(maps):
        raise OvdocError(f"pixel metrics need one mask per map (got {len(maps)} maps, {len(masks)} masks)")
    negatives, pos_scores, pos_regions = [], [], []
    offset = 0
    for amap, mask in zip(maps, masks, strict=True):
        amap = np.asarray(amap, np.float32)
        mask = np.asarray(mask, bool)
        if amap.shape != mask.shape:
            raise OvdocError(f"map shape {amap.shape} differs from its mask's {mask.shape}")
        if not np.all(np.isfinite(amap)):
            raise OvdocError("anomaly maps hold NaN or infinite values")
        negatives.append(amap[~mask])
        if mask.any():
            n, labels = cv2.connectedComponents(mask.astype(np.uint8), connectivity=8)
            pos_scores.append(amap[mask])
            pos_regions.append(labels[mask].astype(np.int64) - 1 + offset)
            offset += n - 1
    negative = np.sort(np.concatenate(negatives))
    n_negative, n_regions = len(negative), offset
    if not pos_scores:
        return PixelCurves(np.r_[0.0, 1.0], np.r_[0.0, 0.0], np.r_[0.0, 0.0], 0, 0, n_negative)
    score = np.concatenate(pos_scores)
    region = np.concatenate(pos_regions)
    n_positive = len(score)
    sizes = np.bincount(region, minlength=n_regions)
    order = np.argsort(-score, kind="stable")
    ordered = score[order]
    last = np.r_[np.flatnonzero(np.diff(ordered) != 0), n_positive - 1]  # end of each tie block
    levels = ordered[last]
    tpr = (last + 1) / n_positive
    pro = np.cumsum(1.0 / (sizes[region[order]] * n_regions))[last]
    denominator = max(n_negative, 1)
    fpr_above = (n_negative - np.searchsorted(negative, levels, side="right")) / denominator
    fpr_at = (n_negative - np.searchsorted(negative, levels, side="left")) / denominator
    prev_tpr, prev_pro = np.r_[0.0, tpr[:-1]], np.r_[0.0, pro[:-1]]
    fpr = np.r_[0.0, np.column_stack([fpr_above, fpr_at]).ravel(), 1.0]
    return PixelCurves(
        fpr=fpr,
        tpr=np.r_[0.0, np.column_stack([prev_tpr, tpr]).ravel(), 1.0],
        pro=np.r_[0.0, np.column_stack([prev_pro, pro]).ravel(), 1.0],
        n_regions=n_regions, n_positive=n_positive, n_negative=n_negative,
    )


def _area(x: np.ndarray, y: np.ndarray) -> float:
    return float(np.sum((x[1:] - x[:-1]) * (y[1:] + y[:-1]) / 2.0))


def auroc_from(curves: PixelCurves) -> float | None:
    """Area under the pixel ROC; None without both mask and mask-free pixels."""
    if curves.n_positive == 0 or curves.n_negative == 0:
        return None
    return _area(curves.fpr, curves.tpr)


def pro_from(curves: PixelCurves, fpr_limit: float = FPR_LIMIT) -> float | None:
    """Normalised area under PRO(FPR) for FPR in [0, fpr_limit]; None without regions or background."""
    if curves.n_regions == 0 or curves.n_negative == 0:
        return None
    if not 0.0 < fpr_limit <= 1.0:
        raise OvdocError(f"the PRO FPR limit must be in (0, 1], got {fpr_limit}")
    fpr, pro = curves.fpr, curves.pro
    cut = int(np.searchsorted(fpr, fpr_limit, side="right"))  # fpr[:cut] <= limit (fpr is non-decreasing)
    x, y = fpr[:cut], pro[:cut]
    if cut < len(fpr) and x[-1] < fpr_limit:  # interpolate the point at the limit
        x0, x1, y0, y1 = fpr[cut - 1], fpr[cut], pro[cut - 1], pro[cut]
        y_at = y0 + (y1 - y0) * (fpr_limit - x0) / (x1 - x0)
        x, y = np.r_[x, fpr_limit], np.r_[y, y_at]
    return _area(x, y) / fpr_limit


def pixel_auroc(maps: Sequence[np.ndarray], masks: Sequence[np.ndarray]) -> float | None:
    return auroc_from(pixel_curves(maps, [binarize_mask(m) for m in masks]))


def pro_score(
    maps: Sequence[np.ndarray], masks: Sequence[np.ndarray], fpr_limit: float = FPR_LIMIT
) -> float | None:
    return pro_from(pixel_curves(maps, [binarize_mask(m) for m in masks]), fpr_limit)


def pixel_metrics(
    maps: Sequence[np.ndarray], masks: Sequence[np.ndarray], fpr_limit: float = FPR_LIMIT
) -> dict:
    """Both metrics from one sort, plus the counts they rest on (for the report)."""
    curves = pixel_curves(maps, [binarize_mask(m) for m in masks])
    return {
        "pixel_auroc": auroc_from(curves),
        "pro": pro_from(curves, fpr_limit),
        "pro_fpr_limit": fpr_limit,
        "n_regions": curves.n_regions,
        "n_mask_pixels": curves.n_positive,
        "n_normal_pixels": curves.n_negative,
    }
