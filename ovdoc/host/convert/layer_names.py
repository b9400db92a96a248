"""Give OpenVINO nodes back the names of the Keras layers they compute.

Why: patch mode taps intermediate feature maps by Keras layer name (`block_6_expand_relu`,
`block_12_add`, `out_relu`, ...), but freezing + OpenVINO's NHWC->NCHW transpose sinking renames every
node (`Transpose_4352`). For networks whose activations and residual sums lie on one topological chain
(MobileNetV2 and the DOC models ovdoc trains from it), the k-th Keras ReLU is the k-th Clamp/Relu op and
the k-th Keras Add is the k-th Add of two computed tensors, so the names can be restored by order. The
tagged nodes get the layer name as friendly name *and* as an extra output tensor name, so
`model.add_outputs("block_6_expand_relu")` works. Their outputs are NCHW (OpenVINO's internal layout).
Callers verify numerically (converters/build_imagenet.py, tests/test_imagenet_ir.py).
"""

from __future__ import annotations

import openvino as ov

RELU_OPS = ("Clamp", "Relu")
CONST_OPS = ("Constant", "Convert")  # Convert(Constant) = decompressed FP16 weights


def keras_layers_flat(model) -> list:
    """Layers in topological order, nested functional models expanded in place."""
    out = []
    for layer in model.layers:
        if getattr(layer, "layers", None):  # a nested Model / Sequential
            out.extend(keras_layers_flat(layer))
        else:
            out.append(layer)
    return out


def _is_const(output: ov.Output) -> bool:
    node = output.get_node()
    if node.get_type_name() == "Constant":
        return True
    return node.get_type_name() == "Convert" and node.input_value(0).get_node().get_type_name() == "Constant"


def tag_keras_layers(ov_model: ov.Model, keras_model) -> dict[str, str]:
    """Rename the ReLU and Add nodes of `ov_model` after `keras_model`'s layers; {} when the chains differ.

    Returns {keras layer name: original OpenVINO friendly name} for what was tagged.
    """
    from keras import layers

    keras_layers = keras_layers_flat(keras_model)
    relus = [la.name for la in keras_layers if isinstance(la, layers.ReLU)]
    adds = [la.name for la in keras_layers if isinstance(la, layers.Add)]
    ops = ov_model.get_ordered_ops()
    ov_relus = [op for op in ops if op.get_type_name() in RELU_OPS]
    ov_adds = [
        op for op in ops
        if op.get_type_name() == "Add" and not any(_is_const(op.input_value(i)) for i in range(2))
    ]
    if len(relus) != len(ov_relus) or len(adds) != len(ov_adds):
        return {}
    tagged: dict[str, str] = {}
    for name, op in [*zip(relus, ov_relus, strict=True), *zip(adds, ov_adds, strict=True)]:
        tagged[name] = op.get_friendly_name()
        op.set_friendly_name(name)
        op.output(0).get_tensor().add_names({name})
    return tagged
