"""`ovdoc convert` on every accepted format, every rejection, atomicity and the CLI contract.

One small MobileNetV2 (alpha 0.35, 32x32, pooling avg) is built once per session and saved in each
format with the real writers (Keras, tf_keras, TF, tf2onnx, TFLiteConverter); every conversion is
checked by the converter's own verification and, independently here, by reading the IR back.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import openvino as ov
import pytest
from click.testing import CliRunner
from conftest import need_package

from ovdoc.cli import cli
from ovdoc.errors import OvdocError, VerificationError
from ovdoc.host.convert import convert_source
from ovdoc.runtime.ir import read_ir

pytestmark = pytest.mark.slow  # converts Keras/TF/ONNX/TFLite models (TensorFlow)

SIZE = 32
REPO = Path(__file__).resolve().parents[1]


def _randomize_batchnorm(layers, seed: int) -> None:
    """Fresh BatchNorm layers are identities; give them moving statistics like a trained net's."""
    rng = np.random.default_rng(seed)
    for layer in layers:
        if type(layer).__name__ == "BatchNormalization":
            gamma, beta, mean, var = layer.get_weights()
            layer.set_weights([
                rng.uniform(0.5, 1.5, gamma.shape).astype("float32"),
                rng.normal(0, 0.1, beta.shape).astype("float32"),
                rng.normal(0, 0.1, mean.shape).astype("float32"),
                rng.uniform(0.5, 1.5, var.shape).astype("float32"),
            ])


@pytest.fixture(scope="session")
def tf():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    return need_package("tensorflow", "TensorFlow (host side)")  # CI: a failure, not a skip


@pytest.fixture(scope="session")
def small_keras(tf):
    import keras

    keras.utils.set_random_seed(0)
    model = keras.applications.MobileNetV2(
        weights=None, alpha=0.35, input_shape=(SIZE, SIZE, 3), include_top=False, pooling="avg"
    )
    _randomize_batchnorm(model.layers, 1)
    return model


@pytest.fixture(scope="session")
def models(tmp_path_factory, tf, small_keras) -> dict[str, tuple[Path, Path | None]]:
    """The small model in every accepted format: name -> (src, weights)."""
    import tf2onnx
    import tf_keras
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    root = tmp_path_factory.mktemp("small-models")
    out: dict[str, tuple[Path, Path | None]] = {}
    small_keras.save(root / "model.keras")
    out["keras"] = (root / "model.keras", None)
    small_keras.save(root / "model.h5")
    out["h5"] = (root / "model.h5", None)

    legacy = tf_keras.applications.MobileNetV2(
        weights=None, alpha=0.35, input_shape=(SIZE, SIZE, 3), include_top=False, pooling="avg"
    )
    _randomize_batchnorm(legacy.layers, 2)
    (root / "legacy.json").write_text(legacy.to_json())
    legacy.save_weights(str(root / "legacy_weights.h5"))
    out["keras-json"] = (root / "legacy.json", root / "legacy_weights.h5")

    small_keras.export(str(root / "saved_model"), verbose=False)
    out["savedmodel"] = (root / "saved_model", None)

    nhwc = tf.TensorSpec([None, SIZE, SIZE, 3], tf.float32, name="input_1")
    forward = tf.function(lambda x: small_keras(x, training=False))
    frozen = convert_variables_to_constants_v2(forward.get_concrete_function(nhwc))
    (root / "frozen.pb").write_bytes(frozen.graph.as_graph_def().SerializeToString())
    out["pb"] = (root / "frozen.pb", None)

    tf2onnx.convert.from_function(forward, input_signature=[nhwc], opset=13, output_path=str(root / "m.onnx"))
    out["onnx"] = (root / "m.onnx", None)
    nchw = tf.TensorSpec([None, 3, SIZE, SIZE], tf.float32, name="input_nchw")
    channels_first = tf.function(lambda x: small_keras(tf.transpose(x, [0, 2, 3, 1]), training=False))
    tf2onnx.convert.from_function(
        channels_first, input_signature=[nchw], opset=13, output_path=str(root / "nchw.onnx")
    )
    out["onnx-nchw"] = (root / "nchw.onnx", None)

    converter = tf.lite.TFLiteConverter.from_concrete_functions(
        [forward.get_concrete_function(tf.TensorSpec([1, SIZE, SIZE, 3], tf.float32))], forward
    )
    (root / "m.tflite").write_bytes(converter.convert())
    out["tflite"] = (root / "m.tflite", None)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]  # dynamic-range: int8 weights, hybrid ops
    (root / "dynamic.tflite").write_bytes(converter.convert())
    out["tflite-dynamic"] = (root / "dynamic.tflite", None)
    return out


