"""The live loop's stages without OpenVINO: a fake detector implementing the public live-loop contract
(async callbacks from its own threads, finishing out of order) and scripted fake sources.

The real-model runs of the same loop are in test_stream.py.
"""

from __future__ import annotations

import json
import random
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from ovdoc.runtime.stream.decider import Decider
from ovdoc.runtime.stream.messages import Command, Control, Result
from ovdoc.runtime.stream.pipeline import Lane, LiveLoop, Pipeline, RunOptions
from ovdoc.runtime.stream.sinks import EventSink, Sink
from ovdoc.runtime.stream.sources import Frame, FrameSource

# --- fakes ---------------------------------------------------------------------------------------


@dataclass
class FakeScored:
    scores: np.ndarray
    maps: np.ndarray | None = None


class FakeDetector:
    """The LiveDetector protocol (live_detector.py). A frame's score is its pixel value / 100. Batches
    finish in a pool of `jobs` threads after `delay(seq)` seconds, so callbacks arrive out of order like
    OpenVINO's. Patch mode: a 4x4 map, hot at row 1, column 2."""

    threshold_ = 0.5
    map_threshold_ = 0.5
    bundle_ = "fake.bundle"
    device_ = "FAKE"
    manifest_: dict = {}
    calibration_: dict = {}
    preprocess = "2x2 corner"

    def __init__(self, batch: int = 4, jobs: int = 3, delay=None, mode: str = "global") -> None:
        self.batch = batch
        self.mode_ = mode
        self.has_maps_ = mode == "patch"
        self.delay = delay or (lambda seq: 0.0)
        self.pool = ThreadPoolExecutor(jobs)
        self.slots = threading.Semaphore(jobs)  # submit blocks while every job is busy, like AsyncInferQueue
        self.futures: list = []
        self.callback = None
        self.completed: list[int] = []  # batch numbers in the order their callbacks ran
        self.submitted = 0
        self.shapes: list[tuple[int, int]] = []

    def prepare(self, image: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(image[:2, :2])

    def prepare_at(self, image: np.ndarray, res) -> np.ndarray:
        return self.prepare(image)

    def set_callback(self, fn) -> None:
        self.callback = fn

    def submit(self, prepared: np.ndarray, userdata: object = None) -> None:
        assert 1 <= len(prepared) <= self.batch and prepared.dtype == np.uint8
        self.slots.acquire()
        seq = self.submitted
        self.submitted += 1

        def job() -> None:
            try:
                time.sleep(self.delay(seq))
                outputs = prepared[:, 0, 0, 0].astype(np.float32)[:, None]  # "features": the pixel value
                self.callback(outputs, userdata)
                self.completed.append(seq)
            finally:
                self.slots.release()

        self.futures.append(self.pool.submit(job))

    def wait(self) -> None:
        for future in self.futures:
            future.result()

    def score_outputs(self, outputs: np.ndarray) -> FakeScored:
        scores = outputs[:, 0] / 100.0
        if self.mode_ != "patch":
            return FakeScored(scores)
        maps = np.zeros((len(scores), 4, 4), np.float32)
        maps[:, 1, 2] = scores  # the hot patch: row 1, column 2 of a 4x4 grid
        return FakeScored(scores, maps)

    def map_to_frame(self, map_hw: np.ndarray, frame_shape: tuple[int, ...]) -> np.ndarray:
        h, w = frame_shape[:2]
        self.shapes.append((h, w))
        return np.kron(map_hw, np.ones((h // map_hw.shape[0], w // map_hw.shape[1]), np.float32))

    def smooth_map(self, map_hw: np.ndarray) -> np.ndarray:
        return map_hw

    def peak_point(self, map_hw: np.ndarray, frame_shape: tuple[int, ...]) -> tuple[int, int]:
        gy, gx = np.unravel_index(int(np.argmax(map_hw)), map_hw.shape)
        return (int((gx + 0.5) * frame_shape[1] / map_hw.shape[1]),
                int((gy + 0.5) * frame_shape[0] / map_hw.shape[0]))


class ScriptSource(FrameSource):
    """Frames from a script: an int = a frame with that pixel value, None = a failed read. A file ends at
    the end of the script; a live source fails every read after it, until `reopen` (counted)."""

    def __init__(self, script: list, *, live: bool = False, name: str = "script", size: int = 8) -> None:
        self.script = list(script)
        self.live = live
        self.name = name
        self.size = size
        self.pos = 0
        self.index = 0
        self.reopens = 0
        self.fps = 30.0

    def read_raw(self) -> Frame | None:
        if self.pos >= len(self.script):
            return None
        value = self.script[self.pos]
        self.pos += 1
        if value is None:
            return None
        frame = Frame(self.index, self.index / 30.0, np.full((self.size, self.size, 3), value, np.uint8))
        self.index += 1
        return frame

    def reopen(self) -> bool:
        self.reopens += 1
        return True


class Recorder(Sink):
    """Records everything the loop hands to a sink; `on_frame(result, post)` may act like a window."""

    name = "recorder"

    def __init__(self, on_frame=None, fail_at: int | None = None) -> None:
        self.results: list[Result] = []
        self.events: list[dict] = []
        self.episodes: list[dict] = []
        self.order: list[str] = []  # "frame N" / "anomaly_start" / ...: what reached this sink, in order
        self.snapshots = 0
        self.closed: bool | None = None
        self.on_frame = on_frame
        self.fail_at = fail_at

    def handle(self, result: Result) -> None:
        if self.fail_at is not None and len(self.results) == self.fail_at:
            raise ValueError("disk full\nsecond line that must not show")
        self.results.append(result)
        self.order.append(f"frame {result.frame.index}")
        if self.on_frame is not None:
            self.on_frame(result, self.ctx.post)

    def event(self, record: dict) -> None:
        self.events.append(record)

    def episode(self, record: dict) -> None:
        if self.fail_at is not None and self.fail_at < 0:
            raise OSError("broker gone")
        self.episodes.append(record)
        self.order.append(record["event"])

    def snapshot(self):
        self.snapshots += 1

    def close(self, ok: bool) -> None:
        self.closed = ok


def test_the_fake_detector_is_a_live_detector():
    """The loop types against LiveDetector; the fake used here must be one (a real Detector is checked in
    test_stream.py), and a detector missing a member is not."""
    from ovdoc.runtime.stream.live_detector import LiveDetector, members

    assert isinstance(FakeDetector(), LiveDetector) and isinstance(FakeDetector(mode="patch"), LiveDetector)

    class Partial:
        def __getattr__(self, name):
            if name == "peak_point":
                raise AttributeError(name)
            return getattr(FakeDetector(), name)

    assert not isinstance(Partial(), LiveDetector)
    assert {"score_outputs", "prepare", "threshold_", "map_threshold_", "mode_"} <= members()


def run(source, det=None, sinks=None, **options) -> tuple[dict, Recorder]:
    recorder = Recorder()
    sinks = [recorder] if sinks is None else sinks
    options.setdefault("backoff_s", 0.001)
    summary = Pipeline(det or FakeDetector(), source, RunOptions(**options), sinks=sinks).run()
    return summary, (sinks[0] if sinks else recorder)


def scored(recorder: Recorder) -> list[Result]:
    return [r for r in recorder.results if r.score is not None]


# --- ordering -------------------------------------------------------------------------------------


def test_results_in_order_across_out_of_order_batches():
    values = [random.Random(0).randrange(0, 250) for _ in range(90)]
    det = FakeDetector(batch=4, jobs=3, delay=lambda seq: 0.03 if seq % 3 == 0 else 0.0)
    summary, rec = run(ScriptSource(values), det)
    assert det.completed != sorted(det.completed), "the fake must finish batches out of order"
    assert [r.frame.index for r in rec.results] == list(range(90))
    assert [round(r.score * 100) for r in rec.results] == values
    assert summary["frames"] == 90 and summary["stopped"] == "end" and summary["batch"] == 4
    assert summary["dropped"] == 0 and summary["skipped"] == 0 and rec.closed is True


def test_summary_keys_unchanged():
    """One source: the summary a script reads keeps its keys (episodes added); no per-source list."""
    summary, _ = run(ScriptSource([1, 2, 3]))
    assert set(summary) == {
        "frames", "anomalies", "dropped", "skipped", "source_incidents", "wall_s", "fps", "threshold",
        "smooth", "batch", "stopped", "events_file", "video_file", "source", "live", "bundle", "device",
        "episodes",
    }  # fmt: skip


# --- drop-oldest vs never-drop --------------------------------------------------------------------


def test_put_drops_oldest_only_when_asked():
    import queue

    from ovdoc.runtime.stream.reader import End, put

    stop = threading.Event()
    q: queue.Queue = queue.Queue(maxsize=2)
    dropped = sum(put(q, i, stop, drop_oldest=True) for i in range(5))
    assert dropped == 3 and [q.get_nowait(), q.get_nowait()] == [3, 4]
    put(q, 7, stop, drop_oldest=True)
    put(q, 8, stop, drop_oldest=True)
    assert put(q, End(0), stop, drop_oldest=True) == 1  # the end marker displaces a frame, counted
    assert isinstance(q.get_nowait(), int) and isinstance(q.get_nowait(), End)
    put(q, 1, stop, drop_oldest=False)
    put(q, 2, stop, drop_oldest=False)
    stop.set()  # a full queue blocks a file's reader until the run stops; nothing is dropped
    assert put(q, 3, stop, drop_oldest=False) == 0 and [q.get_nowait(), q.get_nowait()] == [1, 2]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="OS thread names are read from /proc")
def test_stage_threads_carry_their_name_for_the_os():
    """A per-thread profile (benchmarks/speed.py, top -H) tells the reader from the preparer by it."""
    import queue

    from ovdoc.runtime.stream.reader import Reader

    stop = threading.Event()
    out: queue.Queue = queue.Queue()
    seen: dict[str, str] = {}
    source = ScriptSource([0, 1])
    read_raw = source.read_raw

    def spy():  # runs in the reader's thread
        seen.setdefault("comm", Path(f"/proc/self/task/{threading.get_native_id()}/comm").read_text().strip())
        return read_raw()

    source.read_raw = spy
    reader = Reader(source, out, stop, source_id=3)
    reader.start()
    reader.join(timeout=10)
    assert seen["comm"] == "ovdoc-capture-3" and reader.fatal is None and reader.read == 2


def test_live_source_drops_oldest_when_behind_file_never_drops():
    slow = dict(batch=2, jobs=1, delay=lambda seq: 0.01)
    summary, rec = run(
        ScriptSource(list(range(200)), live=True), FakeDetector(**slow), queue_size=2, retries=0
    )
    indices = [r.frame.index for r in rec.results]
    assert summary["dropped"] > 0 and summary["frames"] + summary["dropped"] == 200
    assert indices == sorted(indices) and indices[-1] == 199  # the newest frame is never the one dropped
    summary, rec = run(ScriptSource(list(range(200))), FakeDetector(**slow), queue_size=2)
    assert summary["dropped"] == 0 and [r.frame.index for r in rec.results] == list(range(200))


# --- reconnect policy -----------------------------------------------------------------------------


def test_live_source_gives_up_with_backoff_events():
    source = ScriptSource([1, 2, 3], live=True, name="cam")
    summary, rec = run(source, retries=3, backoff_s=0.01)
    assert summary["stopped"] == "error" and "error" in summary
    assert summary["error"] == "live source cam stopped delivering frames; gave up after 3 retries"
    assert [e["event"] for e in rec.events] == ["source_lost"] * 3 + ["source_gave_up"]
    assert [e["attempt"] for e in rec.events[:3]] == [1, 2, 3]
    assert [e["retry_in_s"] for e in rec.events[:3]] == [0.01, 0.02, 0.04]
    assert all(e["source"] == "cam" for e in rec.events) and source.reopens == 3
    assert summary["frames"] == 3 and summary["source_incidents"] == 4
    assert rec.closed is False  # outputs of a failed run are discarded, not completed


def test_live_source_recovers_and_backoff_is_capped():
    from ovdoc.runtime.stream.reader import MAX_BACKOFF_S, Reader

    source = ScriptSource([1, 2, None, None, *range(3, 60)], live=True)
    summary, rec = run(source, retries=5, max_frames=5)
    # (the reader runs ahead of scoring: it may already be failing again after the script ends)
    assert [e["event"] for e in rec.events][:3] == ["source_lost", "source_lost", "source_recovered"]
    assert rec.events[2]["after_attempts"] == 2
    assert summary["stopped"] == "max_frames" and summary["frames"] == 5 and "error" not in summary
    reader = Reader(source, None, threading.Event(), backoff_s=0.5)
    assert [reader.backoff(a) for a in (1, 2, 3, 4, 5, 6)] == [0.5, 1, 2, 4, MAX_BACKOFF_S, MAX_BACKOFF_S]


def test_file_errors_are_one_line():
    summary, _ = run(ScriptSource([], name="empty.avi"))
    assert summary["stopped"] == "error" and summary["error"] == "empty.avi has no readable frames"
    summary, rec = run(ScriptSource([1, 2, None, 3]))  # a file's failed read is its end, not a retry
    assert summary["stopped"] == "end" and summary["frames"] == 2 and rec.events == []


# --- decider --------------------------------------------------------------------------------------


def test_decider_smooths_over_the_last_n_and_compares_strictly():
    d = Decider(3, threshold=2.0)
    out = [d.update(s) for s in (1.0, 2.0, 3.0, 4.0, 2.0)]
    assert [round(m, 6) for m, _ in out] == [1.0, 1.5, 2.0, 3.0, 3.0]
    assert [a for _, a in out] == [False, False, False, True, True]  # 2.0 is not above 2.0
    d.reset()
    assert d.update(0.5) == (0.5, False)


def test_decider_running_sum_matches_exact_mean_on_long_runs():
    rng = np.random.default_rng(1)
    scores = np.concatenate([rng.normal(1e6, 1, 500), rng.normal(0.001, 1e-4, 3000)])
    d = Decider(100, threshold=1.0)
    got = [d.update(float(s))[0] for s in scores]
    expected = [scores[max(0, i - 99) : i + 1].mean() for i in range(len(scores))]
    np.testing.assert_allclose(got[-1000:], expected[-1000:], rtol=1e-9)  # no drift after huge values


def test_smoothing_and_anomalies_through_the_loop():
    values = [10] * 20 + [80] * 10 + [10] * 20  # threshold 0.5: the 80s are anomalous once smoothed
    summary, rec = run(ScriptSource(values), smooth=4)
    flagged = [r.frame.index for r in rec.results if r.anomalous]
    assert flagged == list(range(22, 31))  # the mean of the last 4 is above 0.5 (0.625) from the 3rd 80
    assert summary["anomalies"] == 9 and summary["smooth"] == 4  # ... to 1 after; 0.45 either side


# --- control messages -----------------------------------------------------------------------------


def test_quit_command_stops_the_run():
    def quit_at_10(result, post):
        if result.frame.index == 10:
            post(Command(Control.QUIT))

    det = FakeDetector(batch=4)
    summary, rec = run(ScriptSource(list(range(200))), det, sinks=[Recorder(quit_at_10)])
    assert summary["stopped"] == "user" and summary["frames"] == 11  # acts before the next frame
    assert rec.closed is True


def test_toggle_scoring_pauses_and_resets_smoothing():
    def toggle(result, post):
        if result.frame.index in (5, 40):
            post(Control.TOGGLE_SCORING)

    values = [10] * 30 + [80] * 70
    det = FakeDetector(batch=1, jobs=1)  # one frame a batch: the pause starts right after frame 5
    summary, rec = run(ScriptSource(values), det, sinks=[Recorder(toggle)], smooth=50)
    paused = [r.frame.index for r in rec.results if r.score is None]
    assert summary["skipped"] == len(paused) > 0 and paused == list(range(paused[0], paused[-1] + 1))
    assert [r.frame.index for r in rec.results] == list(range(100))  # paused frames still shown, in order
    assert summary["frames"] + summary["skipped"] == 100
    resumed = next(r for r in rec.results if r.frame.index > paused[-1])
    assert resumed.smoothed == resumed.score == pytest.approx(0.8)  # old scores forgotten on resume


def test_save_command_reaches_sinks_that_snapshot():
    def save_twice(result, post):
        if result.frame.index in (3, 7):
            post(Command(Control.SAVE, source_id=0))

    _, rec = run(ScriptSource(list(range(20))), sinks=[Recorder(save_twice)])
    assert rec.snapshots == 2


# --- max_frames, sink errors ----------------------------------------------------------------------


def test_max_frames_file_and_live():
    source = ScriptSource(list(range(100)))
    summary, rec = run(source, max_frames=17)
    assert summary["frames"] == len(rec.results) == 17 and summary["stopped"] == "max_frames"
    assert source.pos <= 17  # a file is not read past what will be scored
    summary, rec = run(ScriptSource(list(range(100)), live=True), max_frames=17, queue_size=200)
    assert summary["frames"] == len(rec.results) == 17 and summary["stopped"] == "max_frames"


def test_sink_error_stops_the_run_with_one_line():
    healthy = Recorder()
    summary, _ = run(ScriptSource(list(range(50))), sinks=[healthy, Recorder(fail_at=3)])
    assert summary["stopped"] == "error"
    assert summary["error"] == "recorder output failed: ValueError: disk full"
    assert healthy.closed is False and len(healthy.results) < 50


def test_events_file_sink_open_error_is_one_line(tmp_path):
    from ovdoc.errors import OvdocError

    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(OvdocError, match="cannot write events to"):
        run(ScriptSource([1]), sinks=[EventSink(blocker / "events.jsonl")])


# --- several sources, one scorer ------------------------------------------------------------------


def test_two_sources_share_one_scorer_with_their_own_deciders():
    det = FakeDetector(batch=4, jobs=2, delay=lambda seq: 0.01 * (seq % 2))
    quiet, loud = Recorder(), Recorder()
    lanes = [
        Lane(ScriptSource([10] * 40, name="quiet"), [quiet], source_id=0),
        Lane(ScriptSource([90] * 25, name="loud"), [loud], source_id=1),
    ]
    loop = LiveLoop(det, lanes, RunOptions(smooth=5))
    loop.run()
    assert loop.stopped == "end" and loop.fatal is None
    assert [r.frame.index for r in quiet.results] == list(range(40))
    assert [r.frame.index for r in loud.results] == list(range(25))
    assert not any(r.anomalous for r in quiet.results) and all(r.anomalous for r in loud.results)
    assert all(r.smoothed == pytest.approx(0.1) for r in quiet.results)  # no loud score in its window
    assert {r.source_id for r in loud.results} == {1} and lanes[1].processed == 25


# --- patch mode: maps, boxes, events --------------------------------------------------------------


def test_patch_mode_results_carry_frame_map_box_and_peak(tmp_path):
    det = FakeDetector(mode="patch")
    events = tmp_path / "events.jsonl"
    rec = Recorder()
    summary, _ = run(ScriptSource([20, 90, 30], size=16), det, sinks=[rec, EventSink(events)])
    assert summary["frames"] == 3 and det.shapes == [(16, 16)] * 3
    result = rec.results[1]
    assert result.map.shape == (16, 16) and result.peak == pytest.approx(0.9)
    assert result.box == (8, 4, 11, 7)  # patch (row 1, col 2) of a 4x4 grid on a 16x16 frame
    lines = [json.loads(line) for line in events.read_text(encoding="utf-8").splitlines()]
    assert lines[1]["box"] == [8, 4, 11, 7] and lines[1]["peak"] == pytest.approx(0.9)
    assert set(lines[0]) == {"frame", "timestamp", "score", "smoothed", "anomalous", "box", "peak"}


def test_hottest_region_is_the_half_maximum_blob_around_the_peak():
    from ovdoc.runtime.stream.regions import hottest_region

    m = np.zeros((60, 80), np.float32)
    m[10:20, 30:50] = 1.0
    m[12:15, 40:44] = 3.0  # the peak, inside a wider warm area below half of it
    m[40:50, 5:15] = 1.4  # a second, cooler blob elsewhere
    box, peak = hottest_region(m)
    assert peak == 3.0 and box == (40, 12, 43, 14)
    m[10:20, 30:50] = 2.0  # now the surrounding area is above half the peak: the box grows to it
    m[12:15, 40:44] = 3.0
    assert hottest_region(m)[0] == (30, 10, 49, 19)


def test_hottest_region_of_a_frame_sized_map_matches_the_full_resolution_blob():
    """Frame-sized maps are searched every REGION_MAX_SIDE-th pixel: the box stays within one step of
    the full-resolution blob, the peak value is exact, and `at` picks the same blob."""
    import cv2

    from ovdoc.runtime.stream import regions

    grid = np.zeros((16, 20), np.float32)
    grid[3:6, 12:15] = 1.0
    grid[11, 4] = 0.8
    m = cv2.resize(grid, (640, 480), interpolation=cv2.INTER_LINEAR)
    box, peak = regions.hottest_region(m)
    saved, regions.REGION_MAX_SIDE = regions.REGION_MAX_SIDE, 10**6
    try:
        exact, exact_peak = regions.hottest_region(m)
        exact_at = regions.hottest_region(m, at=(4 * 32 + 16, 11 * 30 + 15))[0]
    finally:
        regions.REGION_MAX_SIDE = saved
    step = -(-640 // regions.REGION_MAX_SIDE)
    assert step > 1 and peak == exact_peak == float(m.max())
    assert all(abs(a - b) <= step for a, b in zip(box, exact, strict=True)), (box, exact)
    at_box = regions.hottest_region(m, at=(4 * 32 + 16, 11 * 30 + 15))[0]
    assert all(abs(a - b) <= step for a, b in zip(at_box, exact_at, strict=True)), (at_box, exact_at)
    assert at_box[0] < 200 < box[0]  # the point's own (cooler) blob, not the peak's


# --- display: heatmap overlay ---------------------------------------------------------------------


def test_overlay_heatmap_only_where_the_map_is_hot():
    from ovdoc.runtime.stream.display import HEAT_FLOOR, overlay_heatmap

    frame = np.full((120, 160, 3), 100, np.uint8)
    m = np.zeros((120, 160), np.float32)
    m[40:80, 60:100] = 2.0  # at the threshold -> red end of JET
    m[0:10, 0:10] = 0.9  # just below HEAT_FLOOR x threshold (1.0): not drawn
    out = overlay_heatmap(frame, m, threshold=2.0, box=(60, 40, 99, 79), anomalous=True)
    assert frame.max() == 100 == frame.min() and m.max() == 2.0  # inputs untouched
    assert (out[5, 5] == 100).all()  # below the floor: the frame as it was
    assert (out[110, 150] == 100).all()  # cold: as it was
    centre = out[60, 80].astype(int)
    assert centre[2] > 150 and centre[0] < 100  # blended towards red where the map reaches the threshold
    assert tuple(out[40, 80]) == (0, 0, 255)  # the box's top edge, red when anomalous
    quiet = overlay_heatmap(frame, np.zeros_like(m) + 0.1, threshold=2.0, box=(0, 0, 5, 5))
    assert (quiet == frame).all()  # nothing hot: no overlay, no box
    assert HEAT_FLOOR == 0.5
    with pytest.raises(ValueError, match="differ in size"):
        overlay_heatmap(frame, m[:60], threshold=2.0)


def test_renderer_draws_once_for_window_and_video():
    from ovdoc.runtime.stream.sinks import Renderer

    r = Renderer()
    frame = Frame(0, 0.0, np.zeros((64, 96, 3), np.uint8))
    m = np.zeros((64, 96), np.float32)
    m[10:30, 10:30] = 1.0
    result = Result(frame, 1.0, 1.0, True, 1.0, m, (10, 10, 29, 29), 1.0)
    first = r.render(result)
    assert r.render(result) is first  # shared by window and video: drawn once
    assert first[20, 20, 2] > first[20, 20, 0]  # heatmap (red end) under the box
    assert frame.image.max() == 0


def test_max_frames_per_source_ends_a_multi_source_run():
    lanes = [
        Lane(ScriptSource(list(range(40)), live=True), [Recorder()], source_id=0),
        Lane(ScriptSource(list(range(25))), [Recorder()], source_id=1),
    ]
    loop = LiveLoop(FakeDetector(), lanes, RunOptions(max_frames=10, queue_size=64, retries=0))
    loop.run()
    assert loop.stopped == "max_frames" and [lane.processed for lane in lanes] == [10, 10]
    assert [len(lane.sinks[0].results) for lane in lanes] == [10, 10]


def test_inference_error_mid_run_is_one_line_in_the_summary():
    class Broken(FakeDetector):
        def score_outputs(self, outputs):
            if self.completed and max(self.completed) >= 3:
                raise RuntimeError("device lost\nstack details")
            return super().score_outputs(outputs)

    summary, rec = run(ScriptSource(list(range(100))), Broken(batch=2, jobs=1))
    assert summary["stopped"] == "error" and summary["error"] == "RuntimeError: device lost"
    assert rec.closed is False and 0 < summary["frames"] < 100


def test_window_keys_become_commands(monkeypatch, tmp_path):
    """The window sink only posts commands: 'p' saves frame + heatmap through the loop, 'q' quits."""
    import ovdoc.runtime.stream.display as display
    from ovdoc.runtime.stream.sinks import WindowSink

    saved: list[tuple] = []

    class FakeWindow:
        keys = {4: "save", 9: "quit"}

        def __init__(self, snapshot_dir=None, title="ovdoc") -> None:
            self.shown = 0

        def show(self, image):
            self.shown += 1
            return self.keys.get(self.shown - 1)

        def save(self, image, heatmap=None):
            saved.append((image.shape, None if heatmap is None else heatmap.shape))
            return tmp_path / "snap.png"

        def close(self) -> None:
            pass

    monkeypatch.setattr(display, "Window", FakeWindow)
    det = FakeDetector(batch=2, mode="patch")
    summary, _ = run(ScriptSource(list(range(40)), size=16), det, sinks=[WindowSink()])
    assert summary["stopped"] == "user" and summary["frames"] == 10
    assert saved == [((16, 16, 3), (16, 16, 3))]  # the frame as shown, and its heatmap


def test_two_bundles_each_camera_scored_by_its_own_model_never_mixed_in_a_batch():
    """A line config's two bundles: lanes name their model; each frame goes to its lane's detector only,
    per-camera thresholds and smoothing override the run's, and both models are drained at the end."""

    class Offset(FakeDetector):
        def __init__(self, offset: float, **kw) -> None:
            super().__init__(**kw)
            self.offset = offset
            self.batches: list[set[int]] = []

        def submit(self, prepared, userdata=None) -> None:
            self.batches.append({frame.source_id for frame in userdata[1]})
            super().submit(prepared, userdata)

        def score_outputs(self, outputs):
            return FakeScored(outputs[:, 0] / 100.0 + self.offset)

    tiles, caps = Offset(0.0, batch=4, jobs=2), Offset(10.0, batch=3, jobs=1)
    recs = [Recorder() for _ in range(3)]
    lanes = [
        Lane(ScriptSource([10] * 30, name="a"), [recs[0]], source_id=0, model=0),
        Lane(ScriptSource([10] * 20, name="b"), [recs[1]], source_id=1, model=1, threshold=20.0),
        Lane(ScriptSource([90] * 25, name="c"), [recs[2]], source_id=2, model=0, smooth=2),
    ]
    loop = LiveLoop([tiles, caps], lanes, RunOptions(smooth=5))
    loop.run()
    assert loop.stopped == "end" and loop.fatal is None
    assert [len(r.results) for r in recs] == [30, 20, 25]
    assert all(r.score == pytest.approx(0.1) for r in recs[0].results)  # model 0
    assert all(r.score == pytest.approx(10.1) for r in recs[1].results)  # model 1's offset
    assert all(r.score == pytest.approx(0.9) for r in recs[2].results)
    assert all(ids <= {0, 2} for ids in tiles.batches) and all(ids == {1} for ids in caps.batches)
    assert not any(r.anomalous for r in recs[1].results)  # 10.1 < its own threshold 20
    assert all(r.threshold == 20.0 for r in recs[1].results)
    assert all(r.threshold == 0.5 for r in recs[0].results + recs[2].results)
    assert lanes[2].decider.smooth == 2 and lanes[0].decider.smooth == 5
    assert [r.frame.index for r in recs[2].results] == list(range(25))


def test_a_lane_naming_a_missing_model_is_refused():
    lanes = [Lane(ScriptSource([1]), [Recorder()], source_id=0, model=1)]
    with pytest.raises(ValueError, match="names model 1"):
        LiveLoop([FakeDetector()], lanes, RunOptions())


def test_a_saved_threshold_goes_into_the_bundle_of_that_camera(monkeypatch):
    """Two bundles: saving camera 1's threshold writes it into camera 1's bundle only; reload asked for
    one camera reloads only its bundle."""
    import ovdoc.runtime.bundle as bundle_module
    from ovdoc.runtime.stream.messages import Command, Control

    saved: list[tuple[str, float]] = []
    monkeypatch.setattr(bundle_module, "save_threshold",
                        lambda path, value, by: saved.append((path, value)) or f"{path}/manifest.json")
    first, second = FakeDetector(), FakeDetector()
    first.bundle_, second.bundle_ = "first.bundle", "second.bundle"
    recs = [Recorder(), Recorder()]

    def on_frame(result, post):
        if result.source_id == 1 and result.frame.index == 3:
            post(Command(Control.SET_THRESHOLD, source_id=1, value=0.05, save=True, by="web"))

    recs[1].on_frame = on_frame
    lanes = [
        Lane(ScriptSource([10] * 12, name="a"), [recs[0]], source_id=0, model=0),
        Lane(ScriptSource([10] * 12, name="b"), [recs[1]], source_id=1, model=1),
    ]
    loop = LiveLoop([first, second], lanes, RunOptions(smooth=1))
    started: list[object] = []
    for model in loop.models:
        model.reloader.start = lambda det, by: started.append(det) or True
    loop.post(Command(Control.RELOAD, source_id=0, by="test"))
    loop.run()
    assert loop.fatal is None
    assert saved == [("second.bundle", 0.05)]
    changed = [e for e in recs[1].events if e.get("event") == "threshold_changed"]
    assert changed and changed[0]["saved_to"] == "second.bundle/manifest.json"
    assert not [e for e in recs[0].events if e.get("event") == "threshold_changed"]
    assert not any(r.anomalous for r in recs[0].results)  # 0.1 < 0.5, its threshold untouched
    assert [r.anomalous for r in recs[1].results] == [False] * 4 + [True] * 8  # 0.1 > 0.05 from frame 4
    assert started == [first]


# --- the threshold's one owner ----------------------------------------------------------------------


def test_thresholds_resolve_once_change_on_the_slider_and_follow_a_reload(monkeypatch):
    """A camera's own threshold, else --threshold, else its bundle's; the slider changes one camera (and
    saves into its bundle); a reload re-resolves from the new bundle, keeping own values, not the slider's."""
    import ovdoc.runtime.bundle as bundle_module
    from ovdoc.runtime.stream.threshold import Thresholds

    saved: list[tuple[str, float, str]] = []
    monkeypatch.setattr(bundle_module, "save_threshold",
                        lambda path, value, by: saved.append((path, value, by)) or f"{path}/manifest.json")
    tiles, caps = FakeDetector(), FakeDetector(mode="patch")
    caps.threshold_, caps.map_threshold_, caps.bundle_ = 2.0, 3.0, "caps.bundle"
    own = Thresholds([tiles, caps], [(0, None), (0, 0.3), (1, None)])
    assert [(t.value, t.origin, t.map_value) for t in (own[0], own[1], own[2])] == [
        (0.5, "bundle", None), (0.3, "camera", None), (2.0, "bundle", 3.0)]
    assert own.default(0) == 0.5 and own.default(1) == 2.0
    run = Thresholds([tiles, caps], [(0, None), (0, 0.3), (1, None)], run_value=0.7)
    assert [run[i].value for i in range(3)] == [0.7, 0.3, 0.7] and run[0].origin == "run"
    assert run.default(1) == 0.7

    held = own[2]  # what a Decider holds: the same object all along
    changes = own.set([0, 2], 0.9, by="web", save=True)
    assert changes == [(0, 0.5, "fake.bundle/manifest.json"), (2, 2.0, "caps.bundle/manifest.json")]
    assert saved == [("fake.bundle", 0.9, "web"), ("caps.bundle", 0.9, "web")]  # once per bundle
    assert held.value == 0.9 and held.origin == "set by web"
    assert own[1].value == 0.3  # not asked for: untouched

    fresh = FakeDetector(mode="patch")
    fresh.threshold_, fresh.map_threshold_ = 4.0, 5.0
    own.rebase(1, fresh)
    assert own[2] is held and (held.value, held.origin, held.map_value) == (4.0, "bundle", 5.0)
    assert own[0].value == 0.9  # another bundle's camera keeps its slider value


def test_a_reload_swaps_the_detector_and_its_threshold_between_batches():
    """RELOAD: the new detector scores from the next batch (no frame lost or reordered), the camera's
    threshold follows the new bundle, and its cameras hear bundle_reloaded with that threshold."""
    from ovdoc.runtime.stream.reload import Reloader

    class Strict(FakeDetector):
        threshold_ = 0.05
        manifest_ = {"n_images": 7}

    new = Strict()
    rec = Recorder(on_frame=lambda r, post: post(Command(Control.RELOAD, by="test")) if r.frame.index == 3
                   else None)
    lanes = [Lane(ScriptSource([10] * 200), [rec], source_id=0)]
    loop = LiveLoop(FakeDetector(batch=2), lanes, RunOptions(smooth=1), reloader=Reloader(lambda det: new))
    loop.run()
    assert loop.fatal is None and loop.reloads == 1 and loop.det is new
    assert [r.frame.index for r in rec.results] == list(range(200))
    reloaded = [e for e in rec.events if e.get("event") == "bundle_reloaded"]
    assert len(reloaded) == 1 and reloaded[0]["threshold"] == 0.05 and reloaded[0]["n_images"] == 7
    assert reloaded[0]["by"] == "test" and reloaded[0]["source"] == "script"
    assert not rec.results[0].anomalous and rec.results[-1].anomalous  # 0.1 > the new bundle's 0.05
    assert rec.results[-1].threshold == 0.05 and new.submitted > 0


# --- episodes: a sink after the camera's own ----------------------------------------------------------


def test_episodes_reach_the_sinks_after_the_frame_with_snapshots_on_disk(tmp_path):
    values = [10] * 5 + [90] * 5 + [10] * 5 + [90] * 3  # two episodes, the second open at the end
    summary, rec = run(ScriptSource(values, size=16), smooth=1, episodes_dir=tmp_path / "shots")
    assert summary["episodes"] == 2 and summary["anomalies"] == 8
    assert [e["event"] for e in rec.episodes] == ["anomaly_start", "anomaly_end"] * 2
    assert rec.order.index("anomaly_start") == rec.order.index("frame 5") + 1  # the frame first
    first, last = rec.episodes[1], rec.episodes[3]
    assert first["frames"] == 5 and first["peak_frame"] == 5 and "open_at_end" not in first
    assert last["open_at_end"] is True and last["frame"] == 17
    for end in (first, last):
        path = tmp_path / "shots" / f"0-script-episode{end['episode']}-frame{end['peak_frame']}.jpg"
        assert end["snapshot"] == str(path) and path.read_bytes() == end["_jpeg"]
        assert end["_jpeg"][:2] == b"\xff\xd8"  # a JPEG
    summary, rec = run(ScriptSource(values, size=16), smooth=1)  # nobody asks for snapshots: none made
    assert [e.get("_jpeg") for e in rec.episodes] == [None] * 4 and summary["episodes"] == 2


def test_a_sink_failing_on_an_episode_is_named_itself():
    summary, _ = run(ScriptSource([10, 90, 90, 10]), sinks=[Recorder(fail_at=-1)], smooth=1)
    assert summary["stopped"] == "error"
    assert summary["error"] == "recorder output failed: OSError: broker gone"
