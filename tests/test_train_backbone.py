"""The offline ImageNet backbone: torchvision weights read without torch, checked on ImageNet JPEGs."""

from __future__ import annotations

import pickle
import re
import struct

import cv2
import numpy as np
import pytest
from conftest import need_package

from ovdoc.errors import OvdocError

pytestmark = pytest.mark.slow  # builds training backbones (TensorFlow)

# CI (OVDOC_REQUIRE_DATA=1): a failure, not a skip
@pytest.fixture(autouse=True, scope="module")
def _needs_tensorflow():
    """Asked when a test runs, not when the file is collected: `pytest -m "not slow"` never imports TF."""
    need_package("tensorflow", "TensorFlow (host side: pip install -e '.[train]')")


def _resize_center_crop(image: np.ndarray, resize: int = 256, crop: int = 224) -> np.ndarray:
    """torchvision's eval transform: shorter side to 256, centre crop 224."""
    h, w = image.shape[:2]
    scale = resize / min(h, w)
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    image = cv2.resize(image, (round(w * scale), round(h * scale)), interpolation=interp)
    h, w = image.shape[:2]
    y, x = (h - crop) // 2, (w - crop) // 2
    return image[y : y + crop, x : x + crop]


def test_offline_port_classifies_imagenet_jpegs(foolbox_data_dir, mobilenet_pth):
    from ovdoc.host.train.backbone import offline_mobilenet_v2, torchvision_spec

    files = sorted(foolbox_data_dir.glob("imagenet_*.jpg"))
    assert len(files) == 20
    labels = np.array([int(re.search(r"_(\d+)\.jpg$", f.name).group(1)) for f in files])
    batch = np.stack([_resize_center_crop(cv2.imread(str(f))) for f in files])
    model = offline_mobilenet_v2(224, classes=1000)
    logits = np.asarray(model(torchvision_spec(224).to_float(batch), training=False))
    correct = int((logits.argmax(1) == labels).sum())
    assert correct >= 17, f"only {correct}/20 ImageNet labels right: the torchvision port is wrong"


def test_state_dict_shapes(mobilenet_pth):
    from ovdoc.host.train.torch_pickle import load_legacy_state_dict

    state = load_legacy_state_dict(mobilenet_pth)
    assert state["features.0.0.weight"].shape == (32, 3, 3, 3)
    assert state["classifier.1.weight"].shape == (1000, 1280)
    assert state["features.0.0.weight"].dtype == np.float32


def _legacy_file(path, obj_pickle: bytes) -> None:
    """A legacy torch file layout around an arbitrary object pickle (for the refusal tests)."""
    with open(path, "wb") as f:
        pickle.dump(0x1950A86A20F9469CFC6C, f, protocol=2)
        pickle.dump(1001, f, protocol=2)
        pickle.dump({"protocol_version": 1001, "little_endian": True}, f, protocol=2)
        f.write(obj_pickle)
        pickle.dump([], f, protocol=2)


class _Evil:
    def __reduce__(self):
        import os

        return (os.system, ("echo pwned > /dev/null",))


def test_unpickler_refuses_os_system(tmp_path):
    from ovdoc.host.train.torch_pickle import load_legacy_state_dict

    path = tmp_path / "evil.pth"
    _legacy_file(path, pickle.dumps(_Evil(), protocol=2))
    with pytest.raises(OvdocError, match="refusing to load (posix|os).system"):
        load_legacy_state_dict(path)


def test_unpickler_refuses_builtins_eval(tmp_path):
    from ovdoc.host.train.torch_pickle import load_legacy_state_dict

    payload = b"\x80\x02cbuiltins\neval\nX\x04\x00\x00\x001+1\x85R."
    path = tmp_path / "evil2.pth"
    _legacy_file(path, payload)
    with pytest.raises(OvdocError, match="refusing to load builtins.eval"):
        load_legacy_state_dict(path)


def test_truncated_and_foreign_files(tmp_path, mobilenet_pth):
    from ovdoc.host.train.torch_pickle import load_legacy_state_dict

    cut = tmp_path / "cut.pth"
    cut.write_bytes(mobilenet_pth.read_bytes()[:1_000_000])
    with pytest.raises(OvdocError, match="truncated"):
        load_legacy_state_dict(cut)
    other = tmp_path / "other.pth"
    other.write_bytes(struct.pack("<q", 7) * 8)
    with pytest.raises(OvdocError):
        load_legacy_state_dict(other)


def test_keras_layer_names_for_freezing():
    from ovdoc.host.train.backbone import build_mobilenet_v2

    model = build_mobilenet_v2(32, 0.35)
    names = {layer.name for layer in model.layers}
    for name in (
        "Conv1",
        "bn_Conv1",
        "expanded_conv_depthwise",
        "block_1_expand",
        "block_13_expand",
        "block_16_project",
        "Conv_1",
        "out_relu",
    ):
        assert name in names
    assert model.output.shape[1:] == (1, 1, 1280)
