"""`ovdoc run`: real videos, real decoding, real OpenVINO + FAISS, events, anomalies, failing sources."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from _cli import invoke
from _mjpeg import MJPEGServer
from _runtime_helpers import (
    error_line,
    ovdoc_cli,
    read_all,
    write_video,
)
from conftest import ANOMALY_AT, ANOMALY_LEN

from ovdoc.runtime.stream.live_detector import LiveDetector, members

SUMMARY_KEYS = {
    "source",
    "live",
    "bundle",
    "device",
    "frames",
    "anomalies",
    "dropped",
    "wall_s",
    "fps",
    "threshold",
    "smooth",
    "stopped",
    "events_file",
    "video_file",
}


def run_json(*args: str) -> dict:
    result = invoke("run", *args, "--headless", "--json")
    assert result.exit_code == 0, (result.output, result.exception)
    return json.loads(result.stdout)


def read_events(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def frame_records(path: Path) -> list[dict]:
    """The per-frame lines of an events file (incidents and episodes carry an "event" field)."""
    return [r for r in read_events(path) if "event" not in r]


@pytest.mark.slow
def test_anomalies_flagged_where_inserted(bundle, streams, tmp_path):
    events = tmp_path / "events.jsonl"
    summary = run_json(str(bundle), "--source", str(streams["anomalous"]), "--events", str(events))
    assert set(summary) >= SUMMARY_KEYS
    records = read_events(events)
    frames = [e for e in records if "event" not in e]
    assert summary["frames"] == len(frames) == ANOMALY_AT + ANOMALY_LEN + 30
    assert [e["frame"] for e in frames] == list(range(len(frames)))
    assert all(set(e) == {"frame", "timestamp", "score", "smoothed", "anomalous"} for e in frames)
    assert all(np.isfinite(e["score"]) and np.isfinite(e["smoothed"]) for e in frames)
    assert frames[1]["timestamp"] > frames[0]["timestamp"] or frames[2]["timestamp"] > frames[1]["timestamp"]
    flagged = [e["frame"] for e in frames if e["anomalous"]]
    assert summary["anomalies"] == len(flagged) >= ANOMALY_LEN // 2
    smooth = summary["smooth"]
    assert all(ANOMALY_AT <= f < ANOMALY_AT + ANOMALY_LEN + smooth for f in flagged), flagged
    raw = np.array([e["score"] for e in frames])
    smoothed = np.array([e["smoothed"] for e in frames])
    expected = [raw[max(0, i - smooth + 1) : i + 1].mean() for i in range(len(raw))]
    np.testing.assert_allclose(smoothed, expected, rtol=1e-5)  # mean of the last --smooth raw scores
    assert raw[ANOMALY_AT : ANOMALY_AT + ANOMALY_LEN].min() > raw[:ANOMALY_AT].max()
    # one episode for the one inserted stretch: a start on its first flagged frame, an end on the first
    # normal frame after it, with the peak smoothed score and how long it lasted
    episodes = [e for e in records if e.get("event", "").startswith("anomaly_")]
    assert [e["event"] for e in episodes] == ["anomaly_start", "anomaly_end"], episodes
    start, end = episodes
    assert start["frame"] == flagged[0] and start["episode"] == end["episode"] == 1
    assert end["frame"] == flagged[-1] + 1 and end["start_frame"] == flagged[0]
    assert end["frames"] == len(flagged) and "open_at_end" not in end
    assert end["peak_score"] == pytest.approx(max(smoothed[flagged[0] : flagged[-1] + 1]), rel=1e-6)
    assert smoothed[end["peak_frame"]] == pytest.approx(end["peak_score"], rel=1e-6)
    lasted = frames[end["frame"]]["timestamp"] - frames[flagged[0]]["timestamp"]
    assert end["duration_s"] == pytest.approx(lasted, abs=1e-3)
    # the records sit in the stream where they happened: start right after its frame, end after its frame
    position = {id(e): i for i, e in enumerate(records)}
    assert records[position[id(start)] - 1].get("frame") == start["frame"]
    assert records[position[id(end)] - 1].get("frame") == end["frame"]


@pytest.mark.slow
def test_normal_stream_not_flagged(bundle, streams, tmp_path):
    events = tmp_path / "events.jsonl"
    summary = run_json(str(bundle), "--source", str(streams["normal"]), "--events", str(events))
    assert summary["frames"] == 60 == len(frame_records(events))
    assert summary["anomalies"] == 0
    assert summary["stopped"] == "end" and summary["dropped"] == 0


@pytest.mark.slow
@pytest.mark.parametrize("name", ["vtest.avi", "bikes.mp4"])
def test_real_videos_at_640x480(bundle, video_dir, tmp_path, name):
    events, video = tmp_path / "events.jsonl", tmp_path / "annotated.avi"
    summary = run_json(
        str(bundle),
        "--source",
        str(video_dir / name),
        "--res",
        "640x480",
        "--max-frames",
        "40",
        "--events",
        str(events),
        "--save-video",
        str(video),
    )
    frames = frame_records(events)
    assert summary["frames"] == len(frames) == 40
    assert summary["stopped"] == "max_frames" and summary["fps"] > 0
    assert all(np.isfinite(e["score"]) for e in frames)
    assert summary["anomalies"] == 40  # street scenes are not magnetic tiles
    # one episode, still open when the run stopped: closed on the last frame and said so
    episodes = [r for r in read_events(events) if r.get("event", "").startswith("anomaly_")]
    assert [(e["event"], e["frame"]) for e in episodes] == [("anomaly_start", 0), ("anomaly_end", 39)]
    assert episodes[1]["open_at_end"] is True and episodes[1]["frames"] == 40
    saved = read_all(video)
    assert len(saved) == 40 and saved[0].shape == (480, 640, 3)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["annotated.avi", "events.jsonl"]  # no temp left


@pytest.mark.slow
def test_image_folder_source_and_threshold_override(bundle, streams, tmp_path):
    folder = tmp_path / "frames"
    folder.mkdir()
    for i, frame in enumerate(read_all(streams["normal"])[:12]):
        cv2.imwrite(str(folder / f"{i:03d}.png"), frame)
    summary = run_json(str(bundle), "--source", str(folder), "--threshold", "0.001", "--smooth", "1")
    assert summary["frames"] == 12 and summary["anomalies"] == 12 and summary["threshold"] == 0.001


@pytest.mark.slow
def test_bad_device(bundle, streams):
    proc = ovdoc_cli(
        "run", str(bundle), "--source", str(streams["normal"]), "--device", "MYRIAD", "--headless"
    )
    assert proc.returncode != 0 and "MYRIAD plugin" in error_line(proc)
    proc = ovdoc_cli("run", str(bundle), "--source", str(streams["normal"]), "--device", "TPU", "--headless")
    assert proc.returncode != 0 and "devices present: CPU" in error_line(proc)


@pytest.mark.slow
def test_bad_sources(bundle, tmp_path):
    proc = ovdoc_cli("run", str(bundle), "--source", str(tmp_path / "nope.avi"), "--headless")
    assert proc.returncode != 0 and "source not found" in error_line(proc)
    corrupt = tmp_path / "corrupt.avi"
    corrupt.write_bytes(np.random.default_rng(0).integers(0, 255, 20000, dtype=np.uint8).tobytes())
    proc = ovdoc_cli("run", str(bundle), "--source", str(corrupt), "--headless")
    assert proc.returncode != 0 and "cannot open video" in error_line(proc)
    proc = ovdoc_cli("run", str(bundle), "--source", "rtsp://127.0.0.1:9/none", "--headless", timeout=120)
    assert proc.returncode != 0 and "cannot open stream" in error_line(proc)


def _live(opener_paths: list[Path], name: str = "camera-sim"):
    """A live CaptureSource whose successive (re)connections open the given paths; the real
    VideoCapture fails to read at the end of a file or to open a missing path, like an unplugged camera."""
    from ovdoc.runtime.stream.sources import CaptureSource

    paths = iter(opener_paths)

    def opener() -> cv2.VideoCapture:
        return cv2.VideoCapture(str(next(paths, opener_paths[-1])))

    source = CaptureSource(opener, name, live=True, what="camera")
    source.open()
    return source


@pytest.mark.slow
def test_live_source_dropout_gives_up_with_events(bundle, streams, tmp_path):
    from ovdoc.runtime.detector import Detector
    from ovdoc.runtime.stream.pipeline import Pipeline, RunOptions

    short = write_video(read_all(streams["normal"])[:20], tmp_path / "short.avi")
    source = _live([short, tmp_path / "unplugged.avi"])
    events = tmp_path / "events.jsonl"
    summary = Pipeline(
        Detector.load(bundle), source, RunOptions(retries=3, backoff_s=0.01, events=events, queue_size=64)
    ).run()
    assert summary["stopped"] == "error"
    assert "stopped delivering frames; gave up after 3 retries" in summary["error"]
    records = read_events(events)
    incidents = [r for r in records if "event" in r]
    assert [r["event"] for r in incidents] == ["source_lost"] * 3 + ["source_gave_up"]
    assert [r["attempt"] for r in incidents[:3]] == [1, 2, 3]
    assert [r["retry_in_s"] for r in incidents[:3]] == [0.01, 0.02, 0.04]  # exponential backoff
    frames = [r for r in records if "frame" in r]
    assert summary["frames"] == len(frames) and summary["frames"] + summary["dropped"] == 20
    assert summary["source_incidents"] == 4


@pytest.mark.slow
def test_live_source_recovers(bundle, streams, tmp_path):
    from ovdoc.runtime.detector import Detector
    from ovdoc.runtime.stream.pipeline import Pipeline, RunOptions

    short = write_video(read_all(streams["normal"])[:20], tmp_path / "short.avi")
    source = _live([short, tmp_path / "unplugged.avi", short])  # drops, fails once, comes back
    events = tmp_path / "events.jsonl"
    summary = Pipeline(
        Detector.load(bundle),
        source,
        RunOptions(retries=5, backoff_s=0.01, events=events, max_frames=30, queue_size=64),
    ).run()
    assert "error" not in summary and summary["stopped"] == "max_frames"
    kinds = [r["event"] for r in read_events(events) if "event" in r]
    assert kinds[:3] == ["source_lost", "source_lost", "source_recovered"]
    assert summary["frames"] == 30


def _close_after(server: MJPEGServer, frames: int, timeout: float = 120.0) -> threading.Thread:
    """Close the stream server once it has sent `frames` frames (or after `timeout`): a source that dies."""

    def watch() -> None:
        deadline = time.monotonic() + timeout
        while server.sent < frames and time.monotonic() < deadline:
            time.sleep(0.02)
        server.close()

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


@pytest.mark.slow
def test_lost_live_source_cli_exit(bundle, streams, tmp_path):
    """The real console script: the summary on stdout, then exactly one `Error:` line on stderr and exit 2
    (no traceback, no OpenCV/FFmpeg lines) when a live stream dies and --retries 0 gives up."""
    with MJPEGServer(read_all(streams["normal"])[:10], fps=50) as server:
        _close_after(server, 40)
        proc = ovdoc_cli("run", str(bundle), "--source", server.url, "--retries", "0", "--stall-timeout", "1",
                         "--headless", "--json", timeout=180)
    assert proc.returncode == 2, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["live"] is True and summary["stopped"] == "error" and summary["frames"] > 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), proc.stderr
    assert "gave up after 0 retries" in lines[0]


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["http", "rtsp", "corrupt-file"])
def test_bad_source_is_exactly_one_stderr_line(bundle, tmp_path, kind):
    """OpenCV's `[ERROR:0@0.7] ...` and FFmpeg's `[tcp @ 0x...] Connection refused` stay out of stderr
    (unless --verbose): a bad source is ovdoc's one line and nothing else."""
    import socket

    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    corrupt = tmp_path / "corrupt.avi"
    corrupt.write_bytes(b"RIFF\x00\x00\x00\x00AVI LIST" + bytes(range(256)) * 8)
    source = {"http": f"http://127.0.0.1:{port}/x.mjpg", "rtsp": f"rtsp://127.0.0.1:{port}/none",
              "corrupt-file": str(corrupt)}[kind]
    proc = ovdoc_cli("run", str(bundle), "--source", source, "--headless", timeout=120)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and lines[0].startswith("Error: cannot open"), proc.stderr
    if kind == "http":  # --verbose lets FFmpeg's own line through (so the silencing above is real)
        loud = ovdoc_cli("run", str(bundle), "--source", source, "--headless", "--verbose", timeout=120)
        assert loud.returncode == 2 and "Connection refused" in loud.stderr, loud.stderr


