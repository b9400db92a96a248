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
