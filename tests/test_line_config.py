"""A line config (`ovdoc run --config`): per-camera source, name, bundle, threshold, smoothing and --res.

Parsing is checked on its own; the end-to-end test runs the real console script with two real bundles and
checks that every camera is scored by its own bundle — frame for frame the scores a run of that camera
alone gives — and judged by its own threshold.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from _runtime_helpers import error_line, ovdoc_cli

from ovdoc.errors import OvdocError
from ovdoc.runtime.stream.line_config import load_line_config


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_yaml_defaults_camera_overrides_and_paths_relative_to_the_file(tmp_path):
    (tmp_path / "clips").mkdir()
    config = write(tmp_path / "line.yaml", """
bundle: tiles.bundle
res: 640x480
threshold: 5.5
cameras:
  - source: 0
    name: left
  - source: rtsp://127.0.0.1:8554/cam
    threshold: 7
    smooth: 3
  - source: clips/line3.mp4
    bundle: /abs/caps.bundle
    res: 320x240
""")
    line = load_line_config(config, smooth=10, threshold=1.0)
    a, b, c = line.cameras
    assert a.source == "0" and a.name == "left" and a.bundle == str(tmp_path / "tiles.bundle")
    assert (a.res, a.threshold, a.smooth) == ((640, 480), 5.5, 10)  # file's top level beats the CLI's
    assert b.source == "rtsp://127.0.0.1:8554/cam" and (b.threshold, b.smooth) == (7.0, 3)
    assert c.source == str(tmp_path / "clips" / "line3.mp4") and c.bundle == "/abs/caps.bundle"
    assert c.res == (320, 240) and c.name is None
    assert line.bundles == [str(tmp_path / "tiles.bundle"), "/abs/caps.bundle"]
    assert [line.model_of(cam) for cam in line.cameras] == [0, 0, 1]


def test_json_config_and_the_command_lines_defaults(tmp_path):
    config = write(tmp_path / "line.json", json.dumps({"cameras": [{"source": "a.mp4"}, {"source": 1}]}))
    line = load_line_config(config, bundle="/b/x.bundle", res=(800, 600), threshold=2.0)
    assert [c.bundle for c in line.cameras] == ["/b/x.bundle"] * 2
    assert [c.source for c in line.cameras] == [str(tmp_path / "a.mp4"), "1"]
    assert all(c.res == (800, 600) and c.threshold == 2.0 and c.smooth is None for c in line.cameras)


@pytest.mark.parametrize(
    "text, message",
    [
        ("cameras: []", "'cameras' must be a non-empty list"),
        ("camera: [{source: 0}]", "unknown key 'camera'"),
        ("bundle: b\ncameras: [{source: 0, treshold: 3}]", "camera 1: unknown key 'treshold'"),
        ("bundle: b\ncameras: [{name: x}]", "camera 1: 'source' is missing"),
        ("bundle: b\ncameras: [{source: 0, threshold: .nan}]", "threshold must be a finite number"),
        ("bundle: b\ncameras: [{source: 0, threshold: high}]", "threshold must be a finite number"),
        ("bundle: b\ncameras: [{source: 0, smooth: 0}]", "smooth must be a whole number"),
        ("bundle: b\ncameras: [{source: 0, res: big}]", "res must look like 640x480"),
        ("cameras: [{source: 0}]", "camera 1: no bundle"),
        ("bundle: b\ncameras: [{source: 0, name: a}, {source: 1, name: a}]", "two cameras are named 'a'"),
        ("bundle: b\ncameras: [{source: 0\n", "not valid YAML"),
        ("- just a list", "a mapping with a 'cameras' list"),
    ],
)
def test_mistakes_are_one_line_naming_the_camera_and_key(tmp_path, text, message):
    config = write(tmp_path / "line.yaml", text)
    with pytest.raises(OvdocError, match=message.replace(".", r"\.").replace("(", r"\(")):
        load_line_config(config)


@pytest.mark.slow
def test_cli_refuses_a_bad_config_in_one_line_before_loading_a_model(tmp_path):
    config = write(tmp_path / "line.yaml", "cameras: [{source: 0, bundle: b, threshold: 'x'}]")
    proc = ovdoc_cli("run", "--config", str(config), "--headless")
    assert proc.returncode != 0
    assert "camera 1: threshold must be a finite number" in error_line(proc)
    proc = ovdoc_cli("run", "--config", str(config), "--source", "0", "--headless")
    assert proc.returncode != 0 and "not both" in error_line(proc)
    proc = ovdoc_cli("run", "--config", str(tmp_path / "absent.yaml"), "--headless")
    assert proc.returncode != 0 and "cannot read the line config" in error_line(proc)


def frame_scores(events: Path) -> dict[str, list[tuple[int, float, bool]]]:
    out: dict[str, list[tuple[int, float, bool]]] = {}
    for line in events.read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        if "frame" in record and "score" in record and "event" not in record:
            out.setdefault(record.get("source", "?"), []).append(
                (record["frame"], record["score"], record["anomalous"])
            )
    return out


@pytest.mark.slow
def test_two_bundles_in_one_process_each_camera_scored_by_its_own(tmp_path, bundle, streams):
    """Tiles camera on the tiles bundle with its own low threshold, the demo clip on the demo bundle:
    the scores equal a run of each camera alone with its bundle, and the decisions follow each
    camera's own threshold."""
    from ovdoc.irmodels import demo_bundle, demo_stream

    config = write(tmp_path / "line.yaml", f"""
cameras:
  - source: {streams['anomalous']}
    bundle: {bundle}
    name: tiles
    threshold: -1.0e9
  - source: {demo_stream()}
    bundle: {demo_bundle()}
    name: demo
    smooth: 3
""")
    events = tmp_path / "line.jsonl"
    proc = ovdoc_cli("run", "--config", str(config), "--headless", "--json", "--events", str(events),
                     timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    summary = json.loads(proc.stdout)
    assert summary["bundles"] == [str(bundle), str(demo_bundle())]
    assert [s["source"] for s in summary["sources"]] == ["tiles", "demo"]
    assert [s["threshold"] for s in summary["sources"]][0] == -1.0e9
    assert summary["sources"][1]["smooth"] == 3
    together = frame_scores(events)

    alone = {}
    for name, (src, bdl) in {"tiles": (streams["anomalous"], bundle),
                             "demo": (demo_stream(), demo_bundle())}.items():
        own = tmp_path / f"{name}.jsonl"
        proc = ovdoc_cli("run", str(bdl), "--source", str(src), "--headless", "--events", str(own),
                         "--smooth", "3", timeout=300)
        assert proc.returncode == 0, proc.stderr[-2000:]
        alone[name] = frame_scores(own)["?"]
    for name in ("tiles", "demo"):
        got = together[name]
        assert [f for f, _, _ in got] == [f for f, _, _ in alone[name]]  # every frame, in order
        assert [s for _, s, _ in got] == pytest.approx([s for _, s, _ in alone[name]], rel=1e-4)
    assert all(anomalous for _, _, anomalous in together["tiles"])  # its own threshold: -1e9
    demo_flags = [a for _, _, a in together["demo"]]
    assert demo_flags == [a for _, _, a in alone["demo"]]  # the demo bundle's own threshold, smooth 3
    assert 0 < sum(demo_flags) < len(demo_flags)
