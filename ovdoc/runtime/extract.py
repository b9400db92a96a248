"""The "extract features" step of fit and eval, as one seam: images in, features out, wherever they run.

A fit is extract -> index -> calibrate -> write. Only the first step is worth moving off the box (it is
where the time goes on a big image set), so it is the one thing `fit_bundle` takes as a parameter:
`LocalExtract` runs the `FeatureExtractor` here; `ovdoc.cluster.extract.RayExtract` runs the same IR on a
Ray cluster. Everything after it is the same code either way, so both build the same bundle.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
import openvino as ov

from ovdoc.runtime.preprocess import PreprocessSpec


@dataclass
class Extracted:
    """Features in input order, how they were computed, and the inputs that could not be read.

    `skipped`: (position, file) of image files passed as paths that did not decode (only an extractor
    that `reads_files` has any); their positions hold no row in `features`.
    """

    features: np.ndarray
    device: str
    inference_precision: str | None
    skipped: list[tuple[int, str]] = field(default_factory=list)


class Extract(Protocol):
    """Features of `images` through `model` (compiled with `spec`'s preprocessing), in input order.

    `reads_files`: True if an image file may be passed as its `Path` and is decoded where the features are
    computed (a cluster worker), False if every input must be a decoded BGR/grey uint8 array.
    """

    reads_files: bool

    def __call__(self, model: ov.Model, spec: PreprocessSpec, images: Iterable[np.ndarray | Path], *,
                 device: str, batch: int, progress: bool, total: int | None, desc: str) -> Extracted: ...


class LocalExtract:
    """On this machine: one `FeatureExtractor` (compiled once per call) over the images as they stream."""

    reads_files = False

    def __init__(self, *, core: ov.Core | None = None, cache_dir: str | Path | None = None,
                 inference_precision: str = "f32") -> None:
        self.core = core or ov.Core()
        self.cache_dir = cache_dir
        # the bundle records what its features were computed in and the Detector scores in the same
        # precision (`built_with.inference_precision`); f32 unless `fit --precision` chose otherwise
        self.inference_precision = inference_precision

    def __call__(self, model: ov.Model, spec: PreprocessSpec, images: Iterable[np.ndarray | Path], *,
                 device: str, batch: int, progress: bool, total: int | None = None,
                 desc: str = "features") -> Extracted:
        from ovdoc.runtime.features import FeatureExtractor

        extractor = FeatureExtractor(model, spec, device=device, batch=batch, core=self.core,
                                     cache_dir=self.cache_dir, inference_precision=self.inference_precision)
        feats = extractor.extract(images, progress=progress, total=total, desc=desc)
        return Extracted(feats, extractor.device, extractor.inference_precision)
