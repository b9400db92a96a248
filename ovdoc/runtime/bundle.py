"""Detector bundles: the one folder a user copies to the board.

    model.xml / model.bin   the IR, with its preprocessing in rt_info
    index.faiss             the kNN index (FAISS's own format)   -- or reference.npy for the LOF baseline
    manifest.json           format version, preprocessing, k, threshold and how it was calibrated, the
                            device/precision the index was built with, library versions, sha256 of files

Loading verifies the format version and every hash and refuses a mismatch with one line: features from
a different model or a hand-edited threshold would silently give wrong answers on the board.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import platform
import shutil
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import openvino as ov

from ovdoc import __version__
from ovdoc.atomic import atomic_dir
from ovdoc.errors import OvdocError
from ovdoc.runtime.calibration import threshold_at_fpr
from ovdoc.runtime.ir import RT_PREPROCESS, annotate, read_ir, save_ir

FORMAT = "ovdoc-bundle"
FORMAT_VERSION = 1
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


def write_model(model: ov.Model, spec, source_xml: Path, folder: Path) -> None:
    """Copy the IR byte for byte when it already records its preprocessing; else record it and save."""
    if model.has_rt_info(RT_PREPROCESS):
        shutil.copyfile(source_xml, folder / "model.xml")
        shutil.copyfile(source_xml.with_suffix(".bin"), folder / "model.bin")
    else:
        save_ir(annotate(model.clone(), spec), folder / "model.xml", compress_to_fp16=False)


def fit_bundle(
    model_path: str | Path,
    normal_sources: str | Path | Iterable[str | Path],
    out_dir: str | Path,
    *,
    device: str = "CPU",
    index: str = "auto",
    k: int = 5,
    fpr: float = 0.01,
    scorer: str = "knn",
    metric: str = "euclidean",
    batch: int = 8,
    progress: bool = True,
    cache_dir: str | Path | None = None,
) -> dict:
    """Extract features of the normal images, index them, calibrate the threshold, write the bundle."""
    from ovdoc.runtime.images import count_hint, expand_sources, iter_images

    items = [normal_sources] if isinstance(normal_sources, (str, Path)) else list(normal_sources)
    sources = expand_sources(items)  # clear errors before any compile
    names = [str(p) for p in items]
    return fit_bundle_images(model_path, iter_images(sources), out_dir, device=device, index=index, k=k,
                             fpr=fpr, scorer=scorer, metric=metric, batch=batch, progress=progress,
                             cache_dir=cache_dir, total=count_hint(sources), sources=names)


def fit_bundle_images(
    model_path: str | Path,
    images: Iterable[np.ndarray],
    out_dir: str | Path,
    *,
    device: str = "CPU",
    index: str = "auto",
    k: int = 5,
    fpr: float = 0.01,
    scorer: str = "knn",
    metric: str = "euclidean",
    batch: int = 8,
    progress: bool = True,
    cache_dir: str | Path | None = None,
    total: int | None = None,
    sources: list[str] | None = None,
) -> dict:
    """`fit_bundle` for images already in memory (BGR uint8, any size): data sets, benchmarks."""
    from ovdoc.runtime.features import FeatureExtractor, default_cache_dir
    from ovdoc.runtime.scoring import make_scorer

    scorer_obj = make_scorer(scorer, k=k, index=index, metric=metric)
    if not 0.0 < fpr < 1.0:
        raise OvdocError(f"--fpr must be between 0 and 1 (exclusive), got {fpr}")
    core = ov.Core()
    model, spec, xml = read_ir(model_path, core)
    extractor = FeatureExtractor(model, spec, device=device, batch=batch, core=core,
                                 cache_dir=cache_dir if cache_dir is not None else default_cache_dir())
    feats = extractor.extract(images, progress=progress, total=total, desc="normal features")
    if len(feats) == 0:
        raise OvdocError("no images could be read from the normal sources")
    scorer_obj.fit(feats)
    method = "leave-one-out" if scorer == "knn" else "leave-one-out (LOF of each training point)"
    threshold = threshold_at_fpr(scorer_obj.loo_scores(), fpr, method=method)
    manifest = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "model": {"file": "model.xml", "weights": "model.bin", "source": str(xml),
                  "weight_precision": weight_precision(model)},
        "preprocess": spec.to_dict(),
        "feature_dim": int(feats.shape[1]),
        "n_images": int(len(feats)),
        "normal_sources": sources or ["(images in memory)"],
        "scorer": scorer_obj.describe(),
        "k": k,
        "threshold": threshold,
        "built_with": {"device": extractor.device, "inference_precision": extractor.inference_precision,
                       "batch": batch, "device_full_name": _full_name(core, extractor.device)},
        "versions": library_versions(),
    }
    with atomic_dir(out_dir) as tmp:
        write_model(model, spec, xml, tmp)
        scorer_obj.save(tmp)
        manifest["files"] = {p.name: sha256_file(p) for p in sorted(tmp.iterdir()) if p.name != MANIFEST}
        manifest[SELF_HASH_KEY] = hashlib.sha256(_canonical(manifest)).hexdigest()
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return manifest


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
        manifest = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise OvdocError(f"{path} is corrupt ({exc}); rebuild the bundle with `ovdoc fit`") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise OvdocError(f"{path} is not an ovdoc bundle manifest; rebuild the bundle with `ovdoc fit`")
    version = manifest.get("format_version")
    if version != FORMAT_VERSION:
        raise OvdocError(
            f"bundle {folder} has format version {version}; this ovdoc {__version__} reads version "
            f"{FORMAT_VERSION}: rebuild it with `ovdoc fit`"
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
    return manifest, folder


def _full_name(core: ov.Core, device: str) -> str | None:
    try:
        return str(core.get_property(device.split(":")[0].split(".")[0], "FULL_DEVICE_NAME"))
    except Exception:
        return None
