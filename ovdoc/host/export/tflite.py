"""TFLite export: FP32, FP16 and dynamic-range INT8 files, each run by tf.lite.Interpreter against the IR.

The original project's weight-quantized file stored its 8-bit weights as UINT8 while TFLite's hybrid
kernels read them as signed (ovdoc.host.convert.tflite_fix); every file written here is read back and
refused if any tensor is UINT8, so a phone never gets that problem.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ovdoc.errors import OvdocError
from ovdoc.host.export.graph import frozen_function

UINT8 = 3  # TensorType code in the TFLite schema
VARIANTS = {"fp32": "model.tflite", "fp16": "model-fp16.tflite", "int8-dynamic": "model-int8-dynamic.tflite"}


def write(model, spec, out: Path) -> dict:
    """variant -> {"file", "bytes"}; FP32 first (the one the scoring JSON names)."""
    import tensorflow as tf

    frozen = frozen_function(model, spec.height, spec.width)
    files = {}
    for variant, name in VARIANTS.items():
        converter = tf.lite.TFLiteConverter.from_concrete_functions([frozen], model)
        if variant != "fp32":
            converter.optimizations = [tf.lite.Optimize.DEFAULT]  # dynamic range: weights only
        if variant == "fp16":
            converter.target_spec.supported_types = [tf.float16]
        (out / name).write_bytes(converter.convert())
        uint8 = uint8_tensors(out / name)
        if uint8:
            raise OvdocError(f"the {variant} TFLite file has UINT8 tensors ({', '.join(uint8[:3])}): refused")
        files[variant] = {"file": name, "bytes": (out / name).stat().st_size}
    return files


def uint8_tensors(path: Path) -> list[str]:
    """Names of UINT8-typed tensors in a TFLite file (weights stored the way the seed model's were)."""
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.read_model(str(path))
    return [t.name.decode() if isinstance(t.name, bytes) else str(t.name)
            for g in model.subgraphs for t in g.tensors if t.type == UINT8]


def run(path: Path, x: np.ndarray) -> np.ndarray:
    """tf.lite.Interpreter on each image (the file has a batch-1 input, as a phone runs it)."""
    import tensorflow as tf

    interpreter = tf.lite.Interpreter(model_path=str(path))
    interpreter.allocate_tensors()
    inp = interpreter.get_input_details()[0]
    out = interpreter.get_output_details()[0]
    rows = []
    for image in x:
        interpreter.set_tensor(inp["index"], image[None].astype(np.float32))
        interpreter.invoke()
        rows.append(np.asarray(interpreter.get_tensor(out["index"]), np.float32).reshape(-1))
    return np.stack(rows)


def io_names(path: Path) -> tuple[dict, dict]:
    import tensorflow as tf

    interpreter = tf.lite.Interpreter(model_path=str(path))
    inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    return ({"name": inp["name"], "shape": [int(v) for v in inp["shape"]], "dtype": "float32"},
            {"name": out["name"], "shape": [int(v) for v in out["shape"]], "dtype": "float32"})
