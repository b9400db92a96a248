"""What a new user trips over in the first hour: one clear line for a missing extra, consistent help."""

from __future__ import annotations

from test_boundary import FORBIDDEN, run_blocked


def test_convert_onnx_without_the_onnx_package_names_the_extra(seed_dir, tmp_path):
    """Runtime-only install (no onnx, no TensorFlow): a real ONNX file is one line naming what to install."""
    model = seed_dir / "onnx" / "weights.onnx"
    proc = run_blocked("convert", str(model), "--out", str(tmp_path / "ir"),
                       blocked=tuple(b for b in FORBIDDEN if not b.startswith("ovdoc")))
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("Error: ") and "onnx package" in lines[0] and "ovdoc[train]" in lines[0]
    assert "ModuleNotFoundError" not in lines[0]
    assert not (tmp_path / "ir").exists()


def test_eval_help_names_the_default_calibration_not_leave_one_out():
    from click.testing import CliRunner

    from ovdoc.cli import cli

    text = " ".join(CliRunner().invoke(cli, ["eval", "--help"]).output.split())
    assert "leave-one-out" not in text and "held-out groups or blocks" in text


def test_every_size_option_is_width_by_height():
    """--size (fit, convert) and --res (run, bench): one convention, WxH, in the help."""
    from ovdoc.cli import COMMANDS, cli

    seen = []
    for verb in COMMANDS:
        command = cli.get_command(None, verb)
        for param in command.params:
            if {"--size", "--res"} & set(param.opts) and param.type.name != "integer range":
                seen.append(f"{verb} {param.opts[0]}")
                assert "WxH" in (param.metavar or "") + (param.help or ""), (verb, param.opts, param.help)
    assert {"fit --size", "convert --size", "run --res", "bench --res"} <= set(seen), seen


def test_convert_size_reads_width_by_height_and_says_so(capsys):
    from ovdoc.commands.convert import _size

    assert _size("128x96") == (96, 128)  # (height, width) for the spec: 128 wide, 96 high
    assert "width 128, height 96" in capsys.readouterr().err
    assert _size("64") == (64, 64) and _size(None) is None
    import click
    import pytest

    with pytest.raises(click.BadParameter, match="WxH"):
        _size("64x")


def test_line_config_with_a_missing_bundle_names_the_camera_and_nothing_else(tmp_path, bundle):
    """One line naming camera and bundle; `no display found` is not printed before it (no --headless)."""
    import os
    import subprocess
    import sys

    config = tmp_path / "line.yaml"
    config.write_text(f"bundle: {bundle}\ncameras:\n  - source: a.avi\n    name: left belt\n"
                      "  - source: b.avi\n    name: right belt\n    bundle: caps.bundle\n")
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    proc = subprocess.run([sys.executable, "-m", "ovdoc", "run", "--config", str(config)],
                          capture_output=True, text=True, encoding="utf-8", errors="replace", timeout=120,
                          env=env)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode != 0 and len(lines) == 1, proc.stderr
    assert lines[0] == f"Error: {config}: camera 2 (right belt): bundle not found: {tmp_path / 'caps.bundle'}"


def test_no_display_line_is_not_printed_before_an_unrelated_error(tmp_path, bundle):
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    for args, expected in ((["--source", str(tmp_path / "missing.avi")], "missing.avi"),
                           (["--source", str(tmp_path), "--mqtt", "http://x"], "--mqtt"),
                           (["--source", str(tmp_path), "--device", "NPU9"], "NPU9")):
        proc = subprocess.run([sys.executable, "-m", "ovdoc", "run", str(bundle), *args], capture_output=True,
                              text=True, encoding="utf-8", errors="replace", timeout=120, env=env)
        lines = [line for line in proc.stderr.splitlines() if line.strip()]
        assert proc.returncode != 0 and len(lines) == 1 and expected in lines[0], proc.stderr


def test_patch_overlay_on_an_unlike_scene_is_capped_and_has_a_legend(video_dir):
    """A street under a tile bundle is 'hot' everywhere: at most HEAT_MAX_COVER of the frame is painted,
    so the picture stays visible, and a legend says what the colours mean and that it was capped."""
    import cv2
    import numpy as np

    from ovdoc.runtime.stream.display import HEAT_MAX_COVER, overlay_heatmap

    cap = cv2.VideoCapture(str(video_dir / "vtest.avi"))
    ok, frame = cap.read()
    cap.release()
    assert ok
    h, w = frame.shape[:2]
    rng = np.random.default_rng(0)
    hot_everywhere = cv2.GaussianBlur(rng.random((h, w)).astype(np.float32), (0, 0), 9) + 2.0  # >= 2x thr
    out = overlay_heatmap(frame, hot_everywhere, threshold=1.0)
    changed = np.abs(out.astype(int) - frame.astype(int)).max(axis=2) > 0
    legend = np.zeros_like(changed)
    legend[:60, w // 2:] = True  # the legend's corner
    assert changed[~legend].mean() <= HEAT_MAX_COVER + 0.01
    assert changed[legend].mean() > 0.2  # the colour bar and its caption are drawn
    # a small hot spot is not capped: all of it is painted
    spot = np.zeros((h, w), np.float32)
    spot[200:260, 300:400] = 1.5
    out = overlay_heatmap(frame, spot, threshold=1.0)
    diff = np.abs(out[200:260, 300:400].astype(int) - frame[200:260, 300:400].astype(int))
    assert (diff.max(axis=2) > 0).all()


def test_a_looping_file_is_not_a_source_incident(bundle, streams, tmp_path):
    import json
    import subprocess
    import sys

    events = tmp_path / "events.jsonl"
    proc = subprocess.run([sys.executable, "-m", "ovdoc", "run", str(bundle), "--source",
                           str(streams["normal"]), "--loop", "--max-frames", "130", "--headless", "--json",
                           "--events", str(events)],
                          capture_output=True, text=True, encoding="utf-8", errors="replace", timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    summary = json.loads(proc.stdout)
    assert summary["frames"] == 130 and summary["loops"] == 2 and summary["source_incidents"] == 0
    records = [json.loads(line) for line in events.read_text(encoding="utf-8").splitlines()]
    assert sum(r.get("event") == "source_looped" for r in records) == 2  # still recorded
