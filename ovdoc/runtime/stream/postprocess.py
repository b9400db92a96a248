"""Post-processing: a batch's model outputs -> one `FrameScore` per frame, in one place.

Global mode: the detector's score per frame. Patch mode adds where: the patch-score map smoothed and
laid onto the frame (`smooth_map`, `map_to_frame`), the hottest region's box around the detector's own
peak point (`peak_point`, regions.hottest_region) and the map's peak value. Whether there is a map is
read from the outputs (`maps` None or not), so this module has no mode switch of its own. The decision
(smoothing, threshold) is the camera's Decider's, on top of this.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ovdoc.runtime.stream.live_detector import LiveDetector
from ovdoc.runtime.stream.regions import hottest_region
from ovdoc.runtime.stream.sources import Frame


@dataclass(slots=True)
class FrameScore:
    """One frame scored, before any decision: raw score; in patch mode its frame-sized map, the hottest
    region's box [x0, y0, x1, y1] (inclusive pixels) and the map's peak value."""

    frame: Frame
    score: float
    map: np.ndarray | None = None
    box: tuple[int, int, int, int] | None = None
    peak: float | None = None


class PostProcess:
    """Turns what a detector's callback received for a batch into that batch's FrameScores."""

    def __init__(self, detector: LiveDetector) -> None:
        self.det = detector

    def __call__(self, frames: Sequence[Frame], outputs: np.ndarray) -> list[FrameScore]:
        det = self.det
        scored = det.score_outputs(outputs)
        scores = scored.scores.tolist()
        if scored.maps is None:
            return [FrameScore(f, s) for f, s in zip(frames, scores, strict=True)]
        out = []
        for frame, score, grid in zip(frames, scores, scored.maps, strict=True):
            shape = frame.image.shape
            frame_map = det.map_to_frame(det.smooth_map(grid), shape)
            box, peak = hottest_region(frame_map, at=det.peak_point(grid, shape))
            out.append(FrameScore(frame, score, frame_map, box, peak))
        return out
