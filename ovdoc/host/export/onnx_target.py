"""ONNX export through tf2onnx, verified with ONNX's own reference evaluator (onnxruntime where installed)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

from ovdoc.errors import OvdocError
from ovdoc.host.export.graph import INPUT_NAME, forward_fn

OPSET = 17
FILE = "model.onnx"


def write(model, spec, out: Path) -> dict:
    import tensorflow as tf
    import tf2onnx

    signature = [tf.TensorSpec([None, spec.height, spec.width, 3], tf.float32, name=INPUT_NAME)]
    proto, _ = tf2onnx.convert.from_function(forward_fn(model), input_signature=signature, opset=OPSET,
                                             output_path=str(out / FILE))
    import onnx

    onnx.checker.check_model(proto)
    return {"onnx": {"file": FILE, "bytes": (out / FILE).stat().st_size, "opset": OPSET}}


def run(path: Path, x: np.ndarray) -> tuple[np.ndarray, str]:
    """Features of `x` and the name of what computed them."""
    if importlib.util.find_spec("onnxruntime") is not None:
        import onnxruntime

        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        return np.asarray(session.run(None, {name: x.astype(np.float32)})[0], np.float32), "onnxruntime"
    import onnx
    from onnx.reference import ReferenceEvaluator

    proto = onnx.load(str(path))
    evaluator = ReferenceEvaluator(proto)
    name = proto.graph.input[0].name
    rows = [np.asarray(evaluator.run(None, {name: x[i : i + 4].astype(np.float32)})[0], np.float32)
            for i in range(0, len(x), 4)]
    return np.concatenate(rows).reshape(len(x), -1), "onnx.reference.ReferenceEvaluator"


def io_names(path: Path) -> tuple[dict, dict]:
    import onnx

    proto = onnx.load(str(path))

    def describe(value) -> dict:
        dims = [d.dim_value if d.HasField("dim_value") else None for d in value.type.tensor_type.shape.dim]
        return {"name": value.name, "shape": dims, "dtype": "float32"}

    if len(proto.graph.input) != 1 or len(proto.graph.output) != 1:
        raise OvdocError(f"{path}: expected one input and one output")
    return describe(proto.graph.input[0]), describe(proto.graph.output[0])
