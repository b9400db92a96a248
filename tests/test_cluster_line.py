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
from _webhook import Hook
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


def test_grouping_rule():
    """Same bundle and same label share an actor, as many as fit the biggest node that carries the label
    at --ray-cpus each; another bundle or label is another actor."""
    from ovdoc.cluster.line import plan_groups
    from ovdoc.runtime.stream.line_config import CameraSpec

    def specs(*cams):
        return [CameraSpec(source=str(i), bundle=b, node=n) for i, (b, n) in enumerate(cams)]

    nodes = [{"CPU": 4.0, "hall-1": 1000.0}, {"CPU": 8.0, "hall-2": 1000.0}, {"CPU": 2.0}, {"CPU": 0.0}]
    line = specs(("x", "hall-1"), ("x", "hall-1"), ("y", "hall-1"), ("x", "hall-2"), ("x", "hall-1"))
    assert plan_groups(line, 1.0, nodes) == [[0, 1, 4], [2], [3]]
    assert plan_groups(line, 2.0, nodes) == [[0, 1], [2], [3], [4]]  # hall-1's 4 CPUs hold two at 2 each
    assert plan_groups(specs(*[("x", None)] * 20), 1.0, nodes) == [list(range(8)), list(range(8, 16)),
                                                                    list(range(16, 20))]  # the 8-CPU node
    assert plan_groups(specs(("x", None), ("x", None)), 16.0, nodes) == [[0], [1]]  # none fits: alone


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


def _first_jpeg(url: str) -> bytes:
    """The first picture of the web view's MJPEG stream of one camera."""
    import urllib.request

    with urllib.request.urlopen(url, timeout=30) as response:
        data = b""
        while b"\xff\xd9" not in data.partition(b"\r\n\r\n")[2]:
            chunk = response.read1(65536)
            assert chunk, "the stream ended before a picture"
            data += chunk
    body = data.partition(b"\r\n\r\n")[2]
    return body[: body.index(b"\xff\xd9") + 2]


