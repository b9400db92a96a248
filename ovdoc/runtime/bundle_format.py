"""The bundle format: the one folder a user copies to the board, read, verified, hashed and written here.

    model.xml / model.bin   the IR, with its preprocessing in rt_info
    index.faiss             the kNN index (FAISS's own format)   -- or reference.npy for the LOF baseline,
                            or mean.npy (one unit vector) for the mean-cosine scorer; a head's own files
    manifest.json           format version, mode, preprocessing, the head's section, threshold and how it
                            was calibrated, the device/precision it was built with, library versions,
                            sha256 of every file and of the manifest itself

Loading verifies the format version and every hash and refuses a mismatch with one line: features from
a different model or a hand-edited threshold would silently give wrong answers on the board. Every
manifest is written by `write_manifest` (a fit, an append, a saved threshold): one writer, one hash.
How a bundle is fitted is `ovdoc.runtime.fitting`; what a mode stores, `ovdoc.runtime.heads`.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import platform
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import openvino as ov

from ovdoc._version import __version__
from ovdoc.atomic import atomic_dir, write_text_atomic
from ovdoc.errors import OvdocError
from ovdoc.runtime.datasets import UNREADABLE_NAMED
from ovdoc.runtime.ir import RT_PREPROCESS, annotate, save_ir

FORMAT = "ovdoc-bundle"
# 2: "mode" (global | patch) and the patch section; version-1 bundles (global, from before) still load
FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)
MANIFEST = "manifest.json"
SELF_HASH_KEY = "manifest_sha256"


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _canonical(manifest: dict) -> bytes:
    body = {k: v for k, v in manifest.items() if k != SELF_HASH_KEY}
    return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()


def now() -> str:
    """UTC time as the manifest records it (created, appended, threshold history)."""
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def library_versions() -> dict:
    import cv2
    import faiss
    import sklearn

    return {
        "ovdoc": __version__,
        "openvino": ov.__version__,
        "faiss": faiss.__version__,
        "numpy": np.__version__,
        "opencv": cv2.__version__,
        "scikit-learn": sklearn.__version__,
        "python": platform.python_version(),
    }


def weight_precision(model: ov.Model) -> str:
    """FP32 / FP16 / INT8 from the weights themselves, not from a folder name."""
    types = {op.get_type_name() for op in model.get_ops()}
    if "FakeQuantize" in types or "FakeConvert" in types:
        return "INT8"
    for op in model.get_ops():
        if op.get_type_name() == "Constant" and op.get_output_element_type(0) == ov.Type.f16:
            return "FP16"
    return "FP32"


def write_model(model: ov.Model, spec, source_xml: Path, folder: Path, *, copy: bool = True) -> None:
    """Copy the IR byte for byte when it already records its preprocessing (and `copy`); else record the
    preprocessing in the model and save it."""
    if copy and model.has_rt_info(RT_PREPROCESS):
        shutil.copyfile(source_xml, folder / "model.xml")
        shutil.copyfile(source_xml.with_suffix(".bin"), folder / "model.bin")
    else:
        save_ir(annotate(model.clone(), spec), folder / "model.xml", compress_to_fp16=False)


def manifest_head(model: ov.Model, spec, xml, mode: str, sources, report: dict | None = None) -> dict:
    """The entries every bundle's manifest starts with: format, mode, model, preprocessing, inputs."""
    head = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "mode": mode,
        "created": now(),
        "model": {"file": "model.xml", "weights": "model.bin", "source": str(xml),
                  "weight_precision": weight_precision(model)},
        "preprocess": spec.to_dict(),
        "normal_sources": sources or ["(images in memory)"],
    }
    if report and "image_files" in report:  # what `ovdoc fit` read from files: skipped ones counted, named
        head["normal_input"] = {"image_files": report["image_files"],
                                "unreadable": len(report["unreadable"]),
                                "unreadable_files": report["unreadable"][:UNREADABLE_NAMED]}
    return head


def built_with(core: ov.Core, extracted, batch: int) -> dict:
    """Where the features were computed: device, inference precision, batch, the device's full name."""
    return {"device": extracted.device, "inference_precision": extracted.inference_precision,
            "batch": batch, "device_full_name": _full_name(core, extracted.device)}


