"""The original project's seed model (../shared/models/seed-doc-faces) through `ovdoc convert`.

The 2018 Keras pair, its ONNX (with the Clip op that broke the 2018 toolchain) and its frozen TF graph
must convert and pass FP32 verification; so must its weight-quantized TFLite, once ovdoc rewrites the
UINT8-stored weights as float32 the way TFLite reads them. Converted as is, today's OpenVINO TFLite
frontend computes it wrongly, and verification must catch that rather than ship it.
"""

from __future__ import annotations

import pytest

from ovdoc.errors import OvdocError, VerificationError
from ovdoc.host.convert import convert_source, load_keras_source
from ovdoc.runtime.ir import read_ir

pytestmark = pytest.mark.slow  # converts the seed model in every format (TensorFlow)


@pytest.mark.parametrize(
    ("src", "weights", "fmt"),
    [
        ("keras/model.json", "keras/weights.h5", "keras-json"),
        ("onnx/weights.onnx", None, "onnx"),
        ("tensorflow/weights.pb", None, "tf-frozen-pb"),
    ],
)
def test_seed_formats_pass_fp32_verification(seed_dir, tmp_path, src, weights, fmt):
    out = tmp_path / "seed"
    report = convert_source(seed_dir / src, out, weights=seed_dir / weights if weights else None)
    assert report["format"] == fmt
    assert report["precisions"]["FP32"]["cosine_min"] >= 0.9999
    assert report["precisions"]["FP16"]["cosine_min"] >= 0.999
    model, spec, _ = read_ir(out)
    assert (spec.height, spec.width, spec.color) == (96, 96, "RGB")
    assert (spec.mean, spec.std) == ((0.0,) * 3, (255.0,) * 3)
    assert str(model.inputs[0].get_partial_shape()) == "[?,96,96,3]"
    assert str(model.outputs[0].get_partial_shape()) == "[?,1280]"


def test_seed_tflite_error_is_caught_without_the_fix(seed_dir, tmp_path):
    """As is, today's OpenVINO reads its hybrid int8 weights as uint8 (cosine ~0.3): verification says so."""
    with pytest.raises(VerificationError, match=r"cosine_min 0\.\d+ < 0\.9999.*TFLite frontend") as err:
        convert_source(seed_dir / "tflite" / "weights.tflite", tmp_path / "seed", tflite_fix=False)
    assert err.value.exit_code != 0
    assert "drop --no-tflite-fix" in str(err.value)
    assert not (tmp_path / "seed").exists()


def test_seed_tflite_converts_with_weights_rewritten(seed_dir, tmp_path):
    out = tmp_path / "seed"
    report = convert_source(seed_dir / "tflite" / "weights.tflite", out)
    assert report["precisions"]["FP32"]["cosine_min"] >= 0.9999
    # the rewritten file against the original in the interpreter (which quantizes activations on the fly)
    assert report["checks"]["tflite_rewrite_vs_original"]["cosine_min"] >= 0.995
    assert "rewritten as float32" in report["notes"][0]
    assert sorted(p.name for p in out.iterdir()) == ["FP16", "FP32", "convert.json"]


def test_seed_full_integer_tflite_is_refused(seed_dir, tmp_path):
    with pytest.raises(OvdocError, match="fully integer-quantized"):
        convert_source(seed_dir / "tflite" / "weights_full_integer_quant.tflite", tmp_path / "seed")


def test_load_keras_source_reads_the_legacy_pair(seed_dir):
    model = load_keras_source(seed_dir / "keras" / "model.json", seed_dir / "keras" / "weights.h5")
    assert tuple(model.input_shape) == (None, 96, 96, 3)
    assert tuple(model.output_shape) == (None, 1280)
    with pytest.raises(OvdocError, match="not a Keras model"):
        load_keras_source(seed_dir / "onnx" / "weights.onnx")
