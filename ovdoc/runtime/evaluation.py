"""Accuracy of a detector bundle on labelled data: AUC, rates at the calibrated threshold, ROC, image grids.

Runtime-side (OpenVINO + FAISS through `ovdoc.runtime.detector.Detector`): no TensorFlow, so a board can
evaluate the bundle it will run.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from ovdoc.errors import OvdocError
from ovdoc.runtime.images import MASK_SUFFIXES


@dataclass
class EvalResult:
    normal_scores: np.ndarray
    anomalous_scores: np.ndarray
    threshold: float

    def metrics(self) -> dict:
        from sklearn.metrics import roc_auc_score

        y, s = self.labels_scores()
        fpr = float(np.mean(self.normal_scores > self.threshold))
        tpr = float(np.mean(self.anomalous_scores > self.threshold))
        return {
            "auc": float(roc_auc_score(y, s)),
            "threshold": self.threshold,
            "tpr_at_threshold": tpr,
            "fpr_at_threshold": fpr,
            "tpr_at_fpr_1pct": tpr_at_fpr(self.normal_scores, self.anomalous_scores, 0.01),
            "n_normal": int(len(self.normal_scores)),
            "n_anomalous": int(len(self.anomalous_scores)),
        }

    def labels_scores(self) -> tuple[np.ndarray, np.ndarray]:
        y = np.r_[np.zeros(len(self.normal_scores)), np.ones(len(self.anomalous_scores))]
        return y, np.r_[self.normal_scores, self.anomalous_scores]


def tpr_at_fpr(normal: np.ndarray, anomalous: np.ndarray, fpr: float) -> float:
    """Share of anomalies flagged by the threshold that flags `fpr` of the normal test images."""
    threshold = np.quantile(normal, 1.0 - fpr, method="higher")
    return float(np.mean(anomalous > threshold))


def auc(normal_scores: np.ndarray, anomalous_scores: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    y = np.r_[np.zeros(len(normal_scores)), np.ones(len(anomalous_scores))]
    return float(roc_auc_score(y, np.r_[normal_scores, anomalous_scores]))


def evaluate_detector(detector, normal: list | np.ndarray, anomalous: list | np.ndarray) -> EvalResult:
    if len(normal) == 0 or len(anomalous) == 0:
        raise OvdocError("evaluation needs at least one normal and one anomalous image")
    return EvalResult(
        np.asarray(detector.score_samples(list(normal)), np.float64),
        np.asarray(detector.score_samples(list(anomalous)), np.float64),
        float(detector.threshold_),
    )


def plot_roc(result: EvalResult, path, title: str = "") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import roc_curve

    y, s = result.labels_scores()
    fpr, tpr, _ = roc_curve(y, s)
    m = result.metrics()
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    ax.plot(fpr, tpr, lw=1.5, label=f"AUC {m['auc']:.4f}")
    ax.plot([0, 1], [0, 1], "k:", lw=0.8)
    ax.plot([m["fpr_at_threshold"]], [m["tpr_at_threshold"]], "ro", label="bundle threshold")
    ax.set_xlabel("false-positive rate (normal flagged)")
    ax.set_ylabel("true-positive rate (anomaly flagged)")
    ax.set_title(title or "ROC")
    ax.legend(loc="lower right")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def image_grid(images: list, scores: np.ndarray, path, *, n: int = 8, tile: int = 96) -> None:
    """Two rows: the `n` most anomalous anomalies (top) and the `n` least anomalous (bottom), with scores."""
    order = np.argsort(scores)
    rows = [order[::-1][:n], order[:n]]
    canvas = np.full((2 * (tile + 18), n * tile, 3), 255, np.uint8)
    for r, idx in enumerate(rows):
        for c, i in enumerate(idx):
            img = images[i]
            if img.ndim == 2:
                img = cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
            y0 = r * (tile + 18)
            canvas[y0 : y0 + tile, c * tile : (c + 1) * tile] = cv2.resize(
                img, (tile, tile), interpolation=cv2.INTER_AREA
            )
            cv2.putText(
                canvas,
                f"{scores[i]:.3g}",
                (c * tile + 3, y0 + tile + 13),
                cv2.FONT_HERSHEY_SIMPLEX,
                0.4,
                (0, 0, 0),
                1,
                cv2.LINE_AA,
            )
    if not cv2.imwrite(str(path), canvas):
        raise OvdocError(f"cannot write {path}")


# --- pixel level: anomaly maps against ground-truth masks (patch-mode bundles) --------------------------
CHUNK = 16  # images scored per step: frame-sized maps are shrunk right away, so memory stays bounded


def mask_candidates(image: Path, masks: str | Path) -> list[Path]:
    """Where the mask of `image` may be: `auto` = beside it (X.png for X.jpg, X_mask.png); DIR = DIR/X.*."""
    folder = image.parent if str(masks) == "auto" else Path(masks)
    names = [image.stem + s for s in MASK_SUFFIXES] + [f"{image.stem}_mask{s}" for s in MASK_SUFFIXES]
    return [folder / n for n in names if (folder / n).resolve() != image.resolve()]


def find_mask(image: Path, masks: str | Path) -> Path | None:
    return next((p for p in mask_candidates(image, masks) if p.is_file()), None)


def drop_mask_files(paths: list[Path]) -> list[Path]:
    """Image lists from a folder like magnetic-tile's (X.jpg beside its mask X.png) lose the masks."""
    masks = {m.resolve() for p in paths if (m := find_mask(p, "auto")) is not None}
    return [p for p in paths if p.resolve() not in masks]


