"""RTSP, as cameras on a factory floor speak it: a real GStreamer RTSP server on loopback (H.264 over RTP,
tests/_rtsp_server.py) read by `ovdoc run --source rtsp://...` and the stream readers. Connect, stall,
server restart and reconnect; every wait is on a real condition (a server line, an events-file line),
bounded by a timeout."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import cv2
import pytest
from _rtsp import RTSPServer, require_rtsp_server
from _runtime_helpers import read_all
from conftest import REPO


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def records_in(path: Path) -> list[dict]:
    """The complete lines of an events file being written by a running `ovdoc run`."""
    if not path.exists():
        return []
    text = path.read_text(encoding="utf-8")
    return [json.loads(line) for line in text[: text.rfind("\n") + 1].splitlines()]


def incidents(path: Path, kind: str) -> list[dict]:
    return [r for r in records_in(path) if r.get("event") == kind]


def frames_in(path: Path) -> int:
    return sum(1 for r in records_in(path) if "event" not in r)


def wait_for(condition, what: str, proc: subprocess.Popen | None = None, timeout_s: float = 90) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if proc is not None and proc.poll() is not None:
            err = proc.stderr.read()[-2000:]
            raise AssertionError(f"ovdoc exited ({proc.returncode}) before {what}: {err}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


@pytest.fixture(scope="module")
def tiles(streams, tmp_path_factory) -> str:
    """Ten held-out normal tiles as JPEG files: what the server loops (the bundle knows them as normal)."""
    require_rtsp_server()
    root = tmp_path_factory.mktemp("rtsp-frames")
    for i, frame in enumerate(read_all(streams["normal"])[:10]):
        cv2.imwrite(str(root / f"{i:03d}.jpg"), frame)
    return str(root / "%03d.jpg")


def ovdoc_run(*args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "ovdoc", "run", *args, "--headless", "--json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, encoding="utf-8", errors="replace",
        cwd=REPO,
    )


def finish(proc: subprocess.Popen) -> dict:
    try:
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err[-3000:]
    assert "Traceback" not in err
    return json.loads(out)


def test_ovdoc_run_scores_an_rtsp_camera(bundle, tiles, tmp_path):
    """Connect: the live H.264 stream is decoded and scored; normal tiles stay (mostly) normal."""
    events = tmp_path / "events.jsonl"
    with RTSPServer(tiles, free_port()) as server:
        summary = finish(ovdoc_run(str(bundle), "--source", server.url, "--max-frames", "50",
                                   "--events", str(events)))
        server.expect("CLIENT")
    assert summary["live"] is True and summary["frames"] == 50 and summary["stopped"] == "max_frames", summary
    frames = [r for r in records_in(events) if "event" not in r]
    assert len(frames) == 50 and [r["frame"] for r in frames] == sorted(r["frame"] for r in frames)
    # the bundle was fitted on these tiles (through another codec): an RTSP camera of normal parts
    assert summary["anomalies"] <= 3, summary
    # wall-clock stamps of a live 10 FPS stream, not a file's positions: FFmpeg's probe hands over its
    # first ~3 s of video at once, after that frames come as the server sends them
    stamps = [r["timestamp"] for r in frames]
    assert stamps[-1] - stamps[0] > 1.0, stamps


def test_rtsp_stall_is_noticed_and_the_stream_recovers(bundle, tiles, tmp_path):
    """The RTSP session stays up but video stops: with a 0.5 s stall timeout the reader reports the loss
    within seconds (FFmpeg's RTSP demuxer retries its read a few times; the 5 s default or OpenCV's ~30 s
    would miss the bound), reconnects once video flows again, and scoring resumes. The run is stopped by
    the test (Control.QUIT) once scoring resumed, not at a frame count: FFmpeg hands over its first ~3 s
    of video at once, and a loaded machine buffers more, so no fixed count is sure to outlast them."""
    from ovdoc.runtime.detector import Detector
    from ovdoc.runtime.stream.messages import Command, Control
    from ovdoc.runtime.stream.pipeline import Pipeline, RunOptions
    from ovdoc.runtime.stream.sources import open_source

    events = tmp_path / "events.jsonl"
    with RTSPServer(tiles, free_port()) as server:
        source = open_source(server.url, stall_timeout_s=0.5)
        pipeline = Pipeline(Detector.load(bundle, batch=1), source,
                            RunOptions(retries=8, backoff_s=0.05, events=events, max_frames=3000))
        failed: list[str] = []

        def resumed() -> bool:
            recovered = incidents(events, "source_recovered")
            after = [r for r in records_in(events) if "event" not in r and recovered
                     and r["timestamp"] > recovered[0]["time"]]
            return len(after) >= 5

        def stall_once() -> None:
            try:
                wait_for(lambda: frames_in(events) >= 10, "10 scored frames")
                server.stall()
                wait_for(lambda: incidents(events, "source_lost"), "the reader to report the stall")
                server.resume()
                wait_for(resumed, "5 frames scored after the recovery")
            except AssertionError as exc:
                failed.append(str(exc))
            finally:
                pipeline.post(Command(Control.QUIT))

        thread = threading.Thread(target=stall_once, daemon=True)
        thread.start()
        summary = pipeline.run()
        source.close()
        thread.join(30)
    assert not failed, failed
    assert "error" not in summary and summary["stopped"] == "user", summary
    records = records_in(events)
    kinds = [r["event"] for r in records if "event" in r]
    assert kinds[0] == "source_lost" and "source_recovered" in kinds, kinds
    lost_at = records[next(i for i, r in enumerate(records) if r.get("event") == "source_lost")]["time"]
    last_frame = max(r["timestamp"] for r in records if "event" not in r and r["timestamp"] < lost_at)
    assert 0.3 < lost_at - last_frame < 4.5, lost_at - last_frame


def test_ovdoc_run_survives_an_rtsp_server_restart(bundle, tiles, tmp_path):
    """The camera's server dies mid-run and comes back on the same address: `ovdoc run` reports the loss,
    retries with backoff, reconnects to the new server and scores on to --max-frames."""
    events = tmp_path / "events.jsonl"
    server = RTSPServer(tiles, free_port()).start()
    try:
        # 80 frames: more than FFmpeg's first burst (~3 s of video at once) plus what a loaded machine
        # buffers, so the run cannot end before the loss is noticed
        proc = ovdoc_run(str(bundle), "--source", server.url, "--max-frames", "80", "--events", str(events),
                         "--stall-timeout", "1", "--retries", "8")
        try:
            wait_for(lambda: frames_in(events) >= 10, "10 scored frames", proc)
            server.kill()
            wait_for(lambda: incidents(events, "source_lost"), "the reported loss", proc)
            server.start()  # the same port: a camera back from a reboot
            server.expect("CLIENT")  # ovdoc dialled the new server
        finally:
            if proc.poll() is None and server.proc.poll() is not None:
                proc.kill()
        summary = finish(proc)
    finally:
        server.kill()
    assert summary["frames"] == 80 and summary["stopped"] == "max_frames", summary
    records = records_in(events)
    kinds = [r["event"] for r in records if "event" in r]
    assert "source_lost" in kinds and kinds[-1] == "source_recovered", kinds
    recovered_at = next(r["time"] for r in records if r.get("event") == "source_recovered")
    assert sum(1 for r in records if "event" not in r and r["timestamp"] >= recovered_at - 1) >= 1