EXPECTED_FORMAT = {
    "keras": "keras", "h5": "keras-h5", "keras-json": "keras-json", "savedmodel": "tf-savedmodel",
    "pb": "tf-frozen-pb", "onnx": "onnx", "onnx-nchw": "onnx", "tflite": "tflite", "tflite-dynamic": "tflite",
}


@pytest.mark.parametrize("kind", list(EXPECTED_FORMAT))
def test_every_format_converts_and_verifies(models, kind, tmp_path):
    src, weights = models[kind]
    out = tmp_path / "ir"
    report = convert_source(src, out, weights=weights, keep_frozen=True)
    assert report["format"] == EXPECTED_FORMAT[kind]
    assert set(report["precisions"]) == {"FP32", "FP16"}
    assert report["precisions"]["FP32"]["cosine_min"] >= 0.9999
    assert report["precisions"]["FP16"]["cosine_min"] > 0.99
    for precision in ("FP32", "FP16"):
        model, spec, xml = read_ir(out / precision)
        assert xml == out / precision / "model.xml"
        assert model.inputs[0].get_any_name() == "image"
        assert model.outputs[0].get_any_name() == "features"
        assert str(model.inputs[0].get_partial_shape()) == f"[?,{SIZE},{SIZE},3]"
        assert model.outputs[0].get_partial_shape()[1].get_length() == 1280
        assert (spec.height, spec.width, spec.color, spec.std) == (SIZE, SIZE, "RGB", (255.0,) * 3)
    report = json.loads((out / "convert.json").read_text(encoding="utf-8"))
    assert report["precisions"].keys() == {"FP32", "FP16"}
    # FP32 keeps float32 weights, FP16 halves them: save_model's default compression must not leak in
    fp32_bin = (out / "FP32" / "model.bin").stat().st_size
    assert (out / "FP16" / "model.bin").stat().st_size < 0.6 * fp32_bin
    assert (out / "frozen.pb").is_file() == (kind in ("keras", "h5", "keras-json"))
    assert ("checks" in report) == (kind == "tflite-dynamic")  # weights rewritten only where quantized


def test_preprocessing_options_are_recorded_and_verified(models, tmp_path):
    out = tmp_path / "ir"
    spec = {"color": "BGR", "mean": (127.5,) * 3, "std": (127.5,) * 3, "resize": "stretch"}
    report = convert_source(models["onnx"][0], out, spec=spec, precisions=["FP32"])
    _, recorded, _ = read_ir(out)
    assert (recorded.color, recorded.resize) == ("BGR", "stretch")
    assert recorded.mean == recorded.std == (127.5,) * 3
    assert report["precisions"]["FP32"]["cosine_min"] >= 0.9999


