"""DOC training: the compactness loss, joint training on real data, train -> IR -> bundle, clear errors."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from _runtime_helpers import sample_images
from conftest import need_package

from ovdoc.errors import OvdocError

pytestmark = pytest.mark.slow  # trains DOC models (TensorFlow)

# CI (OVDOC_REQUIRE_DATA=1): a failure, not a skip
@pytest.fixture(autouse=True, scope="module")
def _needs_tensorflow():
    """Asked when a test runs, not when the file is collected: `pytest -m "not slow"` never imports TF."""
    need_package("tensorflow", "TensorFlow (host side: pip install -e '.[train]')")


def test_compactness_loss_matches_hand_computation():
    from ovdoc.host.train.losses import compactness_loss, compactness_loss_numpy

    z = np.array([[1.0, 2.0], [3.0, 0.0], [2.0, 4.0]])
    # by hand: m_0 = mean(rows 1,2) = (2.5, 2.0); m_1 = (1.5, 3.0); m_2 = (2.0, 1.0)
    # squared diffs: (2.25 + 0) + (2.25 + 9) + (0 + 9) = 22.5, over n*k = 6 -> 3.75
    assert compactness_loss_numpy(z) == pytest.approx(3.75)
    assert float(compactness_loss(z.astype(np.float32))) == pytest.approx(3.75, rel=1e-6)
    rng = np.random.default_rng(0)
    z = rng.normal(size=(16, 8))
    n = len(z)
    variance_form = n**2 / (n - 1) ** 2 * z.var(axis=0).mean()  # the paper's n^2 sigma^2 / (n-1)^2 form
    assert compactness_loss_numpy(z) == pytest.approx(variance_form)
    assert float(compactness_loss(z.astype(np.float32))) == pytest.approx(variance_form, rel=1e-5)


def _fmnist(spec: str, n: int, *, labelled: bool = False):
    return sample_images(spec, n, labelled=labelled, seed=0)


def test_joint_training_decreases_both_losses(fashion_mnist_dir, mobilenet_pth):
    from ovdoc.host.train.doc import TrainConfig, train_doc

    target = _fmnist("fashion-mnist:sneaker", 128)
    reference = _fmnist("fashion-mnist:trouser,bag,sandal", 128, labelled=True)
    config = TrainConfig(
        weights="offline",
        size=32,
        epochs=1,
        batch=32,
        lam=1.0,
        lr=3e-4,
        augment=0,
        steps_per_epoch=60,
        freeze_until="block_13_expand",
        seed=1,
    )
    result = train_doc(target, reference, config, progress=False)
    d, c = np.array(result.loss_d), np.array(result.loss_c)
    assert len(d) == 60 and np.isfinite(d).all() and np.isfinite(c).all()
    assert d[-10:].mean() < 0.5 * d[:5].mean(), (d[:5], d[-10:])
    assert c[-10:].mean() < 0.8 * c[:5].mean(), (c[:5], c[-10:])
    assert result.model.output.shape[-1] == 1280
    assert result.n_classes == 3


def test_weight_averaging_returns_the_average_not_the_last_step(fashion_mnist_dir, mobilenet_pth):
    """--ema: the saved model holds the moving average of the weights, which lags the last step."""
    from ovdoc.host.train.doc import TrainConfig, train_doc

    target = _fmnist("fashion-mnist:sneaker", 32)
    reference = _fmnist("fashion-mnist:trouser,bag", 32, labelled=True)
    base = dict(weights="offline", size=32, epochs=1, batch=16, augment=0, steps_per_epoch=8, lr=1e-3, seed=4)
    last = train_doc(target, reference, TrainConfig(**base), progress=False)
    averaged = train_doc(target, reference, TrainConfig(**base, ema=0.9), progress=False)
    frozen = train_doc(target, reference, TrainConfig(**base, ema=0.999999), progress=False)
    untrained = train_doc(
        target, reference, TrainConfig(**(base | {"steps_per_epoch": 1, "lr": 1e-12})), progress=False
    )
    assert last.loss_d == averaged.loss_d  # same trajectory: averaging only changes what is kept
    x = np.random.default_rng(0).normal(size=(4, 32, 32, 3)).astype(np.float32)
    f_last, f_avg, f_frozen, f_start = (
        np.asarray(r.model(x, training=False)) for r in (last, averaged, frozen, untrained)
    )
    assert np.abs(f_avg - f_last).max() > 1e-4  # the average is not the last step's weights
    # a decay of ~1 keeps (almost exactly) the starting weights: the average has not moved
    np.testing.assert_allclose(f_frozen, f_start, atol=1e-3)
    assert np.abs(f_last - f_start).max() > 10 * np.abs(f_frozen - f_start).max()
    with pytest.raises(OvdocError, match="--ema"):
        train_doc(target, reference, TrainConfig(**base, ema=1.0), progress=False)


def test_same_seed_same_model(fashion_mnist_dir, mobilenet_pth):
    from ovdoc.host.train.doc import TrainConfig, train_doc

    target = _fmnist("fashion-mnist:sneaker", 32)
    reference = _fmnist("fashion-mnist:trouser,bag", 32, labelled=True)
    config = TrainConfig(weights="offline", size=32, epochs=1, batch=16, augment=1, steps_per_epoch=5, seed=3)
    first = train_doc(target, reference, config, progress=False)
    second = train_doc(target, reference, config, progress=False)
    x = np.random.default_rng(0).normal(size=(4, 32, 32, 3)).astype(np.float32)
    assert first.loss_d == second.loss_d
    np.testing.assert_array_equal(np.asarray(first.model(x)), np.asarray(second.model(x)))


def _run_cli(argv, capsys):
    from ovdoc.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    out = capsys.readouterr()
    return exit_info.value.code, out.out, out.err


def test_train_to_bundle_round_trip(tmp_path, capsys, fashion_mnist_dir, mobilenet_pth):
    from ovdoc.runtime.datasets import load_unlabelled
    from ovdoc.runtime.detector import Detector

    good = tmp_path / "good"
    good.mkdir()
    for i, img in enumerate(_fmnist("fashion-mnist:sneaker", 40).images):
        cv2.imwrite(str(good / f"{i:03d}.png"), img)
    out = tmp_path / "doc"
    code, stdout, stderr = _run_cli(
        [
            "train",
            "--target",
            str(good),
            "--reference",
            "fashion-mnist:trouser,bag,sandal",
            "--out",
            str(out),
            "--size",
            "32",
            "--epochs",
            "1",
            "--batch",
            "16",
            "--reference-per-class",
            "30",
            "--augment",
            "1",
            "--json",
        ],
        capsys,
    )
    assert code == 0, stderr
    report = json.loads(stdout)
    assert report["train"]["n_target"] == 80  # 40 images + 1 augmented copy each
    assert report["train"]["n_classes"] == 3
    for name in (
        "model.keras",
        "loss.png",
        "train.json",
        "ir/FP32/model.xml",
        "ir/FP16/model.xml",
        "bundle/manifest.json",
    ):
        assert (out / name).is_file(), name
    assert report["convert"]["precisions"]["FP32"]["cosine_min"] > 0.999
    # the trained IR carries its backbone's taps by role (the registry's description): patch mode reads them
    from ovdoc.irmodels.backbones import get_backbone
    from ovdoc.runtime.ir import backbone_info, read_ir

    info = backbone_info(read_ir(out / "ir" / "FP32" / "model.xml")[0])
    assert info["name"] == "mobilenetv2" and info["taps"] == get_backbone("mobilenetv2").taps
    kept = report["selection"]["kept"]
    assert info["weights"] == f"ovdoc train ({'doc' if kept == 'trained' else kept}, --weights offline)"
    det = Detector.load(out / "bundle")
    assert det.spec_.height == 32 and det.spec_.mean[0] == pytest.approx(0.485 * 255)
    boots = load_unlabelled("fashion-mnist-test:ankle_boot").images[:20]
    sneakers = load_unlabelled("fashion-mnist-test:sneaker").images[:20]
    assert det.score_samples(list(boots)).mean() > det.score_samples(list(sneakers)).mean()

    roc, grid = tmp_path / "roc.png", tmp_path / "grid.png"
    code, stdout, stderr = _run_cli(
        [
            "eval",
            str(out / "bundle"),
            "--normal",
            "fashion-mnist-test:sneaker",
            "--anomalous",
            "fashion-mnist-test:ankle_boot",
            "--roc",
            str(roc),
            "--grid",
            str(grid),
            "--json",
        ],
        capsys,
    )
    assert code == 0, stderr
    metrics = json.loads(stdout)
    assert metrics["n_normal"] == 1000 and metrics["n_anomalous"] == 1000
    assert 0.6 < metrics["auc"] <= 1.0
    assert cv2.imread(str(roc)) is not None and cv2.imread(str(grid)) is not None


@pytest.mark.parametrize("case", ["empty", "corrupt", "one-class", "unknown-spec", "unknown-class"])
def test_clear_errors(case, tmp_path, capsys, fashion_mnist_dir):
    target, reference = "fashion-mnist:sneaker", "fashion-mnist:trouser,bag"
    expected = {
        "empty": "no images in folder",
        "corrupt": "cannot read image",
        "one-class": "has 1 class",
        "unknown-spec": "unknown data set",
        "unknown-class": "unknown fashion-mnist class",
    }[case]
    if case == "empty":
        target = str(tmp_path / "empty")
        (tmp_path / "empty").mkdir()
    elif case == "corrupt":
        (tmp_path / "bad").mkdir()
        (tmp_path / "bad" / "x.png").write_bytes(b"not a png at all")
        target = str(tmp_path / "bad")
    elif case == "one-class":
        reference = "fashion-mnist:bag"
    elif case == "unknown-spec":
        reference = "mnist:3"
    else:
        target = "fashion-mnist:sneakerz"
    code, _, stderr = _run_cli(
        ["train", "--target", target, "--reference", reference, "--out", str(tmp_path / "out")], capsys
    )
    assert code != 0
    assert stderr.startswith("Error: ") and expected in stderr and "Traceback" not in stderr
    assert len(stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_reference_class_folders(tmp_path):
    from ovdoc.runtime.datasets import load_labelled

    for cls in ("a", "b"):
        (tmp_path / cls).mkdir()
        for i in range(3):
            cv2.imwrite(str(tmp_path / cls / f"{i}.png"), np.full((8, 8, 3), 40 * i, np.uint8))
    data = load_labelled(str(tmp_path))
    assert len(data) == 6 and sorted(set(data.labels.tolist())) == [0, 1] and data.class_names == ("a", "b")
    with pytest.raises(OvdocError, match="has 0 classes"):
        load_labelled(str(tmp_path / "a"))
