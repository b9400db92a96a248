"""Decider: the score smoothed over the last N frames, compared with the threshold. Pure Python.

One Decider per source: with several cameras on one model, each camera's smoothing window holds only
its own frames. A running sum keeps each update O(1) whatever --smooth is; it is recomputed exactly once
per window length so rounding error cannot build up over a long run.
"""

from __future__ import annotations

import collections


class Decider:
    def __init__(self, smooth: int, threshold: float) -> None:
        if smooth < 1:
            raise ValueError(f"smooth must be at least 1, got {smooth}")
        self.smooth = int(smooth)
        self.threshold = float(threshold)
        self._recent: collections.deque[float] = collections.deque(maxlen=self.smooth)
        self._sum = 0.0
        self._updates = 0

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
        return smoothed, smoothed > self.threshold

    def reset(self) -> None:
        """Forget the window (scoring resumed after a pause: old scores describe another scene)."""
        self._recent.clear()
        self._sum = 0.0
        self._updates = 0
