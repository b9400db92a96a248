"""The original app's loop as a speed baseline: one Keras call per frame + sklearn LOF.

The 2018 app called Keras 2's `predict` on one image; today's `predict` adds per-call tf.data and
callback setup (~50 ms here) that Keras 2 did not pay in that form, so the loop uses
`predict_on_batch` — the same forward pass without that setup — to measure the app as it ran.

Host side (it needs TensorFlow): `ovdoc bench --baselines` reaches it through
`ovdoc.runtime.host_extras`, and skips it with one line on a runtime-only install.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ovdoc.errors import OvdocError
from ovdoc.host import require_tensorflow
from ovdoc.runtime.bench.clip_loop import Clip, fit_lof, timed_loop
from ovdoc.runtime.preprocess import PreprocessSpec


def original_app_loop(
    keras_src: tuple[str, str | None],
    spec: PreprocessSpec,
    clip: Clip,
    normal_images: list[np.ndarray] | None,
    *,
    reference: np.ndarray | None = None,
) -> dict:
    """The original Keras loop; raises OvdocError (the skip reason) without TensorFlow or the model.

    The LOF is fitted on Keras features of `normal_images`, or on `reference` vectors when given (the
    same weights' features from OpenVINO: benchmarks/speed.py indexes 6,000 of them once for all loops).
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep TF's start-up chatter out of the report
    require_tensorflow("the original-app baseline (Keras per frame)")
    path, weights = keras_src
    if not Path(path).exists():
        raise OvdocError(f"the Keras source {path} is not on this machine")
    from ovdoc.host.convert import load_keras_source

    keras_model = load_keras_source(path, weights)

    def features_of(image: np.ndarray) -> np.ndarray:
        x = spec.to_float(spec.prepare(image)[None])
        return np.asarray(keras_model.predict_on_batch(x), np.float32).reshape(-1)

    if reference is None:
        if not normal_images:
            raise OvdocError("the original-app baseline needs normal images or reference vectors for its LOF")
        chunks = [spec.prepare_batch(normal_images[i : i + 32]) for i in range(0, len(normal_images), 32)]
        reference = np.concatenate(
            [
                np.asarray(keras_model.predict(spec.to_float(c), verbose=0), np.float32).reshape(len(c), -1)
                for c in chunks
            ]
        )
    lof = fit_lof(reference)
    features_of(np.zeros((spec.height, spec.width, 3), np.uint8))  # warm-up: the first predict builds it
    return timed_loop(clip, features_of, lof) | {"call": "predict_on_batch"}
