"""The live loop: lanes (one per source: reader, preparer, decider, sinks) around one scorer per bundle.

    per source (a "lane"):  Reader thread --(bounded; live: drop oldest)--> Preparer thread --+
                                                                                              |
    shared:   prepared queue --> main thread: batch --> BatchScorer (one compiled model, async,
              results in order, post-processed) --> per source: Decider --> its sinks
                                                                        ^
              Command queue (quit / save / pause / threshold / reload) -+ applied by the loop

This module only schedules: read -> prepare -> submit -> results -> sinks. What happens to a result is
elsewhere: post-processing (postprocess.py), the decision (decider.py) against the camera's threshold
(threshold.py owns it), episodes and their JPEGs and the flag-rate watch (sinks after the camera's own:
episode_sink.py, flag_rate.py), the bundles, their reloads and swaps (models.py, reload.py), one
camera's stages and counters (lane.py). The loop talks to a detector only through the LiveDetector
protocol (live_detector.py).
Readers, preparers, deciders and sinks belong to one source; frames carry their `source_id`, so several
cameras in one process are a list of lanes. The main thread only batches, submits, and hands results
on: decoding, resizing and inference run in other threads.
"""

from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from ovdoc.errors import OvdocError, first_line
from ovdoc.runtime.stream.lane import Lane
from ovdoc.runtime.stream.live_detector import LiveDetector
from ovdoc.runtime.stream.messages import Command, Control
from ovdoc.runtime.stream.models import Models
from ovdoc.runtime.stream.postprocess import FrameScore
from ovdoc.runtime.stream.reader import End, Preparer, Reader
from ovdoc.runtime.stream.reload import Reloader, reload_failed, reloaded
from ovdoc.runtime.stream.sinks import Sink, SinkContext
from ovdoc.runtime.stream.sources import Frame
from ovdoc.runtime.stream.threshold import Thresholds, changed_record


@dataclass
class RunOptions:
    smooth: int = 10  # the original app averaged the last 10 scores
    threshold: float | None = None  # None: the bundle's calibrated threshold
    max_frames: int | None = None  # per source
    retries: int = 5
    backoff_s: float = 0.5
    queue_size: int = 32
    show: bool = False
    events: str | Path | None = None
    save_video: str | Path | None = None
    snapshot_dir: Path | None = None
    loop: bool = False  # files and folders: start again at the end (a clip standing in for a camera)
    realtime: bool = False  # files: hand frames on at the file's own frame rate
    duration_s: float | None = None  # stop after this many seconds (readers end, in-flight frames count)
    episodes_dir: Path | None = None  # write each episode's peak frame here as JPEG (named in anomaly_end)
    watch_bundle: bool = False  # reload the bundle when its manifest changes on disk
    flag_window: int | None = None  # frames in the flag-rate window (None: from the bundle's target)


class SinkError(Exception):
    """A sink failed; the message is one line naming it."""


