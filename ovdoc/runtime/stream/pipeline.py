"""`ovdoc run`'s live loop for one or many sources: the default sinks from the CLI options, and the summary.

The stages live in their own modules — reader.py (capture + reconnect policy, and the preparer),
scorer.py (batched async inference in order), decider.py (smoothing + threshold), sinks.py (events,
window, video), messages.py (results out, commands in) — and loop.py runs them for any number of
sources. See loop.py for the picture.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ovdoc.errors import OvdocError, first_line
from ovdoc.log import get_logger
from ovdoc.runtime.stream.loop import Lane, LiveLoop, RunOptions
from ovdoc.runtime.stream.messages import Command, Control
from ovdoc.runtime.stream.reader import MAX_BACKOFF_S
from ovdoc.runtime.stream.sinks import (
    EventSink,
    Renderer,
    SharedEventWriter,
    Sink,
    VideoFileSink,
    WindowSink,
)
from ovdoc.runtime.stream.sources import FrameSource

log = get_logger("run")

__all__ = ["MAX_BACKOFF_S", "Lane", "LiveLoop", "OutputOptions", "Pipeline", "RunOptions", "default_sinks"]


@dataclass(frozen=True)
class CameraSettings:
    """One source's own settings in a line config: its bundle (position in the detector list), and the
    threshold and smoothing that override the run's; None = the run's."""

    model: int = 0
    threshold: float | None = None
    smooth: int | None = None


@dataclass
class OutputOptions:
    """Where results go besides the events file, window and video: MQTT, a webhook."""

    mqtt: str | None = None  # mqtt://host:port/prefix
    mqtt_interval_s: float = 1.0
    webhook: str | None = None
    webhook_timeout_s: float = 5.0
    serve: str | None = None  # host:port of the live web view
    serve_token: str | None = None


def video_path_for(path: str | Path, source_id: int, several: bool) -> Path:
    """`--save-video out.avi` with several sources: out-0.avi, out-1.avi, ... (one file per camera)."""
    path = Path(path)
    return path.with_name(f"{path.stem}-{source_id}{path.suffix}") if several else path


def default_sinks(
    options: RunOptions,
    *,
    source_id: int = 0,
    several: bool = False,
    shared_events: SharedEventWriter | None = None,
    outputs: OutputOptions | None = None,
    publisher=None,
    web_state=None,
) -> list[Sink]:
    """The sinks the CLI options ask for: events file, window, saved video (window and video share one
    rendering of each frame), MQTT and webhook."""
    sinks: list[Sink] = []
    if options.events:
        sinks.append(EventSink(options.events, shared_events))
    renderer = Renderer()
    if options.show:
        sinks.append(WindowSink(renderer, options.snapshot_dir))
    if options.save_video:
        sinks.append(VideoFileSink(video_path_for(options.save_video, source_id, several), renderer))
    outputs = outputs or OutputOptions()
    if publisher is not None:
        from ovdoc.runtime.stream.mqtt import MqttSink

        sinks.append(MqttSink(publisher, outputs.mqtt_interval_s))
    if outputs.webhook:
        from ovdoc.runtime.stream.webhook import WebhookSink

        sinks.append(WebhookSink(outputs.webhook, timeout_s=outputs.webhook_timeout_s))
    if web_state is not None:
        from ovdoc.runtime.stream.web import WebSink

        sinks.append(WebSink(web_state))
    return sinks


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
        outputs: OutputOptions | None = None,
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
        publisher = None
        if outputs is not None and outputs.mqtt:
            from ovdoc.runtime.stream.mqtt import MqttPublisher, parse_mqtt_url

            publisher = MqttPublisher(parse_mqtt_url(outputs.mqtt))
        shared = SharedEventWriter(self.opt.events) if several and self.opt.events else None
        self.web = None
        web_state = None
        if outputs is not None and outputs.serve:
            from ovdoc.runtime.stream.web import WebServer, WebState, parse_serve

            host, port = parse_serve(outputs.serve, outputs.serve_token)
            web_state = WebState(
                [src.name for src in self.sources],
                [self._threshold_of(camera) for camera in self.cameras],
                post=lambda command: self.loop.post(command),
                counters=lambda i: {"dropped": self.lanes[i].dropped,
                                    "source_incidents": self.lanes[i].incidents,
                                    **self.lanes[i].flag_rate.status()},
                scoring=lambda: self.loop.scoring,
            )
            self.web = WebServer(web_state, host, port, outputs.serve_token)
        self.lanes = [
            Lane(
                src,
                sinks
                if sinks is not None
                else default_sinks(
                    self.opt,
                    source_id=i,
                    several=several,
                    shared_events=shared,
                    outputs=outputs,
                    publisher=publisher,
                    web_state=web_state,
                ),
                source_id=i,
                model=self.cameras[i].model,
                threshold=self.cameras[i].threshold,
                smooth=self.cameras[i].smooth,
            )
            for i, src in enumerate(self.sources)
        ]
        self.lane = self.lanes[0]
        self.sinks = self.lane.sinks
        self.loop = LiveLoop(self.detectors, self.lanes, self.opt)

    def _threshold_of(self, camera: CameraSettings) -> float:
        if camera.threshold is not None:
            return float(camera.threshold)
        if self.opt.threshold is not None:
            return float(self.opt.threshold)
        return float(self.detectors[camera.model].threshold_)

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
            summary["bundle"] = str(getattr(self.loop.models[lane.model].det, "bundle_", ""))
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
        if self.web is not None:
            self.web.start()
            log.info(f"web view on {self.web.url}")
        try:
            loop.run()
        finally:
            if self.web is not None:
                self.web.stop()
        wall = loop.wall_s
        per_lane = [self._lane_summary(lane, wall) for lane in self.lanes]
        first = per_lane[0]
        summary = {
            **{k: v for k, v in first.items() if k != "error"},
            "bundle": str(getattr(loop.det, "bundle_", "")),
            "device": getattr(self.det, "device_", None),
            "wall_s": round(wall, 3),
            "threshold": loop.threshold,
            "smooth": self.opt.smooth,
            "batch": int(self.det.batch),
            "stopped": loop.stopped,
            "events_file": str(self.opt.events) if self.opt.events else None,
        }
        if len(self.detectors) > 1:
            summary["bundles"] = [str(getattr(m.det, "bundle_", "")) for m in loop.models]
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
        if self.web is not None:
            outputs["web"] = {"url": self.web.url}
        if outputs:
            summary["outputs"] = outputs
        if loop.fatal is not None:
            summary["error"] = _one_line(loop.fatal)
        return summary


def _one_line(fatal: BaseException) -> str:
    return str(fatal) if isinstance(fatal, OvdocError) else f"{type(fatal).__name__}: {first_line(fatal)}"
