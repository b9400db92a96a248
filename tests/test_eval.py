"""Evaluation metrics against hand-computed values, and `ovdoc eval`'s clear errors (no TensorFlow)."""

from __future__ import annotations

import numpy as np
import pytest

from ovdoc.runtime.evaluation import EvalResult, auc, image_grid, tpr_at_fpr


def test_metrics_by_hand(tmp_path):
    normal = np.array([0.1, 0.2, 0.3, 0.4, 0.9])
    anomalous = np.array([0.35, 0.5, 0.8, 1.0])
    # pairs (anomalous > normal): 0.35 beats 3, 0.5 beats 4, 0.8 beats 4, 1.0 beats 5 -> 16 of 20
    assert auc(normal, anomalous) == pytest.approx(16 / 20)
    m = EvalResult(normal, anomalous, threshold=0.45).metrics()
    assert m["tpr_at_threshold"] == pytest.approx(3 / 4)
    assert m["fpr_at_threshold"] == pytest.approx(1 / 5)
    assert m["auc"] == pytest.approx(0.8)
    # at FPR 1% of 5 normals the threshold is the largest normal score (0.9): only 1.0 is above it
    assert tpr_at_fpr(normal, anomalous, 0.01) == pytest.approx(1 / 4)
    images = [np.full((28, 28), 30 * i, np.uint8) for i in range(4)]
    path = tmp_path / "grid.png"
    image_grid(images, anomalous, path, n=2, tile=32)
    import cv2

    grid = cv2.imread(str(path))
    assert grid.shape == (2 * (32 + 18), 64, 3)
    assert grid[5, 5, 0] == 90  # top-left: the most anomalous (score 1.0) is image 3
    assert grid[32 + 18 + 5, 5, 0] == 0  # bottom-left: the least anomalous (0.35) is image 0


def test_eval_errors_are_one_line(tmp_path, capsys, fashion_mnist_dir):
    from ovdoc.cli import main

    (tmp_path / "empty").mkdir()
    for argv, expected in (
        (
            ["eval", str(tmp_path / "nothing"), "--normal", str(tmp_path / "empty"), "--anomalous", "x"],
            "no images",
        ),
        (["eval", str(tmp_path), "--normal", "fashion-mnist-test:shoe", "--anomalous", "x"], "unknown"),
    ):
        with pytest.raises(SystemExit) as info:
            main(argv)
        err = capsys.readouterr().err
        assert info.value.code != 0 and err.startswith("Error: ") and expected in err
        assert len(err.strip().splitlines()) == 1


def test_eval_imports_no_tensorflow():
    import subprocess
    import sys

    code = (
        "import sys, ovdoc.commands.evaluate, ovdoc.runtime.evaluation, ovdoc.runtime.datasets; "
        "print(any(m.startswith('tensorflow') for m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
