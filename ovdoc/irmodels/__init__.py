"""Models shipped inside the package (package data): the built-in demo and the ImageNet backbones
(described in ovdoc.irmodels.backbones).

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


def imagenet_dir() -> Path:
    """The folder of the default backbone (the registry's, ovdoc.irmodels.backbones): model.xml/.bin and
    its verification record."""
    from ovdoc.irmodels.backbones import DEFAULT_BACKBONES, get_backbone

    return get_backbone(DEFAULT_BACKBONES["global"]).directory


def imagenet_backbone() -> Path:
    """model.xml of the default backbone (global-average-pooled features; its taps in its rt_info).

    It lets `ovdoc fit --normal good/` work with no TensorFlow and no training.
    """
    from ovdoc.irmodels.backbones import DEFAULT_BACKBONES, get_backbone

    return get_backbone(DEFAULT_BACKBONES["global"]).xml


def resolve_model(text: str | Path | None, *, backbone: str | None = None, mode: str = "global") -> Path:
    """What `ovdoc fit [MODEL] [--backbone NAME]` means: a shipped backbone by name (`--backbone`, or MODEL
    `imagenet` / a registry name such as `efficientnet-lite0`), MODEL omitted = the mode's default
    backbone, else a path as given.

    A file or folder that really is called `imagenet` (or a backbone's name) wins over the shipped one.
    """
    from ovdoc.irmodels.backbones import ALIASES, BACKBONES, DEFAULT_BACKBONES, get_backbone

    if backbone is None and text is None:
        backbone = DEFAULT_BACKBONES.get(mode, DEFAULT_BACKBONES["global"])
    elif backbone is None and not Path(text).exists():
        name = str(text).strip().lower()
        backbone = name if name in BACKBONES or name in ALIASES else None
    if backbone is not None:
        return get_backbone(backbone).xml
    return Path(text)
