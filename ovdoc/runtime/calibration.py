"""Threshold calibration: pick the score above which a normal image is flagged at most `fpr` of the time.

Calibrated on the normal images themselves, leave-one-out (each scored against all the others), so no
image is its own neighbour and the threshold is not ~0 as it would be scoring the training set directly.
"""

from __future__ import annotations

import numpy as np

from ovdoc.errors import OvdocError


def threshold_at_fpr(loo_scores: np.ndarray, fpr: float, *, method: str) -> dict:
    """The (1 - fpr) quantile of leave-one-out scores, with a record of how it was obtained."""
    if not 0.0 < fpr < 1.0:
        raise OvdocError(f"--fpr must be between 0 and 1 (exclusive), got {fpr}")
    scores = np.asarray(loo_scores, dtype=np.float64)
    if scores.size == 0:
        raise OvdocError("no scores to calibrate a threshold on")
    finite = scores[np.isfinite(scores)]
    if finite.size == 0:
        raise OvdocError("calibration scores are all infinite (duplicated normal images?)")
    value = float(np.quantile(finite, 1.0 - fpr))
    record = {
        "value": value,
        "method": method,
        "fpr": fpr,
        "quantile": 1.0 - fpr,
        "n": int(scores.size),
        "calibration_fpr": float(np.mean(scores > value)),
        "score_min": float(finite.min()),
        "score_median": float(np.median(finite)),
        "score_max": float(finite.max()),
    }
    if scores.size * fpr < 1.0:
        record["note"] = (
            f"fewer than 1/fpr={1 / fpr:.0f} normal images: the threshold is close to the largest score"
        )
    return record
