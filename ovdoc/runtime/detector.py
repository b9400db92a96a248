"""`Detector`: a loaded bundle with an sklearn-style API.

det = Detector.load("my.bundle", device="CPU")
det.score_samples(images)   # higher = more anomalous
det.predict(images)         # 1 = anomaly, 0 = normal
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import openvino as ov

from ovdoc.errors import OvdocError
from ovdoc.runtime.bundle_format import load_manifest, recorded_precision
from ovdoc.runtime.heads import Head, Scored, head_of
from ovdoc.runtime.preprocess import PreprocessSpec

__all__ = ["Detector", "ImagesLike", "Scored"]

ImagesLike = np.ndarray | Iterable[np.ndarray] | str | Path


class Detector:
    """Features from the bundle's IR, scores from its head (index / bank), decisions from its calibrated
    threshold. Everything that depends on the mode is the head's (`ovdoc.runtime.heads`)."""

    def __init__(self, manifest: dict, folder: Path, head: Head, extractor) -> None:
        self.manifest_ = manifest
        self.bundle_ = folder
        self.head_ = head
        self.scorer_ = head.scorer
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

        manifest, folder = load_manifest(bundle)
        core = core or ov.Core()
        model, _, _ = read_ir(folder / manifest["model"]["file"], core)
        spec = PreprocessSpec.from_dict(manifest["preprocess"])
        precision = recorded_precision(manifest)
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
        head_cls = head_of(manifest, folder)
        head_cls.check_outputs(manifest, extractor.dim, folder)
        return cls(manifest, folder, head_cls.load(folder, manifest), extractor)

    # --- live-loop API (used by ovdoc.runtime.stream) ---------------------------------------------------
    # What the live loop needs of a model is the `LiveDetector` protocol (runtime/stream/live_detector.py);
    # a Detector satisfies it (tests/test_stream.py), and so does the fake in tests/test_stages.py.
    @property
    def mode_(self) -> str:  # read-only: derived from the manifest, not assigned in __init__
        """'global' (one score per image) or 'patch' (a score per patch, and a map); manifest['mode']."""
        return str(self.manifest_.get("mode", "global"))

    @property
    def calibration_(self) -> dict:
        """The bundle's calibration record (target_fpr, fpr_upper_95, ...): what the live flag-rate watch
        compares each camera with; bundles from before it: the target alone."""
        return self.manifest_.get("calibration") or {"target_fpr": self.manifest_["threshold"].get("fpr")}

    @property
    def preprocess(self) -> PreprocessSpec:
        """The model's preprocessing (geometry, colour, scaling), as recorded in the bundle."""
        return self.spec_

    def prepare(self, image_bgr: np.ndarray) -> np.ndarray:
        """One BGR image -> the uint8 model input (crop + resize); safe to call from any thread."""
        return self.spec_.prepare(image_bgr)

    def prepare_at(self, image_bgr: np.ndarray, res: tuple[int, int] | None) -> np.ndarray:
        """`prepare(image resized to res)` in one resample (see PreprocessSpec.prepare_at)."""
        return self.spec_.prepare_at(image_bgr, res)

    @property
    def batch(self) -> int:
        """Images per inference request: `submit` takes 1..batch prepared images."""
        return int(self.extractor_.batch)

    def set_callback(self, fn: Callable[[np.ndarray, object], None]) -> None:
        """`fn(outputs, userdata)` runs in an OpenVINO thread when a submitted batch finishes;
        outputs are the model's outputs for the real (unpadded) images, [n, ...] float32."""
        self.extractor_.set_callback(fn)

    def submit(self, prepared: np.ndarray, userdata: object = None) -> None:
        """Queue one NHWC uint8 batch of 1..batch prepared images; blocks while every request is busy.
        An error raised in an earlier callback is raised here (or by `wait`)."""
        self.extractor_.submit(prepared, userdata)

    def wait(self) -> None:
        """Block until every submitted batch has called back; raise a callback's error here."""
        self.extractor_.wait()

    def score_outputs(self, outputs: np.ndarray) -> Scored:
        """Scores (and, for a head with maps, patch-score maps) of the outputs a callback received."""
        return self.head_.score_outputs(outputs)

    @property
    def has_maps_(self) -> bool:
        """True if the bundle's head gives anomaly maps (patch mode): maps, regions, pixel metrics."""
        return bool(self.head_.has_maps)

    # --- patch mode: where is the anomaly? ----------------------------------------------------------
    @property
    def map_threshold_(self) -> float:
        """Level of a smoothed anomaly map above which a region is anomalous (patch mode).

        Calibrated like `threshold_` on the held-out normal images, but on the maximum of their smoothed
        maps, so a normal image's map stays below it at the chosen false-positive rate.
        """
        t = self.manifest_["threshold"]
        return float(t.get("map_value", t["value"])) - self.map_baseline_

    @property
    def map_baseline_(self) -> float:
        """The scorer's level of a typical normal patch; smoothed maps are returned relative to it, so a
        map reads ~0 where the part looks normal and `map_threshold_` where it is anomalous, whatever the
        per-position normalisation (a heatmap drawn from 0 would otherwise colour every ratio-scaled map)."""
        return float(self.head_.map_baseline)

    def smooth_map(self, map_hw: np.ndarray) -> np.ndarray:
        """Gaussian smoothing of a patch-score grid (sigma recorded in the bundle, in grid cells), relative
        to the typical normal level (`map_baseline_`)."""
        self._need_maps("smooth_map")
        return self.head_.smooth_map(map_hw)

    def peak_point(self, map_hw: np.ndarray, frame_shape: tuple[int, ...]) -> tuple[int, int]:
        """(x, y) in frame pixels where the anomaly is: the peak of the grid smoothed lightly
        (PEAK_SIGMA_CELLS), which keeps small defects in place where the area map blurs them."""
        self._need_maps("peak_point")
        return self.head_.peak_point(map_hw, frame_shape)

    def hottest_points(self, images: ImagesLike) -> list[tuple[int, int]]:
        """Per image, (x, y) of its anomaly's centre in image pixels (see peak_point)."""
        self._need_maps("hottest_points")
        frames = self._as_images(images)
        maps = self.head_.patch_maps(self.extractor_.extract(frames, progress=False))
        return [self.peak_point(m, f.shape) for m, f in zip(maps, frames, strict=True)]

    def map_to_frame(self, map_hw: np.ndarray, frame_shape: tuple[int, ...]) -> np.ndarray:
        """A [h, w] map in model-input geometry -> float32 map of the frame's size, undoing crop/resize.

        stretch: the grid covers the whole frame; center_crop: it covers the centred crop, and the
        cropped-away margins (never scored) get the map's minimum.
        """
        self._need_maps("map_to_frame")
        return self.head_.map_to_frame(map_hw, frame_shape)

    def patch_maps(self, images: ImagesLike) -> np.ndarray:
        """Raw patch-score grids [n, h, w] of images (patch mode only)."""
        self._need_maps("patch_maps")
        return self.head_.patch_maps(self.features(images))

    def anomaly_map(self, images: ImagesLike) -> list[np.ndarray]:
        """Per image, a frame-sized float32 anomaly map (smoothed patch scores; see map_threshold_)."""
        self._need_maps("anomaly_map")
        frames = self._as_images(images)
        maps = self.head_.patch_maps(self.extractor_.extract(frames, progress=False))
        return [self.map_to_frame(self.smooth_map(m), f.shape) for m, f in zip(maps, frames, strict=True)]

    def _need_maps(self, what: str) -> None:
        if not self.head_.has_maps:
            raise OvdocError(
                f"{what} needs a patch-mode bundle (`ovdoc fit --mode patch`); {self.bundle_} is {self.mode_}"
            )

    @staticmethod
    def _as_images(images: ImagesLike) -> list[np.ndarray]:
        if isinstance(images, (str, Path)) or (
            isinstance(images, list) and images and isinstance(images[0], (str, Path))
        ):
            from ovdoc.runtime.images import load_images

            return load_images(images)
        if isinstance(images, np.ndarray) and images.ndim == 3:
            return [images]
        return list(images)

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
        """Anomaly score per image from its features (the model's outputs)."""
        return self.head_.score_outputs(features).scores

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
