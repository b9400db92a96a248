"""SIGTERM (what systemd and `docker stop` send) ends `ovdoc run` like Ctrl-C: a real signal to a real
subprocess in the middle of an anomaly episode, with a real MQTT broker and files being written."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import cv2
from conftest import ANOMALY_AT, REPO, need_package
from test_outputs import Broker, Subscriber


def test_sigterm_mid_episode_gives_summary_open_episode_end_offline_and_complete_files(
    bundle, streams, tmp_path
):
    need_package("paho.mqtt", "the MQTT output")
    broker = Broker(tmp_path / "broker").start()
    events, video = tmp_path / "events.jsonl", tmp_path / "out.avi"
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "ovdoc", "run", str(bundle), "--source", str(streams["anomalous"]),
         "--realtime", "--headless", "--json", "--smooth", "1", "--events", str(events),
         "--save-video", str(video), "--mqtt", f"mqtt://127.0.0.1:{broker.port}/term"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, encoding="utf-8", errors="replace",
        cwd=REPO, env=env,
    )
    try:
        deadline = time.monotonic() + 120
        started = False
        while time.monotonic() < deadline and not started and proc.poll() is None:
            time.sleep(0.05)  # polling a file another process writes: the condition is the episode start
            text = events.read_text(encoding="utf-8") if events.exists() else ""
            started = '"anomaly_start"' in text
        assert started, "no anomaly episode started"
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    try:
        assert proc.returncode == 0, err[-2000:]
        assert "Traceback" not in err
        summary = json.loads(out)
        assert summary["stopped"] == "interrupted"
        assert ANOMALY_AT < summary["frames"] < ANOMALY_AT + 15 + 30  # stopped mid-clip, not at its end
        records = [json.loads(line) for line in events.read_text(encoding="utf-8").splitlines()]
        ends = [r for r in records if r.get("event") == "anomaly_end"]
        assert ends and ends[-1].get("open_at_end") is True, ends
        assert len([r for r in records if "event" not in r]) == summary["frames"]
        cap = cv2.VideoCapture(str(video))  # the video file is complete: every scored frame, readable
        n = 0
        while cap.read()[0]:
            n += 1
        cap.release()
        assert n == summary["frames"]
        assert summary["outputs"]["mqtt"]["delivered"] >= 1
        sub = Subscriber(broker.port, "term")  # the retained status: ovdoc said goodbye itself
        try:
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and not sub.topic("term/status"):
                time.sleep(0.05)
            assert sub.topic("term/status")[-1] == b"offline"
        finally:
            sub.close()
    finally:
        broker.stop()
