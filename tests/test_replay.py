"""`ovdoc run --loop --realtime --duration`: a recorded clip standing in for a camera.

The reader's pacing and looping with a fake clock and a fake file source (no OpenVINO, exact times);
the loop's --duration stop with a fake detector; then one real video: frames handed on at the file's
own frame rate, restarts counted; and the CLI's refusals as a user sees them.
"""

from __future__ import annotations

import json
import queue
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pytest
from _runtime_helpers import error_line, ovdoc_cli

from ovdoc.runtime.stream.pipeline import Pipeline, RunOptions
from ovdoc.runtime.stream.reader import LATE_RESET_S, End, Reader
from ovdoc.runtime.stream.sources import Frame, FrameSource, open_source

# --- fakes ---------------------------------------------------------------------------------------


class FakeClock:
    """Time moves only when the reader sleeps (or a test jumps it)."""

    def __init__(self) -> None:
        self.now = 100.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> bool:
        self.sleeps.append(seconds)
        self.now += seconds
        return False  # not stopping


class FakeFile(FrameSource):
    """A file of `n` frames at `fps`, timestamps index/fps like CaptureSource; pixel value = index."""

    live = False

    def __init__(self, n: int = 5, fps: float | None = 10.0, rewinds: bool = True) -> None:
        self.n, self.fps, self.rewinds = n, fps, rewinds
        self.name = "fake.avi"
        self.index = 0
        self.rewound = 0

    def read_raw(self) -> Frame | None:
        if self.index >= self.n:
            return None
        i = self.index
        self.index += 1
        return Frame(i, i / (self.fps or 1.0), np.full((4, 4, 3), i, np.uint8))

    def rewind(self) -> bool:
        if not self.rewinds:
            return False
        self.rewound += 1
        self.index = 0
        return True


class TimedQueue(queue.Queue):
    """Records (clock time, item) for everything the reader puts."""

    def __init__(self, clock) -> None:
        super().__init__()
        self.clock = clock
        self.log: list[tuple[float, object]] = []
        self.on_put = None

    def put_nowait(self, item) -> None:
        self.log.append((self.clock(), item))
        if self.on_put is not None:
            self.on_put(len(self.log), item)
        super().put_nowait(item)


def read_all(source, *, clock=None, **kwargs) -> tuple[Reader, list[tuple[float, Frame]], list[dict]]:
    clock = clock or FakeClock()
    out = TimedQueue(clock)
    incidents: list[dict] = []
    reader = Reader(
        source, out, threading.Event(), clock=clock, sleep=clock.sleep, incident=incidents.append, **kwargs
    )
    reader._run()  # in this thread: deterministic
    assert reader.fatal is None, reader.fatal
    frames = [(t, item) for t, item in out.log if not isinstance(item, End)]
    assert isinstance(out.log[-1][1], End)
    return reader, frames, incidents


# --- reader: pacing and looping --------------------------------------------------------------------


def test_realtime_hands_frames_on_at_the_files_frame_rate_across_restarts():
    clock = FakeClock()
    reader, frames, incidents = read_all(
        FakeFile(n=5, fps=10.0), clock=clock, loop=True, realtime=True, max_frames=23
    )
    assert [f.index for _, f in frames] == list(range(23))  # numbered on across restarts
    assert [f.timestamp for _, f in frames] == pytest.approx([k / 10 for k in range(23)])
    t0 = frames[0][0]
    assert [t - t0 for t, _ in frames] == pytest.approx([k / 10 for k in range(23)])  # due times, exact
    assert [int(f.image[0, 0, 0]) for _, f in frames] == [k % 5 for k in range(23)]  # the file again
    assert reader.loops == 4 and reader.read == 23 and reader.hit_max_frames
    looped = [r for r in incidents if r["event"] == "source_looped"]
    assert [(r["loop"], r["next_frame"]) for r in looped] == [(1, 5), (2, 10), (3, 15), (4, 20)]
    assert reader.late_resets == 0


def test_loop_without_realtime_never_waits_and_without_loop_a_file_ends():
    clock = FakeClock()
    reader, frames, _ = read_all(FakeFile(n=4), clock=clock, loop=True, max_frames=10)
    assert len(frames) == 10 and reader.loops == 2 and clock.sleeps == []
    reader, frames, incidents = read_all(FakeFile(n=4), realtime=True)
    assert len(frames) == 4 and reader.loops == 0 and not reader.hit_max_frames and incidents == []


