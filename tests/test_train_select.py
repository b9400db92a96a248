"""`ovdoc train --select`: trained vs untrained backbone, chosen on held-out normals vs pseudo-anomalies."""

from __future__ import annotations

import json

import numpy as np
import pytest
from _runtime_helpers import sample_images
from conftest import need_package

pytestmark = pytest.mark.slow  # trains and selects models (TensorFlow)

@pytest.fixture(autouse=True, scope="module")
def _needs_tensorflow():
    """Asked when a test runs, not when the file is collected: `pytest -m "not slow"` never imports TF."""
    need_package("tensorflow", "TensorFlow (host side: pip install -e '.[train]')")


def _images(spec: str, n: int, *, labelled: bool = False):
    return sample_images(spec, n, labelled=labelled, seed=1)


def test_holdout_keeps_held_out_images_out_of_training(fashion_mnist_dir):
    from ovdoc.host.train.select import split_holdout

    target = _images("fashion-mnist:sneaker", 200)
    reference = _images("fashion-mnist:trouser,bag", 100, labelled=True)
    held = split_holdout(target, reference, 0.1, seed=3)  # two classes: too few to hold one out whole
    assert held.summary() == {"held_out_target": 20, "held_out_reference": 20,
                              "pseudo_anomalies": "held-out images of the reference classes"}
    assert len(held.target) == 180 and len(held.reference) == 180
    label_of = {img.tobytes(): y for img, y in zip(reference.images, reference.labels, strict=True)}
    assert all(label_of[img.tobytes()] == y  # labels travel with their images
               for img, y in zip(held.reference.images, held.reference.labels, strict=True))

    def keys(images) -> set:
        return {img.tobytes() for img in images}

    assert not keys(held.val_target) & keys(held.target.images)
    assert not keys(held.val_reference) & keys(held.reference.images)
    assert keys(held.val_target) | keys(held.target.images) == keys(target.images)
    again = split_holdout(target, reference, 0.1, seed=3)
    assert keys(again.val_target) == keys(held.val_target)  # same seed, same split
    assert split_holdout(target, reference, 0.02, seed=3) is None  # 4 images: too few to decide on
    assert split_holdout(target, reference, 0.0, seed=3) is None


def test_holdout_sets_whole_reference_classes_aside_when_there_are_enough(fashion_mnist_dir):
    """Pseudo-anomalies from classes the network never trains on: held-out images of a class its
    cross-entropy head learnt would make any training look good."""
    from ovdoc.host.train.select import split_holdout

    target = _images("fashion-mnist:sneaker", 200)
    reference = _images("fashion-mnist:trouser,bag,sandal,shirt,coat", 50, labelled=True)
    held = split_holdout(target, reference, 0.1, seed=3)
    [proxy] = set(np.unique(reference.labels)) - set(np.unique(held.reference.labels))  # 20 % of 5
    assert len(held.reference) == 200 and len(held.val_reference) == 20
    proxy_images = {img.tobytes() for img, y in zip(reference.images, reference.labels, strict=True)
                    if y == proxy}
    assert {img.tobytes() for img in held.val_reference} <= proxy_images
    assert held.summary()["pseudo_anomalies"] == f"held-out reference classes: {reference.class_names[proxy]}"


def _train(tmp_path, capsys, select: str, target_spec: str, *extra: str) -> tuple[dict, object]:
    from ovdoc.cli import main

    out = tmp_path / select
    argv = ["train", "--target", target_spec, "--reference", "fashion-mnist:trouser,bag,sandal",
            "--out", str(out), "--size", "32", "--epochs", "1", "--batch", "16", "--reference-per-class",
            "60", "--augment", "0", "--select", select, "--json", *extra]
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    captured = capsys.readouterr()
    assert exit_info.value.code == 0, captured.err
    return json.loads(captured.out), out, captured.err


