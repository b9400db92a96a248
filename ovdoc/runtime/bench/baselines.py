"""The loops ovdoc replaces, reproduced faithfully so the speed-up is measured, not claimed.

* original app (2019, Keras on a Raspberry Pi): per frame `cv2.resize` -> `/255` -> `model.predict` of
  ONE image -> sklearn LocalOutlierFactor score -> mean of the last 10 scores. Needs TensorFlow and the
  bundle's Keras source (or `--keras-model`); skipped with the reason otherwise.
* OpenVINO 2019 port: the same loop with a synchronous OpenVINO request per frame (float input
  prepared in numpy, batch 1, no async queue, no in-graph preprocessing) and the same LOF.

TensorFlow is imported only inside `original_app_loop`; importing this module never loads it.
"""

from __future__ import annotations

import collections
import json
import time
from pathlib import Path

import numpy as np
import openvino as ov

from ovdoc.errors import OvdocError, first_line
from ovdoc.runtime.ir import RT_SOURCE
from ovdoc.runtime.preprocess import PreprocessSpec

SMOOTH = 10  # the original app averaged the last 10 scores


def _frames(source: str | Path, res, frames: int):
    from ovdoc.runtime.stream.sources import open_source

    src = open_source(str(source), res=res)
    try:
        for _ in range(frames):
            frame = src.read()
            if frame is None:
                return
            yield frame.image
    finally:
        src.close()


def _loop(source, res, frames: int, features_of, lof) -> dict:
    """Read -> features (one frame) -> LOF -> smoothing, timed end to end like the original's FPS."""
    recent: collections.deque = collections.deque(maxlen=SMOOTH)
    count = 0
    start = time.perf_counter()
    for image in _frames(source, res, frames):
        feat = features_of(image)
        recent.append(float(-lof.score_samples(feat.reshape(1, -1))[0]))
        _ = float(np.mean(recent))
        count += 1
    wall = time.perf_counter() - start
    if count == 0:
        raise OvdocError(f"{source} has no readable frames")
    return {"fps": round(count / wall, 2), "frames": count}


def fit_lof(reference: np.ndarray, k: int = 5):
    from sklearn.neighbors import LocalOutlierFactor

    return LocalOutlierFactor(n_neighbors=min(k, len(reference) - 1), novelty=True).fit(reference)


def openvino_2019_loop(
    model: ov.Model,
    spec: PreprocessSpec,
    source,
    res,
    frames: int,
    reference: np.ndarray,
    device: str = "CPU",
) -> dict:
    """The 2019 OpenVINO port: synchronous infer per frame, numpy preprocessing, LOF."""
    from ovdoc.runtime.ir import compile_ir

    m = model.clone()
    m.reshape({m.inputs[0]: ov.PartialShape([1, spec.height, spec.width, 3])})
    compiled = compile_ir(m, spec, device=device, batch=1, hint="latency", uint8_input=False)
    request = compiled.create_infer_request()
    lof = fit_lof(reference)

    def features_of(image: np.ndarray) -> np.ndarray:
        x = spec.to_float(spec.prepare(image)[None])
        return np.array(request.infer({0: x})[0], np.float32).reshape(-1)

    return _loop(source, res, frames, features_of, lof) | {"device": device}


def keras_source_of(model: ov.Model) -> tuple[str, str | None] | None:
    """(path, weights) of the Keras model an IR was converted from, if `ovdoc convert` recorded one."""
    if not model.has_rt_info(RT_SOURCE):
        return None
    try:
        info = json.loads(model.get_rt_info(RT_SOURCE).astype(str))
    except (json.JSONDecodeError, TypeError):
        return None
    if not str(info.get("format", "")).startswith("keras") or "path" not in info:
        return None
    return info["path"], info.get("weights")


def original_app_loop(
    keras_src: tuple[str, str | None],
    spec: PreprocessSpec,
    source,
    res,
    frames: int,
    normal_images: list[np.ndarray],
) -> dict:
    """The original Keras loop; raises OvdocError (the skip reason) without TensorFlow or the model."""
    import os

    from ovdoc.errors import require_tensorflow

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


def run_baselines(
    model: ov.Model,
    spec: PreprocessSpec,
    source,
    res,
    frames: int,
    reference: np.ndarray,
    normal_images: list[np.ndarray] | None,
    keras_model: str | None = None,
    keras_weights: str | None = None,
) -> dict:
    """Both baselines; each failure or absence becomes a `*_skipped` reason, never an exception."""
    out: dict = {}
    try:
        r = openvino_2019_loop(model, spec, source, res, frames, reference)
        out["openvino_2019_fps"] = r["fps"]
    except OvdocError as exc:
        out["openvino_2019_fps"] = None
        out["openvino_2019_skipped"] = str(exc)
    keras_src = (keras_model, keras_weights) if keras_model else keras_source_of(model)
    if keras_src is None:
        out["original_app_fps"] = None
        out["original_app_skipped"] = (
            "the bundle's IR records no Keras source (converted from another "
            "format); pass --keras-model to measure the original Keras loop"
        )
    elif not normal_images:
        out["original_app_fps"] = None
        out["original_app_skipped"] = "needs normal images (--calib) to fit the original app's LOF"
    else:
        try:
            out["original_app_fps"] = original_app_loop(keras_src, spec, source, res, frames, normal_images)[
                "fps"
            ]
            out["original_app_model"] = str(keras_src[0])
        except OvdocError as exc:
            out["original_app_fps"] = None
            out["original_app_skipped"] = str(exc)
        except Exception as exc:  # a broken Keras install must not lose the rest of the benchmark
            out["original_app_fps"] = None
            out["original_app_skipped"] = f"Keras failed: {first_line(exc)}"
    return out
