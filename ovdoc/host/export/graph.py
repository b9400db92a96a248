"""The Keras model as one frozen TF graph with a fixed input (what TFLite and CoreML convert from)."""

from __future__ import annotations

import contextlib
import io

INPUT_NAME = "image"


def forward_fn(model):
    import tensorflow as tf

    def forward(x):
        out = model(x, training=False)
        return out[0] if isinstance(out, (list, tuple)) else out

    return tf.function(forward)


def frozen_function(model, height: int, width: int, batch: int | None = 1):
    """A concrete function with the variables folded in: BatchNorm in inference mode by construction."""
    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    with contextlib.redirect_stdout(io.StringIO()):
        concrete = forward_fn(model).get_concrete_function(
            tf.TensorSpec([batch, height, width, 3], tf.float32, name=INPUT_NAME)
        )
        return convert_variables_to_constants_v2(concrete)
