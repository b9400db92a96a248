"""Augmentation that expands a small set of normal images: rotation, shifts (constant fill), flips.

Done on the prepared uint8 images, before the frozen part's outputs are cached, so each copy is a
fixed extra training image (the frozen network is deterministic, so caching stays exact).
"""

from __future__ import annotations

import cv2
import numpy as np


def augment_copies(
    images: np.ndarray,
    copies: int,
    rng: np.random.Generator,
    *,
    max_rotate: float = 15.0,
    max_shift: float = 0.1,
    flip: bool = True,
) -> np.ndarray:
    """`copies` random variants of each NHWC uint8 image (the originals are not included)."""
    if copies <= 0 or len(images) == 0:
        return images[:0]
    out = []
    h, w = images.shape[1:3]
    for _ in range(copies):
        for img in images:
            angle = rng.uniform(-max_rotate, max_rotate)
            tx, ty = rng.uniform(-max_shift, max_shift, 2) * (w, h)
            matrix = cv2.getRotationMatrix2D((w / 2, h / 2), angle, 1.0)
            matrix[:, 2] += (tx, ty)
            border = np.concatenate([img[0], img[-1], img[:, 0], img[:, -1]]).mean(axis=0)
            moved = cv2.warpAffine(
                img,
                matrix,
                (w, h),
                flags=cv2.INTER_LINEAR,
                borderMode=cv2.BORDER_CONSTANT,
                borderValue=tuple(float(v) for v in border),
            )
            if flip and rng.random() < 0.5:
                moved = moved[:, ::-1]
            out.append(moved.reshape(img.shape))
    return np.stack(out)


def auto_copies(n: int, want: int = 1000, cap: int = 20) -> int:
    """Copies per image so a small target set reaches about `want` images (0 when it already does)."""
    if n >= want or n == 0:
        return 0
    return min(cap, -(-want // n) - 1)
