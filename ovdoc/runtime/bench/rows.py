"""The shape of a benchmark row shared by the suite and the patch rows (a leaf: both import it)."""

from __future__ import annotations


def failed_row(device: str, precision: str, batch, hint, error: str) -> dict:
    """A configuration that failed keeps every schema key (None), plus the error line."""
    return {
        "device": device,
        "precision": precision,
        "batch": batch,
        "hint": hint,
        "scorer": None,
        "model_ips": None,
        "pipeline_fps": None,
        "auc": None,
        "error": error,
    }
