"""ArcFace training: the margin arithmetic, training on real data, `ovdoc train --method arcface`."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from _runtime_helpers import error_line, ovdoc_cli
from conftest import need_package


@pytest.fixture(autouse=True, scope="module")
def _needs_tensorflow():
    """Asked when a test runs, not when the file is collected: `pytest -m "not slow"` never imports TF."""
    need_package("tensorflow", "TensorFlow (host side: pip install -e '.[train]')")


@pytest.mark.slow
def test_arcface_logits_match_the_formula_and_guard_past_pi():
    from ovdoc.host.train.arcface import arcface_logits, arcface_logits_numpy

    rng = np.random.default_rng(0)
    z = rng.normal(size=(8, 5)).astype(np.float32)
    w = rng.normal(size=(5, 4)).astype(np.float32)
    y = np.array([0, 1, 2, 3, 0, 1, 2, 3])
    w[:, 0] = -z[0] + 0.01  # the first sample's class points (almost) away from it: theta + m > pi
    got = np.asarray(arcface_logits(z, w, y, 16.0, 0.5))
    np.testing.assert_allclose(got, arcface_logits_numpy(z, w, y, 16.0, 0.5), atol=2e-4)
    # by hand for one entry: the true class gets cos(theta + m), the others plain cos(theta)
    zn, wn = z[1] / np.linalg.norm(z[1]), w / np.linalg.norm(w, axis=0)
    theta = math.acos(float(zn @ wn[:, 1]))
    assert got[1, 1] == pytest.approx(16.0 * math.cos(theta + 0.5), abs=1e-3)
    assert got[1, 0] == pytest.approx(16.0 * float(zn @ wn[:, 0]), abs=1e-3)
    # past pi - m the margin is linear, so the true-class logit keeps falling as theta grows
    assert got[0, 0] < 16.0 * (-1.0 + 0.1)


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["own-class", "vs-reference"])
def test_arcface_training_learns_a_unit_embedding(mode, fashion_mnist_dir, mobilenet_pth):
    from test_train import _fmnist

    from ovdoc.host.train.doc import TrainConfig
    from ovdoc.host.train.methods import train_model

    target = _fmnist("fashion-mnist:sneaker", 96)
    reference = _fmnist("fashion-mnist:trouser,bag,sandal", 96, labelled=True)
    config = TrainConfig(method="arcface", arcface_target=mode, size=32, epochs=1, batch=32, lr=3e-4,
                         augment=0, steps_per_epoch=40, seed=1, embedding_dim=64)
    result = train_model(target, reference, config, progress=False)
    d = np.array(result.loss_d)
    assert len(d) == 40 and np.isfinite(d).all()
    assert d[-10:].mean() < 0.5 * d[:5].mean(), (d[:5], d[-10:])
    assert result.n_classes == (4 if mode == "own-class" else 2)
    x = np.random.default_rng(0).normal(size=(4, 32, 32, 3)).astype(np.float32)
    f = np.asarray(result.model(x, training=False))
    assert f.shape == (4, 64)
    np.testing.assert_allclose(np.linalg.norm(f, axis=1), 1.0, atol=1e-5)
    if mode == "own-class":  # same seed, same model
        again = train_model(target, reference, config, progress=False)
        assert again.loss_d == result.loss_d


@pytest.mark.slow
def test_train_arcface_to_a_verified_mean_cosine_bundle(arcface_run):
    from ovdoc.runtime.bundle import load_manifest, sha256_file
    from ovdoc.runtime.datasets import load_unlabelled
    from ovdoc.runtime.detector import Detector
    from ovdoc.runtime.evaluation import auc

    report = json.loads((arcface_run / "train.json").read_text(encoding="utf-8"))
    assert report["train"]["config"]["method"] == "arcface" and report["bundle"]["scorer"] == "mean-cosine"
    assert report["train"]["n_classes"] == 4  # 3 reference classes + the target
    assert report["convert"]["precisions"]["FP32"]["cosine_min"] >= 0.9999
    manifest, _ = load_manifest(arcface_run / "bundle")
    assert manifest["feature_dim"] == 128 and manifest["scorer"]["kind"] == "mean-cosine"
    source = manifest["export_source"]
    assert source["file"] == "../model.keras" and source["sha256"] == sha256_file(arcface_run / "model.keras")
    det = Detector.load(arcface_run / "bundle")
    feats = det.features(list(load_unlabelled("fashion-mnist-test:sneaker").images[:50]))
    np.testing.assert_allclose(np.linalg.norm(feats, axis=1), 1.0, atol=1e-4)  # unit embeddings from the IR
    boots = det.score_samples(list(load_unlabelled("fashion-mnist-test:ankle_boot").images[:50]))
    assert auc(det.scorer_.score_samples(feats), boots) > 0.6


@pytest.mark.slow
@pytest.mark.parametrize(("args", "expected"), [
    (["--arcface-m", "2"], "--arcface-m must be in"),
    (["--arcface-s", "0"], "--arcface-s must be positive"),
])
def test_bad_arcface_settings_are_one_line(args, expected, tmp_path):
    proc = ovdoc_cli("train", "--method", "arcface", "--target", "fashion-mnist:sneaker", "--reference",
                     "fashion-mnist:bag,trouser", "--out", str(tmp_path / "o"), *args)
    assert proc.returncode != 0 and expected in error_line(proc)
    assert not (tmp_path / "o").exists()