@pytest.mark.slow
def test_stalled_stream_is_noticed_within_stall_timeout_and_recovers(bundle, streams, tmp_path):
    """A real MJPEG stream that stays connected but stops sending: with --stall-timeout 0.5 the reader
    reports it lost about 0.5 s later (not after OpenCV's ~30 s), reconnects, and scoring resumes."""
    from ovdoc.runtime.detector import Detector
    from ovdoc.runtime.stream.pipeline import Pipeline, RunOptions
    from ovdoc.runtime.stream.sources import open_source

    events = tmp_path / "events.jsonl"
    with MJPEGServer(read_all(streams["normal"])[:10], fps=40) as server:
        source = open_source(server.url, stall_timeout_s=0.5)

        def stall_once() -> None:
            deadline = time.monotonic() + 120
            while server.sent < 20 and time.monotonic() < deadline:
                time.sleep(0.01)
            dialled = server.connections
            server.stall.set()
            # held until the reader gave up on the stalled connection and dialled again (a real condition,
            # not a clock: a busy machine may take longer to notice); the new connection then gets frames
            while server.connections <= dialled and time.monotonic() < deadline:
                time.sleep(0.01)
            server.stall.clear()

        threading.Thread(target=stall_once, daemon=True).start()
        summary = Pipeline(
            Detector.load(bundle, batch=1), source,
            RunOptions(retries=5, backoff_s=0.05, events=events, max_frames=60),
        ).run()
        source.close()
    assert "error" not in summary and summary["stopped"] == "max_frames", summary
    records = read_events(events)
    kinds = [r["event"] for r in records if "event" in r]
    assert kinds[0] == "source_lost" and "source_recovered" in kinds, kinds
    lost = next(i for i, r in enumerate(records) if r.get("event") == "source_lost")
    # the last frame captured before the loss was reported (it may be written after the incident line)
    lost_at = records[lost]["time"]
    last_frame = max(r["timestamp"] for r in records if "frame" in r and r["timestamp"] < lost_at)
    # 0.5 s stall timeout, plus scheduling slack on a busy machine; an ignored --stall-timeout would fall
    # back to the 5 s default (or OpenCV's ~30 s) and miss the upper bound
    assert 0.3 < lost_at - last_frame < 3.0, lost_at - last_frame
    after = [r for r in records[lost:] if "frame" in r]
    assert after and summary["frames"] == 60 and server.connections >= 2


