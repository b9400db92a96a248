"""Keras -> frozen TF graph -> OpenVINO: the original project's route, on today's tools.

Freezing (convert_variables_to_constants_v2) gives OpenVINO a plain inference graph: no variables,
no training branches, so BatchNormalization and Dropout are in inference mode by construction.
"""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import numpy as np

from ovdoc.errors import OvdocError
from ovdoc.host import require_tensorflow
from ovdoc.host.convert.converted import Converted, ov_convert


def keras_input_size(model) -> tuple[int | None, int | None]:
    """(height, width) of a Keras model's single NHWC image input; None where the model leaves it open."""
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise OvdocError(
            f"the Keras model has {len(model.inputs)} inputs and {len(model.outputs)} outputs; ovdoc needs "
            "one image input and one feature output"
        )
    shape = tuple(model.inputs[0].shape)
    if len(shape) != 4 or shape[3] != 3:
        raise OvdocError(f"the Keras model's input shape is {shape}; ovdoc needs NHWC images with 3 channels")
    return shape[1], shape[2]


def convert_keras(model, workdir: Path, *, size: tuple[int, int] | None = None) -> Converted:
    """Freeze `model` into `workdir/frozen.pb`, convert that with OpenVINO, keep `model` as reference."""
    tf = require_tensorflow("converting a Keras model")
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    h, w = keras_input_size(model)
    if h is None or w is None:
        if size is None:
            raise OvdocError("the Keras model does not fix its input size; pass --size WxH (width x height)")
        h, w = size

    def forward(x):
        out = model(x, training=False)
        return out[0] if isinstance(out, (list, tuple)) else out

    with contextlib.redirect_stdout(io.StringIO()):
        concrete = tf.function(forward).get_concrete_function(tf.TensorSpec([None, h, w, 3], tf.float32))
        frozen = convert_variables_to_constants_v2(concrete)
    graph_def = frozen.graph.as_graph_def()
    pb = workdir / "frozen.pb"
    pb.write_bytes(graph_def.SerializeToString())
    ov_model = ov_convert(pb, "the frozen Keras graph")
    from ovdoc.host.convert.layer_names import tag_keras_layers

    tag_keras_layers(ov_model, model)  # Keras layer names back on ReLU/Add nodes (patch mode taps them)

    def reference(batch: np.ndarray) -> np.ndarray:
        outs = []
        for i in range(0, len(batch), 16):
            y = forward(tf.constant(batch[i : i + 16]))
            outs.append(np.asarray(y, np.float32).reshape(len(batch[i : i + 16]), -1))
        return np.concatenate(outs)

    return Converted(model=ov_model, reference=reference, reference_name="Keras", frozen_pb=pb)
