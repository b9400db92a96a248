"""Reader and preparer: the two threads that run ahead of inference for one source.

    Reader:   source.read_raw() --(bounded queue; live: drop the OLDEST when full, file: block)-->
    Preparer: resize to --res, then the model's crop (detector.prepare) --(queue shared by all sources)-->

A live source shows what happens *now*, so when scoring falls behind the oldest waiting frame goes; a
file never drops a frame. A live source that stops delivering is reopened with exponential backoff, each
try reported as an incident, and given up after `retries` tries with one clear line. OpenCV releases the
GIL while decoding and resizing, so both threads overlap with inference and with each other.

A recorded clip can stand in for a camera: `realtime` hands frames on at the file's own frame rate
(a reader that falls more than LATE_RESET_S behind re-anchors its schedule instead of rushing to catch
up), and `loop` starts the file again at its end, numbering frames and timestamps on from the previous
pass so a looping run reads as one continuous stream; each restart is reported as a `source_looped`
incident. A file still never drops a frame: pacing only ever waits.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ovdoc.errors import OvdocError
from ovdoc.runtime.stream.sources import FrameSource, fit_to
from ovdoc.runtime.threadname import set_native_name

MAX_BACKOFF_S = 8.0
LATE_RESET_S = 1.0  # --realtime: further behind than this, re-anchor the schedule


@dataclass(frozen=True, slots=True)
class End:
    """End of one source's stream (it ended, failed, or the run is stopping)."""

    source_id: int


def put(target: queue.Queue, item: object, stop: threading.Event, *, drop_oldest: bool) -> int:
    """Put `item`; return how many frames were dropped to make room (drop_oldest) — never an End.

    Without drop_oldest, block until there is room, giving up only when the run is stopping (then
    nobody will read the queue any more).
    """
    if drop_oldest:
        dropped = 0
        while True:
            try:
                target.put_nowait(item)
                return dropped
            except queue.Full:
                try:
                    old = target.get_nowait()
                except queue.Empty:  # the consumer took one meanwhile: room now
                    continue
                dropped += not isinstance(old, End)
    try:
        target.put_nowait(item)
        return 0
    except queue.Full:
        pass
    while not stop.is_set():
        try:
            target.put(item, timeout=0.1)
            return 0
        except queue.Full:
            pass
    return 0


class StageThread:
    """A stage's daemon thread: `start`, `join`, and the exception that ended it in `fatal`.

    `stop` ends the stage's work (its source is done: duration, max frames); its End marker must still
    reach the loop, which counts sources down by them, so it waits for room until `abort` (the loop
    itself is gone) — an End given up on a full queue would leave the loop waiting forever.
    """

    abort: threading.Event | None = None

    def __init__(self, name: str) -> None:
        self.fatal: BaseException | None = None
        self.thread = threading.Thread(target=self._named_run, name=name, daemon=True)

    def start(self) -> None:
        self.thread.start()

    def join(self, timeout: float | None = None) -> None:
        self.thread.join(timeout)

    def _named_run(self) -> None:
        set_native_name(self.thread.name)  # threads it starts (a decoder's) inherit the name
        self._run()

    def _run(self) -> None:
        raise NotImplementedError