@pytest.mark.slow
def test_live_source_drops_oldest_behind_a_slow_scorer(bundle, streams, tmp_path):
    """A real live stream (MJPEG over HTTP, 60 FPS) scored by the real model slowed to ~12 FPS: the reader
    drops frames instead of falling behind, and what is scored stays close to the newest frame."""
    from ovdoc.runtime.detector import Detector
    from ovdoc.runtime.stream.pipeline import Pipeline, RunOptions
    from ovdoc.runtime.stream.sources import open_source

    class Slowed:
        """The real detector, with scoring (run in the loop's main thread) held up 80 ms a frame."""

        def __init__(self, det) -> None:
            self.det = det

        def __getattr__(self, name: str):
            return getattr(self.det, name)

        def score_outputs(self, outputs):
            time.sleep(0.08 * len(outputs))
            return self.det.score_outputs(outputs)

    events = tmp_path / "events.jsonl"
    with MJPEGServer(read_all(streams["normal"])[:10], fps=60) as server:
        source = open_source(server.url)
        pipeline = Pipeline(Slowed(Detector.load(bundle, batch=1)), source,
                            RunOptions(events=events, max_frames=25, queue_size=2))
        summary = pipeline.run()
        sent = server.sent  # frames the camera has put on the wire by the end of the run
        source.close()
    read = pipeline.lane.reader.read
    assert summary["stopped"] == "max_frames" and summary["frames"] == 25
    assert summary["dropped"] > 25, summary  # ~60 FPS in, ~12 FPS out: most frames are dropped
    indices = [r["frame"] for r in frame_records(events)]
    assert indices == sorted(set(indices)) and indices[-1] - indices[0] > len(indices)  # gaps, in order
    # what is scored stays recent: behind the stream by the two 2-frame queues and the frames in flight
    # (~0.5 s measured), not by the whole run (~2 s at 60 - 12 FPS) as a reader that blocked would be
    assert read <= sent and sent - 1 - indices[-1] < 60, (sent, read, indices[-1])


