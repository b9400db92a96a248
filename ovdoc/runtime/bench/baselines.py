"""The loops ovdoc replaces, reproduced faithfully so the speed-up is measured, not claimed.

* original app (2019, Keras on a Raspberry Pi): per frame `cv2.resize` -> `/255` -> one Keras call
  (`predict_on_batch`) of ONE image -> sklearn LocalOutlierFactor score -> mean of the last 10
  scores. Needs TensorFlow and the bundle's Keras source (or `--keras-model`); skipped with the reason
  otherwise.
* OpenVINO 2019 port: the same loop with a synchronous OpenVINO request per frame (float input
  prepared in numpy, batch 1, no async queue, no in-graph preprocessing) and the same LOF.

The Keras loop needs TensorFlow, so it lives host side (`ovdoc.host.baselines`) and is reached through
`ovdoc.runtime.host_extras`: on a runtime-only install it is skipped with one line. The timed loop both
share is in clip_loop.py, which imports neither.
"""

from __future__ import annotations

import json

import numpy as np
import openvino as ov

from ovdoc.errors import OvdocError, first_line
from ovdoc.runtime.bench.clip_loop import Clip, fit_lof, timed_loop
from ovdoc.runtime.host_extras import host_module
from ovdoc.runtime.ir import RT_SOURCE
from ovdoc.runtime.preprocess import PreprocessSpec


def openvino_2019_loop(
    model: ov.Model, spec: PreprocessSpec, clip: Clip, reference: np.ndarray, device: str = "CPU", knn=None
) -> dict:
    """The 2019 OpenVINO port: synchronous infer per frame, numpy preprocessing, LOF.

    `knn` (an ovdoc scorer with `score_samples`) replaces the LOF: the ablation that separates what the
    scorer gains from what the loop gains."""
    from ovdoc.runtime.ir import compile_ir

    m = model.clone()
    m.reshape({m.inputs[0]: ov.PartialShape([1, spec.height, spec.width, 3])})
    compiled = compile_ir(m, spec, device=device, batch=1, hint="latency", uint8_input=False)
    request = compiled.create_infer_request()
    lof = fit_lof(reference) if knn is None else None

    def features_of(image: np.ndarray) -> np.ndarray:
        x = spec.to_float(spec.prepare(image)[None])
        return np.array(request.infer({0: x})[0], np.float32).reshape(-1)

    scorer = "lof" if knn is None else "knn"
    return timed_loop(clip, features_of, lof, knn) | {"device": device, "scorer": scorer}


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


def run_baselines(
    model: ov.Model,
    spec: PreprocessSpec,
    clip: Clip,
    reference: np.ndarray,
    normal_images: list[np.ndarray] | None,
    keras_src: tuple[str, str | None] | None = None,
) -> dict:
    """Both baselines; each failure or absence becomes a `*_skipped` reason, never an exception.

    `keras_src` = (Keras model, weights) for the original app; default: what the IR records, if anything.
    """
    out: dict = {}
    try:
        r = openvino_2019_loop(model, spec, clip, reference)
        out["openvino_2019_fps"] = r["fps"]
    except OvdocError as exc:
        out["openvino_2019_fps"] = None
        out["openvino_2019_skipped"] = str(exc)
    keras_src = keras_src or keras_source_of(model)
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
            keras_loop = host_module("keras-baseline").original_app_loop
            out["original_app_fps"] = keras_loop(keras_src, spec, clip, normal_images)["fps"]
            out["original_app_model"] = str(keras_src[0])
        except OvdocError as exc:
            out["original_app_fps"] = None
            out["original_app_skipped"] = str(exc)
        except Exception as exc:  # a broken Keras install must not lose the rest of the benchmark
            out["original_app_fps"] = None
            out["original_app_skipped"] = f"Keras failed: {first_line(exc)}"
    return out