def test_realtime_reanchors_when_far_behind_instead_of_bursting():
    clock = FakeClock()
    source = FakeFile(n=50, fps=10.0)
    out = TimedQueue(clock)

    def stall(count: int, item) -> None:  # the consumer held frame 10 for 3 s
        if count == 10:
            clock.now += 3.0

    out.on_put = stall
    reader = Reader(source, out, threading.Event(), clock=clock, sleep=clock.sleep, realtime=True)
    reader._run()
    times = [t for t, item in out.log if not isinstance(item, End)]
    gaps = np.diff(times)
    assert reader.late_resets == 1
    assert LATE_RESET_S < 3.0
    assert gaps[9] == pytest.approx(3.0, abs=1e-9)  # the stall itself (re-anchored at frame 10)
    assert np.allclose(np.delete(gaps, 9), 0.1)  # every other gap one frame period: no catch-up burst


def test_a_small_lag_is_caught_up_not_reanchored():
    clock = FakeClock()
    out = TimedQueue(clock)
    out.on_put = lambda count, item: setattr(clock, "now", clock.now + (0.25 if count == 3 else 0.0))
    reader = Reader(FakeFile(n=8), out, threading.Event(), clock=clock, sleep=clock.sleep, realtime=True)
    reader._run()
    times = [t for t, item in out.log if not isinstance(item, End)]
    assert reader.late_resets == 0
    assert times[-1] - times[0] == pytest.approx(0.7)  # back on the original schedule by the end


def test_loop_ends_when_the_file_cannot_start_again():
    reader, frames, incidents = read_all(FakeFile(n=3, rewinds=False), loop=True, max_frames=100)
    assert len(frames) == 3 and reader.loops == 0 and incidents == []


def test_loop_without_fps_uses_the_frame_spacing():
    reader, frames, _ = read_all(FakeFile(n=4, fps=None), loop=True, max_frames=9)
    assert [f.timestamp for _, f in frames] == pytest.approx(list(range(9)))  # 1 s spacing, run on


def test_stop_interrupts_a_paced_wait():
    source = FakeFile(n=10, fps=0.2)  # 5 s a frame with the real clock
    stop = threading.Event()
    reader = Reader(source, queue.Queue(), stop, realtime=True)
    reader.start()
    time.sleep(0.2)
    t0 = time.monotonic()
    stop.set()
    reader.join(timeout=2)
    assert not reader.thread.is_alive() and time.monotonic() - t0 < 1.0
    assert reader.read == 1


# --- the loop: --duration --------------------------------------------------------------------------


@dataclass
class _Scored:
    scores: np.ndarray
    maps: None = None


class InstantDetector:
    """The LiveDetector protocol, synchronous, global mode: score = pixel value."""

    threshold_ = map_threshold_ = 100.0
    bundle_ = "fake"
    device_ = "FAKE"
    manifest_: dict = {}
    calibration_: dict = {}
    preprocess = "1x1 corner"
    batch = 4
    mode_ = "global"
    has_maps_ = False

    def prepare(self, image):
        return image[:1, :1]

    def prepare_at(self, image, res):
        return self.prepare(image)

    def smooth_map(self, map_hw):
        raise AssertionError("global mode: no maps")

    map_to_frame = peak_point = smooth_map

    def set_callback(self, fn):
        self.fn = fn

    def submit(self, prepared, userdata=None):
        self.fn(prepared.reshape(len(prepared), -1)[:, :1].astype(np.float32), userdata)

    def wait(self):
        pass

    def score_outputs(self, outputs):
        return _Scored(outputs[:, 0])


def test_duration_stops_a_looping_realtime_run_with_every_read_frame_delivered(tmp_path):
    events = tmp_path / "events.jsonl"
    options = RunOptions(loop=True, realtime=True, duration_s=1.0, events=events)
    t0 = time.monotonic()
    summary = Pipeline(InstantDetector(), FakeFile(n=7, fps=20.0), options).run()
    wall = time.monotonic() - t0
    assert summary["stopped"] == "duration" and "error" not in summary
    assert 1.0 <= wall < 2.5
    assert 15 <= summary["frames"] <= 24  # ~20 FPS for 1 s (first frame at once)
    assert (summary["frames"] - 1) // 7 <= summary["loops"] <= (summary["frames"] - 1) // 7 + 1
    records = [json.loads(line) for line in events.read_text(encoding="utf-8").splitlines()]
    scored = [r["frame"] for r in records if "event" not in r]
    assert scored == list(range(summary["frames"]))  # complete and contiguous
    assert sum(r.get("event") == "source_looped" for r in records) == summary["loops"]


def test_duration_alone_on_a_file_that_ends_first_is_a_normal_end(tmp_path):
    summary = Pipeline(InstantDetector(), FakeFile(n=5), RunOptions(duration_s=30)).run()
    assert summary["stopped"] == "end" and summary["frames"] == 5 and "loops" not in summary


# --- a real video --------------------------------------------------------------------------------


