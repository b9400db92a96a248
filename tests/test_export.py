"""`ovdoc export`: TFLite / ONNX / CoreML files and scoring.json from real bundles, and one-line refusals."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from _runtime_helpers import error_line, ovdoc_cli, write_pngs
from conftest import need_package


@pytest.fixture(autouse=True, scope="module")
def _needs_tensorflow():
    """Asked when a test runs, not when the file is collected: `pytest -m "not slow"` never imports TF."""
    need_package("tensorflow", "TensorFlow (host side: pip install -e '.[train]')")


def _phone_scores(scoring: dict, folder, images: list[np.ndarray], run) -> np.ndarray:
    """What an app does with scoring.json alone: resize, order, normalise, run the model, score."""
    from ovdoc.runtime.preprocess import PreprocessSpec

    p = scoring["preprocess"]
    spec = PreprocessSpec.from_dict({k: p[k] for k in ("width", "height", "color", "mean", "std", "resize")})
    feats = run(spec.to_float(spec.prepare_batch(images)))
    s = scoring["scorer"]
    if s["kind"] == "mean-cosine":
        f = feats / np.linalg.norm(feats, axis=1, keepdims=True)
        return 1.0 - f @ np.asarray(s["mean"], np.float32)
    vectors = np.fromfile(folder / s["vectors_file"], dtype="<f4").reshape(s["shape"])
    if s["metric"] == "sqrt-cosine":  # as scoring.json's formula says
        feats = np.sign(feats) * np.sqrt(np.abs(feats))
    if s["metric"] in ("cosine", "sqrt-cosine"):
        feats = feats / np.linalg.norm(feats, axis=1, keepdims=True)
    dist = np.sqrt(((feats[:, None, :] - vectors[None]) ** 2).sum(-1))
    return np.sort(dist, axis=1)[:, : s["k"]].mean(axis=1)


def _images(spec: str, n: int) -> list[np.ndarray]:
    from ovdoc.runtime.datasets import load_unlabelled

    return list(load_unlabelled(spec).images[:n])


def assert_only_ovdoc_lines(stderr: str, out) -> None:
    """No TensorFlow/absl/CUDA start-up lines, no deprecation warnings, no temporary folder names."""
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert lines[0].startswith("ovdoc export: "), stderr[-3000:]
    assert lines[-1].startswith(f"export {out}: "), stderr[-3000:]
    assert all(line.startswith(("model", "export ", "ovdoc export: ")) for line in lines), stderr[-3000:]
    assert ".tmp" not in stderr and "cuda" not in stderr.lower(), stderr[-3000:]


@pytest.mark.slow
def test_tflite_export_is_verified_and_scores_like_the_bundle(arcface_run, tmp_path):
    from ovdoc.host.export import tflite
    from ovdoc.runtime.detector import Detector

    out = tmp_path / "phone"
    proc = ovdoc_cli("export", str(arcface_run / "bundle"), "--to", "tflite", "--out", str(out), timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert_only_ovdoc_lines(proc.stderr, out)
    scoring = json.loads((out / "scoring.json").read_text(encoding="utf-8"))
    assert scoring["numeric_verified"] is True and "numeric_verified: true" in proc.stderr
    checks = scoring["verification"]
    assert checks["model.tflite"]["against"]["bundle IR"]["cosine_min"] >= 0.9999
    for name in ("model.tflite", "model-fp16.tflite", "model-int8-dynamic.tflite"):
        assert tflite.uint8_tensors(out / name) == [], name  # not the seed model's UINT8 weights
        assert 0.9 < checks[name]["cosine_min"] <= 1.0 + 1e-6
    assert (out / "model-int8-dynamic.tflite").stat().st_size < 0.5 * (out / "model.tflite").stat().st_size
    assert checks["model-int8-dynamic.tflite"]["numeric_verified"] is None  # reported, not claimed
    bundle_mean = np.load(arcface_run / "bundle" / "mean.npy", allow_pickle=False)
    np.testing.assert_array_equal(np.asarray(scoring["scorer"]["mean"], np.float32), bundle_mean)
    det = Detector.load(arcface_run / "bundle")
    assert scoring["threshold"]["value"] == pytest.approx(det.threshold_)
    images = _images("fashion-mnist-test:sneaker", 8) + _images("fashion-mnist-test:ankle_boot", 8)
    phone = _phone_scores(scoring, out, images, lambda x: tflite.run(out / "model.tflite", x))
    np.testing.assert_allclose(phone, det.score_samples(images), atol=2e-4)


@pytest.mark.slow
def test_a_bundle_fitted_from_ovdoc_trains_ir_exports(arcface_run, tmp_path):
    """`ovdoc train --method arcface ... --out arc/`, then `ovdoc fit arc/ir/FP32/model.xml --scorer
    mean-cosine --out mc/` somewhere else, then `ovdoc export mc/ --to tflite`: the IR names its
    model.keras in its rt_info, so the bundle fitted from it alone records it and exports."""
    from ovdoc.runtime.bundle import sha256_file
    from ovdoc.runtime.detector import Detector

    good = tmp_path / "good"
    write_pngs(_images("fashion-mnist:sneaker", 40), good)
    bundle = tmp_path / "elsewhere" / "mc"
    proc = ovdoc_cli("fit", str(arcface_run / "ir" / "FP32" / "model.xml"), "--normal", str(good),
                     "--scorer", "mean-cosine", "--out", str(bundle), "--json")
    assert proc.returncode == 0, proc.stderr[-3000:]
    manifest = json.loads((bundle / "manifest.json").read_text(encoding="utf-8"))
    record = manifest["export_source"]
    assert record["format"] == "keras" and not record["file"].startswith("/")  # relative to the bundle
    assert (bundle / record["file"]).resolve() == (arcface_run / "model.keras").resolve()
    assert record["sha256"] == sha256_file(arcface_run / "model.keras")
    out = tmp_path / "phone"
    proc = ovdoc_cli("export", str(bundle), "--to", "tflite", "--out", str(out), timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    scoring = json.loads((out / "scoring.json").read_text(encoding="utf-8"))
    assert scoring["numeric_verified"] is True and scoring["scorer"]["kind"] == "mean-cosine"
    from ovdoc.host.export import tflite

    images = _images("fashion-mnist-test:sneaker", 6) + _images("fashion-mnist-test:ankle_boot", 6)
    phone = _phone_scores(scoring, out, images, lambda x: tflite.run(out / "model.tflite", x))
    np.testing.assert_allclose(phone, Detector.load(bundle).score_samples(images), atol=2e-4)


@pytest.mark.slow
def test_onnx_export_of_the_shipped_backbone_with_knn(fashion_mnist_dir, tmp_path):
    """The shipped backbone (FP16 weights) rebuilt in Keras: held to an FP32 IR of the same source at
    0.9999, to the bundle's IR at the FP16 bound; kNN's normal vectors go beside scoring.json. Fitted with
    the backbone's global defaults (sqrt-cosine, whole frame), which the phone formula must reproduce."""
    from ovdoc.host.export import onnx_target
    from ovdoc.runtime.detector import Detector

    good = write_pngs(_images("fashion-mnist:sneaker", 40), tmp_path / "good")
    bundle = tmp_path / "inet.bundle"
    proc = ovdoc_cli("fit", "--normal", str(good), "--size", "64", "--out", str(bundle))
    assert proc.returncode == 0, proc.stderr
    out = tmp_path / "onnx"
    proc = ovdoc_cli("export", str(bundle), "--to", "onnx", "--out", str(out), "--json", timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert_only_ovdoc_lines(proc.stderr, out)
    scoring = json.loads(proc.stdout)
    assert scoring == json.loads((out / "scoring.json").read_text(encoding="utf-8"))
    assert scoring["source"]["format"] == "imagenet-backbone"
    check = scoring["verification"]["model.onnx"]
    assert check["against"]["FP32 IR of the source"]["cosine_min"] >= 0.9999
    assert check["against"]["bundle IR (FP16 weights)"]["bound"] == 0.999
    assert scoring["scorer"]["kind"] == "knn" and scoring["scorer"]["shape"] == [40, 1280]
    assert scoring["scorer"]["metric"] == "sqrt-cosine" and "sqrt(|f|)" in scoring["scorer"]["formula"]
    assert scoring["preprocess"]["resize"] == "stretch"
    assert scoring["model"]["onnx"]["input"]["shape"] == [None, 64, 64, 3]
    images = _images("fashion-mnist-test:sneaker", 4) + _images("fashion-mnist-test:bag", 4)
    phone = _phone_scores(scoring, out, images, lambda x: onnx_target.run(out / "model.onnx", x)[0])
    np.testing.assert_allclose(phone, Detector.load(bundle).score_samples(images), rtol=2e-3, atol=2e-3)


@pytest.mark.slow
def test_coreml_export_says_it_is_not_numerically_verified(arcface_run, tmp_path):
    need_package("coremltools", "CoreML export (pip install 'ovdoc[export]')")
    out = tmp_path / "ios"
    proc = ovdoc_cli("export", str(arcface_run / "bundle"), "--to", "coreml", "--out", str(out), timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    scoring = json.loads((out / "scoring.json").read_text(encoding="utf-8"))
    check = scoring["verification"]["model.mlpackage"]
    assert scoring["numeric_verified"] is False and check["numeric_verified"] is False
    assert "numeric_verified: false" in proc.stderr and "macOS" in proc.stderr
    assert check["input"] == {"name": "image", "shape": [1, 32, 32, 3], "dtype": "float32"}
    assert check["output"]["shape"][-1] == 128 and "conv" in check["ops"]
    assert (out / "model.mlpackage" / "Manifest.json").is_file()


@pytest.mark.slow
def test_export_refuses_bad_inputs_in_one_line(arcface_run, tmp_path, fashion_mnist_dir):
    import shutil

    from ovdoc.irmodels import demo_bundle

    def refused(*args: str) -> str:
        proc = ovdoc_cli("export", *args, timeout=300)
        assert proc.returncode != 0
        return error_line(proc)

    out = str(tmp_path / "x")
    bundle = str(arcface_run / "bundle")
    assert "unknown export format 'tfjs'" in refused(bundle, "--to", "tfjs", "--out", out)
    assert "no exportable source" in refused(str(demo_bundle()), "--to", "onnx", "--out", out)
    moved = tmp_path / "moved"
    shutil.copytree(arcface_run / "bundle", moved)  # the bundle alone, without ../model.keras
    assert "model.keras" in refused(str(moved), "--to", "onnx", "--out", out)
    good = write_pngs(_images("fashion-mnist:sneaker", 24), tmp_path / "good")
    patch = tmp_path / "patch.bundle"
    assert ovdoc_cli("fit", "--normal", str(good), "--mode", "patch", "--size", "64", "--coreset", "64",
                     "--out", str(patch)).returncode == 0
    assert "patch-mode bundle" in refused(str(patch), "--to", "tflite", "--out", out)
    lof = tmp_path / "lof.bundle"
    assert ovdoc_cli("fit", "--normal", str(good), "--scorer", "lof", "--size", "64", "--out",
                     str(lof)).returncode == 0
    assert "lof" in refused(str(lof), "--to", "onnx", "--out", out)
    assert not (tmp_path / "x").exists()


@pytest.mark.slow
def test_export_without_its_extra_says_what_to_install(tmp_path):
    from test_boundary import run_blocked

    proc = run_blocked("export", str(tmp_path), "--to", "coreml", "--out", str(tmp_path / "o"),
                       blocked=("coremltools",))
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "coremltools" in lines[0] and "ovdoc[export]" in lines[0], proc.stderr


@pytest.mark.slow
def test_phone_preprocessing_matches_the_runtime(fashion_mnist_dir):
    """scoring.json's preprocessing, done by hand with OpenCV on a non-square image, equals the runtime's."""
    from ovdoc.runtime.preprocess import PreprocessSpec

    spec = PreprocessSpec(height=32, width=32, color="RGB", mean=(10.0, 20.0, 30.0), std=(2.0, 3.0, 4.0))
    image = cv2.resize(_images("fashion-mnist-test:bag", 1)[0], (80, 56))  # camera-like: larger, wider
    image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR) if image.ndim == 2 else image
    side = min(image.shape[:2])
    y0, x0 = (image.shape[0] - side) // 2, (image.shape[1] - side) // 2
    crop = cv2.resize(image[y0 : y0 + side, x0 : x0 + side], (32, 32), interpolation=cv2.INTER_AREA)
    by_hand = (crop[..., ::-1].astype(np.float32) - np.float32([10, 20, 30])) / np.float32([2, 3, 4])
    np.testing.assert_allclose(spec.to_float(spec.prepare_batch([image]))[0], by_hand, atol=0.6)
