"""`Detector`: a loaded bundle with an sklearn-style API.

det = Detector.load("my.bundle", device="CPU")
det.score_samples(images)   # higher = more anomalous
det.predict(images)         # 1 = anomaly, 0 = normal
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np
import openvino as ov

from ovdoc.errors import OvdocError
from ovdoc.runtime.bundle import load_manifest
from ovdoc.runtime.preprocess import PreprocessSpec

ImagesLike = np.ndarray | Iterable[np.ndarray] | str | Path


class Detector:
    """Features from the bundle's IR, scores from its index, decisions from its calibrated threshold."""

    def __init__(self, manifest: dict, folder: Path, scorer, extractor) -> None:
        self.manifest_ = manifest
        self.bundle_ = folder
        self.scorer_ = scorer
        self.extractor_ = extractor
        self.spec_ = PreprocessSpec.from_dict(manifest["preprocess"])
        self.threshold_ = float(manifest["threshold"]["value"])
        self.k_ = int(manifest["scorer"]["k"])
        self.feature_dim_ = int(manifest["feature_dim"])
        self.device_ = extractor.device

    @classmethod
    def load(
        cls,
        bundle: str | Path,
        device: str = "CPU",
        *,
        batch: int = 8,
        hint: str = "throughput",
        cache_dir: str | Path | None = None,
        core: ov.Core | None = None,
    ) -> Detector:
        """Verify the bundle (format version, hashes), compile its IR for `device`, load its index."""
        from ovdoc.runtime.features import FeatureExtractor, default_cache_dir
        from ovdoc.runtime.ir import read_ir
        from ovdoc.runtime.scoring import load_scorer

        manifest, folder = load_manifest(bundle)
        core = core or ov.Core()
        model, _, _ = read_ir(folder / manifest["model"]["file"], core)
        spec = PreprocessSpec.from_dict(manifest["preprocess"])
        precision = (manifest.get("built_with") or {}).get("inference_precision") or "f32"
        extractor = FeatureExtractor(
            model,
            spec,
            device=device,
            batch=batch,
            hint=hint,
            core=core,
            inference_precision=precision,
            cache_dir=cache_dir if cache_dir is not None else default_cache_dir(),
        )
        if extractor.dim != int(manifest["feature_dim"]):
            raise OvdocError(
                f"bundle {folder}: the IR outputs {extractor.dim}-d features, the index holds "
                f"{manifest['feature_dim']}-d; rebuild it with `ovdoc fit`"
            )
        scorer = load_scorer(folder, manifest["scorer"])
        return cls(manifest, folder, scorer, extractor)

    # --- sklearn-style API ------------------------------------------------------------------------
    def features(self, images: ImagesLike) -> np.ndarray:
        """float32 [n, d] features of BGR uint8 images (a list, an NHWC array, or paths to read)."""
        if isinstance(images, (str, Path)) or (
            isinstance(images, list) and images and isinstance(images[0], (str, Path))
        ):
            from ovdoc.runtime.images import iter_images

            return self.extractor_.extract(iter_images(images), progress=False)
        if isinstance(images, np.ndarray) and images.ndim == 3:
            images = [images]
        return self.extractor_.extract(list(images), progress=False)

    def score_features(self, features: np.ndarray) -> np.ndarray:
        return self.scorer_.score_samples(features)

    def score_samples(self, images: ImagesLike) -> np.ndarray:
        """Anomaly score per image: higher = more anomalous (kNN distance or LOF)."""
        return self.score_features(self.features(images))

    def decision_function(self, images: ImagesLike) -> np.ndarray:
        """score - threshold_: positive = anomaly (the sign convention of `predict`)."""
        return self.score_samples(images) - self.threshold_

    def predict(self, images: ImagesLike) -> np.ndarray:
        """1 = anomaly (score above threshold_), 0 = normal."""
        return (self.score_samples(images) > self.threshold_).astype(np.int64)

    def __repr__(self) -> str:
        s = self.manifest_["scorer"]
        return (
            f"Detector({str(self.bundle_)!r}, device={self.device_!r}, scorer={s['kind']}, k={self.k_}, "
            f"threshold_={self.threshold_:.4g})"
        )
