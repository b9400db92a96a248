"""Check the shipped EfficientNet-Lite IRs against an independent implementation run in torch.

Why: build_efficientnet.py checks the FP16 IR against the graph it was built from; that proves the
saving, not the architecture. Here the reference is the PyPI package efficientnet-lite-pytorch
(lukemelas' EfficientNet-PyTorch with the Lite variants), loading the same checkpoint with torch:
features (pooled 1280-d, and the two patch taps) and top-1 on foolbox's 20 ImageNet JPEGs, at the
native size and at 160x320. The result is written into each backbone.json under
verification.reference_torch. torch is used here and in tests/test_backbones.py only; ovdoc never
imports it.

    pip install torch==2.13.0 efficientnet-lite-pytorch --no-deps
    python converters/verify_efficientnet.py [efficientnet-lite0 ...]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "converters"))

from build_efficientnet import cosine_min, foolbox_images  # noqa: E402

SIZES = ((None, None), (160, 320))


def reference(name: str, height: int, width: int):
    """The torch reference at (height, width) (its 'SAME' padding is static, computed for that size)."""
    import torch
    from efficientnet_lite_pytorch import EfficientNet

    from ovdoc.host.efficientnet_lite import VARIANTS, weights_path

    net = EfficientNet.from_name(name, image_size=(height, width)).eval()
    net.load_state_dict(torch.load(str(weights_path(VARIANTS[name])), weights_only=True))
    return net


def reference_outputs(net, x: np.ndarray, tap_blocks: list[int]) -> tuple[np.ndarray, np.ndarray, list]:
    """(pooled features, logits, tap maps NCHW) of the torch reference for NHWC float input `x`."""
    import torch

    maps: list = []
    hooks = []
    for i in tap_blocks:  # the expansion's ReLU6 runs as block._swish right after _bn0
        block = net._blocks[i]
        hooks.append(block._bn0.register_forward_hook(
            lambda _m, _inp, out: maps.append(torch.clamp(out, 0, 6).numpy())))
    with torch.no_grad():
        t = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
        pooled = net.extract_features(t).mean(dim=(2, 3))
        logits = net._fc(pooled)
    for h in hooks:
        h.remove()
    return pooled.numpy(), logits.numpy(), maps


def verify(name: str) -> dict:
    import dataclasses

    from ovdoc.irmodels.backbones import get_backbone
    from ovdoc.runtime.ir import compile_ir, read_ir

    entry = get_backbone(name)
    model, spec, _ = read_ir(entry.xml)
    images, labels = foolbox_images()
    taps = [entry.taps["stride8"], entry.taps["stride16"]]
    tap_blocks = [int(t.split("_")[1]) for t in taps]
    rows = []
    for h, w in SIZES:
        sized = dataclasses.replace(spec, height=h or spec.height, width=w or spec.width)
        batch = sized.prepare_batch(images)
        compiled = compile_ir(model, sized, batch=len(batch))
        got = np.asarray(compiled(batch)[0])
        probe = model.clone()
        probe.reshape({probe.inputs[0]: [-1, sized.height, sized.width, 3]})
        probe.add_outputs(taps)
        tapped = compile_ir(probe, sized, batch=None, uint8_input=False)(sized.to_float(batch))
        net = reference(name, sized.height, sized.width)
        pooled, logits, maps = reference_outputs(net, sized.to_float(batch), tap_blocks)
        ours = got @ net._fc.weight.detach().numpy().T + net._fc.bias.detach().numpy()
        row = {"size": [sized.height, sized.width],
               "features_cosine_min": round(cosine_min(pooled, got), 6),
               "taps_cosine_min": {t: round(cosine_min(m, np.asarray(tapped[i + 1])), 6)
                                   for i, (t, m) in enumerate(zip(taps, maps, strict=True))},
               "top1_reference": int((logits.argmax(1) == labels).sum()),
               "top1_ir": int((ours.argmax(1) == labels).sum()),
               "top1_agreement": int((ours.argmax(1) == logits.argmax(1)).sum())}
        print(name, row)
        if row["features_cosine_min"] < 0.999 or min(row["taps_cosine_min"].values()) < 0.999:
            raise SystemExit(f"{name}: the shipped IR disagrees with the torch reference: {row}")
        rows.append(row)
    json_path = entry.directory / "backbone.json"
    info = json.loads(json_path.read_text())
    import torch

    info["verification"]["reference_torch"] = {
        "implementation": "efficientnet-lite-pytorch 0.1.0 (EfficientNet.from_name + the same checkpoint), "
        f"torch {torch.__version__}", "images": len(images), "checks": rows}
    json_path.write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")
    return info


def main() -> None:
    from ovdoc.host.efficientnet_lite import VARIANTS
    from ovdoc.irmodels.backbones import get_backbone

    names = sys.argv[1:] or [n for n in VARIANTS if (get_backbone(n).directory / "model.xml").is_file()]
    for name in names:
        verify(name)


if __name__ == "__main__":
    main()
