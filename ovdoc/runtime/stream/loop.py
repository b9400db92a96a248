"""The live loop: lanes (one per source: reader, preparer, decider, sinks) around one shared scorer.

    per source (a "lane"):  Reader thread --(bounded; live: drop oldest)--> Preparer thread --+
                                                                                              |
    shared:   prepared queue --> main thread: batch --> BatchScorer (one compiled model, async,
              results in order) --> per source: Decider (smoothing + threshold) --> its sinks
                                                                        ^
              Command queue (quit / save / toggle scoring) -------------+ applied by the loop

Readers, preparers, deciders and sinks belong to one source; the scorer and its compiled model are
shared, and frames carry their `source_id`, so several cameras in one process are a list of lanes.
Cameras watched with different bundles (a line config) form one Model each — one compiled model, one
scorer, one reload policy per bundle — and a batch never mixes two bundles' frames.
The main thread only batches, submits, and hands results on: decoding, resizing and inference run in
other threads, and per-frame Python work here is kept to a decider update and the sinks' calls.
"""

from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from ovdoc.errors import OvdocError, first_line
from ovdoc.runtime.stream.decider import Decider
from ovdoc.runtime.stream.episodes import EpisodeTracker, snapshot_jpeg
from ovdoc.runtime.stream.flag_rate import FlagRateTracker, bundle_rates
from ovdoc.runtime.stream.messages import Command, Control, Result
from ovdoc.runtime.stream.reader import End, Preparer, Reader
from ovdoc.runtime.stream.reload import BundleWatcher, Reloader
from ovdoc.runtime.stream.scorer import BatchScorer
from ovdoc.runtime.stream.sinks import Sink, SinkContext
from ovdoc.runtime.stream.sources import Frame, FrameSource


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


@dataclass(eq=False)
class Lane:
    """One source's stages and counters: reader, preparer, decider, sinks.

    `model` is the position of the bundle that scores it (0 with one bundle); `threshold` and `smooth`
    override the run's for this camera alone (a line config's per-camera settings).
    """

    source: FrameSource
    sinks: list[Sink]
    source_id: int = 0
    model: int = 0
    threshold: float | None = None
    smooth: int | None = None
    decider: Decider | None = None
    episodes: EpisodeTracker | None = None
    flag_rate: FlagRateTracker | None = None
    reader: Reader | None = None
    preparer: Preparer | None = None
    stop: threading.Event = field(default_factory=threading.Event)
    processed: int = 0
    last_frame: tuple[int, float] | None = None  # (index, timestamp) of the last scored frame
    anomalies: int = 0
    skipped: int = 0
    incidents: int = 0
    done: bool = False  # no more frames wanted (max_frames) or coming (ended)

    @property
    def dropped(self) -> int:
        return self.reader.dropped if self.reader is not None else 0

    @property
    def fatal(self) -> BaseException | None:
        for stage in (self.reader, self.preparer):
            if stage is not None and stage.fatal is not None:
                return stage.fatal
        return None


@dataclass(eq=False)
class Model:
    """One bundle in a running loop: its detector, the scorer over its compiled model, its reloads."""

    det: object
    reloader: Reloader
    scorer: BatchScorer | None = None
    watcher: BundleWatcher | None = None

    @property
    def map_threshold(self) -> float | None:
        """Patch bundles calibrate the map's level apart from the image score's; None in global mode."""
        if getattr(self.det, "mode_", "global") != "patch":
            return None
        return float(getattr(self.det, "map_threshold_", self.det.threshold_))


