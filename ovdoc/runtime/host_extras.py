"""The one door from the runtime to the optional host side.

A few runtime verbs offer something extra when the host-side packages happen to be installed: `ovdoc bench`
quantizes INT8 rows with NNCF and times the original Keras app as a baseline; the `fashion-mnist` and
`cifar10` data specs fall back to `keras.datasets` downloads. They ask for it here, by feature name, and get
the host module or one line saying what to install. Nothing else under `ovdoc.runtime` may reach
`ovdoc.host`, TensorFlow or NNCF (tests/test_boundary.py reads every import to make sure), so a board
with only the runtime installed never imports them.
"""

from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType

from ovdoc.errors import OvdocError

# feature -> (host module, the third-party package it needs, what it is for in the message)
EXTRAS: dict[str, tuple[str, str, str]] = {
    "int8": ("ovdoc.host.quantize", "nncf", "INT8 quantization needs NNCF"),
    "keras-baseline": ("ovdoc.host.baselines", "tensorflow", "the original-app baseline needs TensorFlow"),
    "downloads": ("ovdoc.host.downloads", "tensorflow", "downloading this data set needs keras.datasets"),
}
INSTALL = "a host-side extra: pip install 'ovdoc[train]'"


def available(feature: str) -> bool:
    """Whether `feature`'s third-party package can be imported here, without importing it."""
    _, package, _ = EXTRAS[feature]
    try:
        return importlib.util.find_spec(package) is not None
    except (ImportError, ValueError):
        return False


def unavailable_reason(feature: str) -> str:
    _, package, what = EXTRAS[feature]
    return f"{what} ({package}), {INSTALL}"


def host_module(feature: str) -> ModuleType:
    """The host module behind `feature`, or OvdocError with one line saying how to get it."""
    module, _, _ = EXTRAS[feature]
    if not available(feature):
        raise OvdocError(unavailable_reason(feature))
    return importlib.import_module(module)
