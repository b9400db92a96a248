"""The model's crop: `prepare_at(image, res)` covers what `prepare(resize(image, res))` covers."""

from __future__ import annotations

import itertools

import cv2
import numpy as np
import pytest

from ovdoc.runtime.preprocess import PreprocessSpec, center_crop_box, fit_to


def _frame(video_dir) -> np.ndarray:
    from ovdoc.runtime.images import iter_video_frames

    return next(itertools.islice(iter_video_frames(video_dir / "vtest.avi"), 29, None))  # 768x576 street


@pytest.mark.parametrize("resize", ["center_crop", "stretch"])
@pytest.mark.parametrize("res", [(640, 480), (320, 320), (1024, 600), (97, 61)])
def test_prepare_at_matches_resize_then_prepare(video_dir, resize, res):
    image = _frame(video_dir)
    spec = PreprocessSpec(96, 128, "RGB", resize=resize)  # 128 wide, 96 high
    two_step = spec.prepare(fit_to(image, res)).astype(np.float32)
    one_step = spec.prepare_at(image, res).astype(np.float32)
    assert one_step.shape == two_step.shape == (96, 128, 3)
    # the same part of the scene, resampled once instead of twice: a few grey levels apart on average
    assert np.abs(one_step - two_step).mean() < 4.0, np.abs(one_step - two_step).mean()
    # and not merely similar in colour: shifting the crop by a few pixels would differ far more
    shifted = spec.prepare(fit_to(image, res)[:, 6:]).astype(np.float32) if resize == "stretch" else None
    if shifted is not None:
        assert np.abs(one_step - two_step).mean() < np.abs(shifted - two_step).mean()


def test_prepare_at_native_size_or_below_the_model_is_the_two_step_path(video_dir):
    image = _frame(video_dir)
    spec = PreprocessSpec(96, 96, "RGB")
    np.testing.assert_array_equal(spec.prepare_at(image, None), spec.prepare(image))
    np.testing.assert_array_equal(spec.prepare_at(image, (768, 576)), spec.prepare(image))
    # a --res whose crop is smaller than the model's input loses detail on purpose: kept as asked
    np.testing.assert_array_equal(spec.prepare_at(image, (80, 60)), spec.prepare(fit_to(image, (80, 60))))
    grey = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    assert spec.prepare_at(grey, (640, 480)).shape == (96, 96, 3)


@pytest.mark.parametrize(("w", "h", "aspect", "box"), [
    (640, 480, 1.0, (80, 0, 480, 480)),
    (480, 640, 1.0, (0, 80, 480, 480)),
    (640, 480, 4 / 3, (0, 0, 640, 480)),
    (300, 100, 2.0, (50, 0, 200, 100)),
])  # fmt: skip
def test_center_crop_box(w, h, aspect, box):
    assert center_crop_box(w, h, aspect) == box