def test_in_memory_keras_model(small_keras, tmp_path):
    """The API `ovdoc train` uses: a live Keras model, the preprocessing given, verified the same way."""
    from ovdoc.host.convert import convert_keras_model
    from ovdoc.runtime.preprocess import PreprocessSpec

    spec = PreprocessSpec(height=SIZE, width=SIZE, color="BGR", mean=(127.5,) * 3, std=(127.5,) * 3)
    report = convert_keras_model(small_keras, tmp_path / "ir", spec=spec, precisions=("FP32",), name="doc")
    assert report["format"] == "keras-model" and set(report["precisions"]) == {"FP32"}
    assert report["precisions"]["FP32"]["cosine_min"] >= 0.9999
    model, recorded, _ = read_ir(tmp_path / "ir")
    assert recorded == spec and model.get_friendly_name() == "doc"
    with pytest.raises(OvdocError, match="preprocessing says 48x48"):
        convert_keras_model(small_keras, tmp_path / "ir2", spec=PreprocessSpec(height=48, width=48))


def test_probe_folder_uses_real_images(models, tmp_path):
    probe = tmp_path / "probe"
    probe.mkdir()
    rng = np.random.default_rng(3)
    for i in range(5):
        img = cv2.GaussianBlur(rng.integers(0, 256, (50, 70, 3), dtype=np.uint8), (9, 9), 3)
        cv2.imwrite(str(probe / f"{i}.png"), img)
    report = convert_source(models["onnx"][0], tmp_path / "ir", probe=probe, precisions=["FP32"])
    assert report["probe"] == {"images": 5, "kind": "folder"}
    with pytest.raises(OvdocError, match="no readable images"):
        convert_source(models["onnx"][0], tmp_path / "ir2", probe=tmp_path / "ir")


def _tiny_keras(input_shape, pooled: bool):
    import keras

    layers = [keras.Input(input_shape), keras.layers.Conv2D(8, 3, activation="relu")]
    if pooled:
        layers.append(keras.layers.GlobalAveragePooling2D())
    return keras.Sequential(layers)


def test_spatial_output_is_refused_clearly(tf, tmp_path):
    model = _tiny_keras((SIZE, SIZE, 3), pooled=False)
    model.save(tmp_path / "spatial.keras")
    with pytest.raises(OvdocError, match=r"not \[N, D\] features.*global pooling"):
        convert_source(tmp_path / "spatial.keras", tmp_path / "ir")
    assert not (tmp_path / "ir").exists()


def test_keras_model_without_fixed_size_needs_size(tf, tmp_path):
    model = _tiny_keras((None, None, 3), pooled=True)
    model.save(tmp_path / "open.keras")
    with pytest.raises(OvdocError, match="--size"):
        convert_source(tmp_path / "open.keras", tmp_path / "ir")
    report = convert_source(tmp_path / "open.keras", tmp_path / "ir", spec={"height": 40, "width": 48},
                            precisions=["FP32"])
    assert report["preprocess"]["height"] == 40 and report["preprocess"]["width"] == 48
    assert report["precisions"]["FP32"]["cosine_min"] >= 0.9999


# --- rejections: one clear line each ----------------------------------------------------------------------
def _truncate(src: Path, dst: Path, fraction: float = 0.5) -> Path:
    data = src.read_bytes()
    dst.write_bytes(data[: int(len(data) * fraction)])
    return dst


@pytest.mark.parametrize(
    ("kind", "suffix", "message"),
    [
        ("onnx", ".onnx", "not a valid ONNX model"),
        ("h5", ".h5", "corrupt or truncated HDF5"),
        ("pb", ".pb", "not a valid frozen TensorFlow graph"),
        ("tflite", ".tflite", "corrupted or malformed"),
        ("keras", ".keras", "corrupt or truncated .keras"),
    ],
)
def test_truncated_files_fail_in_one_line(models, tmp_path, kind, suffix, message):
    bad = _truncate(models[kind][0], tmp_path / f"bad{suffix}")
    with pytest.raises(OvdocError, match=message) as err:
        convert_source(bad, tmp_path / "ir")
    assert "\n" not in str(err.value)
    assert not (tmp_path / "ir").exists()


