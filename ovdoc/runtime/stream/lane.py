"""One camera in the live loop (a "lane"): its source, reader and preparer threads, decider and sinks,
and its counters. The loop schedules lanes; a lane knows what is its own.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from ovdoc.errors import OvdocError
from ovdoc.runtime.stream.decider import Decider
from ovdoc.runtime.stream.episode_sink import EpisodeSink
from ovdoc.runtime.stream.flag_rate import FlagRateTracker, FlagRateWatch, bundle_rates
from ovdoc.runtime.stream.live_detector import LiveDetector
from ovdoc.runtime.stream.reader import Preparer, Reader
from ovdoc.runtime.stream.sinks import Sink
from ovdoc.runtime.stream.sources import FrameSource
from ovdoc.runtime.stream.threshold import Threshold


@dataclass(eq=False)
class Lane:
    """One source's stages and counters: reader, preparer, decider, sinks.

    `model` is the position of the bundle that scores it (0 with one bundle); `threshold` and `smooth`
    override the run's for this camera alone (a line config's per-camera settings). `sinks` are the
    camera's outputs; the loop adds its own two after them (`flag_rate`, `episodes`): `chain` is the
    order every result goes through.
    """

    source: FrameSource
    sinks: list[Sink]
    source_id: int = 0
    model: int = 0
    threshold: float | None = None
    smooth: int | None = None
    decider: Decider | None = None
    episodes: EpisodeSink | None = None
    flag_rate: FlagRateWatch | None = None
    chain: list[Sink] = field(default_factory=list)
    reader: Reader | None = None
    preparer: Preparer | None = None
    stop: threading.Event = field(default_factory=threading.Event)
    processed: int = 0
    anomalies: int = 0
    skipped: int = 0
    incidents: int = 0
    done: bool = False  # no more frames wanted (max_frames) or coming (ended)

    def equip(self, det: LiveDetector, threshold: Threshold, options) -> None:
        """The loop's per-camera stages: a Decider on the camera's threshold, then the flag-rate watch and
        the episodes after the camera's own sinks (`chain`). `options`: the run's RunOptions."""
        smooth = self.smooth if self.smooth is not None else options.smooth
        if smooth < 1:
            raise OvdocError(f"smoothing must be at least 1 frame, got {smooth} for {self.source.name}")
        self.decider = Decider(smooth, threshold)
        target, upper = bundle_rates(det.calibration_)
        self.flag_rate = FlagRateWatch(
            FlagRateTracker(self.source.name, target, upper, window=options.flag_window))
        keep = any(getattr(sink, "wants_snapshots", False) for sink in self.sinks)
        self.episodes = EpisodeSink(self.source.name, self.source_id, keep_snapshot=keep,
                                    folder=options.episodes_dir)
        self.chain = [*self.sinks, self.flag_rate, self.episodes]

    @property
    def dropped(self) -> int:
        return self.reader.dropped if self.reader is not None else 0

    @property
    def fatal(self) -> BaseException | None:
        for stage in (self.reader, self.preparer):
            if stage is not None and stage.fatal is not None:
                return stage.fatal
        return None
