"""The read -> features -> LOF -> smoothing loop every baseline is timed with (runtime side and the Keras
one host side), on a `Clip`. A leaf of the bench package: both baselines modules import it."""

from __future__ import annotations

import collections
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ovdoc.errors import OvdocError

SMOOTH = 10  # the original app averaged the last 10 scores


@dataclass(frozen=True)
class Clip:
    """What every loop runs on: the first `frames` frames of `source`, resized to `res` (None = native)."""

    source: str | Path
    res: tuple[int, int] | None
    frames: int


def _frames(clip: Clip):
    from ovdoc.runtime.stream.sources import open_source

    src = open_source(str(clip.source), res=clip.res)
    try:
        for _ in range(clip.frames):
            frame = src.read()
            if frame is None:
                return
            yield frame.image
    finally:
        src.close()


def timed_loop(clip: Clip, features_of, lof, knn=None) -> dict:
    """Read -> features (one frame) -> LOF (or `knn`, an ovdoc scorer) -> smoothing, timed end to end
    like the original's FPS."""
    recent: collections.deque = collections.deque(maxlen=SMOOTH)
    count = 0
    start = time.perf_counter()
    for image in _frames(clip):
        feat = features_of(image).reshape(1, -1)
        recent.append(float(knn.score_samples(feat)[0] if knn is not None else -lof.score_samples(feat)[0]))
        _ = float(np.mean(recent))
        count += 1
    wall = time.perf_counter() - start
    if count == 0:
        raise OvdocError(f"{clip.source} has no readable frames")
    return {"fps": round(count / wall, 2), "frames": count}


def fit_lof(reference: np.ndarray, k: int = 5):
    from sklearn.neighbors import LocalOutlierFactor

    return LocalOutlierFactor(n_neighbors=min(k, len(reference) - 1), novelty=True).fit(reference)
