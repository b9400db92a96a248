"""`ovdoc run`'s live loop for one source: the default sinks from the CLI options, and the summary.

The stages live in their own modules — reader.py (capture + reconnect policy, and the preparer),
scorer.py (batched async inference in order), decider.py (smoothing + threshold), sinks.py (events,
window, video), messages.py (results out, commands in) — and loop.py runs them for any number of
sources. See loop.py for the picture.
"""

from __future__ import annotations

from ovdoc.errors import OvdocError, first_line
from ovdoc.runtime.stream.loop import Lane, LiveLoop, RunOptions
from ovdoc.runtime.stream.messages import Command, Control
from ovdoc.runtime.stream.reader import MAX_BACKOFF_S
from ovdoc.runtime.stream.sinks import EventSink, Renderer, Sink, VideoFileSink, WindowSink
from ovdoc.runtime.stream.sources import FrameSource

__all__ = ["MAX_BACKOFF_S", "Lane", "LiveLoop", "Pipeline", "RunOptions", "default_sinks"]


def default_sinks(options: RunOptions) -> list[Sink]:
    """The sinks the CLI options ask for: events file, window, saved video (window and video share one
    rendering of each frame)."""
    sinks: list[Sink] = []
    if options.events:
        sinks.append(EventSink(options.events))
    renderer = Renderer()
    if options.show:
        sinks.append(WindowSink(renderer, options.snapshot_dir))
    if options.save_video:
        sinks.append(VideoFileSink(options.save_video, renderer))
    return sinks


class Pipeline:
    """`ovdoc run`'s loop for one source: the lane, the default sinks, and the summary it prints."""

    def __init__(
        self,
        detector,
        source: FrameSource,
        options: RunOptions | None = None,
        sinks: list[Sink] | None = None,
    ) -> None:
        self.det = detector
        self.source = source
        self.opt = options or RunOptions()
        self.sinks = default_sinks(self.opt) if sinks is None else sinks
        self.lane = Lane(source, self.sinks)
        self.loop = LiveLoop(detector, [self.lane], self.opt)

    def post(self, command: Command | Control) -> None:
        self.loop.post(command)

    def run(self) -> dict:
        """Run to the end; return the summary. A fatal problem (live source gone for good, unreadable
        file, a failing output) is in summary["error"] as one line, with summary["stopped"] == "error"."""
        loop, lane = self.loop, self.lane
        loop.run()
        wall = loop.wall_s
        video = next((s.file for s in self.sinks if isinstance(s, VideoFileSink)), None)
        summary = {
            "source": self.source.name,
            "live": self.source.live,
            "bundle": str(getattr(self.det, "bundle_", "")),
            "device": getattr(self.det, "device_", None),
            "frames": lane.processed,
            "anomalies": lane.anomalies,
            "dropped": lane.dropped,
            "skipped": lane.skipped,
            "source_incidents": lane.incidents,
            "wall_s": round(wall, 3),
            "fps": round(lane.processed / wall, 2) if wall > 0 else 0.0,
            "threshold": loop.threshold,
            "smooth": self.opt.smooth,
            "batch": int(self.det.batch),
            "stopped": loop.stopped,
            "events_file": str(self.opt.events) if self.opt.events else None,
            "video_file": str(video) if video else None,
        }
        if self.opt.loop or self.opt.realtime:
            reader = lane.reader
            summary["loops"] = reader.loops if reader is not None else 0
            summary["late_resets"] = reader.late_resets if reader is not None else 0
        if loop.fatal is not None:
            fatal = loop.fatal
            summary["error"] = (
                str(fatal)
                if isinstance(fatal, OvdocError)
                else f"{type(fatal).__name__}: {first_line(fatal)}"
            )
        return summary