def image_paths(source: str) -> list[Path]:
    """Image files of an eval source (folder, glob, file) for --masks and --groups, which go by file name."""
    from ovdoc.runtime.datasets import is_dataset_spec
    from ovdoc.runtime.images import expand_sources, is_video_file

    if is_dataset_spec(source) or source.lower().endswith(".npz"):
        raise OvdocError(f"--masks and --groups go by file name: {source} must be image files (a folder, "
                         "a glob)")
    paths = expand_sources(source, tell_masks=False)
    videos = [p for p in paths if is_video_file(p)]
    if videos:
        raise OvdocError(f"--masks and --groups need image files, not videos ({videos[0]})")
    return drop_mask_files(paths)


def read_mask(path: Path, shape: tuple[int, ...]) -> np.ndarray:
    """A grey mask the size of its image (any non-zero colour channel counts); one line when it is not."""
    data = np.fromfile(str(path), dtype=np.uint8)
    mask = cv2.imdecode(data, cv2.IMREAD_GRAYSCALE) if data.size else None
    if mask is None:
        raise OvdocError(f"cannot read mask {path} (corrupt or not an image)")
    if mask.shape != tuple(shape[:2]):
        raise OvdocError(
            f"mask {path} is {mask.shape[1]}x{mask.shape[0]} but its image is {shape[1]}x{shape[0]}"
        )
    return mask


def masks_for(paths: list[Path], images: list, masks: str | Path, *, anomalous: bool) -> list:
    """One mask (or None = all normal) per image; every anomalous image must have one."""
    if str(masks) != "auto" and not Path(masks).is_dir():
        raise OvdocError(f"--masks: expected auto or a folder, got {masks}")
    found = [find_mask(p, masks) for p in paths]
    missing = [p for p, m in zip(paths, found, strict=True) if m is None]
    if anomalous and missing:
        where = "beside it" if str(masks) == "auto" else f"in {masks}"
        raise OvdocError(
            f"no mask for {len(missing)} of {len(paths)} anomalous images (e.g. {missing[0].name}: "
            f"looked for {missing[0].stem}.png or {missing[0].stem}_mask.png {where})"
        )
    return [None if m is None else read_mask(m, img.shape) for m, img in zip(found, images, strict=True)]


