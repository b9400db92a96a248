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
