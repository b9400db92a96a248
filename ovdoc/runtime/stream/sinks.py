"""Sinks: where each source's results go — events file, window, saved video; later a web view, MQTT.

One small protocol, so a new output plugs in without touching the loop:

    open(ctx)        before the first frame; ctx says which source, its frame rate, and `post` for commands
    handle(result)   every frame, in order (a `Result`: frame, score, smoothed, anomalous, map, box, peak)
    event(record)    a source incident (lost / recovered / gave up), as a JSON-able dict
    episode(record)  an anomaly episode started or ended (episode_sink.py publishes them)
    snapshot()       the user asked to save what is on screen (Control.SAVE)
    finish()         the last frame was handled (the run ended or was interrupted): may still publish
    close(ok)        at the end; ok=False when the run failed (a half-written output is discarded)

A sink never changes the loop's state: a key press becomes a `Command` posted through `ctx.post`, and
the loop applies it. A sink that derives records from the results (episodes, the flag-rate watch)
hands them to the camera's other sinks through `ctx.publish_event` / `ctx.publish_episode`. An
exception from a sink stops the run with one line naming the sink.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ovdoc.runtime.stream.messages import Command, Control, Result
from ovdoc.runtime.stream.output_spec import Output, OutputOption, RunContext, SinksRun


@dataclass
class SinkContext:
    source_name: str
    source_id: int = 0
    live: bool = False
    fps: float | None = None  # the source's nominal frame rate, when it has one
    tag_source: bool = False  # several sources share the outputs: say which one in each record
    post: Callable[[Command], None] = field(default=lambda command: None)
    publish_event: Callable[[dict], None] = field(default=lambda record: None)  # to the camera's sinks
    publish_episode: Callable[[dict], None] = field(default=lambda record: None)


class Sink:
    """Base class with do-nothing defaults: a sink implements only what it needs."""

    name = "sink"
    needs_pixels = True  # reads frame.image at --res (draws, saves): False lets the loop skip that resize

    def open(self, ctx: SinkContext) -> None:
        self.ctx = ctx

    def handle(self, result: Result) -> None:
        pass

    def event(self, record: dict) -> None:
        pass

    def episode(self, record: dict) -> None:
        """anomaly_start / anomaly_end of this source (see episodes.py); private fields start with _."""

    def snapshot(self) -> Path | None:
        return None

    def finish(self) -> None:
        """Every frame has been handled; called before `close` when the run ended or was interrupted."""

    def stats(self) -> dict | None:
        """Counters for the run's summary (messages sent, dropped, ...), if the sink has any."""
        return None

    def close(self, ok: bool) -> None:
        pass


class EventSink(Sink):
    """`--events FILE`: one JSON line per scored frame and per source incident, flushed as written."""

    needs_pixels = False

    name = "events"

    def __init__(self, path: str | Path, shared: SharedEventWriter | None = None) -> None:
        self.path = Path(path)
        self.shared = shared  # several sources, one events file
        self.writer = None

    def open(self, ctx: SinkContext) -> None:
        from ovdoc.runtime.stream.events import EventWriter

        super().open(ctx)
        self.writer = self.shared.acquire() if self.shared is not None else EventWriter(self.path)

    def handle(self, result: Result) -> None:
        if result.score is None:  # scoring paused: nothing was measured
            return
        frame = result.frame
        record = {
            "frame": frame.index,
            "timestamp": round(frame.timestamp, 6),
            "score": result.score,
            "smoothed": result.smoothed,
            "anomalous": result.anomalous,
        }
        if result.box is not None:
            record["box"] = list(result.box)
            record["peak"] = result.peak
        if self.ctx.tag_source:  # several sources in one file: say which (the same file may be given twice)
            record["source"] = self.ctx.source_name
            record["camera"] = self.ctx.source_id
        self.writer.write(record)

    def event(self, record: dict) -> None:
        self.writer.write(record | {"camera": self.ctx.source_id} if self.ctx.tag_source else record)

    def episode(self, record: dict) -> None:
        from ovdoc.runtime.stream.episodes import public

        record = public(record)
        self.writer.write(record | {"camera": self.ctx.source_id} if self.ctx.tag_source else record)

    def close(self, ok: bool) -> None:
        if self.writer is None:
            return
        if self.shared is not None:
            self.shared.release()
        else:
            self.writer.close()
        self.writer = None


