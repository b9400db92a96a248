"""Work around OpenVINO's TFLite frontend on weight-quantized ("hybrid") models.

TFLite's dynamic-range quantization stores some kernels as uint8/int8 constants with a scale and zero
point, consumed directly by float CONV_2D/DEPTHWISE_CONV_2D ops (the interpreter dequantizes inside
the kernel), or behind a DEQUANTIZE op. Today's OpenVINO TFLite frontend reads the former as raw
uint8 values, but TFLite's hybrid kernels read the bytes as *signed* int8 (symmetric, zero point
unused: old converters typed them UINT8), so the seed model's features came out at cosine ~0.3
against tf.lite.Interpreter. Rewriting those constants as float32 the way the interpreter reads them
(int8 * scale for hybrid inputs, (q - zero_point) * scale behind DEQUANTIZE) gives a plain float
model that OpenVINO converts correctly; verification against the *original* file through
tf.lite.Interpreter proves it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ovdoc.errors import OvdocError

DEQUANTIZE = 6
FLOAT32 = 0
_TYPES = {1: np.float16, 3: np.uint8, 9: np.int8}  # TensorType codes in the TFLite schema


def dequantize_weights(src: Path, dst: Path) -> int:
    """Write `src` with quantized constant weights turned into float32 to `dst`; returns how many."""
    from tensorflow.lite.python import schema_py_generated as schema
    from tensorflow.lite.tools import flatbuffer_utils

    try:
        model = flatbuffer_utils.read_model(str(src))
    except Exception as exc:
        raise OvdocError(f"cannot parse TFLite model {src}: {exc}") from exc

    def float_buffer(values: np.ndarray) -> int:
        buffer = schema.BufferT()
        buffer.data = np.frombuffer(values.astype("<f4").tobytes(), dtype=np.uint8)
        model.buffers.append(buffer)
        return len(model.buffers) - 1

    rewritten = 0
    for graph in model.subgraphs:
        kept = []
        for op in graph.operators:
            code = model.operatorCodes[op.opcodeIndex]
            is_dequantize = max(code.builtinCode, code.deprecatedBuiltinCode) == DEQUANTIZE
            if is_dequantize and len(op.inputs) == 1:
                values = _dequantized(model, graph.tensors[op.inputs[0]])
                if values is not None:  # constant DEQUANTIZE: its output becomes a float constant
                    graph.tensors[op.outputs[0]].buffer = float_buffer(values)
                    rewritten += 1
                    continue
            elif all(graph.tensors[i].type == FLOAT32 for i in op.outputs if i >= 0):
                for index in (i for i in op.inputs if i >= 0):
                    tensor = graph.tensors[index]
                    if tensor.type in (3, 9):  # hybrid op: float op fed a quantized constant
                        values = _dequantized(model, tensor, hybrid=True)
                        if values is not None:
                            tensor.buffer = float_buffer(values)
                            tensor.type = FLOAT32
                            tensor.quantization = None
                            rewritten += 1
            kept.append(op)
        graph.operators = kept
    flatbuffer_utils.write_model(model, str(dst))
    return rewritten


def _dequantized(model, tensor, hybrid: bool = False) -> np.ndarray | None:
    """The float32 value of a constant quantized tensor as TFLite reads it, or None if not one.

    `hybrid`: the tensor feeds a float op directly; TFLite's hybrid kernels take its bytes as int8.
    """
    dtype = np.int8 if hybrid else _TYPES.get(tensor.type)
    data = model.buffers[tensor.buffer].data if 0 < tensor.buffer < len(model.buffers) else None
    if dtype is None or data is None or len(data) == 0:
        return None
    shape = [int(d) for d in tensor.shape]
    values = np.frombuffer(bytes(data), dtype=dtype).reshape(shape).astype(np.float32)
    if dtype is np.float16:
        return values
    quant = tensor.quantization
    if quant is None or quant.scale is None or len(quant.scale) == 0:
        return None
    scale = np.asarray(quant.scale, np.float32)
    has_zero = quant.zeroPoint is not None and not hybrid
    zero = np.asarray(quant.zeroPoint if has_zero else [0], np.float32)
    if scale.size > 1:  # per-channel: broadcast along the quantized dimension
        bshape = [1] * len(shape)
        bshape[quant.quantizedDimension] = scale.size
        scale = scale.reshape(bshape)
        zero = zero.reshape(bshape) if zero.size == scale.size else zero
    return (values - zero) * scale
