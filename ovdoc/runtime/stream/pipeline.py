"""The live loop of `ovdoc run`: capture ahead of inference, batched async inference, smoothed decisions.

    capture thread: decode                                    --(bounded queue, live: drop oldest)-->
    prepare thread: model crop at --res geometry (one resize)  --(bounded queue)-->
    main thread:    batch -> AsyncInferQueue.start_async -> (OpenVINO threads) -> FAISS scores in order
                    -> smoothing over the last N frames -> threshold -> events / window / saved video

Live sources drop the OLDEST queued frame when scoring falls behind (show what is happening now);
files never drop. A live source that stops delivering is retried with exponential backoff, each try
reported as an event, and given up after a bounded number of tries with one clear line.
"""

from __future__ import annotations

import collections
import contextlib
import queue
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ovdoc.errors import OvdocError
from ovdoc.runtime.stream.display import VideoSink, Window, annotate
from ovdoc.runtime.stream.events import EventWriter
from ovdoc.runtime.stream.sources import Frame, FrameSource, fit_to

_END = object()
MAX_BACKOFF_S = 8.0


@dataclass
class RunOptions:
    smooth: int = 10  # the original app averaged the last 10 scores
    threshold: float | None = None  # None: the bundle's calibrated threshold
    max_frames: int | None = None
    retries: int = 5
    backoff_s: float = 0.5
    queue_size: int = 32
    show: bool = False
    events: str | Path | None = None
    save_video: str | Path | None = None
    snapshot_dir: Path | None = None


