"""Data sets that only keras.datasets can fetch (online): Fashion-MNIST without Debian's copy, CIFAR-10.

Host side: the runtime's data specs reach these through `ovdoc.runtime.host_extras`, so a board without
TensorFlow gets one line saying to pass a folder or a .npz instead.
"""

from __future__ import annotations

import numpy as np

from ovdoc.errors import OvdocError, first_line
from ovdoc.host import require_tensorflow


def _load_data(name: str, what: str, need: str, failed: str):
    """keras.datasets.<name>.load_data(), with one line when TensorFlow or the network is missing."""
    require_tensorflow(f"downloading {what}{need}")
    import keras

    try:
        return getattr(keras.datasets, name).load_data()
    except Exception as exc:
        raise OvdocError(failed.format(error=first_line(exc, 150))) from exc


def fashion_mnist(split: str = "train") -> tuple[np.ndarray, np.ndarray]:
    """(images N x 28 x 28 uint8, labels N) of the split, downloaded by keras.datasets."""
    (xtr, ytr), (xte, yte) = _load_data(
        "fashion_mnist", "Fashion-MNIST", " (or: apt install dataset-fashion-mnist)",
        "cannot get Fashion-MNIST (apt install dataset-fashion-mnist works offline): {error}",
    )
    return (xtr, ytr.astype(np.int64)) if split == "train" else (xte, yte.astype(np.int64))


def cifar10(split: str = "train") -> tuple[np.ndarray, np.ndarray]:
    """(BGR images N x 32 x 32 x 3 uint8, labels N) of the split, downloaded by keras.datasets."""
    (xtr, ytr), (xte, yte) = _load_data(
        "cifar10", "CIFAR-10", "", "cannot download CIFAR-10 ({error}); pass a .npz with x, y instead"
    )
    x, y = (xtr, ytr) if split == "train" else (xte, yte)
    return x[..., ::-1].copy(), y.reshape(-1).astype(np.int64)  # RGB -> BGR like every other image here