class Reader(StageThread):
    """Capture thread for one source, with the reconnect policy; counts frames read and dropped."""

    def __init__(
        self,
        source: FrameSource,
        out: queue.Queue,
        stop: threading.Event,
        *,
        source_id: int = 0,
        retries: int = 5,
        backoff_s: float = 0.5,
        max_frames: int | None = None,
        incident: Callable[[dict], None] = lambda record: None,
        sleep: Callable[[float], bool] | None = None,
        loop: bool = False,
        realtime: bool = False,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.source = source
        self.out = out
        self.stop = stop
        self.source_id = source_id
        self.retries = retries
        self.backoff_s = backoff_s
        self.max_frames = None if source.live else max_frames  # a file needs no more than it will score
        self.incident = incident
        self.sleep = sleep or stop.wait  # returns True when the run is stopping
        self.read = 0
        self.dropped = 0
        self.hit_max_frames = False
        self.loop = loop and not source.live
        self.realtime = realtime and not source.live
        self.clock = clock
        self.loops = 0  # restarts of a looping file
        self.late_resets = 0  # --realtime schedule re-anchored because the run fell behind
        self._anchor: tuple[float, float] | None = None  # (clock, stream timestamp) of the schedule
        super().__init__(f"ovdoc-capture-{source_id}")

    def backoff(self, attempt: int) -> float:
        """Seconds before reconnect attempt `attempt` (1-based): doubling, capped at MAX_BACKOFF_S."""
        return min(self.backoff_s * 2 ** (attempt - 1), MAX_BACKOFF_S)

    def _report(self, event: str, **fields: object) -> None:
        self.incident({"event": event, "source": self.source.name, **fields, "time": time.time()})

    def pace(self, timestamp: float) -> bool:
        """--realtime: wait until `timestamp` (seconds of stream time) is due; True if the run is stopping."""
        now = self.clock()
        if self._anchor is None:
            self._anchor = (now, timestamp)
            return False
        wait = self._anchor[0] + (timestamp - self._anchor[1]) - now
        if wait < -LATE_RESET_S:  # far behind (a slow consumer held the queue): carry on from now
            self._anchor = (now, timestamp)
            self.late_resets += 1
            return False
        return wait > 0 and bool(self.sleep(wait))

    def _frame_period(self, frames: int, last_stamp: float) -> float:
        """One frame's duration in stream time: 1/fps, else the mean spacing seen in the pass."""
        fps = getattr(self.source, "fps", None)
        if fps:
            return 1.0 / fps
        return last_stamp / (frames - 1) if frames > 1 and last_stamp > 0 else 1.0

    def _run(self) -> None:
        source, live = self.source, self.source.live
        failures = 0
        index_offset, time_offset = 0, 0.0  # where the current pass of a looping file starts
        in_pass, last = 0, None  # frames of the current pass, and its last frame (index, timestamp)
        try:
            while not self.stop.is_set():
                if self.max_frames is not None and self.read >= self.max_frames:
                    self.hit_max_frames = True
                    break
                frame = source.read_raw()
                if frame is None:
                    if not live:
                        if self.read == 0:
                            raise OvdocError(f"{source.name} has no readable frames")
                        if not self.loop or in_pass == 0 or not source.rewind():
                            break
                        index_offset += last[0] + 1
                        time_offset += last[1] + self._frame_period(in_pass, last[1])
                        in_pass = 0
                        self.loops += 1
                        self._report("source_looped", loop=self.loops, next_frame=index_offset)
                        continue
                    if failures >= self.retries:
                        self._report("source_gave_up", retries=failures)
                        raise OvdocError(
                            f"live source {source.name} stopped delivering frames; gave up "
                            f"after {failures} retries"
                        )
                    failures += 1
                    delay = self.backoff(failures)
                    self._report("source_lost", attempt=failures, of=self.retries, retry_in_s=delay)
                    if self.sleep(delay):
                        break
                    source.reopen()
                    continue
                if failures:
                    self._report("source_recovered", after_attempts=failures)
                    failures = 0
                frame.source_id = self.source_id
                if not live:
                    in_pass += 1
                    last = (frame.index, frame.timestamp)
                    if self.loop:
                        frame.index += index_offset
                        frame.timestamp += time_offset
                    if self.realtime and self.pace(frame.timestamp):
                        break
                self.read += 1
                frame.read_at = time.monotonic()  # (after --realtime pacing: when a camera would deliver it)
                self.dropped += put(self.out, frame, self.stop, drop_oldest=live)
        except BaseException as exc:  # reported by the loop as one line
            self.fatal = exc
        finally:  # the end marker waits for room rather than displace the last frames
            put(self.out, End(self.source_id), self.abort or self.stop, drop_oldest=False)


class Preparer(StageThread):
    """Resize to --res (the same work for every source), then the model's crop/resize, in its own thread.

    With `prepare_at` (fused), no output needs the frame's pixels at --res: the model's crop is taken from
    the decoded frame in one resample and the frame keeps its decoded pixels (its events still say --res).
    """

    def __init__(
        self,
        prepare: Callable[[np.ndarray], np.ndarray],
        res: tuple[int, int] | None,
        inp: queue.Queue,
        out: queue.Queue,
        stop: threading.Event,
        *,
        source_id: int = 0,
        prepare_at: Callable[[np.ndarray, tuple[int, int] | None], np.ndarray] | None = None,
    ) -> None:
        self.prepare = prepare
        self.prepare_at = prepare_at
        self.res = res
        self.inp = inp
        self.out = out
        self.stop = stop
        self.source_id = source_id
        super().__init__(f"ovdoc-prepare-{source_id}")

    def _run(self) -> None:
        prepare, res, inp, out, stop = self.prepare, self.res, self.inp, self.out, self.stop
        fused = self.prepare_at
        try:
            while True:
                try:
                    frame = inp.get(timeout=0.1)
                except queue.Empty:
                    if stop.is_set():
                        return
                    continue
                if isinstance(frame, End) or stop.is_set():
                    break
                if fused is not None:
                    prepared = fused(frame.image, res)
                else:
                    frame.image = image = fit_to(frame.image, res)
                    prepared = prepare(image)
                put(out, (frame, prepared), stop, drop_oldest=False)
        except BaseException as exc:
            self.fatal = exc
        finally:
            put(self.out, End(self.source_id), self.abort or stop, drop_oldest=False)