@dataclass
class PixelEval:
    """Image scores plus bounded-size anomaly maps and masks of every image, and the pixel metrics."""

    result: EvalResult
    normal_maps: list
    anomalous_maps: list
    normal_masks: list
    anomalous_masks: list
    pixel: dict | None

    def metrics(self) -> dict:
        out = self.result.metrics()
        if self.pixel is not None:
            out |= {"pixel_auroc": self.pixel["pixel_auroc"], "pro": self.pixel["pro"], "pixel": self.pixel}
        return out


def frame_maps(detector, images: list) -> tuple[np.ndarray, list[np.ndarray]]:
    """Image scores and frame-sized smoothed anomaly maps from one inference pass.

    The same arithmetic as `Detector.score_samples` + `Detector.anomaly_map` (shared contract:
    features -> score_outputs -> smooth_map -> map_to_frame), without running the model twice.
    """
    scores, maps, _ = frame_maps_and_points(detector, images)
    return scores, maps


def frame_maps_and_points(detector, images: list) -> tuple[np.ndarray, list[np.ndarray], list]:
    """`frame_maps` plus each image's anomaly centre (x, y) (Detector.peak_point), from the same pass."""
    scored = detector.score_outputs(detector.features(images))
    maps = [
        detector.map_to_frame(detector.smooth_map(m), img.shape)
        for m, img in zip(scored.maps, images, strict=True)
    ]
    points = [detector.peak_point(m, img.shape) for m, img in zip(scored.maps, images, strict=True)]
    return np.asarray(scored.scores, np.float64), maps, points


def evaluate_patch_detector(
    detector,
    normal: list,
    anomalous: list,
    normal_masks: list | None = None,
    anomalous_masks: list | None = None,
    *,
    max_side: int | None = None,
) -> PixelEval:
    """Image AUROC and, with masks, pixel AUROC and PRO of a patch-mode detector (maps shrunk to max_side)."""
    from ovdoc.runtime.pixel_metrics import MAX_SIDE, binarize_mask, downsample_pair, pixel_metrics

    if len(normal) == 0 or len(anomalous) == 0:
        raise OvdocError("evaluation needs at least one normal and one anomalous image")
    if not detector.has_maps_:
        raise OvdocError("anomaly maps need a patch-mode bundle (`ovdoc fit --mode patch`)")
    side = max_side or MAX_SIDE

    def run(images: list, masks: list | None) -> tuple[np.ndarray, list, list, list]:
        scores, small_maps, small_masks, hits = [], [], [], []
        for start in range(0, len(images), CHUNK):
            chunk = list(images[start : start + CHUNK])
            s, maps, points = frame_maps_and_points(detector, chunk)
            scores.append(s)
            for i, m in enumerate(maps):
                mask = masks[start + i] if masks is not None else None
                a, b = downsample_pair(m, mask, side)
                small_maps.append(a)
                small_masks.append(b)
                if mask is not None and binarize_mask(mask).any():
                    x, y = points[i]
                    hits.append(bool(binarize_mask(mask)[y, x]))
        return np.concatenate(scores), small_maps, small_masks, hits

    n_scores, n_maps, n_masks, _ = run(list(normal), normal_masks)
    a_scores, a_maps, a_masks, a_hits = run(list(anomalous), anomalous_masks)
    result = EvalResult(n_scores, a_scores, float(detector.threshold_))
    pixel = None
    if anomalous_masks is not None:
        pixel = pixel_metrics(n_maps + a_maps, n_masks + a_masks) | {
            "max_side": side,
            "hottest_in_mask": float(np.mean(a_hits)) if a_hits else None,
        }
    return PixelEval(result, n_maps, a_maps, n_masks, a_masks, pixel)


def _fit_tile(img: np.ndarray, tile: int) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """Letterbox `img` into a tile x tile white square; returns it and the (x, y, w, h) it occupies."""
    h, w = img.shape[:2]
    scale = tile / max(h, w)
    nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
    canvas = np.full((tile, tile, 3), 255, np.uint8)
    x0, y0 = (tile - nw) // 2, (tile - nh) // 2
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    canvas[y0 : y0 + nh, x0 : x0 + nw] = cv2.resize(img, (nw, nh), interpolation=interp)
    return canvas, (x0, y0, nw, nh)