def test_default_demo_path(tmp_path):
    from ovdoc.commands.run import demo_paths, resolve_defaults
    from ovdoc.errors import OvdocError

    demo_bundle, demo_stream = demo_paths()
    assert demo_bundle.parent == demo_stream.parent and demo_bundle.parent.name == "demo"
    if demo_bundle.exists() and demo_stream.exists():
        summary = run_json("--max-frames", "5")
        assert summary["frames"] == 5 and summary["source"] == str(demo_stream)
    else:
        with pytest.raises(OvdocError, match="converters/build_demo.py"):
            resolve_defaults(None, None)
    assert resolve_defaults(str(tmp_path), None) == (str(tmp_path), "0")


@pytest.mark.slow
def test_model_cache_dir_is_used(bundle, streams, tmp_path, monkeypatch):
    cache = tmp_path / "ov-cache"
    monkeypatch.setenv("OVDOC_CACHE_DIR", str(cache))
    run_json(str(bundle), "--source", str(streams["normal"]), "--max-frames", "2")
    assert any(p.suffix == ".blob" for p in cache.iterdir())


def test_headless_without_display(monkeypatch):
    from ovdoc.runtime.stream.display import display_available

    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    assert display_available() is False
    monkeypatch.setenv("DISPLAY", ":0")
    assert display_available() is True


