"""Decider: the score smoothed over the last N frames, compared with the camera's threshold.

One Decider per source: with several cameras on one model, each camera's smoothing window holds only
its own frames. A running sum keeps each update O(1) whatever --smooth is; it is recomputed exactly once
per window length so rounding error cannot build up over a long run. The threshold is the camera's
`Threshold` (threshold.py owns it): a slider's change or a reload reaches the next frame here.
`judge` turns a post-processed FrameScore into the Result every sink gets.
"""

from __future__ import annotations

import collections

from ovdoc.runtime.stream.messages import Result
from ovdoc.runtime.stream.postprocess import FrameScore
from ovdoc.runtime.stream.sources import Frame
from ovdoc.runtime.stream.threshold import Threshold


class Decider:
    def __init__(self, smooth: int, threshold: Threshold | float) -> None:
        if smooth < 1:
            raise ValueError(f"smooth must be at least 1, got {smooth}")
        self.smooth = int(smooth)
        self.limit = threshold if isinstance(threshold, Threshold) else Threshold(float(threshold))
        self._recent: collections.deque[float] = collections.deque(maxlen=self.smooth)
        self._sum = 0.0
        self._updates = 0

    @property
    def threshold(self) -> float:
        return self.limit.value

    def update(self, score: float) -> tuple[float, bool]:
        """Add one raw score; return (mean of the last `smooth` scores, that mean > threshold)."""
        recent = self._recent
        if len(recent) == self.smooth:
            self._sum -= recent[0]
        recent.append(score)
        self._updates += 1
        if self._updates >= self.smooth:  # exact re-sum once per window: no drift, O(1) amortised
            self._updates = 0
            self._sum = sum(recent)
        else:
            self._sum += score
        smoothed = self._sum / len(recent)
        return smoothed, smoothed > self.limit.value

    def judge(self, scored: FrameScore) -> Result:
        """One scored frame's Result: smoothed score, verdict, the threshold it was judged against."""
        smoothed, anomalous = self.update(scored.score)
        limit = self.limit
        return Result(scored.frame, scored.score, smoothed, anomalous, limit.value, scored.map, scored.box,
                      scored.peak, limit.map_value)

    def skipped(self, frame: Frame) -> Result:
        """A frame that arrived while scoring was paused: shown and saved, not judged."""
        return Result(frame, None, None, False, self.limit.value)

    def reset(self) -> None:
        """Forget the window (scoring resumed after a pause: old scores describe another scene)."""
        self._recent.clear()
        self._sum = 0.0
        self._updates = 0
