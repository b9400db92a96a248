"""The mean-cosine scorer: closed-form leave-one-out, the scorer vocabulary, `ovdoc fit` end to end."""

from __future__ import annotations

import json

import numpy as np
import pytest
from _runtime_helpers import error_line, ovdoc_cli, write_pngs

from ovdoc.errors import OvdocError

pytestmark = pytest.mark.slow  # fits and runs mean-cosine bundles


def _brute_loo(x: np.ndarray) -> np.ndarray:
    """Each row against the mean of the OTHER rows' unit vectors, computed the long way."""
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    u = x / np.where(norms > 0, norms, 1.0)
    out = []
    for i in range(len(u)):
        mean = np.delete(u, i, axis=0).mean(axis=0)
        denom = np.linalg.norm(u[i]) * np.linalg.norm(mean)
        out.append(1.0 - (u[i] @ mean / denom if denom > 0 else 0.0))
    return np.array(out)


def test_loo_closed_form_matches_each_against_the_mean_of_the_others():
    from ovdoc.runtime.scoring import MeanCosineScorer

    rng = np.random.default_rng(3)
    x = rng.normal(size=(30, 12)) * rng.uniform(0.1, 50, size=(30, 1))  # norms far apart: normalised first
    x[4] = 0.0  # no direction: scores 1
    x[7] = x[8]  # a duplicate is still one of "the others"
    scorer = MeanCosineScorer().fit(x.astype(np.float32))
    np.testing.assert_allclose(scorer.loo_scores(), _brute_loo(x), atol=1e-5)
    assert scorer.loo_scores()[4] == pytest.approx(1.0)
    # scoring new vectors: 1 - cos to the unit mean of all normalised rows; scale-invariant
    q = rng.normal(size=(5, 12)).astype(np.float32)
    u = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-30)
    m = u.mean(axis=0)
    want = 1.0 - (q @ m) / (np.linalg.norm(q, axis=1) * np.linalg.norm(m))
    np.testing.assert_allclose(scorer.score_samples(q), want, atol=1e-5)
    np.testing.assert_allclose(scorer.score_samples(7.5 * q), want, atol=1e-5)
    with pytest.raises(OvdocError, match="at least 2"):
        MeanCosineScorer().fit(x[:1])
    with pytest.raises(OvdocError, match="average to zero"):
        MeanCosineScorer().fit(np.array([[1.0, 0.0], [-1.0, 0.0]], np.float32))
    with pytest.raises(OvdocError, match="dimension"):
        scorer.score_samples(q[:, :5])


def test_mean_cosine_speaks_the_scorer_vocabulary(tmp_path):
    from ovdoc.runtime.scoring import MeanCosineScorer, Scorer, ScorerSpec, load_scorer, make_scorer

    spec = ScorerSpec.parse("mean-cosine")
    assert spec.kind == "mean-cosine" and spec.label == "mean-cosine" and spec.metric == "cosine"
    with pytest.raises(OvdocError, match="has no index"):
        ScorerSpec.parse("mean-cosine:flat")
    x = np.random.default_rng(0).normal(size=(40, 8)).astype(np.float32) + 2.0
    scorer = make_scorer("mean-cosine", k=5, index="auto", metric="euclidean").fit(x)
    assert isinstance(scorer, Scorer) and isinstance(scorer, MeanCosineScorer)
    assert ScorerSpec.from_manifest(scorer.describe()).build().fit(x).describe() == scorer.describe()
    assert scorer.save(tmp_path) == ["mean.npy"]
    stored = np.load(tmp_path / "mean.npy", allow_pickle=False)
    assert stored.shape == (8,) and stored.dtype == np.float32 and abs(np.linalg.norm(stored) - 1) < 1e-6
    back = load_scorer(tmp_path, scorer.describe())
    np.testing.assert_allclose(back.score_samples(x[:5]), scorer.score_samples(x[:5]), atol=1e-6)
    (tmp_path / "mean.npy").write_bytes(b"not numpy")
    with pytest.raises(OvdocError, match="cannot read the mean vector"):
        load_scorer(tmp_path, scorer.describe())


def test_fit_mean_cosine_bundle_end_to_end(tmp_path, fashion_mnist_dir):
    """`ovdoc fit --scorer mean-cosine` with the shipped backbone on real images: one vector, hashed,
    calibrated leave-one-out at the FPR; boots score above sneakers; --append is refused in one line."""
    from ovdoc.runtime.bundle import load_manifest
    from ovdoc.runtime.datasets import load_unlabelled
    from ovdoc.runtime.detector import Detector

    sneakers = load_unlabelled("fashion-mnist:sneaker").images[:120]
    good = write_pngs(list(sneakers), tmp_path / "good")
    out = tmp_path / "mc.bundle"
    proc = ovdoc_cli("fit", "--normal", str(good), "--out", str(out), "--scorer", "mean-cosine",
                     "--size", "64", "--calibration", "loo", "--fpr", "0.05", "--json")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["scorer"] == "mean-cosine" and result["n_images"] == 120
    manifest, _ = load_manifest(out)
    assert sorted(manifest["files"]) == ["mean.npy", "model.bin", "model.xml"]
    assert manifest["scorer"]["kind"] == "mean-cosine" and "closed form" in manifest["threshold"]["method"]
    det = Detector.load(out)
    # the threshold is the 95 % quantile of the closed-form leave-one-out scores of the same features
    from ovdoc.runtime.scoring import MeanCosineScorer

    loo = MeanCosineScorer().fit(det.features(list(sneakers))).loo_scores()
    assert det.threshold_ == pytest.approx(float(np.quantile(loo, 0.95)), rel=1e-4)
    boots = load_unlabelled("fashion-mnist-test:ankle_boot").images[:60]
    test_sneakers = load_unlabelled("fashion-mnist-test:sneaker").images[:60]
    from ovdoc.runtime.evaluation import auc

    assert auc(det.score_samples(list(test_sneakers)), det.score_samples(list(boots))) > 0.8

    proc = ovdoc_cli("fit", "--append", str(out), "--normal", str(good))
    assert proc.returncode != 0 and "keeps only their mean" in error_line(proc)
    (out / "mean.npy").write_bytes((out / "mean.npy").read_bytes()[:-4] + b"\0\0\0\1")
    with pytest.raises(OvdocError, match="mean.npy does not match its sha256"):
        Detector.load(out)