def overlay_heatmap(
    image: np.ndarray, amap: np.ndarray, lo: float, hi: float, mask: np.ndarray | None = None
) -> np.ndarray:
    """BGR image with the map (scaled lo..hi, JET) blended in where it is hot, and mask contours in white.

    Cold areas stay the picture (blend weight grows with the map), so the defect is seen, not hidden.
    """
    img = image if image.ndim == 3 else cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    h, w = img.shape[:2]
    m = cv2.resize(np.asarray(amap, np.float32), (w, h), interpolation=cv2.INTER_LINEAR)
    level = np.clip((m - lo) / max(hi - lo, 1e-12), 0.0, 1.0)
    heat = cv2.applyColorMap((level * 255).astype(np.uint8), cv2.COLORMAP_JET)
    alpha = (0.15 + 0.55 * level)[..., None]
    out = (img.astype(np.float32) * (1 - alpha) + heat.astype(np.float32) * alpha).astype(np.uint8)
    if mask is not None and np.any(mask):
        k = cv2.resize(np.asarray(mask, np.uint8), (w, h), interpolation=cv2.INTER_NEAREST)
        contours, _ = cv2.findContours(k, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        cv2.drawContours(out, contours, -1, (255, 255, 255), max(1, round(max(h, w) / 150)))
    return out


def heatmap_grid(ev: PixelEval, normal: list, anomalous: list, path, *, lo: float, hi: float, n: int = 8,
                 tile: int = 128) -> None:
    """Three rows with heatmaps and mask contours: most anomalous anomalies, least anomalous anomalies
    (missed defects), most anomalous normal images (false alarms); each tile's image score below it."""
    a_order = np.argsort(ev.result.anomalous_scores)
    n_order = np.argsort(ev.result.normal_scores)
    rows = [
        [(anomalous[i], ev.anomalous_maps[i], ev.anomalous_masks[i], ev.result.anomalous_scores[i])
         for i in a_order[::-1][:n]],
        [(anomalous[i], ev.anomalous_maps[i], ev.anomalous_masks[i], ev.result.anomalous_scores[i])
         for i in a_order[:n]],
        [(normal[i], ev.normal_maps[i], ev.normal_masks[i], ev.result.normal_scores[i])
         for i in n_order[::-1][:n]],
    ]
    cols = max(len(r) for r in rows)
    canvas = np.full((len(rows) * (tile + 18), cols * tile, 3), 255, np.uint8)
    for r, row in enumerate(rows):
        for c, (img, amap, mask, score) in enumerate(row):
            small = cv2.resize(img, (amap.shape[1], amap.shape[0]), interpolation=cv2.INTER_AREA)
            shown, _ = _fit_tile(overlay_heatmap(small, amap, lo, hi, mask), tile)
            y0 = r * (tile + 18)
            canvas[y0 : y0 + tile, c * tile : (c + 1) * tile] = shown
            cv2.putText(canvas, f"{score:.3g}", (c * tile + 3, y0 + tile + 13), cv2.FONT_HERSHEY_SIMPLEX, 0.4,
                        (0, 0, 0), 1, cv2.LINE_AA)
    if not cv2.imwrite(str(path), canvas):
        raise OvdocError(f"cannot write {path}")


def heat_range(ev: PixelEval, map_threshold: float | None) -> tuple[float, float]:
    """Colour scale shared by every tile: from the median normal pixel to the bundle's map threshold
    (red = at or above what the detector calls anomalous), or the 99.5th percentile without one."""
    normal = np.concatenate([m.ravel() for m in ev.normal_maps]) if ev.normal_maps else np.zeros(1)
    lo = float(np.median(normal))
    hi = float(map_threshold) if map_threshold is not None else float(
        np.percentile(np.concatenate([m.ravel() for m in ev.anomalous_maps]), 99.5)
    )
    return lo, hi if hi > lo else lo + 1e-6