def write_manifest(folder: Path, manifest: dict, *, hash_files: bool = True) -> dict:
    """The one manifest writer: (re)hash the folder's files (`hash_files`), hash the manifest itself,
    replace manifest.json atomically. Returns the manifest as written."""
    manifest = {k: v for k, v in manifest.items() if k != SELF_HASH_KEY}
    if hash_files:
        manifest["files"] = {p.name: sha256_file(p) for p in sorted(folder.iterdir()) if p.name != MANIFEST}
    manifest[SELF_HASH_KEY] = hashlib.sha256(_canonical(manifest)).hexdigest()
    write_text_atomic(folder / MANIFEST, json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return manifest


def write_bundle(out_dir: str | Path, manifest: dict, write_files: Callable[[Path], object]) -> dict:
    """A whole bundle, atomically: `write_files(folder)` writes the model and the head's files, then the
    manifest (with this machine's library versions) is written over them. The old bundle, if any,
    stays as it was until the new one is complete."""
    manifest = {k: v for k, v in manifest.items() if k not in ("files", SELF_HASH_KEY)}
    manifest["versions"] = library_versions()
    with atomic_dir(out_dir) as tmp:
        write_files(tmp)
        manifest = write_manifest(tmp, manifest)
    return manifest


def save_threshold(bundle: str | Path, value: float, *, by: str = "user") -> Path:
    """Write a new threshold into a bundle's manifest (verified first, re-hashed, replaced atomically);
    the calibrated one stays on record under threshold.history."""
    import math

    if not math.isfinite(value):
        raise OvdocError(f"a threshold must be a finite number, got {value}")
    manifest, folder = load_manifest(bundle)
    threshold = dict(manifest["threshold"])
    history = list(threshold.get("history", []))
    history.append({"value": threshold["value"], "replaced_by": float(value), "by": by, "time": now()})
    threshold.update(value=float(value), history=history)
    write_manifest(folder, manifest | {"threshold": threshold}, hash_files=False)
    return folder / MANIFEST


def recorded_precision(manifest: dict) -> str:
    """The inference precision the bundle's features were computed in, which scoring and `--append` must
    use too (bf16 and f32 features differ by several per cent); bundles from before the record: f32."""
    return (manifest.get("built_with") or {}).get("inference_precision") or "f32"


def load_manifest(bundle: str | Path) -> tuple[dict, Path]:
    """Read and verify a bundle's manifest and every file's hash; one clear line on any mismatch."""
    folder = Path(bundle)
    if not folder.exists():
        raise OvdocError(f"bundle not found: {folder}")
    if not folder.is_dir():
        raise OvdocError(f"{folder} is not a bundle folder (make one with `ovdoc fit`)")
    path = folder / MANIFEST
    if not path.is_file():
        raise OvdocError(f"{folder} is not an ovdoc bundle (no {MANIFEST}); make one with `ovdoc fit`")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise OvdocError(f"{path} is corrupt ({exc}); rebuild the bundle with `ovdoc fit`") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise OvdocError(f"{path} is not an ovdoc bundle manifest; rebuild the bundle with `ovdoc fit`")
    version = manifest.get("format_version")
    if version not in READABLE_VERSIONS:
        raise OvdocError(
            f"bundle {folder} has format version {version}; this ovdoc {__version__} reads versions "
            f"{', '.join(map(str, READABLE_VERSIONS))}: rebuild it with `ovdoc fit`"
        )
    expected = manifest.get(SELF_HASH_KEY)
    if expected != hashlib.sha256(_canonical(manifest)).hexdigest():
        raise OvdocError(
            f"bundle {folder}: {MANIFEST} was modified after `ovdoc fit` (hash mismatch); "
            "rebuild the bundle with `ovdoc fit`"
        )
    files = manifest.get("files") or {}
    for name, digest in sorted(files.items()):
        file = folder / name
        if not file.is_file():
            raise OvdocError(f"bundle {folder} is incomplete: {name} is missing")
        if sha256_file(file) != digest:
            raise OvdocError(
                f"bundle {folder}: {name} does not match its sha256 in {MANIFEST} (modified or "
                "corrupt); rebuild the bundle with `ovdoc fit`"
            )
    check_mode(manifest, folder)
    return manifest, folder


def check_mode(manifest: dict, folder: Path) -> None:
    """The bundle's mode must be one this ovdoc knows, and its head's section must be whole."""
    from ovdoc.runtime.heads import head_of

    head_of(manifest, folder).check_manifest(manifest, folder)


def _full_name(core: ov.Core, device: str) -> str | None:
    try:
        return str(core.get_property(device.split(":")[0].split(".")[0], "FULL_DEVICE_NAME"))
    except Exception:
        return None