def test_other_rejections(models, tmp_path):
    cases = []
    (tmp_path / "notes.txt").write_text("hello")
    cases.append(((tmp_path / "notes.txt", None), "unknown model format"))
    cases.append(((tmp_path / "missing.onnx", None), "model not found"))
    cases.append(((models["keras-json"][0], None), "without weights: pass its weights file with --weights"))
    cases.append(((models["keras-json"][1], None), "holds weights only"))
    cases.append(((models["onnx"][0], models["keras-json"][1]), "--weights is only for a legacy Keras"))
    (tmp_path / "empty.onnx").write_bytes(b"")
    cases.append(((tmp_path / "empty.onnx", None), "is empty"))
    (tmp_path / "folder").mkdir()
    cases.append(((tmp_path / "folder", None), "not a TensorFlow SavedModel"))
    for (src, weights), message in cases:
        with pytest.raises(OvdocError, match=message) as err:
            convert_source(src, tmp_path / "ir", weights=weights)
        assert "\n" not in str(err.value)
    assert not (tmp_path / "ir").exists()


def test_seed_caffe_and_ir2018_are_refused(seed_dir, tmp_path):
    for name in ("caffe/weights.prototxt", "caffe/weights.caffemodel"):
        with pytest.raises(OvdocError, match="Caffe frontend in 2024.0.*ONNX, TensorFlow or Keras original"):
            convert_source(seed_dir / name, tmp_path / "ir")
    for src in (seed_dir / "ir2018-FP32", seed_dir / "ir2018-FP32" / "weights.xml"):
        with pytest.raises(OvdocError, match="IR v4 .*too old"):
            convert_source(src, tmp_path / "ir")


def test_int8_hook(models, tmp_path):
    import importlib.util

    from ovdoc.host.convert import Int8Options

    if importlib.util.find_spec("ovdoc.host.quantize") is None:
        with pytest.raises(OvdocError, match="^INT8 is not available in this build$"):
            convert_source(models["onnx"][0], tmp_path / "ir", precisions=["INT8"], int8=Int8Options("x"))
        return
    with pytest.raises(OvdocError, match="--calib"):
        convert_source(models["onnx"][0], tmp_path / "ir", precisions=["INT8"])
    calib = tmp_path / "calib"
    calib.mkdir()
    rng = np.random.default_rng(7)
    for i in range(40):
        img = cv2.GaussianBlur(rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8), (7, 7), 2)
        cv2.imwrite(str(calib / f"{i:02d}.png"), img)
    out = tmp_path / "ir"
    report = convert_source(models["onnx"][0], out, precisions=["FP32", "INT8"], int8=Int8Options(calib))
    assert set(report["precisions"]) == {"FP32", "INT8"}
    int8 = report["precisions"]["INT8"]
    assert int8["path"] == str(out / "INT8" / "model.xml") and (out / "INT8" / "model.bin").is_file()
    assert int8["quantization"]["int8_xml"] == int8["path"]
    assert 0.9 < int8["cosine_median"] <= 1.0


# --- atomicity ------------------------------------------------------------------------------------------
def test_failed_conversion_leaves_existing_out_untouched(models, tmp_path):
    out = tmp_path / "ir"
    convert_source(models["onnx"][0], out, precisions=["FP32"])
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    bad = _truncate(models["onnx"][0], tmp_path / "bad.onnx")
    with pytest.raises(OvdocError):
        convert_source(bad, out)
    after = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert after == before
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temp dirs left


def test_failed_verification_leaves_existing_out_untouched(seed_dir, tmp_path):
    out = tmp_path / "ir"
    out.mkdir()
    (out / "keep.txt").write_text("user data")
    with pytest.raises(VerificationError, match="TFLite frontend computes this weight-quantized TFLite"):
        convert_source(seed_dir / "tflite" / "weights.tflite", out, tflite_fix=False)
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["ir"]