def test_cameras_sharing_a_bundle_share_an_actor(line_cluster, tmp_path):
    """Two cameras of one bundle on hall-1 run in one actor (one compile, both cameras' events); the web
    view's picture of a camera is a real frame from its node; the webhook gets every episode of both;
    a bundle replaced on disk and the web view's reload button both reach the node."""
    import shutil
    import urllib.request

    import cv2
    import numpy as np

    from ovdoc.cluster.line import run_line
    from ovdoc.runtime.bundle import save_threshold
    from ovdoc.runtime.stream.line_config import load_line_config

    bundle, stream = _demo()
    own = tmp_path / "own.bundle"
    shutil.copytree(bundle, own)
    config = tmp_path / "line.json"
    config.write_text(json.dumps({"bundle": str(own), "res": "288x192", "cameras": [
        {"source": str(stream), "name": "a", "node": "hall-1"},
        {"source": str(stream), "name": "b", "node": "hall-1"}]}))
    events = tmp_path / "events.jsonl"
    cluster, nodes = line_cluster
    hook = Hook()
    started: list = []
    result: dict = {}

    def drive() -> None:
        try:
            result["summary"] = run_line(cluster.address, load_line_config(config),
                                         {"events": str(events), "realtime": True, "smooth": 3},
                                         {"serve": "127.0.0.1:0", "webhook": hook.url}, cpus=0.5,
                                         on_start=started.append)
        except BaseException as exc:  # surfaced below
            result["error"] = exc

    thread = threading.Thread(target=drive, daemon=True)
    thread.start()
    try:
        scored = lambda name: any(r.get("source") == name and "score" in r  # noqa: E731
                                  for r in _records(events))
        _wait(lambda: started and scored("a") and scored("b"), thread, result, "frames of both")
        api = f"http://127.0.0.1:{started[0].web.port}"
        cams = _http(f"{api}/api/status")["cameras"]
        assert cams[0]["actor"] == cams[1]["actor"] and cams[0]["actor_cameras"] == 2
        assert cams[0]["compiles"] == 1 and cams[0]["node_id"] == nodes[0].node_id
        assert cams[0]["threads"] == 1  # 2 x 0.5 CPU: OpenVINO limited to one thread (this box has two)
        assert cams[0]["pinned"] is False  # actors share nodes: pinned, each would sit on the first core
        assert started[0].status()[0]["pid"] == started[0].status()[1]["pid"]  # one process, one compile
        # the live picture: a real frame of camera b, at its --res (not the driver's 320x240 placeholder),
    # drawn on hall-1's node
        picture = cv2.imdecode(np.frombuffer(_first_jpeg(f"{api}/stream/1"), np.uint8), cv2.IMREAD_COLOR)
        assert picture is not None and picture.shape == (192, 288, 3)
        assert float(picture.std()) > 20  # a scene, not the flat placeholder
        # hot reload 1: the bundle replaced on disk (a new threshold, re-hashed) is seen by the node
        save_threshold(own, 9.5, by="test")
        reloaded = lambda by: {r["source"] for r in _records(events)  # noqa: E731
                               if r.get("event") == "bundle_reloaded" and r["by"] == by}
        _wait(lambda: reloaded("bundle changed on disk") == {"a", "b"}, thread, result, "reload from disk")
        assert all(r["threshold"] == 9.5 for r in _records(events) if r.get("event") == "bundle_reloaded")
        # hot reload 2: the web view's button
        request = urllib.request.Request(f"{api}/api/reload", data=b"{}", method="POST")
        urllib.request.urlopen(request, timeout=10).read()
        _wait(lambda: reloaded("web") == {"a", "b"}, thread, result, "reload from the web view")
        thread.join(TIMEOUT_S)
        assert not thread.is_alive() and "error" not in result, result
    finally:
        hook.shutdown()
    summary = result["summary"]
    assert summary["actors"] == 1 and summary["cameras"][0]["compiles"] == 3  # the first, and two reloads
    records = _records(events)
    for name in ("a", "b"):
        frames = [r["frame"] for r in records if r.get("source") == name and "event" not in r]
        assert frames == list(range(249)), name
        sent = [b for b in hook.bodies if b.get("source") == name]
        starts = [b["episode"] for b in sent if b["event"] == "anomaly_start"]
        ends = [b for b in sent if b["event"] == "anomaly_end"]
        assert starts and sorted(starts) == sorted(b["episode"] for b in ends), name
        assert all(b["snapshot_jpeg"] for b in ends)  # each end's peak frame, from the node


def test_a_moved_actor_resumes_each_camera_where_it_was(line_cluster):
    """What a replacement actor does with its cameras' last delivered frames (run here, in-process): a
    file that had already ended has nothing left (not a failure), another resumes after its frame and
    plays what is left of --max-frames."""
    from ovdoc.cluster.camera import CameraActor

    bundle, stream = _demo()
    cameras = [{"source": str(stream), "bundle": str(bundle), "name": name} for name in ("done", "half")]
    # with --max-frames 20 ("done" had all 20), and without (the clip's end: "done" had its last frame)
    for max_frames, resume, wanted in ((20, [19, 10], range(11, 20)), (None, [248, 240], range(241, 249))):
        actor = CameraActor(cameras, {"max_frames": max_frames, "smooth": 3, "cpus": 1})
        actor.start(resume)
        deadline = time.monotonic() + 60
        while not actor.poll(0)["done"]:
            assert time.monotonic() < deadline, "the actor's loop did not end"
            time.sleep(0.05)
        reply = actor.poll(0)
        assert reply["error"] is None and reply["stopped"] in ("end", "max_frames"), reply["error"]
        frames = [(r["camera"], r["frame"]) for _, r in reply["records"] if r["kind"] == "frame"]
        assert frames == [(1, i) for i in wanted]


