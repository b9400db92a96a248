"""Models shipped inside the package (package data): the built-in demo and the ImageNet backbone.

Located next to this file, so they work from a wheel as well as from a checkout; nothing here is
looked up relative to the repository.
"""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parent


def demo_dir() -> Path:
    """The built-in demo: `bundle/` (a DOC detector for sneakers) and `stream.avi` (the clip it scores)."""
    return ROOT / "demo"


def demo_bundle() -> Path:
    return demo_dir() / "bundle"


def demo_stream() -> Path:
    return demo_dir() / "stream.avi"


IMAGENET_NAMES = ("imagenet", "imagenet-mobilenetv2", "mobilenetv2-imagenet")


def imagenet_dir() -> Path:
    """The shipped ImageNet MobileNetV2 (torchvision weights, BSD-3-Clause): model.xml/.bin, imagenet.json."""
    return ROOT / "imagenet"


def imagenet_backbone() -> Path:
    """model.xml of the shipped backbone: global-average-pooled 1280-d features, 224x224 by default.

    It lets `ovdoc fit --normal good/` work with no TensorFlow and no training; its ReLU/Add nodes keep
    their Keras layer names (block_6_expand_relu, block_12_add, out_relu, ...) for patch mode.
    """
    from ovdoc.errors import OvdocError

    xml = imagenet_dir() / "model.xml"
    if not xml.is_file() or not xml.with_suffix(".bin").is_file():
        raise OvdocError(f"the shipped ImageNet backbone is missing from {xml.parent}: reinstall ovdoc")
    return xml


def resolve_model(text: str | Path | None, *, backbone: str | None = None, mode: str = "global") -> Path:
    """What `ovdoc fit [MODEL] [--backbone NAME]` means: a shipped backbone by name (`--backbone`, or MODEL
    `imagenet` / a registry name such as `efficientnet-lite0`), MODEL omitted = the mode's default
    backbone, else a path as given.

    A file or folder that really is called `imagenet` (or a backbone's name) wins over the shipped one.
    """
    from ovdoc.irmodels.backbones import BACKBONES, DEFAULT_BACKBONES, get_backbone

    if backbone is None and text is None:
        backbone = DEFAULT_BACKBONES.get(mode, DEFAULT_BACKBONES["global"])
    elif backbone is None and not Path(text).exists():
        name = str(text).strip().lower()
        backbone = "mobilenetv2" if name in IMAGENET_NAMES else name if name in BACKBONES else None
    if backbone is not None:
        return get_backbone(backbone).xml
    return Path(text)