# --- CLI -----------------------------------------------------------------------------------------------
def test_cli_json_schema(models, tmp_path):
    out = tmp_path / "ir"
    result = CliRunner().invoke(
        cli, ["convert", str(models["onnx-nchw"][0]), "--out", str(out), "--json", "--name", "small"]
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["source"] == str(models["onnx-nchw"][0])
    assert report["format"] == "onnx"
    assert set(report["precisions"]) == {"FP32", "FP16"}
    for precision, row in report["precisions"].items():
        assert row["path"] == str(out / precision / "model.xml")
        assert {"cosine_min", "cosine_median", "max_abs_diff"} <= set(row)
        assert all(isinstance(row[k], float) for k in ("cosine_min", "cosine_median", "max_abs_diff"))
    assert report["precisions"]["FP32"]["cosine_min"] >= 0.9999
    model, _, _ = read_ir(out)
    assert model.get_friendly_name() == "small"
    assert "NCHW" in " ".join(report["notes"])


def test_cli_errors_are_one_line_and_nonzero(seed_dir, tmp_path):
    """A real process: exit code and stderr exactly as a user sees them."""
    for args, message in [
        ([str(seed_dir / "caffe" / "weights.prototxt")], "Caffe frontend"),
        ([str(seed_dir / "keras" / "model.json")], "--weights"),
        ([str(seed_dir / "ir2018-FP32")], "IR v4"),
    ]:
        proc = subprocess.run(
            [sys.executable, "-m", "ovdoc", "convert", *args, "--out", str(tmp_path / "ir")],
            capture_output=True, text=True, encoding="utf-8", errors="replace", timeout=120,
        )
        assert proc.returncode != 0
        assert proc.stdout == ""
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("Error: ") and message in lines[0], proc.stderr


def test_onnx_route_and_help_need_no_tensorflow(models, tmp_path):
    """Block TensorFlow outright: importing the package, --help and an ONNX conversion must still work."""
    script = f"""
import sys
for blocked in ("tensorflow", "keras", "tf_keras"):
    sys.modules[blocked] = None  # any import of it now raises ImportError
import ovdoc.host.convert
from click.testing import CliRunner
from ovdoc.cli import cli
assert CliRunner().invoke(cli, ["convert", "--help"]).exit_code == 0
from ovdoc.host.convert import convert_source
r = convert_source({str(models["onnx"][0])!r}, {str(tmp_path / "ir")!r}, precisions=["FP32"])
assert r["precisions"]["FP32"]["cosine_min"] >= 0.9999
print("ok")
"""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
            encoding="utf-8", errors="replace", timeout=300)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-2000:]
    help_proc = subprocess.run(
        [sys.executable, "-c", "import sys; import ovdoc.host.convert, ovdoc.commands.convert; "
         "print(any(m.split('.')[0] in ('tensorflow', 'keras', 'tf_keras') for m in sys.modules))"],
        capture_output=True, text=True, encoding="utf-8", errors="replace", timeout=120,
    )
    assert help_proc.stdout.strip() == "False"


def test_ir_on_disk_matches_keras_independently(models, small_keras, tmp_path):
    """Not only the converter's own check: read the written IR back and run it against Keras here."""
    from ovdoc.runtime.ir import compile_ir

    out = tmp_path / "ir"
    convert_source(models["pb"][0], out, precisions=["FP32"])
    assert not (out / "FP16").exists()
    raw = ov.Core().read_model(out / "FP32" / "model.xml")
    assert raw.input().get_any_name() == "image" and raw.output().get_any_name() == "features"
    model, spec, _ = read_ir(out)
    images = np.random.default_rng(5).integers(0, 256, (3, SIZE, SIZE, 3), dtype=np.uint8)
    got = compile_ir(model, spec, batch=3)(images)[0]
    want = small_keras(images[..., ::-1].astype("float32") / 255.0, training=False).numpy()
    np.testing.assert_allclose(got, want, atol=1e-4)
