"""The output registry: one declaration per output, read by `ovdoc run`, the line config and the web view."""

from __future__ import annotations

import json
import urllib.request

import pytest
from _cli import error_line, free_port, ovdoc_cli, start_ovdoc, stop_ovdoc, wait_for

from ovdoc.errors import OvdocError
from ovdoc.runtime.stream import output_registry
from ovdoc.runtime.stream.line_config import load_line_config


def test_every_option_has_one_owner_and_a_default():
    flags = [option.flag for option in output_registry.options()]
    assert len(flags) == len(set(flags))
    names = [output.name for output in output_registry.OUTPUTS]
    assert names[:3] == ["events", "window", "video"]  # sink order: the events line before any message
    assert {"mqtt", "webhook", "web", "opcua"} <= set(names)
    values = output_registry.resolve()
    assert values["mqtt_interval"] == 1.0 and values["webhook_timeout"] == 5.0 and values["mqtt"] is None
    assert output_registry.active(values) == []


def test_layers_later_win_and_none_means_not_given():
    values = output_registry.resolve({"mqtt": "mqtt://a/x", "mqtt_interval": 3.0},
                                     {"mqtt": "mqtt://b/y", "mqtt_interval": None})
    assert values["mqtt"] == "mqtt://b/y" and values["mqtt_interval"] == 3.0
    assert [output.name for output in output_registry.active(values)] == ["mqtt"]


def test_checks_refuse_bad_values_with_one_line():
    with pytest.raises(OvdocError, match="--mqtt must look like"):
        output_registry.check(output_registry.resolve({"mqtt": "http://broker"}))
    with pytest.raises(OvdocError, match="--webhook must be an http"):
        output_registry.check(output_registry.resolve({"webhook": "ftp://x"}))
    with pytest.raises(OvdocError, match="needs a token|reachable from other machines"):
        output_registry.check(output_registry.resolve({"serve": "0.0.0.0:8080"}))


def test_line_config_outputs_section(tmp_path):
    config = tmp_path / "line.yaml"
    config.write_text("bundle: b.bundle\ncameras: [{source: 0}]\n"
                      "outputs:\n  mqtt: mqtt://broker:1883/line1\n  mqtt_interval: 2\n  events: ev.jsonl\n")
    line = load_line_config(config)
    assert line.outputs == {"mqtt": "mqtt://broker:1883/line1", "mqtt_interval": 2.0,
                            "events": str(tmp_path.resolve() / "ev.jsonl")}  # relative to the config


@pytest.mark.slow
@pytest.mark.parametrize(
    ("outputs", "says"),
    [
        ("  mqtt_intervall: 2\n", "unknown output option 'mqtt_intervall'"),
        ("  mqtt-interval: fast\n", "outputs.mqtt-interval must be a number"),
        ("  mqtt-interval: 0\n", "outputs.mqtt-interval must be in"),
        ("  serve: [1, 2]\n", "outputs.serve must be a text"),
    ],
)
def test_line_config_outputs_mistakes_are_one_line(tmp_path, outputs, says):
    config = tmp_path / "line.yaml"
    config.write_text("bundle: b.bundle\ncameras: [{source: 0}]\noutputs:\n" + outputs)
    with pytest.raises(OvdocError, match=says):
        load_line_config(config)
    proc = ovdoc_cli("run", "--config", str(config), "--headless", timeout=60)
    assert proc.returncode != 0 and says in error_line(proc)


@pytest.mark.slow
def test_a_line_configs_outputs_reach_the_run_and_the_web_view(tmp_path):
    """`outputs:` in the file turns on the events file and the web view; /api/status lists what is on;
    a command-line option wins over the file's."""
    from ovdoc.irmodels import demo_bundle, demo_stream

    port = free_port()
    config = tmp_path / "line.yaml"
    config.write_text(json.dumps({
        "bundle": str(demo_bundle()),
        "cameras": [{"source": str(demo_stream()), "name": "demo"}],
        "outputs": {"events": "from-file.jsonl", "serve": "127.0.0.1:1"},  # the port is overridden below
    }))
    proc = start_ovdoc("run", "--config", str(config), "--headless", "--json", "--loop", "--duration", "300",
                       "--serve", f"127.0.0.1:{port}")
    try:
        def status() -> dict:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/status", timeout=5) as answer:
                data = json.loads(answer.read())
            return data if data["cameras"][0]["frames"] > 0 else None

        data = wait_for(status, timeout=120, what="the web view to serve scored frames")
    finally:
        summary, _ = stop_ovdoc(proc)
    assert data["outputs"] == ["events", "web"]
    assert summary["events_file"] == str(tmp_path.resolve() / "from-file.jsonl")
    lines = (tmp_path / "from-file.jsonl").read_text().splitlines()
    assert len(lines) >= data["cameras"][0]["frames"] > 0
    assert summary["outputs"]["web"]["url"] == f"http://127.0.0.1:{port}/"
