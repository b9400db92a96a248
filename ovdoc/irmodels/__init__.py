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