def test_a_removed_node_moves_its_cameras(line_cluster, tmp_path):
    """Two cameras in one actor (0.5 CPU each, no label) on a node that is removed mid-episode: the actor
    moves whole, each camera resumes after its own last frame. Also the driver's web view: /api/status
    names the node, its threshold slider reaches the node. Runs last in this file: it removes a node of
    the module's cluster."""
    from ovdoc.cluster.line import run_line
    from ovdoc.runtime.stream.line_config import load_line_config

    config = _line(tmp_path, [{"name": "belt"}, {"name": "dock"}])
    line = load_line_config(config)
    events = tmp_path / "events.jsonl"
    cluster, nodes = line_cluster
    started: list = []
    result: dict = {}

    def drive() -> None:
        try:
            result["summary"] = run_line(cluster.address, line, {"events": str(events), "realtime": True,
                                                                 "smooth": 3},
                                         {"serve": "127.0.0.1:0"}, cpus=0.5,
                                         on_start=started.append)
        except BaseException as exc:  # surfaced below
            result["error"] = exc

    thread = threading.Thread(target=drive, daemon=True)
    thread.start()
    _wait(lambda: started and any("score" in r for r in _records(events)), thread, result, "frames")
    api = f"http://127.0.0.1:{started[0].web.port}/api"
    first = started[0].status()[0]["node_id"]
    status = _http(f"{api}/status")["cameras"]
    assert [c["node_id"] for c in status] == [first, first] and status[0]["actor_cameras"] == 2
    _http(f"{api}/threshold", {"camera": 1, "value": 7.0})  # applied by the loop on the node, to dock only
    _wait(lambda: any(r.get("event") == "threshold_changed" and r["threshold"] == 7.0
                      for r in _records(events)), thread, result, "threshold")
    changed = [r for r in _records(events) if r.get("event") == "threshold_changed"]
    assert [r["source"] for r in changed] == ["dock"]
    # the demo clip's longest episode (frames 132-152 at 15 FPS, 1.3 s) has started: the node dies
    # with an episode open
    _wait(lambda: {r["source"] for r in _records(events) if r.get("event") == "anomaly_start"
                   and r["frame"] >= LONG_EPISODE[0]} == {"belt", "dock"}, thread, result, "episode")
    victim = next(n for n in nodes if n.node_id == first)
    cluster.remove_node(victim, allow_graceful=False)
    _wait(lambda: sum(r.get("event") == "camera_moved" for r in _records(events)) == 2, thread, result,
          "moved")
    now = _http(f"{api}/status")["cameras"]
    assert all(c["node_id"] != first and c["moves"] == 1 for c in now)
    thread.join(TIMEOUT_S)
    assert not thread.is_alive() and "error" not in result, result
    records = _records(events)
    for name in ("belt", "dock"):
        mine = [r for r in records if r.get("source") == name]
        moved = [r for r in mine if r.get("event") == "camera_moved"]
        assert len(moved) == 1 and moved[0]["from_node"] == first and moved[0]["to_node"] != first
        assert moved[0]["down_s"] < 90
        frames = [r["frame"] for r in mine if "score" in r and "event" not in r]
        assert frames == list(range(249)), name  # every frame of the clip once, in order, over two nodes
        starts = [r["episode"] for r in mine if r.get("event") == "anomaly_start"]
        ends = [r["episode"] for r in mine if r.get("event") == "anomaly_end"]
        assert starts and sorted(starts) == sorted(ends) == list(range(1, len(starts) + 1)), name
        interrupted = [r for r in mine if r.get("interrupted") == "camera_moved"]
        if moved[0]["resumed_after_frame"] < LONG_EPISODE[1]:  # the node died inside the episode (usual)
            assert len(interrupted) == 1 and interrupted[0]["frame"] == moved[0]["resumed_after_frame"]
            # the replacement's episode (if the anomaly is still on screen) has the next number
            assert all(r["episode"] > interrupted[0]["episode"] for r in mine
                       if r.get("event") == "anomaly_start" and r["frame"] > interrupted[0]["frame"])
        else:
            assert not interrupted
    summary = result["summary"]
    assert summary["moved"] == 1 and summary["actors"] == 1  # one actor moved, with both cameras
    assert all(c["moves"] == 1 for c in summary["cameras"])