def _clip(video_dir: Path, path: Path, frames: int, fps: float) -> Path:
    cap = cv2.VideoCapture(str(video_dir / "vtest.avi"))
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (320, 240))
    for _ in range(frames):
        ok, image = cap.read()
        assert ok
        writer.write(cv2.resize(image, (320, 240)))
    writer.release()
    cap.release()
    return path


@pytest.mark.slow
def test_real_video_is_paced_at_its_frame_rate_and_restarts(video_dir, tmp_path):
    fps, n, total = 20.0, 12, 40
    clip = _clip(video_dir, tmp_path / "clip.avi", n, fps)
    source = open_source(str(clip))
    assert source.fps == pytest.approx(fps)
    out: queue.Queue = queue.Queue(maxsize=4)  # a bounded queue, as in the pipeline
    incidents: list[dict] = []
    reader = Reader(source, out, threading.Event(), loop=True, realtime=True, max_frames=total,
                    incident=incidents.append)  # fmt: skip
    arrivals: list[tuple[float, Frame]] = []
    reader.start()
    while True:
        item = out.get(timeout=10)
        if isinstance(item, End):
            break
        arrivals.append((time.monotonic(), item))
    reader.join(timeout=5)
    source.close()
    assert reader.fatal is None
    assert [f.index for _, f in arrivals] == list(range(total))
    assert [f.timestamp for _, f in arrivals] == pytest.approx([k / fps for k in range(total)], abs=1e-3)
    assert reader.loops == (total - 1) // n == 3
    assert [r["event"] for r in incidents] == ["source_looped"] * 3
    # wall-clock pacing: each frame at its due time within a tolerance (a shared 2-core box)
    t0 = arrivals[0][0]
    lag = np.array([t - t0 - k / fps for k, (t, _) in enumerate(arrivals)])
    assert lag.min() > -0.01, lag  # never early
    assert np.median(np.abs(lag)) < 0.03 and lag.max() < 0.5, lag
    assert (arrivals[-1][0] - t0) == pytest.approx((total - 1) / fps, abs=0.3)
    # the restart rewound to the real first frame
    assert np.array_equal(arrivals[n][1].image, arrivals[0][1].image)


# --- CLI -----------------------------------------------------------------------------------------


@pytest.mark.slow
def test_cli_refuses_realtime_without_a_frame_rate(video_dir, tmp_path):
    folder = tmp_path / "frames"
    folder.mkdir()
    cap = cv2.VideoCapture(str(video_dir / "vtest.avi"))
    for i in range(3):
        ok, image = cap.read()
        cv2.imwrite(str(folder / f"{i}.png"), image)
    cap.release()
    proc = ovdoc_cli("run", "--source", str(folder), "--realtime", "--headless")
    assert proc.returncode == 2
    assert "--realtime needs a video file with a frame rate" in error_line(proc)
    proc = ovdoc_cli("run", "--duration", "0", "--headless")
    assert proc.returncode == 2 and "--duration" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.slow
def test_cli_loop_realtime_duration_on_a_real_clip(video_dir, tmp_path):
    clip = _clip(video_dir, tmp_path / "clip.avi", 10, 20.0)
    events, video = tmp_path / "e.jsonl", tmp_path / "out.avi"
    proc = ovdoc_cli(
        "run", "--source", str(clip), "--loop", "--realtime", "--duration", "2", "--headless",
        "--events", str(events), "--save-video", str(video), "--json", "--batch", "1",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["stopped"] == "duration" and summary["loops"] >= 2
    assert 30 <= summary["frames"] <= 46  # 20 FPS for 2 s
    records = [json.loads(line) for line in events.read_text(encoding="utf-8").splitlines()]
    assert [r["frame"] for r in records if "event" not in r] == list(range(summary["frames"]))
    cap = cv2.VideoCapture(str(video))
    count = 0
    while cap.grab():
        count += 1
    assert count == summary["frames"]


def test_many_sources_with_small_queues_end_on_duration():
    """--duration with more sources than queue slots: every source's end marker still reaches the loop
    (an end marker given up on a full queue used to leave the loop waiting forever)."""
    from ovdoc.runtime.stream.loop import Lane, LiveLoop

    class Busy(InstantDetector):
        def score_outputs(self, outputs):
            time.sleep(0.02)  # scoring far slower than 12 sources arrive: the queues stay full
            return super().score_outputs(outputs)

    lanes = [Lane(FakeFile(n=40, fps=200.0), [], source_id=i) for i in range(12)]
    loop = LiveLoop(Busy(), lanes, RunOptions(loop=True, realtime=True, duration_s=0.5, queue_size=2))
    runner = threading.Thread(target=loop.run, daemon=True)
    runner.start()
    runner.join(20)
    assert not runner.is_alive(), "the loop did not end after --duration"
    assert loop.stopped == "duration" and loop.fatal is None
    assert sum(lane.processed for lane in lanes) > 0
