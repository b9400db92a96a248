"""`convert_source` / `convert_keras_model`: any supported model -> verified NHWC IR in FP32 and FP16.

Everything is written into a temporary folder beside `out_dir`, reloaded from disk and verified
against the source framework; only then is the folder swapped in (`ovdoc.atomic.atomic_dir`), so a
failed conversion leaves `out_dir` exactly as it was.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import json
import os
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import numpy as np
import openvino as ov

from ovdoc import __version__
from ovdoc.atomic import atomic_dir
from ovdoc.errors import OvdocError, VerificationError, first_line
from ovdoc.host import require_onnx, require_tensorflow
from ovdoc.host.convert import formats, verify
from ovdoc.host.convert.converted import Converted
from ovdoc.log import get_logger
from ovdoc.runtime.datasets import is_dataset_spec
from ovdoc.runtime.ir import RT_BACKBONE, annotate, name_ports, save_ir
from ovdoc.runtime.preprocess import PreprocessSpec

PRECISIONS = ("FP32", "FP16", "INT8")
REPORT_NAME = "convert.json"
FROZEN_NAME = "frozen.pb"


log = get_logger(__name__)  # progress and warnings on stderr: stdout stays clean for --json


@dataclasses.dataclass(frozen=True)
class Int8Options:
    """What `--precision INT8` needs: normal images to calibrate on and, optionally, labelled images
    to verify the anomaly AUC with (both or neither), and the largest AUC loss accepted."""

    calib: str | Path
    eval_normal: str | Path | None = None
    eval_anomalous: str | Path | None = None
    max_auc_drop: float = 0.005


def convert_source(
    src: str | Path,
    out_dir: str | Path,
    *,
    weights: str | Path | None = None,
    precisions: Iterable[str] = ("FP32", "FP16"),
    name: str | None = None,
    probe: str | Path | None = None,
    keep_frozen: bool = False,
    spec: PreprocessSpec | dict | None = None,
    int8: Int8Options | None = None,
    tflite_fix: bool = True,
) -> dict:
    """Convert a model file/folder to `out_dir/{FP32,FP16}/model.xml` and verify it; returns the report.

    `spec`: a full PreprocessSpec, or a dict of the fields the source cannot tell (color, mean, std,
    resize, height/width); unspecified fields default to RGB, x/255, the model's input size.
    `int8`: the calibration/evaluation images when "INT8" is in `precisions`.
    `tflite_fix=False` converts weight-quantized TFLite files as they are
    (today's OpenVINO then computes them wrongly, and verification refuses the result).
    """
    source = formats.detect(src, weights)
    wanted = _check_precisions(precisions, int8)
    if source.format in formats.NEEDS_TENSORFLOW:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TF's C++ info lines would bury our progress
        require_tensorflow(f"converting a {source.format} model")
    if source.format == formats.ONNX:
        require_onnx("converting an ONNX model")
    size = _size_hint(spec)
    log.info(f"ovdoc convert: {source.path} ({source.format})")

    def build(work: Path) -> Converted:
        if source.format in formats.KERAS_FORMATS:
            from ovdoc.host.convert.keras_legacy import load_detected
            from ovdoc.host.convert.keras_route import convert_keras

            log.info("  loading the Keras model")
            return convert_keras(load_detected(source), work, size=size)
        if source.format == formats.ONNX:
            from ovdoc.host.convert.onnx_route import convert_onnx

            return convert_onnx(source.path)
        from ovdoc.host.convert import tf_routes

        route = {
            formats.SAVED_MODEL: tf_routes.convert_saved_model,
            formats.TF_FROZEN: tf_routes.convert_frozen_pb,
        }.get(source.format)
        if route is None:
            return tf_routes.convert_tflite(source.path, work, fix=tflite_fix)
        return route(source.path)

    info = {"path": str(source.path), "format": source.format}
    if source.weights is not None:
        info["weights"] = str(source.weights)
    return _convert(
        build, out_dir, label=str(source.path), fmt=source.format, source_info=info, precisions=wanted,
        name=name or _default_name(source.path), probe=probe, keep_frozen=keep_frozen, spec=spec, size=size,
        int8=int8,
    )


def convert_keras_model(
    keras_model,
    out_dir: str | Path,
    *,
    spec: PreprocessSpec,
    precisions: Iterable[str] = ("FP32", "FP16"),
    probe: str | Path | None = None,
    keep_frozen: bool = False,
    name: str | None = None,
    int8: Int8Options | None = None,
    source: dict | None = None,
    backbone: dict | None = None,
) -> dict:
    """Convert an in-memory Keras model (e.g. fresh from `ovdoc train`) the same verified way.

    `source`: more fields for the IR's rt_info source record (`ovdoc train` names its saved model.keras
    there, so a bundle later fitted from the IR alone can still be exported). `backbone`: the
    ``ovdoc/backbone`` record (name, taps by role) patch mode reads its layers from."""
    require_tensorflow("converting a Keras model")
    from ovdoc.host.convert.keras_route import convert_keras

    wanted = _check_precisions(precisions, int8)
    size = (spec.height, spec.width)
    log.info(f"ovdoc convert: in-memory Keras model {getattr(keras_model, 'name', '')}")
    return _convert(
        lambda work: convert_keras(keras_model, work, size=size), out_dir, label="the Keras model",
        fmt="keras-model",
        source_info={"format": "keras-model", "name": getattr(keras_model, "name", None), **(source or {})},
        precisions=wanted, name=name or getattr(keras_model, "name", None) or "model", probe=probe,
        keep_frozen=keep_frozen, spec=spec, size=size, int8=int8, backbone=backbone,
    )


# --- the common pipeline -------------------------------------------------------------------------------
def _convert(
    build: Callable[[Path], Converted],
    out_dir: str | Path,
    *,
    label: str,
    fmt: str,
    source_info: dict,
    precisions: tuple[str, ...],
    name: str,
    probe: str | Path | None,
    keep_frozen: bool,
    spec: PreprocessSpec | dict | None,
    size: tuple[int, int] | None,
    int8: Int8Options | None,
    backbone: dict | None = None,
) -> dict:
    out_dir = Path(out_dir)
    seconds: dict[str, float] = {}
    started = time.perf_counter()
    with atomic_dir(out_dir) as work:
        with _timed(seconds, "convert"):
            converted = build(work)
            model, (height, width) = _normalize(converted, size, label)
        spec = _resolve_spec(spec, height, width)
        model.set_friendly_name(name)
        annotate(model, spec, source=source_info | {
            "name": name, "converter": f"ovdoc {__version__}", "openvino": ov.__version__,
            "reference": converted.reference_name,
        })
        if backbone:
            model.set_rt_info(json.dumps(backbone, sort_keys=True), RT_BACKBONE)
        with _timed(seconds, "save"):
            for precision in (p for p in precisions if p in ("FP32", "FP16")):
                save_ir(model, work / precision / "model.xml", compress_to_fp16=precision == "FP16")
        log.info(f"  verifying against {converted.reference_name}")
        batch = verify.folder_probe(spec, Path(probe)) if probe else verify.synthetic_probe(spec)
        with _timed(seconds, "reference"):
            reference = converted.reference(spec.to_float(batch))
        results: dict[str, dict] = {}
        for precision in (p for p in precisions if p in ("FP32", "FP16")):
            with _timed(seconds, f"verify_{precision}"):
                metrics = verify.compare(reference, verify.ir_features(work / precision / "model.xml", batch))
            results[precision] = {"path": str(out_dir / precision / "model.xml"), **metrics}
            log.info(f"  {precision}: cosine min {metrics['cosine_min']:.6f}, "
                f"median {metrics['cosine_median']:.6f}, max |diff| {metrics['max_abs_diff']:.3g}")
        _check(results, converted, label, out_dir)
        if "INT8" in precisions:
            with _timed(seconds, "int8"):
                results["INT8"] = _int8(work, out_dir, batch, reference, int8)
        for path in converted.scratch:
            path.unlink(missing_ok=True)
        if converted.frozen_pb is not None and converted.frozen_pb.exists():
            if keep_frozen:
                converted.frozen_pb.replace(work / FROZEN_NAME)
            else:
                converted.frozen_pb.unlink()
        seconds["total"] = time.perf_counter() - started
        report = {
            "source": source_info.get("path", label),
            "format": fmt,
            "name": name,
            "reference": converted.reference_name,
            "preprocess": spec.to_dict(),
            "probe": {"images": len(batch), "kind": "folder" if probe else "synthetic"},
            "precisions": results,
            "seconds": {k: round(v, 3) for k, v in seconds.items()},
        }
        if keep_frozen and converted.frozen_pb is not None:
            report["frozen"] = str(out_dir / FROZEN_NAME)
        if converted.notes:
            report["notes"] = converted.notes
        if converted.checks:
            report["checks"] = converted.checks
        (work / REPORT_NAME).write_text(json.dumps(report, indent=2) + "\n")
    log.info(f"  wrote {out_dir} in {seconds['total']:.1f} s")
    return report


def _normalize(
    converted: Converted, size: tuple[int, int] | None, label: str
) -> tuple[ov.Model, tuple[int, int]]:
    """Make the contract hold: one NHWC 3-channel input with dynamic batch, one [N, D] output."""
    model = converted.model
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise OvdocError(
            f"{label} has {len(model.inputs)} inputs and {len(model.outputs)} outputs; ovdoc needs one image "
            "input and one feature output"
        )
    shape = model.inputs[0].get_partial_shape()
    if not shape.rank.is_static or shape.rank.get_length() != 4:
        raise OvdocError(f"{label} has input shape {shape}; ovdoc needs a 4-D image input (NHWC or NCHW)")
    dims = [d.get_length() if d.is_static else None for d in shape]
    layout = converted.layout
    if layout == "NHWC" and dims[1] == 3 and dims[3] != 3:
        layout = "NCHW"
    channels, height, width = (dims[1], dims[2], dims[3]) if layout == "NCHW" else (dims[3], dims[1], dims[2])
    if channels != 3:
        raise OvdocError(f"{label} has input shape {shape}; ovdoc needs 3-channel images")
    if height is None or width is None:
        if size is None:
            raise OvdocError(f"{label} does not fix its input size ({shape}); pass --size WxH")
        height, width = size
    if layout == "NCHW":
        ppp = ov.preprocess.PrePostProcessor(model)
        ppp.input().tensor().set_layout(ov.Layout("NHWC"))
        ppp.input().model().set_layout(ov.Layout("NCHW"))
        model = ppp.build()
        converted.notes.append("NCHW source: layout converted to NHWC in-graph")
    try:
        model.reshape({model.inputs[0]: ov.PartialShape([-1, height, width, 3])})
    except Exception as exc:
        raise OvdocError(
            f"{label} cannot take a dynamic batch (fixed-batch reshapes inside?): {first_line(exc)}"
        ) from exc
    out = model.outputs[0].get_partial_shape()
    if not out.rank.is_static or out.rank.get_length() != 2 or not out[1].is_static:
        raise OvdocError(
            f"{label} outputs shape {out}, not [N, D] features (spatial dims left?): end the model with "
            "global pooling (e.g. Keras pooling='avg' / GlobalAveragePooling2D) and convert again"
        )
    return name_ports(model), (height, width)


def _resolve_spec(spec: PreprocessSpec | dict | None, height: int, width: int) -> PreprocessSpec:
    if isinstance(spec, PreprocessSpec):
        if (spec.height, spec.width) != (height, width):
            raise OvdocError(
                f"preprocessing says {spec.height}x{spec.width} but the model's input is {height}x{width}"
            )
        return spec
    fields = dict(spec or {})
    fields.update(height=height, width=width)
    return PreprocessSpec(**fields)


def _size_hint(spec: PreprocessSpec | dict | None) -> tuple[int, int] | None:
    if isinstance(spec, PreprocessSpec):
        return spec.height, spec.width
    if spec and spec.get("height") and spec.get("width"):
        return int(spec["height"]), int(spec["width"])
    return None


def _check(results: dict, converted: Converted, label: str, out_dir: Path) -> None:
    fp32 = results.get("FP32")
    if fp32 is not None and fp32["cosine_min"] < verify.FP32_MIN_COSINE:
        hint = ""
        if converted.reference_name.startswith("tf.lite.Interpreter"):
            as_is = any("converted as is" in note for note in converted.notes)
            hint = (
                f"; OpenVINO's TFLite frontend computes this {'weight-quantized ' if as_is else ''}TFLite "
                "model wrongly: convert the Keras, TensorFlow or ONNX original instead"
            )
            if as_is:
                hint += ", or let ovdoc rewrite its quantized weights as float32 (drop --no-tflite-fix)"
        raise VerificationError(
            f"verification failed: the FP32 IR of {label} does not match {converted.reference_name} "
            f"(cosine_min {fp32['cosine_min']:.4f} < {verify.FP32_MIN_COSINE}, max |diff| "
            f"{fp32['max_abs_diff']:.3g}){hint}; nothing was written to {out_dir}"
        )
    fp16 = results.get("FP16")
    if fp16 is not None and fp16["cosine_min"] < verify.FP16_WARN_COSINE:
        log.warning(
            f"Warning: the FP16 IR drifts from {converted.reference_name} "
            f"(cosine_min {fp16['cosine_min']:.4f} < {verify.FP16_WARN_COSINE}); prefer FP32 where scores "
            "must match the source closely"
        )


def _check_precisions(precisions: Iterable[str], int8: Int8Options | None) -> tuple[str, ...]:
    """FP32 is always built: it is the verified anchor (and INT8's starting point)."""
    asked = [p.upper() for p in precisions]
    unknown = [p for p in asked if p not in PRECISIONS]
    if unknown:
        raise OvdocError(f"unknown precision {unknown[0]!r}: use {', '.join(PRECISIONS)}")
    if "INT8" in asked:
        if importlib.util.find_spec("ovdoc.host.quantize") is None:
            raise OvdocError("INT8 is not available in this build")
        if int8 is None or not int8.calib:
            raise OvdocError("--precision INT8 needs calibration images: pass --calib PATH")
        if not Path(int8.calib).exists() and not is_dataset_spec(str(int8.calib)):
            raise OvdocError(f"calibration images not found: {int8.calib}")
    return tuple(p for p in PRECISIONS if p == "FP32" or p in asked)


def _int8(work: Path, out_dir: Path, batch: np.ndarray, reference: np.ndarray, int8: Int8Options) -> dict:
    try:
        from ovdoc.host.quantize import quantize_int8
    except ImportError as exc:
        raise OvdocError(f"INT8 is not available in this build ({first_line(exc)})") from exc
    log.info("  quantizing to INT8")
    xml = work / "INT8" / "model.xml"
    xml.parent.mkdir(parents=True, exist_ok=True)
    q = quantize_int8(
        work / "FP32" / "model.xml", xml, calib_sources=[int8.calib], eval_normal=int8.eval_normal,
        eval_anomalous=int8.eval_anomalous, max_auc_drop=int8.max_auc_drop, device="CPU",
    )
    metrics = verify.compare(reference, verify.ir_features(xml, batch))
    log.info(
        f"  INT8: cosine min {metrics['cosine_min']:.4f}, median {metrics['cosine_median']:.4f} (vs source)"
    )
    final = str(out_dir / "INT8" / "model.xml")
    quantization = dict(q or {}) | {"source": str(out_dir / "FP32" / "model.xml"), "int8_xml": final}
    return {"path": final, **metrics, "quantization": quantization}


def _default_name(path: Path) -> str:
    stem = path.stem if path.is_file() else path.name
    if stem in ("weights", "model", "saved_model") and path.parent.name:
        parent = path.parent if path.is_file() else path
        return parent.parent.name if parent.name in ("keras", "onnx", "tensorflow", "tflite") else parent.name
    return stem


@contextlib.contextmanager
def _timed(seconds: dict, key: str) -> Iterator[None]:
    start = time.perf_counter()
    try:
        yield
    finally:
        seconds[key] = seconds.get(key, 0.0) + time.perf_counter() - start
