"""ONNX -> OpenVINO, verified against the ONNX reference evaluator (no TensorFlow involved).

onnxruntime is not part of ovdoc's stack; `onnx.reference.ReferenceEvaluator` is the ONNX project's
own executable specification of the operators, an implementation independent of OpenVINO, and fast
enough for a 16-image probe of a MobileNet-sized model.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ovdoc.errors import OvdocError, first_line
from ovdoc.host.convert.converted import Converted, ov_convert, per_sample


def convert_onnx(path: Path) -> Converted:
    import onnx
    from onnx.reference import ReferenceEvaluator

    try:
        proto = onnx.load(str(path))
        onnx.checker.check_model(proto)
    except Exception as exc:
        raise OvdocError(f"{path} is not a valid ONNX model (corrupt or truncated?): {first_line(exc)}") \
            from exc
    initializers = {t.name for t in proto.graph.initializer}
    inputs = [i for i in proto.graph.input if i.name not in initializers]
    if len(inputs) != 1 or len(proto.graph.output) != 1:
        raise OvdocError(
            f"{path} has {len(inputs)} inputs and {len(proto.graph.output)} outputs; ovdoc needs one image "
            "input and one feature output"
        )
    dims = [d.dim_value if d.HasField("dim_value") else None for d in inputs[0].type.tensor_type.shape.dim]
    layout = "NCHW" if len(dims) == 4 and dims[1] == 3 and dims[3] != 3 else "NHWC"
    try:
        evaluator = ReferenceEvaluator(proto)
    except Exception as exc:
        raise OvdocError(f"the ONNX reference evaluator cannot run {path}: {first_line(exc)}") from exc
    input_name = inputs[0].name

    def run_one(x: np.ndarray) -> np.ndarray:
        if layout == "NCHW":
            x = np.ascontiguousarray(x.transpose(0, 3, 1, 2))
        return evaluator.run(None, {input_name: x})[0]

    model = ov_convert(path, f"ONNX model {path}")
    return Converted(
        model=model, reference=per_sample(run_one), reference_name="onnx.reference", layout=layout
    )
