"""Builders shared by the runtime tests: the seed IR, normal/anomalous image sets and videos.

Normal = magnetic-tile surfaces (MT_Free), anomalies = CIFAR-10 photos: very different images, so a
stream with inserted photos must be flagged there and only there.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
from _cli import error_line, ovdoc_cli  # noqa: F401  (the shared CLI runner, re-exported)

SEED_SPEC_ARGS = dict(height=96, width=96, color="RGB", mean=(0, 0, 0), std=(255, 255, 255))
FRAME = 128  # side of the synthetic test videos


def build_seed_ir(seed_dir: Path, out_dir: Path) -> Path:
    """The seed ONNX (MMdnn export of the Keras model, NHWC input) as an ovdoc IR."""
    import openvino as ov

    from ovdoc.runtime.ir import annotate, name_ports, save_ir
    from ovdoc.runtime.preprocess import PreprocessSpec

    model = ov.convert_model(str(seed_dir / "onnx" / "weights.onnx"))
    shape = model.inputs[0].get_partial_shape()
    assert shape[3].get_length() == 3, "seed ONNX input is expected NHWC"
    name_ports(model)
    annotate(model, PreprocessSpec(**SEED_SPEC_ARGS), source={"format": "onnx", "test": True})
    return save_ir(model, out_dir / "model.xml", compress_to_fp16=False)


def tile_files(magnetic_tile_dir: Path) -> list[Path]:
    files = sorted((magnetic_tile_dir / "MT_Free").rglob("*.jpg"))
    order = np.random.default_rng(0).permutation(len(files))
    return [files[i] for i in order]


def cifar_images(cifar10_npz: Path, n: int, start: int = 0) -> list[np.ndarray]:
    x = np.load(cifar10_npz)["x"][start : start + n]
    return [np.ascontiguousarray(im[..., ::-1]) for im in x]  # RGB -> BGR


def write_pngs(images: list[np.ndarray], folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i, im in enumerate(images):
        cv2.imwrite(str(folder / f"{i:04d}.png"), im)
    return folder


def write_video(frames: list[np.ndarray], path: Path, fps: float = 10.0) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (FRAME, FRAME))
    assert writer.isOpened()
    for frame in frames:
        writer.write(cv2.resize(frame, (FRAME, FRAME), interpolation=cv2.INTER_AREA))
    writer.release()
    return path


def read_all(path: Path) -> list[np.ndarray]:
    """Every frame of a video, read as ovdoc reads one (an unreadable file fails loudly)."""
    from ovdoc.runtime.images import iter_video_frames

    return list(iter_video_frames(path))


def sample_images(spec: str, n: int, *, labelled: bool = False, seed: int = 0):
    """`n` images of a dataset spec (per class when `labelled`), drawn with `seed`: small training sets."""
    from ovdoc.runtime.datasets import Images, load_labelled, load_unlabelled

    data = load_labelled(spec) if labelled else load_unlabelled(spec)
    rng = np.random.default_rng(seed)
    if labelled:
        keep = np.concatenate(
            [rng.permutation(np.flatnonzero(data.labels == c))[:n] for c in np.unique(data.labels)]
        )
        return Images(data.images[keep], data.labels[keep], data.class_names, spec)
    return Images(data.images[rng.permutation(len(data))[:n]], None, (), spec)