class LiveLoop:
    """Runs lanes through one BatchScorer per bundle until every lane ends (or quit, Ctrl-C, an error).

    `detector` is one LiveDetector (every lane uses it) or a list, one per bundle, indexed by
    `Lane.model`. `thresholds`: the run's threshold owner when the caller made it already (the pipeline,
    whose outputs read it first); else made here from the lanes.
    """

    def __init__(self, detector: LiveDetector | list[LiveDetector], lanes: list[Lane], options: RunOptions,
                 reloader: Reloader | None = None, thresholds: Thresholds | None = None) -> None:
        if options.smooth < 1:
            raise OvdocError(f"--smooth must be at least 1, got {options.smooth}")
        detectors = list(detector) if isinstance(detector, (list, tuple)) else [detector]
        self.models = Models(detectors, reloader)
        self.lanes = lanes
        self.opt = options
        self.stop = threading.Event()
        self.prepared: queue.Queue = queue.Queue(maxsize=max(2, options.queue_size))
        self.incidents: queue.SimpleQueue = queue.SimpleQueue()
        self.commands: queue.SimpleQueue = queue.SimpleQueue()
        self.handlers = {
            Control.QUIT: self._quit,
            Control.TOGGLE_SCORING: self._set_scoring,
            Control.PAUSE: self._set_scoring,
            Control.RESUME: self._set_scoring,
            Control.SET_THRESHOLD: self._set_threshold,
            Control.RELOAD: self._reload,
            Control.SAVE: self._save,
        }
        self.scoring = True
        self.stopped = "end"
        self.fatal: BaseException | None = None
        self.wall_s = 0.0
        self.ok = False
        for i, lane in enumerate(lanes):
            if lane.source_id != i:
                raise ValueError(f"lane {i} has source_id {lane.source_id}: ids are the lanes' positions")
            if not 0 <= lane.model < len(self.models):
                raise ValueError(f"lane {i} names model {lane.model}; the loop has {len(self.models)}")
        if thresholds is None:
            thresholds = Thresholds(detectors, [(lane.model, lane.threshold) for lane in lanes],
                                    options.threshold)
        self.thresholds = thresholds
        if len(self.thresholds) != len(lanes):
            raise ValueError(f"{len(self.thresholds)} thresholds for {len(lanes)} lanes")
        for lane in lanes:
            lane.equip(self.models[lane.model].det, self.thresholds[lane.source_id], options)

    @property
    def det(self) -> LiveDetector:
        """The first (with one bundle: the only) detector."""
        return self.models[0].det

    @property
    def reloads(self) -> int:
        return self.models.reloads

    # --- commands: posted from any thread, applied here between frames --------------------------------
    def post(self, command: Command | Control) -> None:
        """Thread-safe: ask the loop to quit, save, pause, change a threshold, reload."""
        self.commands.put(command if isinstance(command, Command) else Command(command))

    def _apply_commands(self) -> None:
        while True:
            try:
                command = self.commands.get_nowait()
            except queue.Empty:
                return
            lanes = self.lanes if command.source_id is None else [self.lanes[command.source_id]]
            self.handlers[command.control](command, lanes)

    def _quit(self, command: Command, lanes: list[Lane]) -> None:
        self.stopped = "user"
        self.stop.set()

    def _set_scoring(self, command: Command, lanes: list[Lane]) -> None:
        wanted = {Control.PAUSE: False, Control.RESUME: True}.get(command.control, not self.scoring)
        if wanted != self.scoring:
            self.scoring = wanted  # one model scores every source: paused for all
            for lane in self.lanes:
                lane.decider.reset()

    def _set_threshold(self, command: Command, lanes: list[Lane]) -> None:
        """From the next frame on; said in the events; with `save` also written into the bundle."""
        changes = self.thresholds.set([lane.source_id for lane in lanes], command.value, by=command.by,
                                      save=command.save)
        for camera, previous, saved_to in changes:
            lane = self.lanes[camera]
            record = changed_record(lane.source.name, command.value, previous, command.by, saved_to)
            for sink in lane.sinks:
                self._call(sink, sink.event, record)

    def _reload(self, command: Command, lanes: list[Lane]) -> None:
        self.models.reload([lane.model for lane in lanes], command.by)

    def _save(self, command: Command, lanes: list[Lane]) -> None:
        for lane in lanes:
            for sink in lane.sinks:
                self._call(sink, sink.snapshot)

    def _swap_reloads(self) -> None:
        """Finished reloads: the new detector swapped in between batches (what the old one has in flight
        is delivered first), thresholds resolved again; or why not. An event to its cameras either way."""
        for index, new, error, by in self.models.finished_reloads():
            lanes = [lane for lane in self.lanes if lane.model == index]
            if error is not None or new is None:
                self._event_to(lanes, reload_failed(error, by, self.models[index].det.bundle_))
                continue
            self.models.swap(index, new, self._deliver)
            self.thresholds.rebase(index, new)  # a camera's own threshold and --threshold still win
            for lane in lanes:
                self._event_to([lane], reloaded(new, by, lane.decider.threshold))

    def _event_to(self, lanes: list[Lane], record: dict) -> None:
        for lane in lanes:
            for sink in lane.sinks:
                self._call(sink, sink.event, record | {"source": lane.source.name})

    def _episode_to(self, lane: Lane, record: dict) -> None:
        for sink in lane.sinks:
            self._call(sink, sink.episode, record)

    # --- stages ---------------------------------------------------------------------------------------
    def _start(self) -> None:
        # a file replayed in real time stands in for a camera: send partial batches, as for a live one
        self._live = any(lane.source.live or self.opt.realtime for lane in self.lanes)
        for lane in self.lanes:
            src = lane.source
            ctx = SinkContext(
                source_name=src.name,
                source_id=lane.source_id,
                live=src.live,
                fps=getattr(src, "fps", None),
                tag_source=len(self.lanes) > 1,
                post=self.post,
                publish_event=lambda record, lane=lane: self._event_to([lane], record),
                publish_episode=lambda record, lane=lane: self._episode_to(lane, record),
            )
            for sink in lane.chain:
                sink.open(ctx)
            captured: queue.Queue = queue.Queue(maxsize=max(2, self.opt.queue_size))
            lane.reader = Reader(
                src,
                captured,
                lane.stop,
                source_id=lane.source_id,
                retries=self.opt.retries,
                backoff_s=self.opt.backoff_s,
                max_frames=self.opt.max_frames,
                incident=lambda record, i=lane.source_id: self.incidents.put((i, record)),
                loop=self.opt.loop,
                realtime=self.opt.realtime,
            )
            model = self.models[lane.model]
            lane.preparer = Preparer(
                lambda image, m=model: m.det.prepare(image),  # the current detector: a reload swaps it
                src.res,
                captured,
                self.prepared,
                lane.stop,
                source_id=lane.source_id,
                prepare_at=self._fused_prepare(lane),
            )
        for lane in self.lanes:
            lane.reader.abort = lane.preparer.abort = self.stop  # the loop is gone: no End is awaited
            lane.reader.start()
            lane.preparer.start()

    def _fused_prepare(self, lane: Lane):
        """The detector's one-resample crop when nothing of this lane looks at the --res pixels (a patch
        map is laid on the frame at its size, so patch mode keeps the resize)."""
        model = self.models[lane.model]
        if any(getattr(sink, "needs_pixels", True) for sink in lane.chain) or model.draws_maps:
            return None
        return lambda image, res: model.det.prepare_at(image, res)

    def _collect(self, size: int, wait_s: float = 0.2) -> tuple[list[Frame], list]:
        """Up to `size` prepared frames: a live source sends what is there (latency), files wait for a
        full batch (throughput)."""
        frames: list[Frame] = []
        prepared: list = []
        try:
            item = self.prepared.get(timeout=wait_s)
        except queue.Empty:
            return frames, prepared
        while True:
            if isinstance(item, End):
                self._end(item.source_id)
                if self._active == 0:
                    break
            else:
                frames.append(item[0])
                prepared.append(item[1])
                if len(frames) >= size:
                    break
            try:
                item = self.prepared.get_nowait() if self._live else self.prepared.get(timeout=0.5)
            except queue.Empty:
                break
        return frames, prepared

    def _end(self, source_id: int) -> None:
        lane = self.lanes[source_id]
        if lane.source_id not in self._ended:
            self._ended.add(lane.source_id)
            self._active -= 1

    def _pump_incidents(self) -> None:
        while True:
            try:
                source_id, record = self.incidents.get_nowait()
            except queue.Empty:
                return
            lane = self.lanes[source_id]
            # a --loop file starting over is planned, not a problem: recorded (events), not counted
            lane.incidents += record.get("event") != "source_looped"
            for sink in lane.sinks:
                self._call(sink, sink.event, record)

    def _call(self, sink: Sink, method, *args) -> None:
        try:
            method(*args)
        except SinkError:
            raise  # a sink publishing to the others (episodes): the failing one is named already
        except Exception as exc:
            raise _sink_error(sink, exc) from exc

    def _deliver(self, scored: list[FrameScore]) -> None:
        """Scored frames, in order, through each source's decider to its sinks."""
        commands = self.commands
        for item in scored:
            lane = self.lanes[item.frame.source_id]
            if lane.done:
                continue
            result = lane.decider.judge(item)
            lane.processed += 1
            lane.anomalies += result.anomalous
            for sink in lane.chain:
                self._call(sink, sink.handle, result)
            if self.opt.max_frames is not None and lane.processed >= self.opt.max_frames:
                self._finish_lane(lane)
            if not commands.empty():  # a key pressed on this frame acts before the next one
                self._apply_commands()
                if self.stop.is_set():
                    return

    def _finish_sinks(self) -> None:
        """The run ends: every sink may still publish (an open episode ends here, open_at_end)."""
        for lane in self.lanes:
            for sink in lane.chain:
                self._call(sink, sink.finish)

    def _finish_sinks_quietly(self) -> None:
        try:
            self._finish_sinks()
        except SinkError as exc:
            self.fatal = OvdocError(str(exc))

    def _skip(self, frames: list[Frame]) -> None:
        """Frames that arrive while scoring is paused: still shown and saved, not scored."""
        for frame in frames:
            lane = self.lanes[frame.source_id]
            if lane.done:
                continue
            lane.skipped += 1
            result = lane.decider.skipped(frame)
            for sink in lane.chain:
                self._call(sink, sink.handle, result)

    def _finish_lane(self, lane: Lane) -> None:
        """A source reached max_frames: stop its reader, ignore what it still has in flight."""
        lane.done = True
        lane.stop.set()
        self._end(lane.source_id)

    def _time_up(self) -> None:
        """--duration reached: stop the readers; the frames already read still go through to the sinks,
        so the events file and the video end on a complete, contiguous run."""
        self.stopped = "duration"
        for lane in self.lanes:
            lane.stop.set()

    def _deliver_all(self, wait: bool = False) -> None:
        """Every bundle's finished batches (in order within each bundle, so within each camera)."""
        for model in self.models:
            self._deliver(model.scorer.ready(wait=wait))

    def _watch(self, index: int):
        """A bundle changed on disk: reload it for the cameras it scores (one reload: same model)."""
        cameras = [lane.source_id for lane in self.lanes if lane.model == index]
        return lambda command: self.post(Command(command.control, source_id=cameras[0], by=command.by))

    # --- run ------------------------------------------------------------------------------------------
    def run(self) -> None:
        """Process every source to its end (or max_frames, quit, Ctrl-C, a failure); see `stopped`,
        `fatal` and each lane's counters afterwards."""
        self.models.start(self._watch if self.opt.watch_bundle else None)
        self._ended: set[int] = set()
        self._active = len(self.lanes)
        start = time.perf_counter()
        try:
            self._start()
            start = time.perf_counter()
            self._schedule(start)
            self._finish_sinks()
            self.ok = True
        except KeyboardInterrupt:
            self.stopped = "interrupted"
            self.ok = True
            self._finish_sinks_quietly()
        except SinkError as exc:
            self.fatal = OvdocError(str(exc))
        except OvdocError:
            raise  # before the first frame: a sink could not open (events file, video name)
        except Exception as exc:  # inference failed mid-run: summary + one line, not a traceback
            self.fatal = exc
        finally:
            self._shut_down()
            self.wall_s = time.perf_counter() - start
            self._close_sinks()
        if self.fatal is None:  # a source failing after it gave all the frames asked for is no failure
            self.fatal = next((lane.fatal for lane in self.lanes if lane.fatal and not lane.done), None)
        if self.fatal is not None:
            self.stopped = "error"
        elif self.stopped == "end" and all(  # (a --duration stop keeps its own name)
            lane.done or (lane.reader is not None and lane.reader.hit_max_frames) for lane in self.lanes
        ):
            self.stopped = "max_frames"

    def _schedule(self, start: float) -> None:
        """read -> prepare (the lanes' threads) -> collect a batch -> submit -> results -> sinks, with
        incidents, commands and finished reloads between batches, until every lane has ended."""
        models, batch = self.models, self.models.batch
        deadline = None if self.opt.duration_s is None else start + self.opt.duration_s
        while self._active and not self.stop.is_set():
            if deadline is not None and time.perf_counter() >= deadline:
                self._time_up()
                deadline = None
            # results in flight: look back soon, so a live frame's verdict does not wait for the next
            # frame to arrive (one frame period of latency at camera rates)
            wait_s = 0.002 if self._live and models.pending else 0.2
            frames, prepared = self._collect(batch, wait_s)
            self._pump_incidents()
            if frames:
                if self.scoring:
                    models.submit(frames, prepared, self._model_of)
                else:
                    self._deliver_all(wait=True)  # keep frame order across the pause
                    self._skip(frames)
            self._deliver_all()
            self._apply_commands()
            self._swap_reloads()
        if not self.stop.is_set():  # ended (or max_frames): what is in flight still counts
            self._deliver_all(wait=True)

    def _model_of(self, source_id: int) -> int:
        return self.lanes[source_id].model

    def _shut_down(self) -> None:
        """Stop the watchers and the lanes' threads; surface an inference error or incident not seen yet."""
        self.models.close()
        self.stop.set()
        for lane in self.lanes:
            lane.stop.set()
        for lane in self.lanes:
            for stage in (lane.reader, lane.preparer):
                if stage is not None and stage.thread.ident is not None:  # started
                    stage.join(timeout=5)
        for model in self.models:
            try:
                model.det.wait()
            except Exception as exc:  # an inference error nobody has seen yet
                if self.fatal is None and self.ok:
                    self.fatal = exc
        try:
            self._pump_incidents()
        except SinkError as exc:
            self.fatal = self.fatal or OvdocError(str(exc))

    def _close_sinks(self) -> None:
        """close(ok) on every sink; ok only when the run went through (a failed run's output is discarded)."""
        ok = self.ok and self.fatal is None and not any(lane.fatal and not lane.done for lane in self.lanes)
        for lane in self.lanes:
            for sink in lane.chain:  # close() copes with a sink whose open() never ran
                try:
                    sink.close(ok)
                except Exception as exc:
                    self.fatal = self.fatal or OvdocError(str(_sink_error(sink, exc)))


def _sink_error(sink: Sink | None, exc: BaseException) -> SinkError:
    """One line: an OvdocError says what went wrong itself; anything else is named after the sink."""
    if isinstance(exc, OvdocError):
        return SinkError(str(exc))
    name = sink.name if sink is not None else "output"
    return SinkError(f"{name} output failed: {type(exc).__name__}: {first_line(exc)}")
