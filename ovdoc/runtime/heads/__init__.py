"""The heads (modes) a bundle can have, by manifest["mode"]: the one place that maps a mode to its code.

`head_class("patch")` gives the class; `register(cls)` adds one (a new mode is one file with a class
that follows `ovdoc.runtime.heads.base.Head`, plus one entry in HEADS). Built-in heads are imported
when first asked for.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

from ovdoc.errors import OvdocError
from ovdoc.runtime.heads.base import FitInputs, FitPlan, Head, Scored

__all__ = ["HEADS", "FitInputs", "FitPlan", "Head", "Scored", "head_class", "head_of", "modes", "register"]

# mode -> how to import its head class (a literal import, so the import-cycle test sees the edge)
HEADS: dict[str, Callable[[], type]] = {
    "global": lambda: importlib.import_module("ovdoc.runtime.heads.global_head").GlobalHead,
    "patch": lambda: importlib.import_module("ovdoc.runtime.heads.patch_head").PatchHead,
}
BUILT_IN = tuple(HEADS)
DEFAULT_MODE = "global"
_loaded: dict[str, type] = {}


def modes() -> tuple[str, ...]:
    """Every mode known, built-in first."""
    return tuple(dict.fromkeys([*HEADS, *_loaded]))


def register(cls: type) -> type:
    """Add (or replace) the head for `cls.mode`; usable as a class decorator."""
    _loaded[cls.mode] = cls
    HEADS.setdefault(cls.mode, lambda: cls)
    return cls


def unregister(mode: str) -> None:
    """Forget a registered head (tests); a built-in one is imported again when next asked for."""
    _loaded.pop(mode, None)
    if mode not in BUILT_IN:
        HEADS.pop(mode, None)


def head_class(mode: str, *, what: str | None = None) -> type:
    """The head class of `mode`; one line naming the known modes if there is none."""
    if mode in _loaded:
        return _loaded[mode]
    if mode not in HEADS:
        from ovdoc._version import __version__

        if what:
            where = f"{what} has mode {mode!r}; ovdoc {__version__} knows"
        else:
            where = f"unknown mode {mode!r}: use one of"
        raise OvdocError(f"{where} {', '.join(modes())}")
    cls = HEADS[mode]()
    _loaded[mode] = cls
    return cls


def head_of(manifest: dict, folder: object = None) -> type:
    """The head class of a bundle's manifest (version-1 bundles, which name no mode: global)."""
    return head_class(str(manifest.get("mode", DEFAULT_MODE)),
                      what=f"bundle {folder}" if folder is not None else "the bundle")