class SharedEventWriter:
    """One events file for several sources' EventSinks (the loop calls sinks from one thread only):
    opened by the first, closed by the last."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.writer = None
        self.users = 0

    def acquire(self):
        from ovdoc.runtime.stream.events import EventWriter

        if self.writer is None:
            self.writer = EventWriter(self.path)
        self.users += 1
        return self.writer

    def release(self) -> None:
        self.users -= 1
        if self.users == 0 and self.writer is not None:
            self.writer.close()
            self.writer = None


class Renderer:
    """The annotated frame (score, FPS, heatmap and box in patch mode), drawn once per result even when
    both the window and the saved video show it."""

    def __init__(self) -> None:
        self.fps = 0.0
        self._last_t: float | None = None
        self._last: tuple[Result, np.ndarray] | None = None

    def render(self, result: Result) -> np.ndarray:
        if self._last is not None and self._last[0] is result:
            return self._last[1]
        from ovdoc.runtime.stream.display import annotate, overlay_heatmap

        now = time.perf_counter()
        if self._last_t is not None:
            dt = max(now - self._last_t, 1e-6)
            self.fps = 1.0 / dt if self.fps == 0 else 0.9 * self.fps + 0.1 / dt
        self._last_t = now
        image = result.frame.image
        if result.map is not None:
            level = result.map_threshold or result.threshold
            image = overlay_heatmap(image, result.map, level, box=result.box, anomalous=result.anomalous)
        image = annotate(
            image,
            score=result.smoothed,
            threshold=result.threshold,
            anomalous=result.anomalous,
            fps=self.fps,
            scoring=result.score is not None,
        )
        self._last = (result, image)
        return image


class WindowSink(Sink):
    """A cv2 window; keys become commands: q/Esc quit, p save frame (+ heatmap), s pause/resume scoring."""

    name = "window"
    KEYS = {"quit": Control.QUIT, "save": Control.SAVE, "toggle": Control.TOGGLE_SCORING}

    def __init__(self, renderer: Renderer | None = None, snapshot_dir: Path | None = None) -> None:
        self.renderer = renderer or Renderer()
        self.snapshot_dir = snapshot_dir
        self.window = None
        self._shown: tuple[np.ndarray, Result] | None = None

    def open(self, ctx: SinkContext) -> None:
        from ovdoc.runtime.stream.display import WINDOW, Window

        super().open(ctx)
        title = f"{WINDOW} - {ctx.source_id}: {ctx.source_name}" if ctx.tag_source else WINDOW
        self.window = Window(self.snapshot_dir, title)

    def handle(self, result: Result) -> None:
        image = self.renderer.render(result)
        self._shown = (image, result)
        action = self.window.show(image)
        if action is not None:
            self.ctx.post(Command(self.KEYS[action], self.ctx.source_id))

    def snapshot(self) -> Path | None:
        if self._shown is None:
            return None
        from ovdoc.runtime.stream.display import heatmap_colours

        image, result = self._shown
        level = result.map_threshold or result.threshold
        heat = heatmap_colours(result.map, level) if result.map is not None else None
        return self.window.save(image, heat)

    def close(self, ok: bool) -> None:
        if self.window is not None:
            self.window.close()


class VideoFileSink(Sink):
    """`--save-video FILE`: the annotated stream, appearing under its name only once complete."""

    name = "video"

    def __init__(self, path: str | Path, renderer: Renderer | None = None) -> None:
        self.path = Path(path)
        self.renderer = renderer or Renderer()
        self.writer = None
        self.file: Path | None = None

    def open(self, ctx: SinkContext) -> None:
        from ovdoc.runtime.stream.display import VideoSink

        super().open(ctx)
        self.writer = VideoSink(self.path, ctx.fps or 25.0)

    def handle(self, result: Result) -> None:
        self.writer.write(self.renderer.render(result))

    def close(self, ok: bool) -> None:
        if self.writer is None:
            return
        if ok:
            self.file = self.writer.finish()
        else:
            self.writer.discard()


def video_path_for(path: str | Path, source_id: int, several: bool) -> Path:
    """`--save-video out.avi` with several sources: out-0.avi, out-1.avi, ... (one file per camera)."""
    path = Path(path)
    return path.with_name(f"{path.stem}-{source_id}{path.suffix}") if several else path


def _build_events(values, run: RunContext) -> SinksRun:
    shared = SharedEventWriter(values["events"]) if run.several else None
    return SinksRun(lambda lane: EventSink(values["events"], shared))


def _build_window(values, run: RunContext) -> SinksRun:
    return SinksRun(lambda lane: WindowSink(lane.renderer, run.options.snapshot_dir))


def _build_video(values, run: RunContext) -> SinksRun:
    return SinksRun(lambda lane: VideoFileSink(
        video_path_for(values["save_video"], lane.source_id, run.several), lane.renderer))


EVENTS = Output(
    "events",
    (OutputOption("--events", "Write one JSON line per processed frame (and per source incident) to FILE, "
                  "as it happens.", kind="file"),),
    enabled=lambda values: bool(values.get("events")),
    build=_build_events,
)
# The window has no option of its own: `ovdoc run` turns it on (values["show"]) unless --headless.
WINDOW = Output("window", (), enabled=lambda values: bool(values.get("show")), build=_build_window)
VIDEO = Output(
    "video",
    (OutputOption("--save-video", "Save the annotated stream (.avi or .mp4); appears only once complete.",
                  kind="file"),),
    enabled=lambda values: bool(values.get("save_video")),
    build=_build_video,
)
