"""Global mode's defaults on a shipped backbone (sqrt-cosine kNN, the whole frame stretched), chosen on
validation (benchmarks/global_defaults.py): the metric's arithmetic, what `ovdoc fit` records and says, that
the whole frame is really looked at, and that options and other models keep their own choices."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from _runtime_helpers import ovdoc_cli, write_pngs

from ovdoc.runtime.scoring import KNNScorer, metric_space


def _sqrt_cosine_knn(train: np.ndarray, query: np.ndarray, k: int) -> np.ndarray:
    """Independent numpy reference: signed square root, unit length, mean distance to the k nearest."""
    def unit(x):
        r = np.sign(x) * np.sqrt(np.abs(x.astype(np.float64)))
        return r / np.linalg.norm(r, axis=1, keepdims=True)

    a, b = unit(train), unit(query)
    d = np.sqrt(np.maximum(2.0 - 2.0 * (b @ a.T), 0.0))
    return np.sort(d, axis=1)[:, :k].mean(axis=1)


def test_metric_space_is_signed_sqrt_then_unit_length():
    x = np.array([[4.0, -9.0, 0.0], [0.0, 0.0, 0.0]], np.float32)
    got = metric_space(x, "sqrt-cosine")
    np.testing.assert_allclose(got[0], np.array([2.0, -3.0, 0.0]) / np.sqrt(13.0), rtol=1e-6)
    assert (got[1] == 0).all()  # no direction: stays zero, no NaN
    np.testing.assert_array_equal(metric_space(x, "euclidean"), x)


def test_sqrt_cosine_scorer_matches_numpy_and_differs_from_cosine():
    rng = np.random.default_rng(3)
    # pooled-feature-like rows: non-negative and bursty (a few large activations), some negative entries
    x = (rng.gamma(0.3, 2.0, size=(200, 32)) - 0.05).astype(np.float32)
    q = (rng.gamma(0.3, 2.0, size=(40, 32)) - 0.05).astype(np.float32)
    want = _sqrt_cosine_knn(x, q, 5)
    for index in ("flat", "hnsw"):
        scorer = KNNScorer(k=5, index=index, metric="sqrt-cosine").fit(x)
        np.testing.assert_allclose(scorer.score_samples(q), want, rtol=1e-3, atol=1e-4)
    cosine = KNNScorer(k=5, index="flat", metric="cosine").fit(x).score_samples(q)
    assert not np.allclose(cosine, want, rtol=0.05)


def _wide_frames(n: int, seed: int = 0) -> list[np.ndarray]:
    """Wide (200x120) smooth grey frames with mild noise: normal parts of a scene."""
    rng = np.random.default_rng(seed)
    base = np.tile(np.linspace(70, 150, 200, dtype=np.float32), (120, 1))
    return [np.clip(base[..., None] + rng.normal(0, 6, (120, 200, 3)), 0, 255).astype(np.uint8)
            for _ in range(n)]


def _manifest(bundle) -> dict:
    return json.loads((bundle / "manifest.json").read_text(encoding="utf-8"))


@pytest.mark.slow
def test_fit_on_the_shipped_backbone_uses_and_says_its_global_defaults(tmp_path):
    from ovdoc.runtime.detector import Detector

    good = write_pngs(_wide_frames(24), tmp_path / "good")
    bundle = tmp_path / "g.bundle"
    proc = ovdoc_cli("fit", "--normal", str(good), "--out", str(bundle))
    assert proc.returncode == 0, proc.stderr
    assert "--metric sqrt-cosine and --resize stretch (the whole frame)" in proc.stdout
    m = _manifest(bundle)
    assert m["scorer"]["metric"] == "sqrt-cosine" and m["preprocess"]["resize"] == "stretch"
    assert m["backbone_defaults"] == {"metric": "sqrt-cosine", "resize": "stretch"}

    det = Detector.load(bundle)
    test = _wide_frames(6, seed=1)
    want = _sqrt_cosine_knn(det.features(_wide_frames(24)), det.features(test), 5)
    np.testing.assert_allclose(det.score_samples(test), want, rtol=1e-3, atol=1e-4)

    # the whole frame is looked at: a dark block in the left fifth (outside any centre crop) raises the
    # score under the default and leaves the centre-cropped bundle's features untouched
    cropped = tmp_path / "c.bundle"
    proc = ovdoc_cli("fit", "--normal", str(good), "--out", str(cropped), "--metric", "sqrt-cosine",
                     "--resize", "center_crop")
    assert proc.returncode == 0, proc.stderr
    assert "backbone_defaults" not in _manifest(cropped) and "global defaults" not in proc.stdout
    clean = test[0]
    marked = clean.copy()
    marked[30:90, 5:35] = 10
    crop = Detector.load(cropped)
    np.testing.assert_allclose(crop.features([marked]), crop.features([clean]), atol=1e-5)
    before, after = det.score_samples([clean, marked])
    assert after > before + 0.05 and after > det.threshold_


@pytest.mark.slow
def test_options_and_other_models_keep_their_own_choices(tmp_path):
    from ovdoc.irmodels import imagenet_backbone

    good = write_pngs(_wide_frames(12), tmp_path / "good")
    given = tmp_path / "given.bundle"
    proc = ovdoc_cli("fit", "--normal", str(good), "--out", str(given), "--metric", "euclidean")
    assert proc.returncode == 0, proc.stderr
    m = _manifest(given)
    assert m["scorer"]["metric"] == "euclidean" and m["preprocess"]["resize"] == "stretch"
    assert m["backbone_defaults"] == {"resize": "stretch"}
    # the same IR copied elsewhere is the user's model: euclidean on the IR's own centre crop, as before
    mine = tmp_path / "mine"
    mine.mkdir()
    for suffix in (".xml", ".bin"):
        shutil.copy(imagenet_backbone().with_suffix(suffix), mine / f"model{suffix}")
    other = tmp_path / "other.bundle"
    proc = ovdoc_cli("fit", str(mine / "model.xml"), "--normal", str(good), "--out", str(other))
    assert proc.returncode == 0, proc.stderr
    m = _manifest(other)
    assert m["scorer"]["metric"] == "euclidean" and m["preprocess"]["resize"] == "center_crop"
    assert "backbone_defaults" not in m
    # a scorer other than kNN keeps its own metric (LOF is euclidean by definition)
    lof = tmp_path / "lof.bundle"
    proc = ovdoc_cli("fit", "--normal", str(good), "--out", str(lof), "--scorer", "lof")
    assert proc.returncode == 0, proc.stderr
    assert _manifest(lof)["backbone_defaults"] == {"resize": "stretch"}
