"""The original app's loop as a speed baseline: Keras `predict` per frame + sklearn LOF.

Host side (it needs TensorFlow): `ovdoc bench --baselines` reaches it through
`ovdoc.runtime.host_extras`, and skips it with one line on a runtime-only install.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ovdoc.errors import OvdocError
from ovdoc.host import require_tensorflow
from ovdoc.runtime.bench.baselines import _loop, fit_lof
from ovdoc.runtime.preprocess import PreprocessSpec


def original_app_loop(
    keras_src: tuple[str, str | None],
    spec: PreprocessSpec,
    source,
    res,
    frames: int,
    normal_images: list[np.ndarray],
) -> dict:
    """The original Keras loop; raises OvdocError (the skip reason) without TensorFlow or the model."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep TF's start-up chatter out of the report
    require_tensorflow("the original-app baseline (Keras predict per frame)")
    path, weights = keras_src
    if not Path(path).exists():
        raise OvdocError(f"the Keras source {path} is not on this machine")
    from ovdoc.host.convert import load_keras_source

    keras_model = load_keras_source(path, weights)

    def features_of(image: np.ndarray) -> np.ndarray:
        x = spec.to_float(spec.prepare(image)[None])
        return np.asarray(keras_model.predict(x, verbose=0), np.float32).reshape(-1)

    chunks = [spec.prepare_batch(normal_images[i : i + 32]) for i in range(0, len(normal_images), 32)]
    ref = np.concatenate(
        [
            np.asarray(keras_model.predict(spec.to_float(c), verbose=0), np.float32).reshape(len(c), -1)
            for c in chunks
        ]
    )
    lof = fit_lof(ref)
    features_of(normal_images[0])  # warm-up: the first predict builds the graph
    return _loop(source, res, frames, features_of, lof)