def _folder(tmp_path, spec: str, n: int):
    import cv2

    folder = tmp_path / "good"
    folder.mkdir(exist_ok=True)
    for i, img in enumerate(_images(spec, n).images):
        cv2.imwrite(str(folder / f"{i:03d}.png"), img)
    return folder


def test_auto_measures_both_and_keeps_the_better(tmp_path, capsys, fashion_mnist_dir, mobilenet_pth):
    good = _folder(tmp_path, "fashion-mnist:sneaker", 120)
    report, out, err = _train(tmp_path, capsys, "auto", str(good))
    chosen = report["selection"]
    assert chosen["held_out_target"] == 12 and chosen["held_out_reference"] == 12
    assert chosen["pseudo_anomalies"].startswith("held-out reference classes: ")  # one of the three
    # the decision's probe never saw the held-out twelve; a kept training is refitted on all 120
    assert report["train"]["n_target"] == (120 if chosen["kept"] == "trained" else 108)
    assert chosen["refit_on_every_image"] == (chosen["kept"] == "trained")
    aucs = chosen["normal_only_auc"]
    assert set(aucs) == {"trained", "untrained"} and all(0.0 <= v <= 1.0 for v in aucs.values())
    # on a tie the simpler model wins
    assert chosen["kept"] == ("trained" if aucs["trained"] > aucs["untrained"] else "untrained")
    assert f"kept the {chosen['kept']} model" in err
    assert report["bundle"]["n_images"] == 120  # the bundle is fitted on every target image
    assert not (out / "untrained-ir").exists()
    assert (out / "trained-model.keras").is_file() == (chosen["kept"] == "untrained")
    recorded = json.loads((out / "train.json").read_text(encoding="utf-8"))["selection"]
    assert recorded == chosen


def test_untrained_keeps_the_backbone_and_training_beside_it(tmp_path, capsys, fashion_mnist_dir,
                                                            mobilenet_pth):
    import keras

    from ovdoc.host.train.doc import TrainConfig
    from ovdoc.host.train.select import untrained_model
    from ovdoc.runtime.detector import Detector

    good = _folder(tmp_path, "fashion-mnist:sneaker", 40)
    report, out, _ = _train(tmp_path, capsys, "untrained", str(good))
    assert report["selection"]["kept"] == "untrained" and report["selection"]["normal_only_auc"] == {}
    assert (out / "trained-model.keras").is_file()
    manifest = json.loads((out / "bundle" / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["export_source"]["method"] == "untrained"
    # the bundle computes the untrained backbone's features, and model.keras is that backbone
    model, spec = untrained_model(TrainConfig(size=32))
    images = _images("fashion-mnist-test:sneaker", 6).images
    from ovdoc.runtime.datasets import to_model_input

    want = np.asarray(model(spec.to_float(to_model_input(list(images), spec)), training=False))
    saved = keras.models.load_model(str(out / "model.keras"), compile=False)
    np.testing.assert_allclose(
        np.asarray(saved(spec.to_float(to_model_input(list(images), spec)), training=False)), want, atol=1e-4
    )
    got = Detector.load(out / "bundle").features(list(images))
    cos = np.sum(got * want, axis=1) / np.linalg.norm(got, axis=1) / np.linalg.norm(want, axis=1)
    assert cos.min() > 0.999


def test_choose_keeps_training_only_when_strictly_better_and_says_when_it_cannot_tell():
    from ovdoc.host.train.select import choose

    assert choose("auto", {"trained": 0.91, "untrained": 0.90})[0] == "trained"
    kept, why = choose("auto", {"trained": 0.90, "untrained": 0.90})
    assert kept == "untrained" and "cannot" not in why
    assert choose("auto", {"untrained": 0.9})[0] == "trained" and "unmeasured" in choose("auto", {})[1]
    kept, why = choose("auto", {"trained": 1.0, "untrained": 0.9995})
    assert kept == "trained" and "too unlike the target" in why and "ovdoc eval" in why
    assert choose("trained", {"trained": 0.1, "untrained": 0.9}) == ("trained", "--select trained")
