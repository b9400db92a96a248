"""`ovdoc run --config line.yaml --ray`: a line's cameras as actors on a real 3-node Ray cluster started
here (head + two 1-CPU workers, labelled hall-1 / hall-2): events from every camera in the driver's one
events file, labels honoured; a worker removed mid-run and its camera resumed on the other node with a
camera_moved event, every frame delivered once and every episode started and ended exactly once."""

from __future__ import annotations

import json
import os
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import pytest
from conftest import missing, need_package

TIMEOUT_S = 180
FRAMES = 90  # of the demo clip: its first anomaly is at frames 60-68
LONG_EPISODE = (130, 152)  # frames of the demo clip's longest anomaly


def _records(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip().endswith("}")]


def _demo() -> tuple[Path, Path]:
    from ovdoc.irmodels import demo_bundle, demo_stream

    return Path(demo_bundle()), Path(demo_stream())


def _line(tmp_path: Path, cameras: list[dict]) -> Path:
    bundle, stream = _demo()
    config = tmp_path / "line.json"
    config.write_text(json.dumps({"bundle": str(bundle),
                                  "cameras": [{"source": str(stream)} | c for c in cameras]}))
    return config


@pytest.fixture(scope="module")
def line_cluster():
    """One cluster for this file (its last test removes a node)."""
    from _cluster import local_cluster

    with local_cluster(workers=2, resources=[{"hall-1": 1}, {"hall-2": 1}]) as (cluster, nodes):
        yield cluster, nodes


@contextmanager
def _mqtt(tmp_path: Path):
    """Debian's real mosquitto on a free loopback port, and a subscriber collecting line/#."""
    import shutil
    import socket
    import subprocess

    mosquitto = shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists()
                                             else None)
    if mosquitto is None:
        missing("the cluster's MQTT check needs Debian's mosquitto (apt-get install mosquitto)")
    mqtt = need_package("paho.mqtt.client", "the MQTT output")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    conf = tmp_path / "mosquitto.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\n"
                    + ("user root\n" if os.geteuid() == 0 else ""))
    broker = subprocess.Popen([mosquitto, "-c", str(conf)], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    messages: list[tuple[str, bytes]] = []
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="cluster-test")
    client.on_message = lambda c, u, m: messages.append((m.topic, m.payload))
    try:
        deadline = time.monotonic() + 10
        while True:  # the broker takes a moment to listen
            try:
                client.connect("127.0.0.1", port)
                break
            except OSError:
                assert time.monotonic() < deadline, "mosquitto did not start"
                time.sleep(0.05)
        client.subscribe("line/#", qos=1)
        client.loop_start()
        yield port, messages
    finally:
        client.loop_stop()
        client.disconnect()
        broker.terminate()
        broker.wait(10)


def test_three_cameras_over_two_nodes(line_cluster, tmp_path, capsys):
    """Also MQTT from the driver: every camera's scores and episodes, an episode's snapshot from its node."""
    from ovdoc.cli import main

    config = _line(tmp_path, [{"name": "left", "node": "hall-1"}, {"name": "right", "node": "hall-2"},
                              {"name": "any"}])
    events = tmp_path / "events.jsonl"
    cluster, nodes = line_cluster
    with _mqtt(tmp_path) as (port, messages):
        with pytest.raises(SystemExit) as info:
            main(["run", "--config", str(config), "--ray", cluster.address, "--ray-cpus", "0.5", "--headless",
                  "--max-frames", str(FRAMES), "--events", str(events), "--json", "--smooth", "3",
                  "--mqtt", f"mqtt://127.0.0.1:{port}/line", "--mqtt-interval", "0.01"])
        topics = lambda: {topic for topic, _ in messages}  # noqa: E731
        wanted = {f"line/cam{i}/{kind}" for i in range(3) for kind in ("score", "episode", "snapshot")}
        deadline = time.monotonic() + 10
        while not wanted <= topics() and time.monotonic() < deadline:  # QoS 1 messages still arriving
            time.sleep(0.05)
    assert wanted <= topics(), sorted(topics())
    snapshot = next(payload for topic, payload in messages if topic == "line/cam1/snapshot")
    assert snapshot[:2] == b"\xff\xd8"  # a JPEG, made on the node that saw the episode
    out = capsys.readouterr().out
    assert info.value.code == 0, out
    summary = json.loads(out)  # stdout is the JSON alone
    by_name = {c["name"]: c for c in summary["cameras"]}
    assert by_name["left"]["node_id"] == nodes[0].node_id
    assert by_name["right"]["node_id"] == nodes[1].node_id
    assert by_name["any"]["node_id"] in {n.node_id for n in nodes}
    assert all(c["frames"] == FRAMES and c["episodes"] >= 1 for c in summary["cameras"])
    assert len(summary["nodes"]) == 2
    # the labels are checked before anything starts: a label no node has is one line
    bad = _line(tmp_path, [{"name": "far", "node": "hall-9"}])
    with pytest.raises(SystemExit) as info:
        main(["run", "--config", str(bad), "--ray", cluster.address, "--headless"])
    assert info.value.code != 0 and "hall-9" in capsys.readouterr().err
    frames = [r for r in _records(events) if "score" in r and "event" not in r]
    for name in ("left", "right", "any"):
        mine = [r["frame"] for r in frames if r["source"] == name]
        assert mine == list(range(FRAMES)), name


