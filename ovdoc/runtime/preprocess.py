"""The preprocessing a model expects, recorded with its IR so fit, run and verification never guess.

Host side (numpy/OpenCV) does only geometry: crop and resize to the model's input size, as uint8.
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

    def __post_init__(self) -> None:
        if self.color not in COLOR_ORDERS:
            raise OvdocError(f"unknown colour order {self.color!r}: use one of {', '.join(COLOR_ORDERS)}")
        if self.resize not in RESIZE_MODES:
            raise OvdocError(f"unknown resize mode {self.resize!r}: use one of {', '.join(RESIZE_MODES)}")
        if self.height <= 0 or self.width <= 0:
            raise OvdocError(f"input size must be positive, got {self.width}x{self.height}")
        object.__setattr__(self, "mean", tuple(float(v) for v in self.mean))
        object.__setattr__(self, "std", tuple(float(v) for v in self.std))

    # --- serialisation -------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return dataclasses.asdict(self) | {"mean": list(self.mean), "std": list(self.std)}

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
        """Crop/resize one BGR uint8 image (HxWx3, or HxW grey) to the model size; stays uint8 BGR."""
        img = image_bgr
        if img.ndim == 2:
            img = cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
        elif img.shape[2] == 4:
            img = cv2.cvtColor(img, cv2.COLOR_BGRA2BGR)
        if self.resize == "center_crop":
            img = center_crop_to_aspect(img, self.width / self.height)
        if img.shape[0] != self.height or img.shape[1] != self.width:
            shrinking = img.shape[0] > self.height or img.shape[1] > self.width
            interp = cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
            img = cv2.resize(img, (self.width, self.height), interpolation=interp)
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


def center_crop_to_aspect(img: np.ndarray, aspect: float) -> np.ndarray:
    """Largest centred crop of `img` with width/height == aspect (the original app cropped the centre)."""
    h, w = img.shape[:2]
    if abs(w / h - aspect) < 1e-6:
        return img
    if w / h > aspect:
        new_w = max(1, round(h * aspect))
        x0 = (w - new_w) // 2
        return img[:, x0 : x0 + new_w]
    new_h = max(1, round(w / aspect))
    y0 = (h - new_h) // 2
    return img[y0 : y0 + new_h]
