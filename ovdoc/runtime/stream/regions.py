"""Where in the frame: the hottest region of a patch-mode anomaly map, as a box. NumPy + OpenCV only.

The region is the connected area around the map's peak that stays at or above half the peak (a
"full width at half maximum" blob): it follows the defect's extent whatever the absolute scale of the
patch scores, and a flat, quiet map gives a box around its (arbitrary) peak that nothing draws unless
the frame is anomalous.
"""

from __future__ import annotations

import cv2
import numpy as np

# the blob is found on a map of at most this many pixels on its long side (every `step`-th pixel): frame
# maps are bilinear upsamplings of a grid of a few dozen cells, so nothing is lost, and the connected-
# components pass over a 640x480 float map (2 ms, every frame in patch mode) drops to ~0.1 ms
REGION_MAX_SIDE = 160


def hottest_region(
    frame_map: np.ndarray, at: tuple[int, int] | None = None
) -> tuple[tuple[int, int, int, int], float]:
    """((x0, y0, x1, y1) inclusive pixel bounds of the half-maximum blob around the peak, peak value).

    `at` (x, y): where the anomaly is, when known more precisely than the map's own maximum (the
    detector's `peak_point`); the blob containing it is boxed, or, if that point is below half maximum,
    a box of the blob around the map's maximum that the point falls in the nearest of.
    """
    full = np.asarray(frame_map, dtype=np.float32)
    if full.ndim != 2 or full.size == 0:
        raise ValueError(f"an anomaly map is a non-empty 2-D array, got shape {full.shape}")
    step = max(1, -(-max(full.shape) // REGION_MAX_SIDE))
    if step > 1:
        small = full[::step, ::step]
        (x0, y0, x1, y1), _ = hottest_region(small, None if at is None else (at[0] // step, at[1] // step))
        last_y, last_x = full.shape[0] - 1, full.shape[1] - 1
        box = (x0 * step, y0 * step, min(x1 * step + step - 1, last_x), min(y1 * step + step - 1, last_y))
        return box, float(full.max())
    m = full
    flat = int(np.argmax(m))
    py, px = divmod(flat, m.shape[1])
    peak = float(m[py, px])
    floor = float(m.min())
    level = floor + 0.5 * (peak - floor)  # half maximum above the map's own floor
    hot = (m >= level).astype(np.uint8)
    _, labels, stats, _ = cv2.connectedComponentsWithStats(hot, connectivity=8)
    if at is not None:
        ax, ay = min(max(int(at[0]), 0), m.shape[1] - 1), min(max(int(at[1]), 0), m.shape[0] - 1)
        if hot[ay, ax]:
            py, px = ay, ax
    x, y, w, h, _ = stats[labels[py, px]]
    return (int(x), int(y), int(x + w - 1), int(y + h - 1)), peak