class LiveLoop:
    """Runs lanes through one BatchScorer per bundle until every lane ends (or quit, Ctrl-C, an error).

    `detector` is one Detector (every lane uses it) or a list, one per bundle, indexed by `Lane.model`.
    """

    def __init__(
        self, detector, lanes: list[Lane], options: RunOptions, reloader: Reloader | None = None
    ) -> None:
        if options.smooth < 1:
            raise OvdocError(f"--smooth must be at least 1, got {options.smooth}")
        detectors = list(detector) if isinstance(detector, (list, tuple)) else [detector]
        self.models = [Model(det, reloader if reloader is not None and i == 0 else Reloader())
                       for i, det in enumerate(detectors)]
        self.lanes = lanes
        self.opt = options
        self.threshold = self._default_threshold(self.models[0])
        self.reloader = self.models[0].reloader
        self.reloads = 0
        self.stop = threading.Event()
        self.prepared: queue.Queue = queue.Queue(maxsize=max(2, options.queue_size))
        self.incidents: queue.SimpleQueue = queue.SimpleQueue()
        self.commands: queue.SimpleQueue = queue.SimpleQueue()
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
            smooth = lane.smooth if lane.smooth is not None else options.smooth
            if smooth < 1:
                raise OvdocError(f"smoothing must be at least 1 frame, got {smooth} for {lane.source.name}")
            lane.decider = Decider(smooth, self._lane_threshold(lane))
            keep = options.episodes_dir is not None or any(
                getattr(sink, "wants_snapshots", False) for sink in lane.sinks
            )
            lane.episodes = EpisodeTracker(lane.source.name, keep_snapshot=keep)
            target, upper = bundle_rates(getattr(self.models[lane.model].det, "calibration_", None))
            lane.flag_rate = FlagRateTracker(lane.source.name, target, upper, window=options.flag_window)

    @property
    def det(self):
        """The first (with one bundle: the only) detector."""
        return self.models[0].det

    @property
    def map_threshold(self) -> float | None:
        return self.models[0].map_threshold

    def _default_threshold(self, model: Model) -> float:
        """--threshold, else the bundle's calibrated one."""
        return float(self.opt.threshold if self.opt.threshold is not None else model.det.threshold_)

    def _lane_threshold(self, lane: Lane) -> float:
        """The camera's own threshold (line config), else the run's default for its bundle."""
        if lane.threshold is not None:
            return float(lane.threshold)
        return self._default_threshold(self.models[lane.model])

    def model_of(self, source_id: int) -> Model:
        return self.models[self.lanes[source_id].model]

    # --- control --------------------------------------------------------------------------------------
    def post(self, command: Command | Control) -> None:
        """Thread-safe: ask the loop to quit, save or toggle scoring (sinks, tests, a web view)."""
        self.commands.put(command if isinstance(command, Command) else Command(command))

    def _apply_commands(self) -> None:
        while True:
            try:
                command = self.commands.get_nowait()
            except queue.Empty:
                return
            lanes = self.lanes if command.source_id is None else [self.lanes[command.source_id]]
            if command.control is Control.QUIT:
                self.stopped = "user"
                self.stop.set()
            elif command.control in (Control.TOGGLE_SCORING, Control.PAUSE, Control.RESUME):
                wanted = {Control.PAUSE: False, Control.RESUME: True}.get(command.control, not self.scoring)
                if wanted != self.scoring:
                    self.scoring = wanted  # one model scores every source: paused for all
                    for lane in self.lanes:
                        lane.decider.reset()
            elif command.control is Control.SET_THRESHOLD:
                self._set_threshold(lanes, command)
            elif command.control is Control.RELOAD:
                for index in sorted({lane.model for lane in lanes}):
                    self.models[index].reloader.start(self.models[index].det, command.by)
            elif command.control is Control.SAVE:
                for lane in lanes:
                    for sink in lane.sinks:
                        self._call(sink, sink.snapshot)

    def _set_threshold(self, lanes: list[Lane], command: Command) -> None:
        """A new threshold for these sources, from the next frame on; said in the events; with `save`,
        written into the bundle's manifest too (re-hashed), so the next start uses it."""
        value = float(command.value)
        saved: dict[int, str] = {}
        if command.save:
            from ovdoc.runtime.bundle import save_threshold

            for index in sorted({lane.model for lane in lanes}):
                saved[index] = str(save_threshold(self.models[index].det.bundle_, value, by=command.by))
        for lane in lanes:
            previous = lane.decider.threshold
            lane.decider.threshold = value
            record = {"event": "threshold_changed", "source": lane.source.name, "threshold": value,
                      "previous": previous, "by": command.by, "time": time.time()}
            if lane.model in saved:
                record["saved_to"] = saved[lane.model]
            for sink in lane.sinks:
                self._call(sink, sink.event, record)

    def _swap(self, index: int, new, error: str | None, by: str) -> None:
        """A reload of bundle `index` finished: swap its detector between batches (what the old one has
        in flight is delivered first, so no frame is lost or reordered), or say why not; an event to
        each of its cameras either way."""
        model = self.models[index]
        lanes = [lane for lane in self.lanes if lane.model == index]
        if error is not None or new is None:
            record = {"event": "bundle_reload_failed", "reason": error, "by": by, "time": time.time(),
                      "kept": str(getattr(model.det, "bundle_", ""))}
            self._event_to(lanes, record)
            return
        self._deliver(model.scorer.ready(wait=True))
        model.det = new
        model.scorer = BatchScorer(new)
        self.reloads += 1
        if index == 0:
            self.threshold = self._default_threshold(model)
        for lane in lanes:  # a camera's own threshold and --threshold still override the bundle's own
            lane.decider.threshold = self._lane_threshold(lane)
        manifest = getattr(new, "manifest_", {})
        for lane in lanes:
            self._event_to([lane], {"event": "bundle_reloaded", "bundle": str(new.bundle_), "by": by,
                                    "threshold": lane.decider.threshold,
                                    "n_images": manifest.get("n_images"), "time": time.time()})

    def _event_to(self, lanes: list[Lane], record: dict) -> None:
        for lane in lanes:
            for sink in lane.sinks:
                self._call(sink, sink.event, record | {"source": lane.source.name})

    def threshold_of(self, source_id: int) -> float:
        return self.lanes[source_id].decider.threshold

    # --- stages ---------------------------------------------------------------------------------------
    def _start(self) -> None:
        # a file replayed in real time stands in for a camera: send partial batches, as for a live one
        live = any(lane.source.live or self.opt.realtime for lane in self.lanes)
        self._live = live
        for lane in self.lanes:
            src = lane.source
            ctx = SinkContext(
                source_name=src.name,
                source_id=lane.source_id,
                live=src.live,
                fps=getattr(src, "fps", None),
                tag_source=len(self.lanes) > 1,
                post=self.post,
            )
            for sink in lane.sinks:
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
        """The detector's one-resample crop when nothing of this lane looks at the --res pixels (global
        mode: a patch map is drawn at the frame's size, so patch mode keeps the resize)."""
        if any(getattr(sink, "needs_pixels", True) for sink in lane.sinks) or lane.episodes.keep_snapshot:
            return None
        model = self.models[lane.model]
        if getattr(model.det, "mode_", "global") != "global" or not hasattr(model.det, "prepare_at"):
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
        except Exception as exc:
            raise _sink_error(sink, exc) from exc

    def _deliver(self, scored: list) -> None:
        """Scored frames, in order, through each source's decider to its sinks."""
        commands = self.commands
        for item in scored:
            frame = item.frame
            lane = self.lanes[frame.source_id]
            if lane.done:
                continue
            score = item.score
            smoothed, anomalous = lane.decider.update(score)
            lane.processed += 1
            lane.last_frame = (frame.index, frame.timestamp)
            lane.anomalies += anomalous
            result = Result(
                frame, score, smoothed, anomalous, lane.decider.threshold, item.map, item.box, item.peak,
                self.models[lane.model].map_threshold,
            )
            for sink in lane.sinks:
                self._call(sink, sink.handle, result)
            drift = lane.flag_rate.update(anomalous, frame.timestamp)  # watched, never decides
            if drift is not None:
                self._event_to([lane], drift)
            episode = lane.episodes.update(result)
            if episode is not None:
                self._publish_episode(lane, episode)
            if self.opt.max_frames is not None and lane.processed >= self.opt.max_frames:
                self._finish_lane(lane)
            if not commands.empty():  # a key pressed on this frame acts before the next one
                self._apply_commands()
                if self.stop.is_set():
                    return

    def _publish_episode(self, lane: Lane, record: dict) -> None:
        """An episode started or ended: snapshot of its peak frame (if asked for), then every output."""
        peak = record.pop("_peak", None)
        if peak is not None and record["event"] == "anomaly_end":
            record["_jpeg"] = jpeg = snapshot_jpeg(peak)
            if self.opt.episodes_dir is not None:
                record["snapshot"] = str(self._write_snapshot(lane, record, jpeg))
        for sink in lane.sinks:
            self._call(sink, sink.episode, record)

    def _write_snapshot(self, lane: Lane, record: dict, jpeg: bytes) -> Path:
        from ovdoc.atomic import atomic_path

        folder = Path(self.opt.episodes_dir)
        folder.mkdir(parents=True, exist_ok=True)
        safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in Path(lane.source.name).name)[:40]
        path = folder / f"{lane.source_id}-{safe}-episode{record['episode']}-frame{record['peak_frame']}.jpg"
        with atomic_path(path) as tmp:
            tmp.write_bytes(jpeg)
        return path

    def _close_episodes(self) -> None:
        """The run ends: an episode still open ends here, flagged open_at_end."""
        for lane in self.lanes:
            ep = lane.episodes.open if lane.episodes is not None else None
            if ep is None:
                continue
            last = lane.last_frame or (ep.start_frame, ep.start_timestamp)
            record = lane.episodes.close(last[0], last[1], at_end=True)
            self._publish_episode(lane, record)

    def _close_episodes_quietly(self) -> None:
        try:
            self._close_episodes()
        except SinkError as exc:
            self.fatal = OvdocError(str(exc))

    def _skip(self, frames: list[Frame]) -> None:
        """Frames that arrive while scoring is paused: still shown and saved, not scored."""
        for frame in frames:
            lane = self.lanes[frame.source_id]
            if lane.done:
                continue
            lane.skipped += 1
            result = Result(frame, None, None, False, lane.decider.threshold)
            for sink in lane.sinks:
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

    def _submit(self, frames: list[Frame], prepared: list) -> None:
        """One batch per bundle: frames of cameras that share a bundle go to its model together."""
        if len(self.models) == 1:
            self.models[0].scorer.submit(frames, prepared)
            return
        groups: dict[int, tuple[list[Frame], list]] = {}
        for frame, item in zip(frames, prepared, strict=True):
            group = groups.setdefault(self.lanes[frame.source_id].model, ([], []))
            group[0].append(frame)
            group[1].append(item)
        for index, (group_frames, group_prepared) in groups.items():
            scorer = self.models[index].scorer
            for at in range(0, len(group_frames), scorer.batch):
                scorer.submit(group_frames[at:at + scorer.batch], group_prepared[at:at + scorer.batch])

    def _deliver_all(self, wait: bool = False) -> None:
        """Every bundle's finished batches (in order within each bundle, so within each camera)."""
        for model in self.models:
            self._deliver(model.scorer.ready(wait=wait))

    def _post_each(self, command: Command, source_ids: list[int]) -> None:
        """A bundle changed on disk: reload it for the cameras it scores (one reload: same model)."""
        self.post(Command(command.control, source_id=source_ids[0], by=command.by))

    # --- run ------------------------------------------------------------------------------------------
    def run(self) -> None:
        """Process every source to its end (or max_frames, quit, Ctrl-C, a failure); see `stopped`,
        `fatal` and each lane's counters afterwards."""
        models = self.models
        for index, model in enumerate(models):
            model.scorer = BatchScorer(model.det)
            bundle = Path(str(getattr(model.det, "bundle_", "")))
            if self.opt.watch_bundle and bundle.is_dir():
                sources = [lane.source_id for lane in self.lanes if lane.model == index]
                model.watcher = BundleWatcher(bundle, lambda c, ids=sources: self._post_each(c, ids))
                model.watcher.start()
        batch = max(model.scorer.batch for model in models)
        self._ended: set[int] = set()
        self._active = len(self.lanes)
        start = time.perf_counter()
        try:
            self._start()
            start = time.perf_counter()
            deadline = None if self.opt.duration_s is None else start + self.opt.duration_s
            while self._active and not self.stop.is_set():
                if deadline is not None and time.perf_counter() >= deadline:
                    self._time_up()
                    deadline = None
                # results in flight: look back soon, so a live frame's verdict does not wait for the next
                # frame to arrive (one frame period of latency at camera rates)
                pending = any(model.scorer.pending for model in models)
                wait_s = 0.002 if self._live and pending else 0.2
                frames, prepared = self._collect(batch, wait_s)
                self._pump_incidents()
                if frames:
                    if self.scoring:
                        self._submit(frames, prepared)
                    else:
                        self._deliver_all(wait=True)  # keep frame order across the pause
                        self._skip(frames)
                self._deliver_all()
                self._apply_commands()
                for index, model in enumerate(models):
                    outcome = model.reloader.take()
                    if outcome is not None:
                        self._swap(index, *outcome)
            if not self.stop.is_set():  # ended (or max_frames): what is in flight still counts
                self._deliver_all(wait=True)
            self._close_episodes()
            self.ok = True
        except KeyboardInterrupt:
            self.stopped = "interrupted"
            self.ok = True
            self._close_episodes_quietly()
        except SinkError as exc:
            self.fatal = OvdocError(str(exc))
        except OvdocError:
            raise  # before the first frame: a sink could not open (events file, video name)
        except Exception as exc:  # inference failed mid-run: summary + one line, not a traceback
            self.fatal = exc
        finally:
            for model in models:
                if model.watcher is not None:
                    model.watcher.close()
            self.stop.set()
            for lane in self.lanes:
                lane.stop.set()
            for lane in self.lanes:
                for stage in (lane.reader, lane.preparer):
                    if stage is not None and stage.thread.ident is not None:  # started
                        stage.join(timeout=5)
            for model in models:
                try:
                    model.det.wait()
                except Exception as exc:  # an inference error nobody has seen yet
                    if self.fatal is None and self.ok:
                        self.fatal = exc
            try:
                self._pump_incidents()
            except SinkError as exc:
                self.fatal = self.fatal or OvdocError(str(exc))
            self.wall_s = time.perf_counter() - start
            ok = (
                self.ok
                and self.fatal is None
                and not any(lane.fatal and not lane.done for lane in self.lanes)
            )
            for lane in self.lanes:
                for sink in lane.sinks:  # close() copes with a sink whose open() never ran
                    try:
                        sink.close(ok)
                    except Exception as exc:
                        self.fatal = self.fatal or OvdocError(str(_sink_error(sink, exc)))
        if self.fatal is None:  # a source failing after it gave all the frames asked for is no failure
            self.fatal = next((lane.fatal for lane in self.lanes if lane.fatal and not lane.done), None)
        if self.fatal is not None:
            self.stopped = "error"
        elif self.stopped == "end" and all(  # (a --duration stop keeps its own name)
            lane.done or (lane.reader is not None and lane.reader.hit_max_frames) for lane in self.lanes
        ):
            self.stopped = "max_frames"


def _sink_error(sink: Sink | None, exc: BaseException) -> SinkError:
    """One line: an OvdocError says what went wrong itself; anything else is named after the sink."""
    if isinstance(exc, OvdocError):
        return SinkError(str(exc))
    name = sink.name if sink is not None else "output"
    return SinkError(f"{name} output failed: {type(exc).__name__}: {first_line(exc)}")
