"""Host-side work: conversion from Keras/TF/ONNX/TFLite, DOC training, INT8 quantization.

Needs the `ovdoc[train]` extra (TensorFlow, tf-keras, NNCF, ONNX); a board never imports this package.
"""

from __future__ import annotations

from ovdoc.errors import OvdocError


def require_tensorflow(what: str):
    """Import TensorFlow for host-side work, or say in one line how to get it."""
    try:
        import tensorflow as tf  # noqa: F401
    except ImportError as exc:
        raise OvdocError(
            f"{what} needs TensorFlow, which the runtime install leaves out: pip install 'ovdoc[train]'"
        ) from exc
    return tf


def require_onnx(what: str):
    """Import `onnx` (ONNX conversion reads and verifies with it), or one line naming the extra."""
    try:
        import onnx
    except ImportError as exc:
        raise OvdocError(
            f"{what} needs the onnx package, which the runtime install leaves out: "
            "pip install 'ovdoc[train]' (or just pip install onnx)"
        ) from exc
    return onnx
