"""Small array helpers the runtime and the host side share (one copy of each, not four)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def pad_batch(batch: np.ndarray, size: int) -> np.ndarray:
    """`batch` padded with zero images to `size` rows (a static-batch model wants full batches)."""
    n = len(batch)
    if n >= size:
        return np.ascontiguousarray(batch)
    pad = np.zeros((size - n, *batch.shape[1:]), batch.dtype)
    return np.ascontiguousarray(np.concatenate([batch, pad]))


def cosine_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine similarity of each row of `a` with the same row of `b` (float64); two zero rows count as 1."""
    a = np.asarray(a, np.float64).reshape(len(a), -1)
    b = np.asarray(b, np.float64).reshape(len(b), -1)
    na, nb = np.linalg.norm(a, axis=1), np.linalg.norm(b, axis=1)
    cos = (a * b).sum(axis=1) / np.maximum(na * nb, 1e-30)
    return np.where((na == 0) & (nb == 0), 1.0, cos)


def spread(items: Sequence, limit: int) -> list:
    """At most `limit` items, evenly spread over the sequence (first and last kept), in order."""
    if len(items) <= limit:
        return list(items)
    pick = np.linspace(0, len(items) - 1, limit).round().astype(int)
    return [items[i] for i in pick]
