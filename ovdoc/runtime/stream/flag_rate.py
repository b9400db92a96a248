"""Each camera's flagged-frame rate against the rate its bundle was calibrated for.

The fit promises "about `target_fpr` of normal frames flagged, at most `fpr_upper_95` on new parts".
A camera whose recent share of flagged frames stays above that bound is either looking at something
new (drift: light, lens, product change) or running a threshold that does not fit it. The tracker says
so once, as a `flag_rate_high` event (and `flag_rate_normal` when it is back under the bound); it never
changes a decision. Frames and episodes per hour are kept beside the share, over the same window.
"""

from __future__ import annotations

import collections
import math

from ovdoc.runtime.stream.messages import Result
from ovdoc.runtime.stream.sinks import Sink

WINDOW_FLAGS = 30  # the window holds about this many flagged frames at the target rate
MIN_WINDOW, MAX_WINDOW = 300, 20000


def bundle_rates(calibration: dict | None) -> tuple[float, float]:
    """(target, upper bound) from a bundle's calibration record (Detector.calibration_); bundles from
    before the record: 2x the target; no record at all (a fake detector): 1 % and 2 %."""
    cal = calibration or {}
    target = float(cal.get("target_fpr") or 0.01)
    upper = cal.get("fpr_upper_95")
    return target, float(upper) if upper is not None else min(1.0, 2 * target)


def default_window(target: float) -> int:
    """Frames in the window: enough for WINDOW_FLAGS flags at the target, within [300, 20000]."""
    return int(min(MAX_WINDOW, max(MIN_WINDOW, math.ceil(WINDOW_FLAGS / max(target, 1e-6)))))


class FlagRateTracker:
    """Feed every scored verdict; `update` returns an event record when the state changes.

    High: the window is full and its flagged share has stayed above `upper` for `sustain` frames in a
    row (default half a window), so one burst (a real defect passing) does not fire it.
    """

    def __init__(self, source: str, target: float, upper: float, *, window: int | None = None,
                 sustain: int | None = None) -> None:
        self.source = source
        self.target = float(target)
        self.upper = float(upper)
        self.window = int(window or default_window(self.target))
        self.sustain = int(sustain if sustain is not None else self.window // 2)
        self._flags: collections.deque = collections.deque(maxlen=self.window)
        self._starts: collections.deque = collections.deque(maxlen=self.window)
        self._times: collections.deque = collections.deque(maxlen=self.window)
        self._flagged = self._episodes = 0
        self._previous = False
        self._above = 0
        self.high = False
        self.events = 0

    def update(self, anomalous: bool, timestamp: float) -> dict | None:
        flag = bool(anomalous)
        start = flag and not self._previous
        self._previous = flag
        if len(self._flags) == self.window:
            self._flagged -= self._flags[0]
            self._episodes -= self._starts[0]
        self._flags.append(flag)
        self._starts.append(start)
        self._times.append(float(timestamp))
        self._flagged += flag
        self._episodes += start
        if len(self._flags) < self.window:
            return None
        rate = self._flagged / self.window
        self._above = self._above + 1 if rate > self.upper else 0
        if not self.high and self._above >= max(1, self.sustain):
            self.high = True
            return self._event("flag_rate_high", timestamp)
        if self.high and rate <= self.upper:
            self.high = False
            return self._event("flag_rate_normal", timestamp)
        return None

    def _event(self, name: str, timestamp: float) -> dict:
        self.events += 1
        return {"event": name, "source": self.source, "timestamp": timestamp, **self.status(),
                "note": "decisions unchanged: the normal look may have drifted, or the threshold does not "
                        "fit this camera"}

    def status(self) -> dict:
        """The window's flagged share, frames and episodes per hour, against the bundle's target."""
        n = len(self._flags)
        span_h = (self._times[-1] - self._times[0]) / 3600.0 if n > 1 else 0.0
        return {
            "flag_rate": round(self._flagged / n, 5) if n else None,
            "flag_rate_target": self.target,
            "flag_rate_upper": self.upper,
            "flag_rate_window": n,
            "flagged_frames_per_hour": round(self._flagged / span_h, 2) if span_h > 0 else None,
            "episodes_per_hour": round(self._episodes / span_h, 2) if span_h > 0 else None,
            "flag_rate_high": self.high,
        }


class FlagRateWatch(Sink):
    """The tracker as one of a camera's sinks (after its own): each scored verdict goes in, a
    flag_rate_high / flag_rate_normal event goes to the camera's other sinks."""

    name = "flag-rate"
    needs_pixels = False

    def __init__(self, tracker: FlagRateTracker) -> None:
        self.tracker = tracker

    def handle(self, result: Result) -> None:
        if result.score is None:
            return
        drift = self.tracker.update(result.anomalous, result.frame.timestamp)  # watched, never decides
        if drift is not None:
            self.ctx.publish_event(drift)

    def status(self) -> dict:
        return self.tracker.status()
