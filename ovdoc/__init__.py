"""ovdoc: one-class visual anomaly detection (DOC features + kNN) at camera speed through OpenVINO.

Importing the package is cheap and never imports TensorFlow: the edge runtime must install and run
without it. Heavy pieces are imported where they are used.
"""

from __future__ import annotations

from ovdoc._version import __version__

__all__ = ["Detector", "__version__"]


def __getattr__(name: str):  # lazy: `from ovdoc import Detector` without loading OpenVINO at import time
    if name == "Detector":
        from ovdoc.runtime.detector import Detector

        return Detector
    raise AttributeError(name)
