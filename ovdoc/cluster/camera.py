"""Cameras of a line on a Ray node: a Ray actor that compiles its bundle once and runs the existing
staged loop (reader -> preparer -> BatchScorer -> decider, `ovdoc.runtime.stream.loop`) for every camera
the driver grouped onto it (cameras of one bundle and one `node:` label share an actor: one compile, one
batched scorer; see `line.plan_groups`).

What leaves the node is small records: one per scored frame (camera, index, time, score, decision),
incidents, and episode starts/ends (an end carries its peak frame as a JPEG: one image per episode,
never a stream of frames). The records wait in a numbered buffer until the driver acknowledges them
(`poll(ack)`), so a reply lost with a dying node is not lost with it: the driver knows the last frame it
has of each camera and starts the replacement there (`start(resume_after=[...])`). The live picture
stays on the node too: `picture(camera)` draws the camera's latest frame as one JPEG when the driver's
web view asks for it (someone is watching), never otherwise.
"""

from __future__ import annotations

import os
import threading
import time

from ovdoc.runtime.stream.sinks import Sink
from ovdoc.runtime.stream.sources import Frame, FrameSource

PICTURE_QUALITY = 80  # as the one-box web view's stream


class Records:
    """The actor's numbered outbox, shared by its cameras' sinks (the loop calls them from one thread;
    `take` comes from the driver's poll in another)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.records: list[tuple[int, dict]] = []
        self.seq = 0

    def add(self, record: dict) -> None:
        with self.lock:
            self.seq += 1
            self.records.append((self.seq, record))

    def take(self, ack: int) -> list[tuple[int, dict]]:
        """Forget what the driver has acknowledged (seq <= ack); return the rest, oldest first."""
        with self.lock:
            if self.records and self.records[0][0] <= ack:
                self.records = [(s, r) for s, r in self.records if s > ack]
            return list(self.records)


class RecordSink(Sink):
    """One camera's only output: every result, incident and episode as a small JSON-able record; the
    latest result is kept (by reference, no copy) for `picture`."""

    name = "cluster"
    needs_pixels = False
    wants_snapshots = True  # an episode's end carries its peak frame (JPEG), once per episode

    def __init__(self, out: Records, camera: int) -> None:
        self.out, self.camera = out, camera
        self.latest = None  # the last Result with a score
        self.seen = 0  # results handled: the picture's sequence number

    def handle(self, result) -> None:
        if result.score is None:
            return
        self.latest = result
        self.seen += 1
        frame = result.frame
        self.out.add({"kind": "frame", "camera": self.camera, "frame": frame.index,
                      "timestamp": frame.timestamp, "score": float(result.score),
                      "smoothed": float(result.smoothed), "anomalous": bool(result.anomalous),
                      "threshold": float(result.threshold)})

    def event(self, record: dict) -> None:
        self.out.add({"kind": "event", "camera": self.camera, "record": dict(record)})

    def episode(self, record: dict) -> None:
        self.out.add({"kind": "episode", "camera": self.camera,
                      "record": {k: v for k, v in record.items() if k != "_peak"}})


class ResumedSource(FrameSource):
    """A file or folder source that starts after frame `after` (the last one the driver received from
    the node that died) and hands on at most `limit` frames (what is left of --max-frames); a live camera
    has no past to replay and starts now. `finished`: the file had ended before the node died."""

    def __init__(self, inner: FrameSource, after: int, limit: int | None = None) -> None:
        self.inner, self.after, self.limit = inner, after, limit
        self.live, self.name, self.res, self.fps = inner.live, inner.name, inner.res, inner.fps
        self.given = 0
        self.finished = False

    def open(self) -> None:
        self.inner.open()

    def read_raw(self) -> Frame | None:
        if not self.live and self.limit is not None and self.given >= self.limit:
            self.finished = self.finished or self.given == 0
            return None
        while True:
            frame = self.inner.read_raw()
            if frame is None and not self.live and self.given == 0 and self.after >= 0:
                self.finished = True  # nothing after the last delivered frame: this camera was done
            if frame is None or self.live or frame.index > self.after:
                self.after = -1  # caught up: a looping file's next pass starts at its frame 0
                self.given += frame is not None
                return frame

    def reopen(self) -> bool:
        return self.inner.reopen()

    def rewind(self) -> bool:
        if self.finished or (self.limit is not None and self.given >= self.limit):
            return False
        return self.inner.rewind()

    def close(self) -> None:
        self.inner.close()

    def describe(self) -> dict:
        return self.inner.describe()


class CameraActor:
    """Held by Ray on a node with the cameras' CPUs (and label): the loop runs in a thread of the actor,
    the driver polls it. Constructed from plain values only (paths, numbers): nothing OpenVINO is pickled.
    `cameras` share `options["bundle"]`, compiled here once."""

    def __init__(self, cameras: list[dict], options: dict) -> None:
        from ovdoc.runtime.devices import check_device

        self.cameras, self.options = cameras, options
        self.threads = max(1, int(round(float(options.get("cpus", 1)))))
        self.device = check_device(options.get("device", "CPU"))
        self.batch = int(options.get("batch", 8))
        self.compiles = 0  # the bundle's compiles in this actor (a reload compiles again)
        self.detector = self._load(cameras[0]["bundle"])
        self.out = Records()
        self.sinks = [RecordSink(self.out, i) for i in range(len(cameras))]
        self.renderers: list = [None] * len(cameras)
        self.sources: list[FrameSource] = []
        self.loop = None
        self.thread: threading.Thread | None = None
        self.error: str | None = None
        self.stopped: str | None = None

    def _load(self, bundle):
        """The bundle compiled with OpenVINO, OpenCV and FAISS limited to this actor's CPUs (the limit
        is a property of the OpenVINO core that compiles, so the detector gets that core)."""
        from ovdoc.runtime.cpu_share import shared_core
        from ovdoc.runtime.detector import Detector

        core = shared_core(self.threads)
        self.compiles += 1
        return Detector.load(bundle, device=self.device, batch=self.batch, core=core)

    def where(self) -> dict:
        import socket

        import ray

        context = ray.get_runtime_context()
        return {"node_id": context.get_node_id(), "host": socket.gethostname(), "pid": os.getpid(),
                "actor_id": context.get_actor_id(), "compiles": self.compiles,
                "threads": _inference_threads(self.detector), "pinned": _pinned(self.detector)}

    def start(self, resume_after: list[int] | None = None) -> dict:
        """Open the sources (past `resume_after[i]` for a replayed file) and start the loop; where it runs."""
        from ovdoc.runtime.stream.loop import Lane, LiveLoop, RunOptions
        from ovdoc.runtime.stream.reload import Reloader
        from ovdoc.runtime.stream.sources import open_source

        opt = self.options
        resume_after = resume_after or [-1] * len(self.cameras)
        max_frames = opt.get("max_frames")
        lanes = []
        for i, (camera, after) in enumerate(zip(self.cameras, resume_after, strict=True)):
            source = open_source(camera["source"], res=tuple(camera["res"]) if camera.get("res") else None)
            if camera.get("name"):
                source.name = camera["name"]
            if after >= 0:  # a file's --max-frames counts over both nodes; a live camera's starts anew
                limit = None if max_frames is None else max(0, max_frames - (after + 1))
                source = ResumedSource(source, after, limit)
            self.sources.append(source)
            lanes.append(Lane(source, [self.sinks[i]], source_id=i, threshold=camera.get("threshold"),
                              smooth=camera.get("smooth")))
        run = RunOptions(smooth=int(opt.get("smooth", 10)), threshold=opt.get("threshold"),
                         max_frames=max_frames, loop=bool(opt.get("loop")),
                         realtime=bool(opt.get("realtime")), duration_s=opt.get("duration_s"),
                         watch_bundle=True)  # a bundle changed on the node's storage reloads, as on one box

        self.loop = LiveLoop(self.detector, lanes, run, Reloader(lambda current: self._load(current.bundle_)))
        self.thread = threading.Thread(target=self._run, name="ovdoc-cameras", daemon=True)
        self.thread.start()
        return self.where()

    def _finished(self, lane) -> bool:
        return bool(getattr(lane.source, "finished", False))

    def _run(self) -> None:
        loop = self.loop
        try:
            loop.run()
            fatal = loop.fatal
            if fatal is not None and any(fatal is lane.fatal and self._finished(lane) for lane in loop.lanes):
                # a replayed file that had ended before the move has nothing left: not a failure
                fatal = next((lane.fatal for lane in loop.lanes
                              if lane.fatal and not lane.done and not self._finished(lane)), None)
                loop.stopped = "error" if fatal is not None else "end"
            if fatal is not None:
                self.error = str(fatal).splitlines()[0] if str(fatal) else type(fatal).__name__
            self.stopped = loop.stopped
        except Exception as exc:  # reported to the driver in one line, not lost in the actor's log
            self.error = f"{type(exc).__name__}: {exc}".splitlines()[0]
            self.stopped = "error"
        finally:
            for source in self.sources:
                source.close()

    def poll(self, ack: int) -> dict:
        """Records after `ack`, and whether the loop has ended (after these records)."""
        done = self.thread is not None and not self.thread.is_alive()
        return {"records": self.out.take(ack), "done": done, "error": self.error,
                "stopped": self.stopped if done else None, "compiles": self.compiles,
                "cpu_s": time.process_time()}  # this actor's process, for frames per CPU-second

    def picture(self, camera: int, after: int = -1) -> tuple[int, bytes] | None:
        """Camera `camera`'s latest scored frame at its --res, annotated as in the one-box web view, as
        one JPEG; None when there is none newer than `after` (the driver's web view asks only while
        someone watches)."""
        import cv2

        from ovdoc.runtime.stream.messages import Result
        from ovdoc.runtime.stream.sinks import Renderer
        from ovdoc.runtime.stream.sources import fit_to

        sink = self.sinks[camera]
        result, seen = sink.latest, sink.seen
        if result is None or seen == after:
            return None
        res = self.cameras[camera].get("res")
        image = result.frame.image
        if res and (image.shape[1], image.shape[0]) != tuple(res):  # the loop kept the decoded frame
            image = fit_to(image, tuple(res))
        frame = Frame(result.frame.index, result.frame.timestamp, image, result.frame.source_id)
        shown = Result(frame, result.score, result.smoothed, result.anomalous, result.threshold, result.map,
                       result.box, result.peak, result.map_threshold)
        if self.renderers[camera] is None:
            self.renderers[camera] = Renderer()
        ok, buf = cv2.imencode(".jpg", self.renderers[camera].render(shown),
                               [cv2.IMWRITE_JPEG_QUALITY, PICTURE_QUALITY])
        return (seen, buf.tobytes()) if ok else None

    def command(self, control: str, value: float | None = None, by: str = "driver",
                save: bool = False, camera: int | None = None) -> None:
        """The driver's threshold slider / pause / reload, applied by the loop (`camera`: that camera of
        this actor, None: all; `save` writes the threshold into the bundle as this node sees it)."""
        from ovdoc.runtime.stream.messages import Command, Control

        if self.loop is not None:
            self.loop.post(Command(Control(control), source_id=camera, value=value, by=by, save=save))

    def stop(self) -> None:
        if self.loop is not None:
            from ovdoc.runtime.stream.messages import Control

            self.loop.post(Control.QUIT)


def _inference_threads(detector) -> int | None:
    """The OpenVINO threads the compiled model really uses (what `shared_core` asked for)."""
    value = _compiled_property(detector, "INFERENCE_NUM_THREADS")
    return int(value) if value is not None else None


def _pinned(detector) -> bool | None:
    """Whether OpenVINO pins this actor's threads to cores (shared_core turns it off: actors share nodes)."""
    value = _compiled_property(detector, "ENABLE_CPU_PINNING")
    return bool(value) if value is not None else None


def _compiled_property(detector, name: str):
    compiled = getattr(getattr(detector, "extractor_", None), "compiled", None)
    try:
        return compiled.get_property(name)
    except Exception:  # another device or layout: not known
        return None
