"""`ovdoc run`'s live loop for one or many sources: each camera's sinks from the outputs, and the summary.

The stages live in their own modules — reader.py (capture + reconnect policy, and the preparer),
scorer.py and postprocess.py (batched async inference in order, outputs -> per-frame scores, maps and
boxes), decider.py (smoothing + threshold), threshold.py (each camera's threshold, its one owner),
sinks.py (events, window, video), episode_sink.py and flag_rate.py (the loop's own sinks), messages.py
(results out, commands in) — and loop.py runs them for any number of sources. See loop.py for the
picture. Which sinks a camera gets is output_registry.py's business: `outputs` is a mapping
of its option values (`{"mqtt": "mqtt://...", "serve": "127.0.0.1:8080"}`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ovdoc.errors import OvdocError, first_line
from ovdoc.log import get_logger
from ovdoc.runtime.stream import output_registry
from ovdoc.runtime.stream.loop import Lane, LiveLoop, RunOptions
from ovdoc.runtime.stream.messages import Command, Control
from ovdoc.runtime.stream.output_spec import LaneContext, RunContext
from ovdoc.runtime.stream.reader import MAX_BACKOFF_S
from ovdoc.runtime.stream.sinks import Renderer, Sink, VideoFileSink
from ovdoc.runtime.stream.sources import FrameSource
from ovdoc.runtime.stream.threshold import Thresholds

log = get_logger("run")

__all__ = ["MAX_BACKOFF_S", "CameraSettings", "Lane", "LiveLoop", "Pipeline", "RunOptions"]


@dataclass(frozen=True)
class CameraSettings:
    """One source's own settings in a line config: its bundle (position in the detector list), and the
    threshold and smoothing that override the run's; None = the run's."""

    model: int = 0
    threshold: float | None = None
    smooth: int | None = None


class Pipeline:
    """`ovdoc run`'s loop for one or several sources: the lanes, the default sinks, and the summary it
    prints. `detector` is one Detector, or a list (one per bundle) with `cameras` saying which bundle,
    threshold and smoothing each source has."""

    def __init__(
        self,
        detector,
        source: FrameSource | list[FrameSource],
        options: RunOptions | None = None,
        sinks: list[Sink] | None = None,
        outputs: Mapping[str, Any] | None = None,
        cameras: list[CameraSettings] | None = None,
    ) -> None:
        self.detectors = list(detector) if isinstance(detector, (list, tuple)) else [detector]
        self.det = self.detectors[0]
        self.sources = list(source) if isinstance(source, (list, tuple)) else [source]
        self.source = self.sources[0]
        self.opt = options or RunOptions()
        self.cameras = cameras or [CameraSettings() for _ in self.sources]
        if len(self.cameras) != len(self.sources):
            raise ValueError("one CameraSettings per source")
        several = len(self.sources) > 1
        if sinks is not None and several:
            raise ValueError("explicit sinks are for one source")
        self.thresholds = Thresholds(self.detectors, [(c.model, c.threshold) for c in self.cameras],
                                     self.opt.threshold)
        values = output_registry.resolve(
            {"events": self.opt.events, "show": self.opt.show, "save_video": self.opt.save_video}, outputs
        )
        run = RunContext(
            names=[src.name for src in self.sources],
            options=self.opt,
            threshold=lambda i: self.thresholds[i].value,
            post=lambda command: self.loop.post(command),
            counters=lambda i: {"dropped": self.lanes[i].dropped,
                                "source_incidents": self.lanes[i].incidents,
                                **self.lanes[i].flag_rate.status()},
            scoring=lambda: self.loop.scoring,
        )
        self.outputs = output_registry.build(values, run) if sinks is None else []
        self.lanes = [
            Lane(
                src,
                sinks if sinks is not None else self._sinks(i),
                source_id=i,
                model=self.cameras[i].model,
                threshold=self.cameras[i].threshold,
                smooth=self.cameras[i].smooth,
            )
            for i, src in enumerate(self.sources)
        ]
        self.lane = self.lanes[0]
        self.sinks = self.lane.sinks
        self.loop = LiveLoop(self.detectors, self.lanes, self.opt, thresholds=self.thresholds)

    def _sinks(self, source_id: int) -> list[Sink]:
        """The camera's sinks, one per output that gives it one (registry order)."""
        lane = LaneContext(source_id, Renderer())
        made = (run.sink(lane) for _, run in self.outputs)
        return [sink for sink in made if sink is not None]

    def post(self, command: Command | Control) -> None:
        self.loop.post(command)

    def _lane_summary(self, lane: Lane, wall: float) -> dict:
        video = next((s.file for s in lane.sinks if isinstance(s, VideoFileSink)), None)
        summary = {
            "source": lane.source.name,
            "live": lane.source.live,
            "frames": lane.processed,
            "anomalies": lane.anomalies,
            "episodes": lane.episodes.count if lane.episodes is not None else 0,
            "dropped": lane.dropped,
            "skipped": lane.skipped,
            "source_incidents": lane.incidents,
            "fps": round(lane.processed / wall, 2) if wall > 0 else 0.0,
            "video_file": str(video) if video else None,
        }
        if len(self.detectors) > 1 or lane.threshold is not None or lane.smooth is not None:
            summary["bundle"] = str(self.loop.models[lane.model].det.bundle_)
            summary["threshold"] = lane.decider.threshold if lane.decider is not None else None
            summary["smooth"] = lane.decider.smooth if lane.decider is not None else None
        if self.opt.loop or self.opt.realtime:
            reader = lane.reader
            summary["loops"] = reader.loops if reader is not None else 0
            summary["late_resets"] = reader.late_resets if reader is not None else 0
        if lane.fatal is not None and not lane.done:
            summary["error"] = _one_line(lane.fatal)
        return summary

    def run(self) -> dict:
        """Run to the end; return the summary. A fatal problem (live source gone for good, unreadable
        file, a failing output) is in summary["error"] as one line, with summary["stopped"] == "error".
        With several sources the top level sums them and "sources" holds one summary each."""
        loop = self.loop
        started = []
        try:
            for _, output in self.outputs:
                output.start()
                started.append(output)
            loop.run()
        finally:
            for output in reversed(started):
                output.stop()
        wall = loop.wall_s
        per_lane = [self._lane_summary(lane, wall) for lane in self.lanes]
        first = per_lane[0]
        summary = {
            **{k: v for k, v in first.items() if k != "error"},
            "bundle": str(loop.det.bundle_),
            "device": self.det.device_,
            "wall_s": round(wall, 3),
            "threshold": self.thresholds.default(0),
            "smooth": self.opt.smooth,
            "batch": int(self.det.batch),
            "stopped": loop.stopped,
            "events_file": str(self.opt.events) if self.opt.events else None,
        }
        if len(self.detectors) > 1:
            summary["bundles"] = [str(m.det.bundle_) for m in loop.models]
        if len(per_lane) > 1:
            for key in ("frames", "anomalies", "episodes", "dropped", "skipped", "source_incidents"):
                summary[key] = sum(lane[key] for lane in per_lane)
            summary["source"] = [lane["source"] for lane in per_lane]
            summary["live"] = any(lane["live"] for lane in per_lane)
            summary["video_file"] = [lane["video_file"] for lane in per_lane] if self.opt.save_video else None
            summary["fps"] = round(summary["frames"] / wall, 2) if wall > 0 else 0.0
            summary["sources"] = per_lane
        outputs = {}
        for lane in self.lanes:
            for sink in lane.sinks:
                stats = sink.stats()
                if stats is not None:
                    outputs[sink.name] = stats  # the MQTT connection is shared: the same counters
        for output, run in self.outputs:
            extra = run.summary()
            if extra is not None:
                outputs[output.name] = {**outputs.get(output.name, {}), **extra}
        if outputs:
            summary["outputs"] = outputs
        if loop.fatal is not None:
            summary["error"] = _one_line(loop.fatal)
        return summary


def _one_line(fatal: BaseException) -> str:
    return str(fatal) if isinstance(fatal, OvdocError) else f"{type(fatal).__name__}: {first_line(fatal)}"
