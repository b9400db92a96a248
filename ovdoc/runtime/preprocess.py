"""The preprocessing a model expects, recorded with its IR so fit, run and verification never guess.

Host side (numpy/OpenCV) does geometry: crop and resize to the model's input size, as uint8 (and, where the
spec asks, a per-image intensity normalisation of that uint8 image).
Colour order and scaling are either applied here (`to_float`, used by verification and baselines) or,
on the fast path, compiled into the OpenVINO model with `PrePostProcessor` (see
`ovdoc.runtime.ir.compile_ir`), so the same arithmetic runs in fit and in run.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence

import cv2
import numpy as np

from ovdoc.errors import OvdocError

RESIZE_MODES = ("center_crop", "stretch")
COLOR_ORDERS = ("RGB", "BGR")
# per-image intensity normalisation of the prepared uint8 image (before the model's mean/std): none, one
# gain that sets the grey-level mean to INTENSITY_MEAN (an exposure change is a gain), or that and the
# grey-level spread set to INTENSITY_STD (gain and offset). Floors keep a black frame from becoming noise.
INTENSITY_MODES = ("none", "mean", "meanstd")
INTENSITY_MEAN = 128.0
INTENSITY_STD = 40.0
INTENSITY_MIN_MEAN = 8.0  # at most a 16x gain
INTENSITY_MIN_STD = 2.0


@dataclasses.dataclass(frozen=True)
class PreprocessSpec:
    """How raw 8-bit pixels become model input: `x = (pixel - mean) / std` per channel, in `color` order.

    `mean`/`std` are in raw pixel units (0..255), so `x/255` is mean 0, std 255 and Keras'
    MobileNetV2 `x/127.5 - 1` is mean 127.5, std 127.5.
    """

    height: int = 96
    width: int = 96
    color: str = "RGB"
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    std: tuple[float, float, float] = (255.0, 255.0, 255.0)
    resize: str = "center_crop"
    intensity: str = "none"

    def __post_init__(self) -> None:
        if self.color not in COLOR_ORDERS:
            raise OvdocError(f"unknown colour order {self.color!r}: use one of {', '.join(COLOR_ORDERS)}")
        if self.resize not in RESIZE_MODES:
            raise OvdocError(f"unknown resize mode {self.resize!r}: use one of {', '.join(RESIZE_MODES)}")
        if self.intensity not in INTENSITY_MODES:
            raise OvdocError(f"unknown intensity normalisation {self.intensity!r}: use one of "
                             f"{', '.join(INTENSITY_MODES)}")
        if self.height <= 0 or self.width <= 0:
            raise OvdocError(f"input size must be positive, got {self.width}x{self.height}")
        object.__setattr__(self, "mean", tuple(float(v) for v in self.mean))
        object.__setattr__(self, "std", tuple(float(v) for v in self.std))

    # --- serialisation -------------------------------------------------------------------------
    def to_dict(self) -> dict:
        """The record; `intensity` only when set, so bundles and IRs without it are byte for byte as before
        (and a record without it reads as "none")."""
        out = dataclasses.asdict(self) | {"mean": list(self.mean), "std": list(self.std)}
        if self.intensity == "none":
            del out["intensity"]
        return out

    @classmethod
    def from_dict(cls, data: dict) -> PreprocessSpec:
        known = {f.name for f in dataclasses.fields(cls)}
        try:
            return cls(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in data.items() if k in known})
        except TypeError as exc:
            raise OvdocError(f"invalid preprocessing record: {exc}") from exc

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> PreprocessSpec:
        try:
            return cls.from_dict(json.loads(text))
        except json.JSONDecodeError as exc:
            raise OvdocError(f"invalid preprocessing record: {exc}") from exc

    # --- host-side geometry --------------------------------------------------------------------
    def prepare(self, image_bgr: np.ndarray) -> np.ndarray:
        """Crop/resize one BGR uint8 image (HxWx3, or HxW grey) to the model size, then the intensity
        normalisation if any; stays uint8 BGR."""
        img = _bgr(image_bgr)
        if self.resize == "center_crop":
            img = center_crop_to_aspect(img, self.width / self.height)
        return self._to_model_size(img)

    def prepare_at(self, image_bgr: np.ndarray, res: tuple[int, int] | None) -> np.ndarray:
        """`prepare(resize(image, res))` in one resample: the crop is taken from `image` itself.

        The live loop uses it when no output needs the frame's pixels at `--res` (headless, no video): the
        crop covers the same part of the scene, so only the resampling differs (one instead of two), and the
        full-frame resize — about a third of a core at 640x480 — is not paid at all.
        """
        img = _bgr(image_bgr)
        h, w = img.shape[:2]
        if res is None or (w, h) == tuple(res):
            return self.prepare(img)
        res_w, res_h = res
        x0, y0, cw, ch = (0, 0, res_w, res_h)
        if self.resize == "center_crop":
            x0, y0, cw, ch = center_crop_box(res_w, res_h, self.width / self.height)
        if cw < self.width or ch < self.height or w < res_w or h < res_h:
            # --res below the model's input (or above the frame's): the resize changes the detail the
            # model sees, so it is done as asked
            return self.prepare(fit_to(img, res))
        sx, sy = w / res_w, h / res_h
        left, top = round(x0 * sx), round(y0 * sy)
        right, bottom = max(left + 1, round((x0 + cw) * sx)), max(top + 1, round((y0 + ch) * sy))
        return self._to_model_size(img[top:bottom, left:right])

    def _to_model_size(self, img: np.ndarray) -> np.ndarray:
        if img.shape[0] != self.height or img.shape[1] != self.width:
            shrinking = img.shape[0] > self.height or img.shape[1] > self.width
            interp = cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
            img = cv2.resize(img, (self.width, self.height), interpolation=interp)
        if self.intensity != "none":  # here, so prepare and prepare_at (every consumer) apply it
            return normalise_intensity(img, self.intensity)
        return np.ascontiguousarray(img, dtype=np.uint8)

    def prepare_batch(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """Stack prepared images into an NHWC uint8 BGR batch."""
        if len(images) == 0:
            return np.zeros((0, self.height, self.width, 3), np.uint8)
        return np.stack([self.prepare(im) for im in images])

    # --- reference arithmetic (what PrePostProcessor does in-graph) ----------------------------
    def to_float(self, batch_bgr_u8: np.ndarray) -> np.ndarray:
        """NHWC uint8 BGR -> NHWC float32 model input, in numpy (verification and baselines)."""
        x = batch_bgr_u8.astype(np.float32)
        if self.color == "RGB":
            x = x[..., ::-1]
        return (x - np.asarray(self.mean, np.float32)) / np.asarray(self.std, np.float32)


def normalise_intensity(img: np.ndarray, mode: str) -> np.ndarray:
    """uint8 image with its grey-level mean (all channels pooled, so colour balance is kept) moved to
    INTENSITY_MEAN by one gain ("mean"), or mean and spread moved to INTENSITY_MEAN / INTENSITY_STD
    ("meanstd"); saturating at 0..255. Why: one part photographed at several exposures should look the same
    to the model, so the bank holds surfaces, not exposures. Computed on the model-size image (cheap)."""
    if mode == "none":
        return np.ascontiguousarray(img, dtype=np.uint8)
    x = np.asarray(img, np.float32)
    m = float(x.mean())
    if mode == "mean":
        x = x * (INTENSITY_MEAN / max(m, INTENSITY_MIN_MEAN))
    elif mode == "meanstd":
        x = (x - m) * (INTENSITY_STD / max(float(x.std()), INTENSITY_MIN_STD)) + INTENSITY_MEAN
    else:
        raise OvdocError(f"unknown intensity normalisation {mode!r}: use one of {', '.join(INTENSITY_MODES)}")
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


def _bgr(img: np.ndarray) -> np.ndarray:
    """Grey and BGRA images as 3-channel BGR (the model's input has three channels)."""
    if img.ndim == 2:
        return cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
    if img.shape[2] == 4:
        return cv2.cvtColor(img, cv2.COLOR_BGRA2BGR)
    return img


def center_crop_box(w: int, h: int, aspect: float) -> tuple[int, int, int, int]:
    """(x0, y0, width, height) of the largest centred crop of a w x h image with width/height == aspect."""
    if abs(w / h - aspect) < 1e-6:
        return 0, 0, w, h
    if w / h > aspect:
        new_w = max(1, round(h * aspect))
        return (w - new_w) // 2, 0, new_w, h
    new_h = max(1, round(w / aspect))
    return 0, (h - new_h) // 2, w, new_h


def center_crop_to_aspect(img: np.ndarray, aspect: float) -> np.ndarray:
    """Largest centred crop of `img` with width/height == aspect (the original app cropped the centre)."""
    x0, y0, cw, ch = center_crop_box(img.shape[1], img.shape[0], aspect)
    return img[y0 : y0 + ch, x0 : x0 + cw]


def fit_to(image: np.ndarray, res: tuple[int, int] | None) -> np.ndarray:
    """Resize to `res` (w, h) when given and different, so `--res` means the same work for every source.

    Bilinear unless shrinking by 2x or more: INTER_AREA at a non-integer ratio such as 768->640 costs
    ~7 ms a frame on a small CPU (bilinear ~0.8 ms), and the model's own crop/resize follows anyway.
    """
    if res is None or (image.shape[1], image.shape[0]) == res:
        return image
    big_shrink = image.shape[1] >= 2 * res[0] or image.shape[0] >= 2 * res[1]
    return cv2.resize(image, res, interpolation=cv2.INTER_AREA if big_shrink else cv2.INTER_LINEAR)
