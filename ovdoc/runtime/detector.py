"""`Detector`: a loaded bundle with an sklearn-style API.

det = Detector.load("my.bundle", device="CPU")
det.score_samples(images)   # higher = more anomalous
det.predict(images)         # 1 = anomaly, 0 = normal
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import openvino as ov

from ovdoc.errors import OvdocError
from ovdoc.runtime.bundle import load_manifest
from ovdoc.runtime.preprocess import PreprocessSpec

ImagesLike = np.ndarray | Iterable[np.ndarray] | str | Path


@dataclass
class Scored:
    """What `Detector.score_outputs` returns for one batch (live-loop API).

    scores: [n] float32, higher = more anomalous. maps: [n, h, w] float32 patch scores in the model
    input's geometry (patch mode), None in global mode; `Detector.map_to_frame` maps them onto a frame.
    """

    scores: np.ndarray
    maps: np.ndarray | None = None


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
        if manifest.get("mode") == "patch":
            from ovdoc.runtime.patch import PatchScorer

            grid, dim = manifest["patch"]["grid"], int(manifest["patch"]["dim"])
            if extractor.dim != grid[0] * grid[1] * dim:
                raise OvdocError(
                    f"bundle {folder}: the IR outputs {extractor.dim} values per image, the manifest's patch "
                    f"grid is {grid[0]}x{grid[1]}x{dim}; rebuild it with `ovdoc fit --mode patch`"
                )
            return cls(manifest, folder, PatchScorer.load(folder, manifest["scorer"], manifest["patch"]),
                       extractor)
        if extractor.dim != int(manifest["feature_dim"]):
            raise OvdocError(
                f"bundle {folder}: the IR outputs {extractor.dim}-d features, the index holds "
                f"{manifest['feature_dim']}-d; rebuild it with `ovdoc fit`"
            )
        scorer = load_scorer(folder, manifest["scorer"])
        return cls(manifest, folder, scorer, extractor)

    # --- live-loop API (used by ovdoc.runtime.stream) ---------------------------------------------------
    # The live loop talks to a Detector only through these — mode_, preprocess, prepare, prepare_at, batch,
    # set_callback, submit, wait, score_outputs, map_to_frame, smooth_map, peak_point, threshold_,
    # map_threshold_, calibration_ — so
    # it never depends on how features are extracted or scored (global kNN, patch maps) and a fake
    # detector can test it (tests/test_stages.py; tests/test_stream.py's PublicOnly holds a real one to it).
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
        """Scores (and, in patch mode, patch-score maps) of the outputs a callback received."""
        if self.mode_ == "patch":
            return self._score_patch_outputs(outputs)
        scores = np.asarray(self.scorer_.score_samples(outputs), dtype=np.float32)
        return Scored(scores=scores, maps=None)

    def _score_patch_outputs(self, outputs: np.ndarray) -> Scored:
        """Nearest-normal-patch distance per patch (one batched FAISS search) -> maps, robust-max scores."""
        maps = self.scorer_.patch_maps(outputs)
        return Scored(scores=self.scorer_.image_scores(maps), maps=maps)

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
        return float(getattr(self.scorer_, "map_baseline", 0.0)) if self.mode_ == "patch" else 0.0

    def smooth_map(self, map_hw: np.ndarray) -> np.ndarray:
        """Gaussian smoothing of a patch-score grid (sigma recorded in the bundle, in grid cells), relative
        to the typical normal level (`map_baseline_`)."""
        from ovdoc.runtime.patch import gaussian_smooth

        sigma = float((self.manifest_.get("patch") or {}).get("map_sigma_cells", 1.0))
        return gaussian_smooth(np.asarray(map_hw, np.float32)[None], sigma)[0] - self.map_baseline_

    def peak_point(self, map_hw: np.ndarray, frame_shape: tuple[int, ...]) -> tuple[int, int]:
        """(x, y) in frame pixels where the anomaly is: the peak of the grid smoothed lightly
        (PEAK_SIGMA_CELLS), which keeps small defects in place where the area map blurs them."""
        from ovdoc.runtime.patch import PEAK_SIGMA_CELLS, gaussian_smooth

        grid = gaussian_smooth(np.asarray(map_hw, np.float32)[None], PEAK_SIGMA_CELLS)[0]
        gy, gx = np.unravel_index(int(np.argmax(grid)), grid.shape)
        gh, gw = grid.shape
        x0, y0, cw, ch = self._grid_area(frame_shape)
        fh, fw = int(frame_shape[0]), int(frame_shape[1])
        x = min(fw - 1, int(x0 + (gx + 0.5) * cw / gw))
        y = min(fh - 1, int(y0 + (gy + 0.5) * ch / gh))
        return x, y

    def hottest_points(self, images: ImagesLike) -> list[tuple[int, int]]:
        """Per image, (x, y) of its anomaly's centre in image pixels (see peak_point)."""
        self._need_patch("hottest_points")
        frames = self._as_images(images)
        maps = self.scorer_.patch_maps(self.extractor_.extract(frames, progress=False))
        return [self.peak_point(m, f.shape) for m, f in zip(maps, frames, strict=True)]

    def _grid_area(self, frame_shape: tuple[int, ...]) -> tuple[int, int, int, int]:
        """(x0, y0, w, h) of the frame the patch grid covers: all of it (stretch) or the centred crop."""
        fh, fw = int(frame_shape[0]), int(frame_shape[1])
        if self.spec_.resize == "stretch":
            return 0, 0, fw, fh
        aspect = self.spec_.width / self.spec_.height
        if fw / fh > aspect:
            cw, ch = max(1, round(fh * aspect)), fh
        else:
            cw, ch = fw, max(1, round(fw / aspect))
        return (fw - cw) // 2, (fh - ch) // 2, cw, ch

    def map_to_frame(self, map_hw: np.ndarray, frame_shape: tuple[int, ...]) -> np.ndarray:
        """A [h, w] map in model-input geometry -> float32 map of the frame's size, undoing crop/resize.

        stretch: the grid covers the whole frame; center_crop: it covers the centred crop, and the
        cropped-away margins (never scored) get the map's minimum.
        """
        import cv2

        fh, fw = int(frame_shape[0]), int(frame_shape[1])
        m = np.asarray(map_hw, np.float32)
        if self.spec_.resize == "stretch":
            return cv2.resize(m, (fw, fh), interpolation=cv2.INTER_LINEAR)
        x0, y0, cw, ch = self._grid_area(frame_shape)
        out = np.full((fh, fw), float(m.min()) if m.size else 0.0, np.float32)
        out[y0 : y0 + ch, x0 : x0 + cw] = cv2.resize(m, (cw, ch), interpolation=cv2.INTER_LINEAR)
        return out

    def patch_maps(self, images: ImagesLike) -> np.ndarray:
        """Raw patch-score grids [n, h, w] of images (patch mode only)."""
        self._need_patch("patch_maps")
        return self.scorer_.patch_maps(self.features(images))

    def anomaly_map(self, images: ImagesLike) -> list[np.ndarray]:
        """Per image, a frame-sized float32 anomaly map (smoothed patch scores; see map_threshold_)."""
        self._need_patch("anomaly_map")
        frames = self._as_images(images)
        maps = self.scorer_.patch_maps(self.extractor_.extract(frames, progress=False))
        return [self.map_to_frame(self.smooth_map(m), f.shape) for m, f in zip(maps, frames, strict=True)]

    def _need_patch(self, what: str) -> None:
        if self.mode_ != "patch":
            raise OvdocError(
                f"{what} needs a patch-mode bundle (`ovdoc fit --mode patch`); {self.bundle_} is global"
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
        if self.mode_ == "patch":
            return self._score_patch_outputs(features).scores
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