def test_res_parsing():
    from ovdoc.errors import OvdocError
    from ovdoc.runtime.stream.sources import parse_res

    assert parse_res("640x480") == (640, 480) and parse_res(None) is None
    for bad in ("640", "axb", "0x480"):
        with pytest.raises(OvdocError, match="--res"):
            parse_res(bad)


def test_sources_deliver_frames_at_res(video_dir, tmp_path):
    from ovdoc.runtime.stream.sources import open_source

    video = open_source(str(video_dir / "bikes.mp4"), res=(640, 480))
    assert video.live is False
    assert video.read().image.shape == (480, 640, 3)
    assert video.read_raw().image.shape == (272, 640, 3)  # as decoded; the pipeline resizes in its own thread
    video.close()
    folder = tmp_path / "imgs"
    folder.mkdir()
    cv2.imwrite(str(folder / "a.png"), np.full((50, 70, 3), 128, np.uint8))
    images = open_source(str(folder), res=(320, 240))
    assert images.read().image.shape == (240, 320, 3) and images.read() is None


@pytest.mark.slow
def test_events_stream_live_and_ctrl_c_prints_summary(bundle, streams, tmp_path):
    """Events are readable while the run goes on (flushed per frame); SIGINT to the real `ovdoc run` on a
    live stream that never ends takes the interrupt path: stopped == "interrupted", exit 0, the summary,
    and an events file whose every line parses, one per scored frame."""
    import os
    import signal
    import subprocess
    import sys

    events = tmp_path / "events.jsonl"
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    with MJPEGServer(read_all(streams["normal"])[:10], fps=30) as server:
        proc = subprocess.Popen(
            [sys.executable, "-m", "ovdoc", "run", str(bundle), "--source", server.url, "--smooth", "1",
             "--batch", "1", "--events", str(events), "--json"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                    encoding="utf-8", errors="replace", env=env,
        )
        try:
            deadline = time.monotonic() + 120
            seen = 0
            while time.monotonic() < deadline and seen < 5 and proc.poll() is None:
                time.sleep(0.05)
                seen = len(events.read_text(encoding="utf-8").splitlines()) if events.exists() else 0
            assert seen >= 5, "no events appeared while the run was going on"
            proc.send_signal(signal.SIGINT)
            out, err = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
    assert proc.returncode == 0, err
    summary = json.loads(out)
    assert summary["stopped"] == "interrupted" and summary["live"] is True
    records = read_events(events)  # every line parses: none cut off by the interrupt
    assert summary["frames"] == len([r for r in records if "event" not in r]) >= 5
    assert "Traceback" not in err


def test_annotation_colours():
    from ovdoc.runtime.stream.display import annotate

    frame = np.zeros((240, 320, 3), np.uint8)
    below = annotate(frame, score=1.0, threshold=2.0, anomalous=False, fps=30.0)
    above = annotate(frame, score=3.0, threshold=2.0, anomalous=True, fps=30.0)
    text = (slice(0, 18), slice(0, 320))  # the score line (the grey FPS line is below it)
    assert below[text][..., 1].max() > 150 and below[text][..., 2].max() < 50  # green text, no red
    assert above[text][..., 2].max() > 200 and above[text][..., 1].max() < 200  # red text
    assert above[-1, 160, 2] == 255  # red border when anomalous
    assert frame.max() == 0  # the source frame is not drawn on


@pytest.mark.slow
def test_live_queue_drops_oldest_files_never_drop(bundle, streams, tmp_path):
    """Behind a live source the OLDEST queued frame goes (show what happens now); a file blocks instead.
    (The loop-level version with a fake, slow detector is in test_stages.py.)"""
    import queue
    import threading

    from ovdoc.runtime.detector import Detector
    from ovdoc.runtime.stream.pipeline import Pipeline, RunOptions
    from ovdoc.runtime.stream.reader import put
    from ovdoc.runtime.stream.sources import Frame, open_source

    target: queue.Queue = queue.Queue(maxsize=2)
    stop = threading.Event()
    frames = [Frame(i, float(i), np.zeros((4, 4, 3), np.uint8)) for i in range(5)]
    assert sum(put(target, f, stop, drop_oldest=True) for f in frames) == 3
    assert [target.get_nowait().index for _ in range(2)] == [3, 4]
    video = open_source(str(streams["normal"]))
    summary = Pipeline(Detector.load(bundle), video, RunOptions(queue_size=2)).run()
    assert video.live is False and summary["dropped"] == 0 and summary["frames"] == 60


class PublicOnly:
    """A real Detector seen only through the LiveDetector protocol (live_detector.py): the loop must not
    need anything else (no extractor_, no spec_)."""

    ALLOWED = members()

    def __init__(self, det) -> None:
        self._det = det

    def __getattr__(self, name: str):
        if name not in self.ALLOWED:
            raise AssertionError(f"the live loop used Detector.{name}, outside the public contract")
        return getattr(self._det, name)


def test_a_loaded_detector_is_a_live_detector(bundle):
    """The protocol the loop types against is what a real Detector offers (every member readable)."""
    from ovdoc.runtime.detector import Detector

    det = Detector.load(bundle, batch=1)
    assert isinstance(det, LiveDetector) and isinstance(PublicOnly(det), LiveDetector)
    assert all(getattr(det, name) is not None for name in members())


@pytest.mark.slow
def test_loop_uses_only_the_public_detector_api(bundle, streams, tmp_path):
    """Real OpenVINO + FAISS through the public API only; scores equal score_samples on the same frames."""
    from ovdoc.runtime.detector import Detector
    from ovdoc.runtime.stream.pipeline import Pipeline, RunOptions
    from ovdoc.runtime.stream.sources import open_source

    det = Detector.load(bundle, batch=4)
    assert det.mode_ == "global" and det.preprocess == det.spec_ and det.batch == 4
    events = tmp_path / "events.jsonl"
    source = open_source(str(streams["anomalous"]))
    summary = Pipeline(PublicOnly(det), source, RunOptions(events=events, smooth=1)).run()
    scores = [e["score"] for e in frame_records(events)]
    assert summary["frames"] == len(scores) == ANOMALY_AT + ANOMALY_LEN + 30 and summary["batch"] == 4
    expected = det.score_samples(read_all(streams["anomalous"]))
    np.testing.assert_allclose(scores, expected, rtol=1e-4)
    scored = det.score_outputs(det.features(read_all(streams["anomalous"])[:3]))
    assert scored.maps is None and scored.scores.dtype == np.float32 and scored.scores.shape == (3,)


@pytest.mark.slow
def test_headless_run_crops_from_the_decoded_frame_and_scores_alike(bundle, streams, tmp_path):
    """With no output that draws or saves the frame, the preparer takes the model's crop straight from the
    decoded frame (one resample) instead of resizing it to --res first; the scores barely move and every
    decision stays the same. An output that needs the pixels (saved video) keeps the resize."""
    from ovdoc.runtime.detector import Detector
    from ovdoc.runtime.stream.pipeline import Pipeline, RunOptions
    from ovdoc.runtime.stream.sources import open_source

    det = Detector.load(bundle, batch=4)
    runs = {}
    for name, extra in (("fused", {}), ("resized", {"save_video": tmp_path / "out.avi"})):
        events = tmp_path / f"{name}.jsonl"
        source = open_source(str(streams["anomalous"]), res=(200, 150))  # 4:3 from a square video
        pipeline = Pipeline(det, source, RunOptions(events=events, smooth=1, **extra))
        summary = pipeline.run()
        runs[name] = (summary, frame_records(events), pipeline.lane.preparer.prepare_at)
    (fused, fused_events, fused_at), (resized, resized_events, resized_at) = runs["fused"], runs["resized"]
    assert fused_at is not None and resized_at is None
    assert fused["frames"] == resized["frames"] == ANOMALY_AT + ANOMALY_LEN + 30
    a = np.array([e["score"] for e in fused_events])
    b = np.array([e["score"] for e in resized_events])
    assert np.median(np.abs(a - b) / b) < 0.03, np.abs(a - b) / b
    assert [e["anomalous"] for e in fused_events] == [e["anomalous"] for e in resized_events]
    assert fused["anomalies"] >= ANOMALY_LEN - 2  # the inserted photos are still flagged