class Pipeline:
    def __init__(self, detector, source: FrameSource, options: RunOptions | None = None) -> None:
        self.det = detector
        self.source = source
        self.opt = options or RunOptions()
        if self.opt.smooth < 1:
            raise OvdocError(f"--smooth must be at least 1, got {self.opt.smooth}")
        self.threshold = float(self.opt.threshold if self.opt.threshold is not None else detector.threshold_)
        self.captured: queue.Queue = queue.Queue(maxsize=max(2, self.opt.queue_size))
        self.queue: queue.Queue = queue.Queue(maxsize=max(2, self.opt.queue_size))
        self.source_events: queue.SimpleQueue = queue.SimpleQueue()
        self.stop = threading.Event()
        self.fatal: BaseException | None = None
        self.dropped = 0
        self.read_count = 0
        self.processed = 0
        self.anomalies = 0
        self.skipped = 0
        self.incidents = 0
        self.scoring = True
        self.recent: collections.deque = collections.deque(maxlen=self.opt.smooth)
        self.fps = 0.0
        self._last_emit: float | None = None
        self._results: dict[int, tuple[list[Frame], np.ndarray]] = {}
        self._cond = threading.Condition()
        self._stopped = "end"

    # --- reader thread ------------------------------------------------------------------------------
    def _put(self, item, target: queue.Queue, *, drop_oldest: bool) -> None:
        if drop_oldest:
            while True:
                try:
                    target.put_nowait(item)
                    return
                except queue.Full:
                    try:
                        old = target.get_nowait()
                        if old is not _END:
                            self.dropped += 1
                    except queue.Empty:
                        pass
        while True:
            try:
                target.put(item, timeout=0.1)
                return
            except queue.Full:
                if self.stop.is_set():  # nobody will read it any more
                    return

    def _read_loop(self) -> None:
        failures = 0
        limit = None if self.source.live else self.opt.max_frames
        try:
            while not self.stop.is_set():
                if limit is not None and self.read_count >= limit:
                    self._stopped = "max_frames"
                    break
                frame = self.source.read_raw()
                if frame is None:
                    if not self.source.live:
                        if self.read_count == 0:
                            raise OvdocError(f"{self.source.name} has no readable frames")
                        break
                    if failures >= self.opt.retries:
                        self.source_events.put(
                            {
                                "event": "source_gave_up",
                                "source": self.source.name,
                                "retries": failures,
                                "time": time.time(),
                            }
                        )
                        raise OvdocError(
                            f"live source {self.source.name} stopped delivering frames; gave up "
                            f"after {failures} retries"
                        )
                    failures += 1
                    delay = min(self.opt.backoff_s * 2 ** (failures - 1), MAX_BACKOFF_S)
                    self.source_events.put(
                        {
                            "event": "source_lost",
                            "source": self.source.name,
                            "attempt": failures,
                            "of": self.opt.retries,
                            "retry_in_s": delay,
                            "time": time.time(),
                        }
                    )
                    if self.stop.wait(delay):
                        break
                    self.source.reopen()
                    continue
                if failures:
                    self.source_events.put(
                        {
                            "event": "source_recovered",
                            "source": self.source.name,
                            "after_attempts": failures,
                            "time": time.time(),
                        }
                    )
                    failures = 0
                self.read_count += 1
                self._put(frame, self.captured, drop_oldest=self.source.live)
        except BaseException as exc:  # reported by the main thread as one line
            self.fatal = exc
        finally:
            self._put(_END, self.captured, drop_oldest=self.source.live)

    def _prepare_loop(self) -> None:
        """Resize to --res, then the model's crop, overlapping with decoding (OpenCV drops the GIL)."""
        spec, res = self.det.spec_, self.source.res
        try:
            while True:
                try:
                    frame = self.captured.get(timeout=0.1)
                except queue.Empty:
                    if self.stop.is_set():
                        return
                    continue
                if frame is _END:
                    break
                frame.image = fit_to(frame.image, res)  # --res first: the same work for every source
                prepared = spec.prepare(frame.image)
                self._put((frame, prepared), self.queue, drop_oldest=False)
        except BaseException as exc:
            self.fatal = exc
        finally:
            self._put(_END, self.queue, drop_oldest=False)

    # --- main thread --------------------------------------------------------------------------------
    def _collect(self, size: int) -> tuple[list, bool]:
        try:
            first = self.queue.get(timeout=0.2)
        except queue.Empty:
            return [], False
        if first is _END:
            return [], True
        items = [first]
        while len(items) < size:
            try:  # live: take what is there (low latency); file: wait for a full batch (throughput)
                item = self.queue.get_nowait() if self.source.live else self.queue.get()
            except queue.Empty:
                break
            if item is _END:
                return items, True
            items.append(item)
        return items, False

    def _on_done(self, feats: np.ndarray, payload) -> None:
        seq, frames = payload
        with self._cond:
            self._results[seq] = (frames, feats)

    def _drain(self, wait: bool) -> None:
        if wait:
            self.det.extractor_.wait()
        self.det.extractor_.raise_pending()
        while True:
            with self._cond:
                ready = self._results.pop(self._next, None)
            if ready is None:
                return
            self._next += 1
            frames, feats = ready
            scores = self.det.score_features(feats)
            for frame, score in zip(frames, scores, strict=True):
                self._emit(frame, float(score))

    def _source_incidents(self) -> None:
        while True:
            try:
                record = self.source_events.get_nowait()
            except queue.Empty:
                return
            self.incidents += 1
            self.events.write(record)

    def _emit(self, frame: Frame, score: float | None) -> None:
        if self.opt.max_frames is not None and self.processed >= self.opt.max_frames:
            self._stopped = "max_frames"
            self.stop.set()
            return
        now = time.perf_counter()
        if self._last_emit is not None:
            dt = max(now - self._last_emit, 1e-6)
            self.fps = 1.0 / dt if self.fps == 0 else 0.9 * self.fps + 0.1 / dt
        self._last_emit = now
        smoothed = None
        anomalous = False
        if score is not None:
            self.processed += 1
            self.recent.append(score)
            smoothed = float(np.mean(self.recent))
            anomalous = smoothed > self.threshold
            self.anomalies += int(anomalous)
            self.events.write(
                {
                    "frame": frame.index,
                    "timestamp": round(frame.timestamp, 6),
                    "score": score,
                    "smoothed": smoothed,
                    "anomalous": anomalous,
                }
            )
        else:
            self.skipped += 1
        if self.window is None and self.video is None:
            return
        image = annotate(
            frame.image,
            score=smoothed,
            threshold=self.threshold,
            anomalous=anomalous,
            fps=self.fps,
            scoring=self.scoring,
        )
        if self.video is not None:
            self.video.write(image)
        if self.window is not None:
            action = self.window.show(image)
            if action == "quit":
                self._stopped = "user"
                self.stop.set()
            elif action == "save":
                self.window.save(image)
            elif action == "toggle":
                self.scoring = not self.scoring
                self.recent.clear()

    def run(self) -> dict:
        """Process the source to its end (or --max-frames, q, Ctrl-C, a lost live source); return a summary.

        A fatal problem (live source gone for good, unreadable file) is in summary["error"].
        """
        ext = self.det.extractor_
        self.events = EventWriter(self.opt.events)
        self.video = (
            VideoSink(self.opt.save_video, getattr(self.source, "fps", None) or 25.0)
            if self.opt.save_video
            else None
        )
        self.window = Window(self.opt.snapshot_dir) if self.opt.show else None
        self._next = 0
        submitted = 0
        ext.set_callback(self._on_done)
        reader = threading.Thread(target=self._read_loop, name="ovdoc-capture", daemon=True)
        preparer = threading.Thread(target=self._prepare_loop, name="ovdoc-prepare", daemon=True)
        start = time.perf_counter()
        reader.start()
        preparer.start()
        ok = False
        try:
            ended = False
            while not ended and not self.stop.is_set():
                items, ended = self._collect(ext.batch)
                self._source_incidents()
                if items and self.scoring:
                    ext.submit(np.stack([p for _, p in items]), (submitted, [f for f, _ in items]))
                    submitted += 1
                elif items:
                    self._drain(wait=True)
                    for frame, _ in items:
                        self._emit(frame, None)
                self._drain(wait=False)
            self._drain(wait=True)
            ok = True
        except KeyboardInterrupt:
            self._stopped = "interrupted"
            ok = True
        finally:
            self.stop.set()
            reader.join(timeout=5)
            preparer.join(timeout=5)
            with contextlib.suppress(Exception):
                ext.wait()
            self._source_incidents()
            wall = time.perf_counter() - start
            self.events.close()
            if self.window is not None:
                self.window.close()
            video_path = None
            if self.video is not None:
                video_path = self.video.finish() if ok else self.video.discard()
        summary = {
            "source": self.source.name,
            "live": self.source.live,
            "bundle": str(self.det.bundle_),
            "device": self.det.device_,
            "frames": self.processed,
            "anomalies": self.anomalies,
            "dropped": self.dropped,
            "skipped": self.skipped,
            "source_incidents": self.incidents,
            "wall_s": round(wall, 3),
            "fps": round(self.processed / wall, 2) if wall > 0 else 0.0,
            "threshold": self.threshold,
            "smooth": self.opt.smooth,
            "batch": ext.batch,
            "stopped": self._stopped,
            "events_file": str(self.opt.events) if self.opt.events else None,
            "video_file": str(video_path) if video_path else None,
        }
        if self.fatal is not None:
            summary["stopped"] = "error"
            summary["error"] = (
                str(self.fatal)
                if isinstance(self.fatal, OvdocError)
                else f"{type(self.fatal).__name__}: {self.fatal}"
            )
        return summary
