"""Always-on verification: the IR on disk must compute what its source computes.

The IR is fed uint8 BGR images through `compile_ir(..., uint8_input=True)` (colour order and scale
in-graph, as in production) and the source is fed `spec.to_float` of the same images, so a wrong
colour order, scale or layout fails here, not in the field.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from ovdoc.errors import OvdocError
from ovdoc.runtime.arrays import cosine_rows
from ovdoc.runtime.images import scan_folder
from ovdoc.runtime.ir import compile_ir, read_ir
from ovdoc.runtime.preprocess import PreprocessSpec

FP32_MIN_COSINE = 0.9999
FP16_WARN_COSINE = 0.999
PROBE_COUNT = 16


def synthetic_probe(spec: PreprocessSpec, n: int = PROBE_COUNT, seed: int = 0) -> np.ndarray:
    """Deterministic smooth random images (not white noise: real images are smooth, so are features)."""
    rng = np.random.default_rng(seed)
    images = []
    for i in range(n):
        coarse = rng.uniform(0, 255, size=(2 + i % 7, 2 + (i * 3) % 7, 3)).astype(np.float32)
        img = cv2.resize(coarse, (spec.width, spec.height), interpolation=cv2.INTER_CUBIC)
        img += rng.normal(0, 6, size=img.shape).astype(np.float32)  # a little texture
        images.append(np.clip(img, 0, 255).astype(np.uint8))
    return np.stack(images)


def folder_probe(spec: PreprocessSpec, folder: Path, n: int = PROBE_COUNT) -> np.ndarray:
    """Up to `n` real images from `folder` (recursive, sorted), cropped and resized like production."""
    folder = Path(folder)
    if not folder.exists():
        raise OvdocError(f"probe folder not found: {folder}")
    files = [folder] if folder.is_file() else scan_folder(folder)
    images = []
    for path in files:
        img = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if img is not None:
            images.append(img)
        if len(images) == n:
            break
    if not images:
        raise OvdocError(f"no readable images in probe folder {folder}")
    return spec.prepare_batch(images)


def ir_features(xml: Path, batch_u8: np.ndarray) -> np.ndarray:
    """Run the IR as saved on disk, with the preprocessing it records."""
    model, spec, _ = read_ir(xml)
    compiled = compile_ir(model, spec, batch=len(batch_u8), uint8_input=True)
    out = compiled(batch_u8)[compiled.outputs[0]]
    return np.asarray(out, np.float32).reshape(len(batch_u8), -1)


def compare(reference: np.ndarray, got: np.ndarray) -> dict:
    """Per-image cosine similarity (min, median) and the largest absolute difference."""
    reference = reference.reshape(len(reference), -1).astype(np.float64)
    got = got.reshape(len(got), -1).astype(np.float64)
    if reference.shape != got.shape:
        raise OvdocError(f"IR output shape {got.shape} differs from the source's {reference.shape}")
    cosine = cosine_rows(reference, got)
    return {
        "cosine_min": float(cosine.min()),
        "cosine_median": float(np.median(cosine)),
        "max_abs_diff": float(np.abs(reference - got).max()),
        "reference_max_abs": float(np.abs(reference).max()),
    }
