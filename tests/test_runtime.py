"""ovdoc fit, detector bundles and the Detector API with the real seed model, OpenVINO and FAISS."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from _runtime_helpers import (
    build_seed_ir,
    cifar_images,
    error_line,
    ovdoc_cli,
    tile_files,
    write_pngs,
)
from click.testing import CliRunner

from ovdoc.cli import cli
from ovdoc.errors import OvdocError

N_TRAIN = 200


@pytest.fixture(scope="session")
def seed_ir(seed_dir, tmp_path_factory) -> Path:
    return build_seed_ir(seed_dir, tmp_path_factory.mktemp("seed-ir"))


@pytest.fixture(scope="session")
def tiles(magnetic_tile_dir) -> list[Path]:
    return tile_files(magnetic_tile_dir)


@pytest.fixture(scope="session")
def normal_dir(tiles, tmp_path_factory) -> Path:
    images = [cv2.imread(str(p)) for p in tiles[:N_TRAIN]]
    root = tmp_path_factory.mktemp("normal")
    write_pngs(images[: N_TRAIN // 2], root / "a")  # nested: folders are read recursively
    write_pngs(images[N_TRAIN // 2 :], root / "b" / "c")
    return root


@pytest.fixture(scope="session")
def held_out(tiles) -> list[np.ndarray]:
    return [cv2.imread(str(p)) for p in tiles[N_TRAIN : N_TRAIN + 40]]


@pytest.fixture(scope="session")
def photos(cifar10_npz) -> list[np.ndarray]:
    return cifar_images(cifar10_npz, 40)


@pytest.fixture(scope="session")
def fit_result(seed_ir, normal_dir, tmp_path_factory) -> tuple[dict, Path]:
    """`ovdoc fit --json` through the click command (same code path as the console script)."""
    out = tmp_path_factory.mktemp("bundles") / "knn.bundle"
    result = CliRunner().invoke(
        cli, ["fit", str(seed_ir), "--normal", str(normal_dir), "--out", str(out), "--json"]
    )
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout), out


@pytest.fixture(scope="session")
def detector(fit_result):
    from ovdoc.runtime.detector import Detector

    return Detector.load(fit_result[1], device="CPU")


@pytest.mark.slow
def test_fit_json_schema(fit_result):
    report, out = fit_result
    assert set(report) >= {
        "bundle",
        "n_images",
        "feature_dim",
        "scorer",
        "index",
        "k",
        "threshold",
        "calibration",
        "device",
        "inference_precision",
        "weight_precision",
        "wall_s",
    }
    assert report["n_images"] == N_TRAIN
    assert report["feature_dim"] == 1280
    assert report["scorer"] == "knn" and report["index"] == "flat" and report["k"] == 5
    # images in two folders: each folder held out whole (calibration.make_grouping), not leave-one-out
    assert report["calibration"]["method"].startswith("held-out folders: 2 folders")
    assert report["calibration"]["target_fpr"] == 0.01 and 0.0 <= report["calibration"]["heldout_fpr"] < 0.1
    assert report["device"] == "CPU" and report["inference_precision"] == "f32"
    assert report["threshold"] > 1.0


@pytest.mark.slow
def test_manifest_records_everything_and_no_pickle(fit_result):
    import faiss

    from ovdoc.runtime.bundle import FORMAT_VERSION, sha256_file

    _, out = fit_result
    manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["format_version"] == FORMAT_VERSION
    assert manifest["preprocess"] == {
        "height": 96,
        "width": 96,
        "color": "RGB",
        "mean": [0.0, 0.0, 0.0],
        "std": [255.0, 255.0, 255.0],
        "resize": "center_crop",
    }
    assert manifest["feature_dim"] == 1280 and manifest["k"] == 5
    assert (
        manifest["built_with"]["device"] == "CPU" and manifest["built_with"]["inference_precision"] == "f32"
    )
    assert {"openvino", "faiss", "numpy", "opencv", "scikit-learn"} <= set(manifest["versions"])
    assert manifest["threshold"]["method"].startswith("held-out folders")
    assert manifest["threshold"]["fpr"] == 0.01 and manifest["threshold"]["target_fpr"] == 0.01
    names = sorted(p.name for p in out.iterdir())
    assert names == ["index.faiss", "manifest.json", "model.bin", "model.xml"]
    assert set(manifest["files"]) == {"index.faiss", "model.bin", "model.xml"}
    for name, digest in manifest["files"].items():
        assert sha256_file(out / name) == digest
    index = faiss.read_index(str(out / "index.faiss"))
    assert index.ntotal == N_TRAIN and index.d == 1280


@pytest.mark.slow
def test_threshold_is_held_out_folders_and_records_leave_one_out(detector, normal_dir, fit_result):
    """Independent check: brute-force numpy kNN. The threshold: 99th percentile of each folder's images
    scored against the other folder only (folders held out whole); the recorded leave-one-out threshold:
    kNN without self matches, 99th percentile."""
    feats = detector.features(normal_dir)  # a/ first, then b/c/: each half of N_TRAIN
    assert feats.shape == (N_TRAIN, 1280) and feats.dtype == np.float32
    d = np.sqrt(np.maximum(((feats[:, None, :] - feats[None, :, :]) ** 2).sum(-1), 0))
    h = N_TRAIN // 2
    held = np.concatenate([np.sort(d[:h, h:], axis=1)[:, :5].mean(axis=1),
                           np.sort(d[h:, :h], axis=1)[:, :5].mean(axis=1)])
    assert detector.threshold_ == pytest.approx(np.quantile(held, 0.99), rel=1e-3)
    np.fill_diagonal(d, np.inf)
    loo = np.sort(d, axis=1)[:, :5].mean(axis=1)
    manifest = json.loads((fit_result[1] / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["threshold"]["loo_threshold"] == pytest.approx(np.quantile(loo, 0.99), rel=1e-3)
    assert detector.threshold_ > manifest["threshold"]["loo_threshold"]  # new data sits farther away
    # scoring the training set against itself (self match at distance 0) would set a much lower threshold
    with_self = np.sort(np.where(np.isinf(d), 0, d), axis=1)[:, :5].mean(axis=1)
    assert np.quantile(with_self, 0.99) < 0.9 * detector.threshold_


@pytest.mark.slow
def test_detector_api_consistency(detector, held_out, photos):
    images = held_out + photos
    scores = detector.score_samples(images)
    assert scores.shape == (len(images),) and np.isfinite(scores).all()
    np.testing.assert_allclose(detector.decision_function(images), scores - detector.threshold_, rtol=1e-5)
    np.testing.assert_array_equal(detector.predict(images), (scores > detector.threshold_).astype(int))
    pred = detector.predict(images)
    assert pred[len(held_out) :].mean() == 1.0  # photos are not magnetic tiles
    assert pred[: len(held_out)].mean() <= 0.1  # held-out tiles: about the calibrated FPR
    assert detector.spec_.height == 96 and detector.k_ == 5


@pytest.mark.slow
def test_detector_preprocessing_matches_reference(detector, seed_ir, held_out):
    """The uint8 in-graph path equals host-side reference arithmetic on the float model."""
    import openvino as ov

    from ovdoc.runtime.ir import compile_ir, read_ir

    model, spec, _ = read_ir(seed_ir)
    batch = spec.prepare_batch(held_out[:8])
    compiled = compile_ir(model, spec, uint8_input=False)  # the float model as is (batch 1)
    floats = spec.to_float(batch).astype(np.float32)
    ref = np.concatenate([compiled(floats[i : i + 1])[0].reshape(1, -1) for i in range(8)])
    ours = detector.features(held_out[:8])
    cos = (ref * ours).sum(1) / np.linalg.norm(ref, axis=1) / np.linalg.norm(ours, axis=1)
    assert cos.min() > 0.9999
    assert isinstance(compiled, ov.CompiledModel)


@pytest.mark.slow
def test_hnsw_index_agrees_with_flat(seed_ir, normal_dir, detector, held_out, photos, tmp_path):
    from ovdoc.runtime.bundle import fit_bundle
    from ovdoc.runtime.detector import Detector

    manifest = fit_bundle(seed_ir, normal_dir, tmp_path / "hnsw", index="hnsw", progress=False)
    assert manifest["scorer"]["index"] == "hnsw" and manifest["scorer"]["hnsw"]["ef_search"] > 0
    hnsw = Detector.load(tmp_path / "hnsw")
    images = held_out + photos
    np.testing.assert_allclose(hnsw.score_samples(images), detector.score_samples(images), rtol=0.05)
    assert hnsw.threshold_ == pytest.approx(detector.threshold_, rel=0.05)


@pytest.mark.slow
def test_lof_baseline_bundle(seed_ir, normal_dir, held_out, photos, tmp_path):
    result = CliRunner().invoke(
        cli,
        [
            "fit",
            str(seed_ir),
            "--normal",
            str(normal_dir),
            "--out",
            str(tmp_path / "lof"),
            "--scorer",
            "lof",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["scorer"] == "lof" and report["index"] is None
    assert sorted(p.name for p in (tmp_path / "lof").iterdir()) == [
        "manifest.json",
        "model.bin",
        "model.xml",
        "reference.npy",
    ]
    ref = np.load(tmp_path / "lof" / "reference.npy", allow_pickle=False)
    assert ref.shape == (N_TRAIN, 1280)
    from ovdoc.runtime.detector import Detector

    det = Detector.load(tmp_path / "lof")
    assert 1.0 < det.threshold_ < 10  # local outlier factors of normal points sit near 1
    assert det.predict(photos).mean() == 1.0
    assert det.predict(held_out).mean() <= 0.15


def test_knn_leave_one_out_with_duplicates():
    """A duplicated vector keeps its twin as a (distance 0) neighbour; only the self match is dropped."""
    from ovdoc.runtime.scoring import KNNScorer

    rng = np.random.default_rng(1)
    x = rng.normal(size=(60, 16)).astype(np.float32)
    x = np.concatenate([x, x[:10]])  # 10 exact duplicates
    d = np.sqrt(((x[:, None] - x[None]) ** 2).sum(-1))
    np.fill_diagonal(d, np.inf)
    expected = np.sort(d, axis=1)[:, :3].mean(axis=1)
    for index in ("flat", "hnsw"):
        loo = KNNScorer(k=3, index=index).fit(x).loo_scores()
        np.testing.assert_allclose(loo, expected, rtol=1e-4, atol=1e-5)
    assert expected[:10].min() < expected[10:60].min()  # twins are closer than anyone else


def _cosine_knn(train: np.ndarray, query: np.ndarray, k: int, *, leave_one_out: bool = False) -> np.ndarray:
    """Independent numpy reference: mean Euclidean distance between unit vectors to the k nearest."""
    a = train / np.linalg.norm(train, axis=1, keepdims=True)
    b = query / np.linalg.norm(query, axis=1, keepdims=True)
    d = np.sqrt(np.maximum(2.0 - 2.0 * (b.astype(np.float64) @ a.T.astype(np.float64)), 0.0))
    if leave_one_out:
        np.fill_diagonal(d, np.inf)
    return np.sort(d, axis=1)[:, :k].mean(axis=1)


@pytest.mark.slow
def test_cosine_bundle_round_trip(seed_ir, normal_dir, held_out, photos, detector, tmp_path):
    """`ovdoc fit --metric cosine`: manifest says so, scores and threshold equal a brute-force cosine kNN."""
    from ovdoc.runtime.detector import Detector

    out = tmp_path / "cosine.bundle"
    result = CliRunner().invoke(
        cli,
        ["fit", str(seed_ir), "--normal", str(normal_dir), "--out", str(out), "--metric", "cosine", "--json"],
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["metric"] == "cosine"
    manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["scorer"]["metric"] == "cosine" and manifest["scorer"]["index"] == "flat"
    det = Detector.load(out)
    assert det.scorer_.metric == "cosine"
    train = det.features(normal_dir)
    query = np.concatenate([det.features(held_out), det.features(photos)])
    got = np.concatenate([det.score_samples(held_out), det.score_samples(photos)])
    np.testing.assert_allclose(got, _cosine_knn(train, query, 5), rtol=1e-4, atol=1e-5)
    assert got.max() <= 2.0  # distances between unit vectors
    loo = _cosine_knn(train, train, 5, leave_one_out=True)
    assert manifest["threshold"]["loo_threshold"] == pytest.approx(np.quantile(loo, 0.99), rel=1e-3)
    # a different metric really is a different detector: euclidean scores are in feature units
    assert not np.allclose(detector.score_samples(held_out), det.score_samples(held_out), rtol=0.1)


def test_cosine_scorer_flat_and_hnsw_agree_with_numpy():
    from ovdoc.runtime.scoring import KNNScorer

    rng = np.random.default_rng(2)
    # rows of very different lengths: cosine must ignore the length, euclidean must not
    x = (rng.normal(size=(300, 24)) * rng.uniform(0.1, 10.0, size=(300, 1))).astype(np.float32)
    q = (rng.normal(size=(50, 24)) * rng.uniform(0.1, 10.0, size=(50, 1))).astype(np.float32)
    want = _cosine_knn(x, q, 4)
    want_loo = _cosine_knn(x, x, 4, leave_one_out=True)
    for index in ("flat", "hnsw"):
        scorer = KNNScorer(k=4, index=index, metric="cosine").fit(x)
        np.testing.assert_allclose(scorer.score_samples(q), want, rtol=1e-3, atol=1e-4)
        np.testing.assert_allclose(scorer.loo_scores(), want_loo, rtol=1e-3, atol=1e-4)
        np.testing.assert_allclose(scorer.score_samples(q * 7.0), want, rtol=1e-3, atol=1e-4)
    euclid = KNNScorer(k=4, index="flat").fit(x)
    assert not np.allclose(euclid.score_samples(q), want, rtol=0.1)
    with pytest.raises(OvdocError, match="unknown metric"):
        KNNScorer(metric="manhattan")
    from ovdoc.runtime.scoring import make_scorer

    with pytest.raises(OvdocError, match="knn scorer only"):
        make_scorer("lof", metric="cosine")


@pytest.mark.slow
def test_manifest_without_metric_loads_as_euclidean(fit_result, detector, held_out, tmp_path):
    """Bundles written before --metric existed have no scorer.metric: they must load as euclidean."""
    import hashlib

    from ovdoc.runtime.bundle import SELF_HASH_KEY, _canonical
    from ovdoc.runtime.detector import Detector

    _, out = fit_result
    old = tmp_path / "old.bundle"
    shutil.copytree(out, old)
    manifest = json.loads((old / "manifest.json").read_text(encoding="utf-8"))
    del manifest["scorer"]["metric"]
    manifest[SELF_HASH_KEY] = hashlib.sha256(_canonical(manifest)).hexdigest()  # as the old writer did
    (old / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    det = Detector.load(old)
    assert det.scorer_.metric == "euclidean"
    np.testing.assert_array_equal(det.score_samples(held_out), detector.score_samples(held_out))


def test_demo_bundle_still_loads():
    from ovdoc.irmodels import demo_bundle
    from ovdoc.runtime.detector import Detector

    bundle = demo_bundle()
    assert bundle.is_dir(), "the demo bundle ships inside the package"
    det = Detector.load(bundle)
    manifest = json.loads((bundle / "manifest.json").read_text(encoding="utf-8"))
    assert det.scorer_.metric == manifest["scorer"].get(
        "metric", "euclidean"
    )


@pytest.mark.slow
def test_tampered_bundles_are_refused(fit_result, tmp_path):
    from ovdoc.runtime.bundle import FORMAT_VERSION
    from ovdoc.runtime.detector import Detector

    _, out = fit_result
    cases = {}
    for name in ("bin", "index", "version", "threshold"):
        copy = tmp_path / name
        shutil.copytree(out, copy)
        cases[name] = copy
    data = bytearray((cases["bin"] / "model.bin").read_bytes())
    data[len(data) // 2] ^= 0x01
    (cases["bin"] / "model.bin").write_bytes(bytes(data))
    with open(cases["index"] / "index.faiss", "ab") as fh:
        fh.write(b"\0")
    for name, edit in (
        ("version", lambda m: m.__setitem__("format_version", m["format_version"] + 1)),
        ("threshold", lambda m: m["threshold"].__setitem__("value", 1e9)),
    ):
        manifest = json.loads((cases[name] / "manifest.json").read_text(encoding="utf-8"))
        edit(manifest)
        (cases[name] / "manifest.json").write_text(json.dumps(manifest))
    expect = {
        "bin": "model.bin does not match its sha256",
        "index": "index.faiss does not match its sha256",
        "version": f"format version {FORMAT_VERSION + 1}",
        "threshold": "manifest.json was modified",
    }
    for name, message in expect.items():
        with pytest.raises(OvdocError, match=message):
            Detector.load(cases[name])
    (cases["bin"] / "manifest.json").unlink()
    with pytest.raises(OvdocError, match="not an ovdoc bundle"):
        Detector.load(cases["bin"])
    proc = ovdoc_cli("run", str(cases["version"]), "--source", str(tmp_path), "--headless")
    assert proc.returncode != 0
    assert f"format version {FORMAT_VERSION + 1}" in error_line(proc)


@pytest.mark.slow
def test_fit_bad_inputs_are_one_line(seed_ir, normal_dir, tmp_path):
    from ovdoc.runtime.bundle import fit_bundle

    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("not an image")
    with pytest.raises(OvdocError, match="no images in folder"):
        fit_bundle(seed_ir, empty, tmp_path / "b")
    with pytest.raises(OvdocError, match="no images match"):
        fit_bundle(seed_ir, str(tmp_path / "*.png"), tmp_path / "b")
    with pytest.raises(OvdocError, match="not found"):
        fit_bundle(seed_ir, tmp_path / "missing", tmp_path / "b")
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    (corrupt / "x.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(OvdocError, match="none of the normal images could be read.*x.png"):
        fit_bundle(seed_ir, corrupt, tmp_path / "b", progress=False)
    with pytest.raises(OvdocError, match="not an OpenVINO IR"):
        fit_bundle(tmp_path / "corrupt" / "x.png", normal_dir, tmp_path / "b")
    assert not (tmp_path / "b").exists()  # nothing half-written
    proc = ovdoc_cli("fit", str(seed_ir), "--normal", str(empty), "--out", str(tmp_path / "b"))
    assert proc.returncode != 0 and "no images in folder" in error_line(proc)


@pytest.mark.slow
def test_failed_fit_keeps_the_previous_bundle(fit_result, seed_ir, tmp_path):
    from ovdoc.runtime.bundle import fit_bundle

    _, out = fit_result
    copy = tmp_path / "keep"
    shutil.copytree(out, copy)
    before = (copy / "manifest.json").read_bytes()
    few = write_pngs([np.zeros((40, 40, 3), np.uint8)] * 3, tmp_path / "few")  # fewer than k+1 images
    with pytest.raises(OvdocError, match="at least k\\+1"):
        fit_bundle(seed_ir, few, copy, progress=False)
    assert (copy / "manifest.json").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


@pytest.mark.slow
def test_runtime_does_not_import_tensorflow():
    import subprocess
    import sys

    code = (
        "import sys, ovdoc.runtime.detector, ovdoc.runtime.bundle, ovdoc.runtime.stream.pipeline, "
        "ovdoc.commands.run, "
        "ovdoc.commands.fit; bad = [m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras')]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
            encoding="utf-8", errors="replace")
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.slow
def test_single_frames_use_a_batch1_copy_with_the_same_features(seed_ir, held_out):
    """A live camera's single frames go to a batch-1 copy of the model (compiled in the background the
    first time one is seen) instead of being padded to the full batch; the features are the same."""
    import time

    from ovdoc.runtime.features import FeatureExtractor

    ex = FeatureExtractor(seed_ir, batch=4)
    images = ex.prepare(held_out[:6])
    padded = ex.extract(held_out[:6])
    got: dict = {}
    ex.set_callback(lambda feats, i: got.__setitem__(i, feats))
    ex.submit(images[:1], 0)  # padded: the copy is only being built now
    ex.wait()
    deadline = time.monotonic() + 60
    while ex._single is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert ex._single is not None, "the batch-1 copy was never built"
    for i in range(1, 6):
        ex.submit(images[i : i + 1], i)
    ex.submit(images[:3], 10)  # more than half a batch still goes padded through the batch-4 model

    class Counting:  # the batch-1 queue, counting the requests it is given
        def __init__(self, queue) -> None:
            self.queue, self.started = queue, 0

        def start_async(self, *args) -> None:
            self.started += 1
            self.queue.start_async(*args)

        def wait_all(self) -> None:
            self.queue.wait_all()

    ex._single = counting = Counting(ex._single)
    ex.submit(images[3:5], 11)  # half a batch or less: two batch-1 requests, handed on together
    ex.submit(images[:3], 12)
    ex.wait()
    assert counting.started == 2  # the two small-batch images; the batch of 3 went padded
    singles = np.concatenate([got[i] for i in range(6)])
    np.testing.assert_allclose(singles, padded, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(got[10], padded[:3], rtol=1e-4, atol=1e-5)
    assert got[11].shape == (2, padded.shape[1])
    np.testing.assert_allclose(got[11], padded[3:5], rtol=1e-4, atol=1e-5)  # in their order


@pytest.mark.slow
def test_fit_append_adds_normal_images_and_recalibrates(fit_result, tiles, held_out, photos, tmp_path):
    """`ovdoc fit --append`: new normal images join the index (same model), the threshold is recalibrated
    with the previous images and the new folder held out as groups, the bundle is written atomically."""
    from ovdoc.runtime.bundle import load_manifest
    from ovdoc.runtime.detector import Detector

    result, original = fit_result
    new = write_pngs([cv2.imread(str(p)) for p in tiles[N_TRAIN + 40 : N_TRAIN + 100]], tmp_path / "new")
    out = tmp_path / "appended.bundle"
    proc = ovdoc_cli("fit", "--append", str(original), "--normal", str(new), "--out", str(out), "--json")
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads(proc.stdout)
    assert report["appended"] == 60 and report["n_images"] == result["n_images"] + 60
    assert report["previous_threshold"] == result["threshold"]
    manifest, _ = load_manifest(out)  # verified: hashes and manifest hash
    assert manifest["appended"][-1]["n_images"] == 60
    assert "held-out folders" in manifest["threshold"]["method"]
    before, after = Detector.load(original), Detector.load(out)
    assert after.scorer_.describe()["n_vectors"] == result["n_images"] + 60
    added = [cv2.imread(str(p)) for p in sorted(new.glob("*.png"))]
    # the added tiles are now in the index: nearer than before; photos stay far above the threshold
    assert np.median(after.score_samples(added)) < np.median(before.score_samples(added))
    assert (after.score_samples(photos) > after.threshold_).mean() > 0.9
    assert (after.score_samples(held_out) > after.threshold_).mean() < 0.3
    # in place (no --out): the bundle is replaced as a whole, the original fixture untouched
    copy = tmp_path / "inplace.bundle"
    shutil.copytree(original, copy)
    proc = ovdoc_cli("fit", "--append", str(copy), "--normal", str(new), "--json")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert load_manifest(copy)[0]["n_images"] == result["n_images"] + 60
    assert sorted(p.name for p in tmp_path.iterdir()) == ["appended.bundle", "inplace.bundle", "new"]


@pytest.mark.slow
@pytest.mark.parametrize(("args", "needle"), [
    (["MODEL"], "--append keeps the bundle's own model: give no MODEL"),
    ([], "no images in folder"),
])  # fmt: skip
def test_fit_append_bad_inputs_are_one_line(seed_ir, fit_result, tmp_path, args, needle):
    empty = tmp_path / "empty"
    empty.mkdir()
    model = [str(seed_ir)] if args == ["MODEL"] else []
    proc = ovdoc_cli("fit", *model, "--append", str(fit_result[1]), "--normal", str(empty),
                     "--out", str(tmp_path / "x.bundle"))
    assert proc.returncode != 0 and needle in error_line(proc), proc.stderr
    assert not (tmp_path / "x.bundle").exists()
