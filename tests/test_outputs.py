"""`ovdoc run`'s line outputs with real servers: several sources in one process, anomaly episodes, MQTT
through Debian's mosquitto (started here on a free loopback port), a webhook to a local HTTP server."""

from __future__ import annotations

import base64
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from _cli import free_port, ovdoc_cli
from _webhook import Hook
from conftest import ANOMALY_AT, ANOMALY_LEN, REPO, missing, need_package

pytestmark = pytest.mark.slow  # real MQTT broker and webhook against ovdoc run

SBIN = Path("/usr/sbin/mosquitto")  # Debian installs it outside a user's PATH
MOSQUITTO = shutil.which("mosquitto") or (str(SBIN) if SBIN.exists() else None)


class Broker:
    """A real mosquitto on 127.0.0.1:port; `stop` and `start` again on the same port (persistent sessions
    survive, so a subscriber misses nothing while it is down)."""

    def __init__(self, root: Path) -> None:
        if MOSQUITTO is None:
            missing("MQTT tests need Debian's mosquitto (apt-get install mosquitto)")
        self.port = free_port()
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.conf = root / "mosquitto.conf"
        self.conf.write_text(
            f"listener {self.port} 127.0.0.1\nallow_anonymous true\npersistence true\n"
            f"persistence_location {root}/\nautosave_interval 1\n"
            # started as root it would drop to its own user, who cannot write pytest's private tmp folders
            + ("user root\n" if os.geteuid() == 0 else "")
        )
        self.proc: subprocess.Popen | None = None

    def start(self) -> Broker:
        self.proc = subprocess.Popen([MOSQUITTO, "-c", str(self.conf)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    return self
            time.sleep(0.05)
        raise AssertionError("mosquitto did not start")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


class Subscriber:
    """Collects every message under prefix/# (QoS 1, persistent session: resumes after a broker restart)."""

    def __init__(self, port: int, prefix: str, *, client_id: str = "", persistent: bool = True) -> None:
        from paho.mqtt import client as mqtt

        self.messages: list[tuple[str, bytes]] = []
        self.lock = threading.Lock()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id or f"test-{prefix}",
                                  clean_session=not persistent)
        self.client.reconnect_delay_set(0.1, 0.5)
        self.client.on_message = self._on_message
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe(f"{prefix}/#", qos=1)
        self.subscribed = threading.Event()
        self.client.on_subscribe = lambda *a: self.subscribed.set()
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        assert self.subscribed.wait(10)

    def _on_message(self, client, userdata, msg) -> None:
        with self.lock:
            self.messages.append((msg.topic, msg.payload))

    def topic(self, name: str) -> list[bytes]:
        with self.lock:
            return [p for t, p in self.messages if t == name]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()




def run_cli(*args: str, timeout: float = 180) -> dict:
    proc = ovdoc_cli("run", *args, "--headless", "--json", timeout=timeout, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    return json.loads(proc.stdout)


def records_in(path: Path) -> list[dict]:
    """The complete JSON lines of an events file (a line still being written is not counted yet)."""
    if not path.exists():
        return []
    text = path.read_text(encoding="utf-8")
    return [json.loads(line) for line in text[: text.rfind("\n") + 1].splitlines()]


def episodes_in(path: Path) -> list[dict]:
    return [r for r in records_in(path) if r.get("event", "").startswith("anomaly_")]


def frames_in(path: Path) -> int:
    return sum(1 for r in records_in(path) if "frame" in r and "event" not in r)


def wait_for(condition, proc: subprocess.Popen, what: str, timeout_s: float = 120) -> None:
    """Poll a real condition (bounded); fail at once, with ovdoc's stderr, if the process died first."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if proc.poll() is not None:
            err = proc.stderr.read()[-2000:]
            raise AssertionError(f"ovdoc exited ({proc.returncode}) before {what}: {err}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


@pytest.fixture()
def broker(tmp_path):
    need_package("paho.mqtt", "the MQTT output")
    b = Broker(tmp_path / "broker").start()
    yield b
    b.stop()


def test_mqtt_webhook_and_episode_snapshots_from_one_run(bundle, streams, broker, tmp_path):
    sub = Subscriber(broker.port, "line1")
    hook = Hook(fail_first=2)  # the first two POSTs fail: retried
    events, shots = tmp_path / "events.jsonl", tmp_path / "episodes"
    try:
        summary = run_cli(
            str(bundle), "--source", str(streams["anomalous"]), "--events", str(events),
            "--mqtt", f"mqtt://127.0.0.1:{broker.port}/line1", "--mqtt-interval", "0.01",
            "--webhook", hook.url, "--episodes-dir", str(shots), "--smooth", "3",
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and len(sub.topic("line1/cam0/episode")) < 2:
            time.sleep(0.05)
    finally:
        sub.close()
        hook.shutdown()
    # the events file has the episode of the inserted photos: its start and end
    episodes = episodes_in(events)
    assert [e["event"] for e in episodes] == ["anomaly_start", "anomaly_end"], episodes
    start, end = episodes
    assert ANOMALY_AT <= start["frame"] < ANOMALY_AT + ANOMALY_LEN
    assert ANOMALY_AT + ANOMALY_LEN <= end["frame"] < ANOMALY_AT + ANOMALY_LEN + 4
    assert summary["episodes"] == 1
    # the peak frame is on disk, named in anomaly_end: the frame at the peak, with its score banner
    snapshot = Path(end["snapshot"])
    assert snapshot.parent == shots and sorted(p.name for p in shots.iterdir()) == [snapshot.name]
    image = cv2.imread(str(snapshot))
    assert image is not None and image.shape[:2] == (128, 128)
    # MQTT: the same two episode records (QoS 1), the snapshot as JPEG bytes, a score stream, status
    mqtt_episodes = [json.loads(p) for p in sub.topic("line1/cam0/episode")]
    assert mqtt_episodes == episodes
    jpeg = sub.topic("line1/cam0/snapshot")
    assert len(jpeg) == 1
    assert cv2.imdecode(np.frombuffer(jpeg[0], np.uint8), cv2.IMREAD_COLOR).shape[:2] == (128, 128)
    scores = [json.loads(p) for p in sub.topic("line1/cam0/score")]
    assert 1 <= len(scores) <= summary["frames"] and all("smoothed" in s for s in scores)
    assert [s["frame"] for s in scores] == sorted(s["frame"] for s in scores)
    assert sub.topic("line1/status")[-1] == b"offline"  # said on a clean exit
    assert summary["outputs"]["mqtt"]["dropped"] == 0 and summary["outputs"]["mqtt"]["connects"] >= 1
    # the webhook got both episodes despite two 500 answers first, the end with the snapshot inline
    assert hook.answers[:2] == [500, 500] and summary["outputs"]["webhook"]["retried"] == 2
    assert [b["event"] for b in hook.bodies] == ["anomaly_start", "anomaly_end"]
    assert {k: v for k, v in hook.bodies[1].items() if k != "snapshot_jpeg"} == end
    assert base64.b64decode(hook.bodies[1]["snapshot_jpeg"]) == jpeg[0]


def test_mqtt_buffers_while_the_broker_is_away(bundle, streams, broker, tmp_path):
    """The broker goes down before the anomaly and comes back after it: the episode messages published
    meanwhile wait in the client's queue and arrive once it reconnects; scoring never waits."""
    sub = Subscriber(broker.port, "line2")  # persistent session: the broker keeps its messages
    sub.close()
    events = tmp_path / "events.jsonl"
    proc = subprocess.Popen(
        [sys.executable, "-m", "ovdoc", "run", str(bundle), "--source", str(streams["anomalous"]),
         "--realtime", "--headless", "--json", "--events", str(events), "--smooth", "1",
         "--mqtt", f"mqtt://127.0.0.1:{broker.port}/line2"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                encoding="utf-8", errors="replace", cwd=REPO,
    )
    watcher = Subscriber(broker.port, "line2", client_id="test-line2-watch", persistent=False)
    try:
        # Synchronised on real conditions, not on the clock (a busy machine may start ovdoc late): the
        # client has said `online` (so it was connected once) and scoring has begun, then the broker goes
        # down; it comes back only once the episode's end is in the events file, so both episode messages
        # were published while it was away. At 10 FPS the photos are frames 30-44: ~3 s of slack.
        wait_for(lambda: b"online" in watcher.topic("line2/status") and frames_in(events) >= 1, proc,
                 "ovdoc's first online status and first scored frame")
        watcher.close()
        broker.stop()
        assert not episodes_in(events), "the anomaly began before the broker went down"
        wait_for(lambda: len(episodes_in(events)) >= 2, proc, "the episode's end in the events file")
        broker.start()
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err[-2000:]
    summary = json.loads(out)
    assert summary["frames"] == ANOMALY_AT + ANOMALY_LEN + 30
    sub = Subscriber(broker.port, "line2")
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and len(sub.topic("line2/cam0/episode")) < 2:
            time.sleep(0.05)
        received = [json.loads(p) for p in sub.topic("line2/cam0/episode")]
    finally:
        sub.close()
    episodes = episodes_in(events)
    assert len(episodes) >= 2 and received == episodes, summary.get("outputs")
    assert summary["outputs"]["mqtt"]["connects"] >= 2 and summary["outputs"]["mqtt"]["dropped"] == 0


def test_slow_webhook_never_slows_scoring(bundle, streams, tmp_path):
    """The receiver holds its first answer until every frame of the clip is scored: scoring went on while a
    POST was outstanding (its own thread), and the exit still delivered both episode records."""
    hook = Hook(hold=True)
    events = tmp_path / "events.jsonl"
    total = ANOMALY_AT + ANOMALY_LEN + 30
    proc = subprocess.Popen(
        [sys.executable, "-m", "ovdoc", "run", str(bundle), "--source", str(streams["anomalous"]),
         "--webhook", hook.url, "--smooth", "1", "--events", str(events), "--headless", "--json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, encoding="utf-8", errors="replace",
        cwd=REPO,
    )
    try:
        wait_for(lambda: hook.arrived >= 1 and frames_in(events) == total, proc,
                 "the whole clip scored while the first POST is unanswered")
        assert hook.answers == []  # nothing answered yet: the loop did not wait for the receiver
        hook.release.set()
        out, err = proc.communicate(timeout=120)
    finally:
        hook.release.set()
        if proc.poll() is None:
            proc.kill()
        hook.shutdown()
    assert proc.returncode == 0, err[-2000:]
    summary = json.loads(out)
    assert summary["frames"] == total and summary["episodes"] >= 1
    # ... and the exit delivered them (bounded drain); a POST held past the client's 5 s timeout on a very
    # busy machine is retried, so the receiver may see one twice: count distinct records
    delivered = {json.dumps(body, sort_keys=True) for body in hook.bodies}
    assert len(delivered) == 2 * summary["episodes"], hook.bodies


def test_several_sources_share_one_model(bundle, streams, tmp_path):
    events, video = tmp_path / "events.jsonl", tmp_path / "out.avi"
    summary = run_cli(str(bundle), "--source", str(streams["normal"]), "--source", str(streams["anomalous"]),
                      "--events", str(events), "--save-video", str(video), "--smooth", "3")
    per = summary["sources"]
    assert [s["frames"] for s in per] == [60, ANOMALY_AT + ANOMALY_LEN + 30]
    assert summary["frames"] == sum(s["frames"] for s in per)
    assert summary["source"] == [s["source"] for s in per]
    assert per[0]["anomalies"] == 0 and per[1]["anomalies"] >= ANOMALY_LEN // 2
    assert [s["episodes"] for s in per] == [0, 1]
    records = [json.loads(line) for line in events.read_text(encoding="utf-8").splitlines()]
    frames = [r for r in records if "event" not in r]
    by_source = {name: [r["frame"] for r in frames if r["source"] == name] for name in summary["source"]}
    assert by_source[per[0]["source"]] == list(range(60))  # each source complete and in order
    assert by_source[per[1]["source"]] == list(range(ANOMALY_AT + ANOMALY_LEN + 30))
    assert [r["source"] for r in episodes_in(events)] == [per[1]["source"]] * 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["events.jsonl", "out-0.avi", "out-1.avi"]


@pytest.mark.parametrize(("args", "needle"), [
    (["--mqtt", "http://broker"], "--mqtt must look like mqtt://host:1883/prefix"),
    (["--mqtt", "mqtt://broker/a/+"], "may not contain + or #"),
    (["--webhook", "ftp://x/hook"], "--webhook must be an http:// or https:// URL"),
])  # fmt: skip
def test_bad_output_urls_are_one_line(bundle, streams, args, needle):
    proc = ovdoc_cli("run", str(bundle), "--source", str(streams["normal"]), "--headless", *args, cwd=REPO)
    assert proc.returncode != 0
    assert proc.stderr.strip().splitlines() == [f"Error: {proc.stderr.strip().split('Error: ', 1)[1]}"]
    assert needle in proc.stderr
