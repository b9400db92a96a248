"""One camera of a line on a Ray node: a Ray actor that compiles its bundle once and runs the existing
staged loop (reader -> preparer -> BatchScorer -> decider, `ovdoc.runtime.stream.loop`) for its camera.

What leaves the node is small records: one per scored frame (index, time, score, decision), incidents,
and episode starts/ends (an end carries its peak frame as a JPEG: one image per episode, never a stream
of frames). The records wait in a numbered buffer until the driver acknowledges them (`poll(ack)`), so
a reply lost with a dying node is not lost with it: the driver knows the last frame it has and starts
the replacement there (`start(resume_after=...)`).
"""

from __future__ import annotations

import threading
import time

from ovdoc.runtime.stream.sinks import Sink
from ovdoc.runtime.stream.sources import Frame, FrameSource


class RecordSink(Sink):
    """The actor's only output: every result, incident and episode as a small JSON-able record."""

    name = "cluster"
    needs_pixels = False
    wants_snapshots = True  # an episode's end carries its peak frame (JPEG), once per episode

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.records: list[tuple[int, dict]] = []
        self.seq = 0

    def _add(self, record: dict) -> None:
        with self.lock:
            self.seq += 1
            self.records.append((self.seq, record))

    def handle(self, result) -> None:
        if result.score is None:
            return
        frame = result.frame
        self._add({"kind": "frame", "frame": frame.index, "timestamp": frame.timestamp,
                   "score": float(result.score), "smoothed": float(result.smoothed),
                   "anomalous": bool(result.anomalous), "threshold": float(result.threshold)})

    def event(self, record: dict) -> None:
        self._add({"kind": "event", "record": dict(record)})

    def episode(self, record: dict) -> None:
        self._add({"kind": "episode", "record": {k: v for k, v in record.items() if k != "_peak"}})

    def take(self, ack: int) -> list[tuple[int, dict]]:
        """Forget what the driver has acknowledged (seq <= ack); return the rest, oldest first."""
        with self.lock:
            self.records = [(s, r) for s, r in self.records if s > ack]
            return list(self.records)


class ResumedSource(FrameSource):
    """A file or folder source that starts after frame `after` (the last one the driver received from
    the node that died); a live camera has no past to replay and starts now."""

    def __init__(self, inner: FrameSource, after: int) -> None:
        self.inner, self.after = inner, after
        self.live, self.name, self.res, self.fps = inner.live, inner.name, inner.res, inner.fps

    def open(self) -> None:
        self.inner.open()

    def read_raw(self) -> Frame | None:
        while True:
            frame = self.inner.read_raw()
            if frame is None or self.live or frame.index > self.after:
                self.after = -1  # caught up: a looping file's next pass starts at its frame 0
                return frame

    def reopen(self) -> bool:
        return self.inner.reopen()

    def rewind(self) -> bool:
        return self.inner.rewind()

    def close(self) -> None:
        self.inner.close()

    def describe(self) -> dict:
        return self.inner.describe()


class CameraActor:
    """Held by Ray on a node with the camera's CPUs (and label): the loop runs in a thread of the actor,
    the driver polls it. Constructed from plain values only (paths, numbers): nothing OpenVINO is pickled."""

    def __init__(self, camera: dict, options: dict) -> None:
        from ovdoc.cluster.extract import limit_threads
        from ovdoc.runtime.stream.runtime import load_detector_for_run

        self.camera, self.options = camera, options
        cpus = max(1, int(options.get("cpus", 1)))
        limit_threads(cpus)
        self.detector = load_detector_for_run(camera["bundle"], options.get("device", "CPU"),
                                              batch=int(options.get("batch", 8)))
        import cv2
        import faiss

        cv2.setNumThreads(cpus)  # load_detector_for_run pins them to 1 for a one-box run; this actor has cpus
        faiss.omp_set_num_threads(cpus)
        self.sink = RecordSink()
        self.loop = None
        self.thread: threading.Thread | None = None
        self.error: str | None = None
        self.started_at = time.time()

    def where(self) -> dict:
        import socket

        import ray

        return {"node_id": ray.get_runtime_context().get_node_id(), "host": socket.gethostname(),
                "pid": __import__("os").getpid()}

    def start(self, resume_after: int = -1) -> dict:
        """Open the source (past `resume_after` for a replayed file) and start the loop; where it runs."""
        from ovdoc.runtime.stream.loop import Lane, LiveLoop, RunOptions
        from ovdoc.runtime.stream.sources import open_source

        camera, opt = self.camera, self.options
        source = open_source(camera["source"], res=tuple(camera["res"]) if camera.get("res") else None)
        if camera.get("name"):
            source.name = camera["name"]
        if resume_after >= 0:
            source = ResumedSource(source, resume_after)
        self.source = source
        lane = Lane(source, [self.sink], threshold=camera.get("threshold"), smooth=camera.get("smooth"))
        run = RunOptions(smooth=int(opt.get("smooth", 10)), threshold=opt.get("threshold"),
                         max_frames=opt.get("max_frames"), loop=bool(opt.get("loop")),
                         realtime=bool(opt.get("realtime")), duration_s=opt.get("duration_s"),
                         watch_bundle=True)  # a bundle changed on the node's storage reloads, as on one box
        if run.max_frames is not None and resume_after >= 0:  # the frames asked for, counted over both nodes
            run.max_frames = max(1, run.max_frames - (resume_after + 1))
        self.loop = LiveLoop(self.detector, [lane], run)
        self.thread = threading.Thread(target=self._run, name="ovdoc-camera", daemon=True)
        self.thread.start()
        return self.where()

    def _run(self) -> None:
        try:
            self.loop.run()
            if self.loop.fatal is not None:
                self.error = str(self.loop.fatal).splitlines()[0]
        except Exception as exc:  # reported to the driver in one line, not lost in the actor's log
            self.error = f"{type(exc).__name__}: {exc}".splitlines()[0]
        finally:
            self.source.close()

    def poll(self, ack: int) -> dict:
        """Records after `ack`, and whether the loop has ended (after these records)."""
        done = self.thread is not None and not self.thread.is_alive()
        return {"records": self.sink.take(ack), "done": done, "error": self.error,
                "stopped": getattr(self.loop, "stopped", None) if done else None,
                "cpu_s": time.process_time()}  # this actor's process, for frames per CPU-second

    def command(self, control: str, value: float | None = None, by: str = "driver",
                save: bool = False) -> None:
        """The driver's threshold slider / pause / reload, applied by this camera's loop (`save` writes the
        threshold into the bundle as this node sees it)."""
        from ovdoc.runtime.stream.messages import Command, Control

        if self.loop is not None:
            self.loop.post(Command(Control(control), value=value, by=by, save=save))

    def stop(self) -> None:
        if self.loop is not None:
            from ovdoc.runtime.stream.messages import Control

            self.loop.post(Control.QUIT)
