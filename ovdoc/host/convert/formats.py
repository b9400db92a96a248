"""What a model file is, decided from its content (magic bytes) first and its extension second.

Detection happens before any framework is imported, so a wrong or broken file fails in one clear line
and fast, and so formats that need no TensorFlow (ONNX) never touch it.
"""

from __future__ import annotations

import dataclasses
import json
import zipfile
from pathlib import Path

from ovdoc.errors import OvdocError, first_line

HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
ZIP_MAGIC = b"PK\x03\x04"

KERAS = "keras"  # Keras 3 .keras archive
KERAS_H5 = "keras-h5"  # full model (architecture + weights) in one HDF5 file
KERAS_JSON = "keras-json"  # legacy Keras 2.x model.json + weights .h5 pair
SAVED_MODEL = "tf-savedmodel"
TF_FROZEN = "tf-frozen-pb"
ONNX = "onnx"
TFLITE = "tflite"
FORMATS = (KERAS, KERAS_H5, KERAS_JSON, SAVED_MODEL, TF_FROZEN, ONNX, TFLITE)
KERAS_FORMATS = (KERAS, KERAS_H5, KERAS_JSON)
NEEDS_TENSORFLOW = (KERAS, KERAS_H5, KERAS_JSON, SAVED_MODEL, TF_FROZEN, TFLITE)

CAFFE_MESSAGE = (
    "Caffe models cannot be converted: OpenVINO removed its Caffe frontend in 2024.0; convert from the "
    "ONNX, TensorFlow or Keras original of this model instead"
)
ACCEPTED = "Keras (.keras, .h5, model.json + --weights), TF SavedModel dir, frozen .pb, .onnx, .tflite"


@dataclasses.dataclass(frozen=True)
class Source:
    """A detected model source: its format and the file(s) that hold it."""

    path: Path
    format: str
    weights: Path | None = None


def detect(src: str | Path, weights: str | Path | None = None) -> Source:
    """Classify `src`, or raise OvdocError with the one line a user needs."""
    path = Path(src)
    if not path.exists():
        raise OvdocError(f"model not found: {path}")
    weights_path = Path(weights) if weights is not None else None
    if weights_path is not None and not weights_path.is_file():
        raise OvdocError(f"weights file not found: {weights_path}")
    if path.is_dir():
        return _detect_dir(path, weights_path)
    suffix = path.suffix.lower()
    if suffix in (".prototxt", ".caffemodel"):
        raise OvdocError(f"{path.name}: {CAFFE_MESSAGE}")
    head = _head(path)
    if not head:
        raise OvdocError(f"{path} is empty")
    if head.startswith(ZIP_MAGIC):
        return _no_weights(_detect_zip(path), weights_path)
    if head.startswith(HDF5_MAGIC):
        return _no_weights(_detect_h5(path), weights_path)
    if head[4:8] == b"TFL3":
        return _no_weights(Source(path, TFLITE), weights_path)
    text = head.lstrip()
    if text.startswith(b"{"):
        return _detect_json(path, weights_path)
    if text.startswith(b"<"):
        raise OvdocError(_xml_message(path, head))
    if suffix == ".onnx":
        return _no_weights(Source(path, ONNX), weights_path)
    if suffix == ".pb":
        if path.name == "saved_model.pb":
            return _detect_dir(path.parent, weights_path)
        return _no_weights(Source(path, TF_FROZEN), weights_path)
    if suffix in (".h5", ".hdf5", ".keras", ".tflite", ".json"):
        raise OvdocError(f"{path} is not a valid {suffix} file (wrong content: corrupt or truncated?)")
    raise OvdocError(f"unknown model format: {path.name}; ovdoc convert accepts {ACCEPTED}")


def _head(path: Path, n: int = 4096) -> bytes:
    try:
        with path.open("rb") as fh:
            return fh.read(n)
    except OSError as exc:
        raise OvdocError(f"cannot read {path}: {exc.strerror}") from exc


def _no_weights(source: Source, weights: Path | None) -> Source:
    if weights is not None:
        raise OvdocError(
            f"--weights is only for a legacy Keras model.json; {source.path.name} ({source.format}) "
            "holds its weights already"
        )
    return source


def _detect_dir(path: Path, weights: Path | None) -> Source:
    if (path / "saved_model.pb").is_file() or (path / "saved_model.pbtxt").is_file():
        return _no_weights(Source(path, SAVED_MODEL), weights)
    xmls = sorted(path.glob("*.xml"))
    if xmls:
        raise OvdocError(_xml_message(xmls[0], _head(xmls[0])))
    raise OvdocError(f"{path} is a folder but not a TensorFlow SavedModel (no saved_model.pb in it)")


def _detect_zip(path: Path) -> Source:
    try:
        with zipfile.ZipFile(path) as zf:
            names = set(zf.namelist())
    except (zipfile.BadZipFile, OSError) as exc:
        raise OvdocError(f"{path} is a corrupt or truncated .keras archive ({exc})") from exc
    if "config.json" not in names:
        raise OvdocError(f"{path} is a zip archive but not a Keras 3 .keras model (no config.json)")
    return Source(path, KERAS)


def _detect_h5(path: Path) -> Source:
    import h5py

    try:
        with h5py.File(path, "r") as f:
            has_model = "model_config" in f.attrs
    except Exception as exc:  # h5py raises OSError/RuntimeError variants for damaged files
        raise OvdocError(f"{path} is a corrupt or truncated HDF5 file ({first_line(exc)})") from exc
    if not has_model:
        raise OvdocError(
            f"{path} holds weights only (no model architecture): pass the architecture file "
            "(e.g. model.json) as SRC and this file as --weights"
        )
    return Source(path, KERAS_H5)


def _detect_json(path: Path, weights: Path | None) -> Source:
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise OvdocError(f"{path} is not valid JSON (corrupt or truncated?): {exc}") from exc
    if not (isinstance(config, dict) and "class_name" in config and "config" in config):
        raise OvdocError(f"{path} is JSON but not a Keras model architecture (no class_name/config)")
    if weights is None:
        raise OvdocError(
            f"{path.name} is a Keras architecture without weights: pass its weights file with --weights "
            "(e.g. --weights weights.h5)"
        )
    return Source(path, KERAS_JSON, weights)


def _xml_message(path: Path, head: bytes) -> str:
    from ovdoc.runtime.ir import ir_version_in

    version = ir_version_in(head)
    if version is None:
        return f"unknown model format: {path.name} is XML but not an OpenVINO IR; accepted: {ACCEPTED}"
    if version < 10:
        return (
            f"{path.name} is an OpenVINO IR v{version} (2018-2020 Model Optimizer), too old for today's "
            "OpenVINO (IR v10+); convert the original Keras/TF/ONNX model with `ovdoc convert` instead"
        )
    return f"{path.name} is already an OpenVINO IR v{version}; use it directly (e.g. `ovdoc fit {path}`)"