def _http(url: str, body: dict | None = None) -> dict:
    import urllib.request

    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def _wait(condition, thread, result, what: str) -> None:
    deadline = time.monotonic() + TIMEOUT_S
    while not condition():
        assert time.monotonic() < deadline and thread.is_alive(), (what, result)
        time.sleep(0.05)


def test_a_removed_node_moves_its_camera(line_cluster, tmp_path):
    """Also the driver's web view: /api/status names the node, its threshold slider reaches the node.
    Runs last in this file: it removes a node of the module's cluster."""
    from ovdoc.cluster.line import run_line
    from ovdoc.runtime.stream.line_config import load_line_config

    config = _line(tmp_path, [{"name": "belt"}])
    line = load_line_config(config)
    events = tmp_path / "events.jsonl"
    cluster, nodes = line_cluster
    started: list = []
    result: dict = {}

    def drive() -> None:
        try:
            result["summary"] = run_line(cluster.address, line, {"events": str(events), "realtime": True,
                                                                 "smooth": 3},
                                         {"serve": "127.0.0.1:0"}, cpus=1,
                                         on_start=started.append)
        except BaseException as exc:  # surfaced below
            result["error"] = exc

    thread = threading.Thread(target=drive, daemon=True)
    thread.start()
    _wait(lambda: started and any("score" in r for r in _records(events)), thread, result, "frames")
    api = f"http://127.0.0.1:{started[0].web.port}/api"
    first = started[0].status()[0]["node_id"]
    assert _http(f"{api}/status")["cameras"][0]["node_id"] == first
    _http(f"{api}/threshold", {"camera": 0, "value": 7.0})  # applied by the loop on the node
    _wait(lambda: any(r.get("event") == "threshold_changed" and r["threshold"] == 7.0
                      for r in _records(events)), thread, result, "threshold")
    # the demo clip's longest episode (frames 132-152 at 15 FPS, 1.3 s) has started: the node dies
    # with an episode open
    _wait(lambda: any(r.get("event") == "anomaly_start" and r["frame"] >= LONG_EPISODE[0]
                      for r in _records(events)), thread, result, "episode")
    victim = next(n for n in nodes if n.node_id == first)
    cluster.remove_node(victim, allow_graceful=False)
    _wait(lambda: any(r.get("event") == "camera_moved" for r in _records(events)), thread, result,
          "moved")
    now = _http(f"{api}/status")["cameras"][0]
    assert now["node_id"] != first and now["moves"] == 1
    thread.join(TIMEOUT_S)
    assert not thread.is_alive() and "error" not in result, result
    records = _records(events)
    moved = [r for r in records if r.get("event") == "camera_moved"]
    assert len(moved) == 1 and moved[0]["from_node"] == first and moved[0]["to_node"] != first
    assert moved[0]["down_s"] < 90
    frames = [r["frame"] for r in records if "score" in r and "event" not in r]
    assert frames == list(range(249))  # every frame of the clip once, in order, across the two nodes
    starts = [r["episode"] for r in records if r.get("event") == "anomaly_start"]
    ends = [r["episode"] for r in records if r.get("event") == "anomaly_end"]
    assert starts and sorted(starts) == sorted(ends) == list(range(1, len(starts) + 1))
    interrupted = [r for r in records if r.get("interrupted") == "camera_moved"]
    if moved[0]["resumed_after_frame"] < LONG_EPISODE[1]:  # the node died inside the episode (the usual case)
        assert len(interrupted) == 1 and interrupted[0]["frame"] == moved[0]["resumed_after_frame"]
        # the replacement's episode (if the anomaly is still on screen) has the next number, not the same
        assert all(r["episode"] > interrupted[0]["episode"] for r in records
                   if r.get("event") == "anomaly_start" and r["frame"] > interrupted[0]["frame"])
    else:
        assert not interrupted
    summary = result["summary"]
    assert summary["moved"] == 1 and summary["cameras"][0]["moves"] == 1
