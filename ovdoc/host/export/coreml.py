"""CoreML export (ML program, iOS 15+) through coremltools.

coremltools runs a model only on macOS, so here the export is checked as far as Linux allows: the saved
package is read back and its spec parsed, the input/output names and shapes and the preprocessing
recorded in its metadata are compared with the bundle's, and every operation is one coremltools knows for
the deployment target. Its numbers are NOT compared with the IR: the report says numeric_verified false.
"""

from __future__ import annotations

import json
from pathlib import Path

from ovdoc.errors import OvdocError, first_line
from ovdoc.host.export.graph import INPUT_NAME, frozen_function

FILE = "model.mlpackage"
TARGET = "iOS15"


def write(model, spec, out: Path) -> dict:
    import coremltools as ct

    frozen = frozen_function(model, spec.height, spec.width)
    try:
        ml = ct.convert(
            [frozen], source="tensorflow", convert_to="mlprogram",
            inputs=[ct.TensorType(name=INPUT_NAME, shape=(1, spec.height, spec.width, 3))],
            minimum_deployment_target=getattr(ct.target, TARGET), compute_precision=ct.precision.FLOAT32,
        )
    except Exception as exc:
        raise OvdocError(f"coremltools could not convert the model: {first_line(exc, 200)}") from exc
    ml.user_defined_metadata["ovdoc.preprocess"] = json.dumps(spec.to_dict(), sort_keys=True)
    ml.short_description = "ovdoc feature model: image (preprocessed, NHWC float32) -> feature vector"
    ml.save(str(out / FILE))
    return {"coreml": {"file": FILE, "target": TARGET, "compute_precision": "FLOAT32"}}


def check(path: Path, spec, feature_dim: int) -> dict:
    """What can be verified without macOS; raises on a mismatch, returns the record otherwise."""
    import coremltools as ct
    from coremltools.converters.mil.mil.ops.registry import SSAOpRegistry

    ml = ct.models.MLModel(str(path), skip_model_load=True)  # loading for prediction needs macOS
    desc = ml.get_spec().description
    inputs = [(i.name, list(i.type.multiArrayType.shape)) for i in desc.input]
    outputs = [(o.name, list(o.type.multiArrayType.shape)) for o in desc.output]
    if inputs != [(INPUT_NAME, [1, spec.height, spec.width, 3])]:
        want = [1, spec.height, spec.width, 3]
        raise OvdocError(f"CoreML export: input {inputs} is not {INPUT_NAME} {want}")
    if len(outputs) != 1 or outputs[0][1][-1:] != [feature_dim]:
        raise OvdocError(f"CoreML export: outputs {outputs} do not end in the bundle's {feature_dim} values")
    recorded = json.loads(dict(desc.metadata.userDefined).get("ovdoc.preprocess", "{}"))
    if recorded != spec.to_dict():
        raise OvdocError("CoreML export: the preprocessing recorded in the package differs from the bundle's")
    program = ml.get_spec().mlProgram.functions["main"]
    ops = sorted({op.type for op in program.block_specializations[program.opset].operations})
    target = getattr(ct.target, TARGET)
    unknown = [op for op in ops if op != "const" and target not in SSAOpRegistry.core_ops.get(op, {})]
    if unknown:
        raise OvdocError(f"CoreML export uses operations {TARGET} lacks: {', '.join(unknown)}")
    return {
        "spec_parsed": True,
        "input": {"name": inputs[0][0], "shape": inputs[0][1], "dtype": "float32"},
        "output": {"name": outputs[0][0], "shape": outputs[0][1], "dtype": "float32"},
        "preprocess_recorded": True,
        "ops": ops,
        "ops_supported_by": TARGET,
        "numeric_verified": False,
        "why_not_numeric": "coremltools runs models only on macOS; check the features there against the IR",
    }
