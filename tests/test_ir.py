"""IR conventions: stable names, recorded preprocessing, in-graph preprocessing equal to numpy's."""

from __future__ import annotations

import numpy as np
import openvino as ov
import openvino.opset13 as ops
import pytest

from ovdoc.errors import OvdocError
from ovdoc.runtime.ir import (
    annotate,
    compile_ir,
    name_ports,
    preprocess_of,
    read_ir,
    resolve_ir_path,
    save_ir,
)
from ovdoc.runtime.preprocess import PreprocessSpec


def tiny_model(h: int = 12, w: int = 10) -> ov.Model:
    """A real (small) feature network: conv -> relu -> global average pool -> [N, 8]."""
    rng = np.random.default_rng(0)
    image = ops.parameter([-1, h, w, 3], ov.Type.f32, name="input_1")
    nchw = ops.transpose(image, ops.constant(np.array([0, 3, 1, 2], np.int64)))
    kernel = ops.constant(rng.normal(size=(8, 3, 3, 3)).astype(np.float32))
    conv = ops.convolution(nchw, kernel, [1, 1], [1, 1], [1, 1], [1, 1])
    pooled = ops.reduce_mean(ops.relu(conv), ops.constant(np.array([2, 3], np.int64)), keep_dims=False)
    return ov.Model([pooled], [image], "tiny")


@pytest.fixture()
def saved_ir(tmp_path):
    spec = PreprocessSpec(height=12, width=10, color="RGB", mean=(10, 20, 30), std=(50, 60, 70))
    model = annotate(name_ports(tiny_model()), spec, {"format": "test"})
    xml = save_ir(model, tmp_path / "FP32" / "model.xml", compress_to_fp16=False)
    return xml, spec


def test_round_trip_keeps_names_and_preprocessing(saved_ir):
    xml, spec = saved_ir
    model, read_spec, path = read_ir(xml.parent.parent)  # a convert output folder resolves to FP32
    assert path == xml
    assert read_spec == spec
    assert model.inputs[0].get_any_name() == "image"
    assert model.outputs[0].get_any_name() == "features"


@pytest.mark.parametrize("color", ["RGB", "BGR"])
def test_in_graph_preprocessing_matches_numpy(tmp_path, color):
    spec = PreprocessSpec(height=12, width=10, color=color, mean=(10, 20, 30), std=(50, 60, 70))
    model = name_ports(tiny_model())
    batch = np.random.default_rng(1).integers(0, 256, size=(4, 12, 10, 3), dtype=np.uint8)
    fast = compile_ir(model, spec, batch=4)(batch)[0]
    reference = compile_ir(model, spec, batch=None, uint8_input=False)(spec.to_float(batch))[0]
    np.testing.assert_allclose(fast, reference, rtol=1e-5, atol=1e-5)


def test_colour_order_matters(tmp_path):
    """Guard against a no-op comparison: RGB and BGR specs must give different features."""
    model = name_ports(tiny_model())
    batch = np.random.default_rng(2).integers(0, 256, size=(2, 12, 10, 3), dtype=np.uint8)
    rgb = compile_ir(model, PreprocessSpec(12, 10, "RGB"), batch=2)(batch)[0]
    bgr = compile_ir(model, PreprocessSpec(12, 10, "BGR"), batch=2)(batch)[0]
    assert np.abs(rgb - bgr).max() > 1e-3


def test_foreign_ir_gets_preprocessing_guessed_from_shape():
    spec = preprocess_of(tiny_model(16, 16))
    assert (spec.height, spec.width, spec.color) == (16, 16, "RGB")


def test_missing_weights_file_is_one_line(saved_ir):
    xml, _ = saved_ir
    xml.with_suffix(".bin").unlink()
    with pytest.raises(OvdocError, match="no weights file"):
        read_ir(xml)


def test_corrupt_xml_is_one_line(saved_ir):
    xml, _ = saved_ir
    text = xml.read_text(encoding="utf-8")
    xml.write_text(text[: len(text) // 2])
    with pytest.raises(OvdocError, match="corrupt or truncated"):
        read_ir(xml)


def test_missing_model_and_non_ir(tmp_path):
    with pytest.raises(OvdocError, match="model not found"):
        resolve_ir_path(tmp_path / "nope.xml")
    onnx = tmp_path / "model.onnx"
    onnx.write_bytes(b"\x08\x07")
    with pytest.raises(OvdocError, match="not an OpenVINO IR"):
        resolve_ir_path(onnx)
    with pytest.raises(OvdocError, match="no OpenVINO IR"):
        resolve_ir_path(tmp_path)


def test_ir_from_2018_is_refused_as_too_old(seed_dir):
    with pytest.raises(OvdocError, match=r"IR v4 \(OpenVINO 2018-2020\).*reads IR v10\+ only"):
        read_ir(seed_dir / "ir2018-FP32" / "weights.xml")


def test_auto_device_keeps_the_cpu_at_f32():
    """AUTO picks the CPU here; without pinning, a BF16-capable CPU would move the features."""
    spec = PreprocessSpec(12, 10)
    model = name_ports(tiny_model())
    batch = np.random.default_rng(3).integers(0, 256, size=(4, 12, 10, 3), dtype=np.uint8)
    cpu_f32 = compile_ir(model, spec, batch=4, device="CPU")(batch)[0]
    auto = compile_ir(model, spec, batch=4, device="AUTO")(batch)[0]
    np.testing.assert_array_equal(auto, cpu_f32)
