"""Where in the frame: the hottest region of a patch-mode anomaly map, as a box. NumPy + OpenCV only.

The region is the connected area around the map's peak that stays at or above half the peak (a
"full width at half maximum" blob): it follows the defect's extent whatever the absolute scale of the
patch scores, and a flat, quiet map gives a box around its (arbitrary) peak that nothing draws unless
the frame is anomalous.
"""

from __future__ import annotations

import cv2
import numpy as np


def hottest_region(
    frame_map: np.ndarray, at: tuple[int, int] | None = None
) -> tuple[tuple[int, int, int, int], float]:
    """((x0, y0, x1, y1) inclusive pixel bounds of the half-maximum blob around the peak, peak value).

    `at` (x, y): where the anomaly is, when known more precisely than the map's own maximum (the
    detector's `peak_point`); the blob containing it is boxed, or, if that point is below half maximum,
    a box of the blob around the map's maximum that the point falls in the nearest of.
    """
    m = np.asarray(frame_map, dtype=np.float32)
    if m.ndim != 2 or m.size == 0:
        raise ValueError(f"an anomaly map is a non-empty 2-D array, got shape {m.shape}")
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
