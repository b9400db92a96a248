"""Joint DOC training: every step L = l_D(reference batch) + lambda * l_C(target batch).

The data preparation and the step loop (`prepare`, `fit_head`) are shared with ArcFace training
(arcface.py): same frozen, cached lower layers, same batches, same weight averaging.

The network below `freeze_until` is frozen and run in inference mode; since it is deterministic, its
outputs are computed once and cached, so each step only runs the trainable top. BatchNorm stays in
inference mode in the trainable top as well (ImageNet statistics): the features the kNN index sees at
test time are exactly the ones training shaped, whatever the batch composition.
"""

from __future__ import annotations

import contextlib
import math
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ovdoc.errors import OvdocError
from ovdoc.host import require_tensorflow
from ovdoc.host.train.augment import augment_copies, auto_copies
from ovdoc.irmodels.backbones import get_backbone
from ovdoc.log import progress_bar
from ovdoc.runtime.datasets import Images, to_model_input
from ovdoc.runtime.preprocess import PreprocessSpec

FEATURES = "features"
METHODS = ("doc", "arcface")


@dataclass
class TrainConfig:
    weights: str = "offline"
    alpha: float = 1.0
    size: int = 96
    epochs: int = 3
    batch: int = 64
    lam: float = 0.1
    lr: float = 1e-4
    freeze_until: str | None = get_backbone("mobilenetv2").finetune_from
    augment: int | None = None  # copies per target image; None = auto (small sets grow to ~1000 images)
    reference_per_class: int | None = 2000
    steps_per_epoch: int | None = None  # default: one pass over the larger of target and reference
    seed: int = 0
    ema: float = 0.0  # decay of an exponential moving average of the weights (0 = last step's weights)
    method: str = "doc"  # doc | arcface (ovdoc.host.train.arcface)
    arcface_s: float = 30.0  # ArcFace scale of the cosine logits
    arcface_m: float = 0.5  # ArcFace additive angular margin (radians)
    arcface_target: str = "own-class"  # own-class: reference classes + target | vs-reference: 2 classes
    embedding_dim: int = 128  # ArcFace: size of the L2-normalised embedding


@dataclass
class TrainResult:
    model: object  # keras.Model image -> features
    spec: PreprocessSpec
    config: TrainConfig
    loss_d: list[float] = field(default_factory=list)
    loss_c: list[float] = field(default_factory=list)
    n_target: int = 0
    n_reference: int = 0
    n_classes: int = 0
    seconds: float = 0.0
    backbone: str = ""

    def summary(self) -> dict:
        def tail(values: list[float]) -> float | None:
            return float(np.mean(values[-20:])) if values else None

        return {
            "config": asdict(self.config),
            "spec": self.spec.to_dict(),
            "backbone": self.backbone,
            "n_target": self.n_target,
            "n_reference": self.n_reference,
            "n_classes": self.n_classes,
            "steps": len(self.loss_d),
            "seconds": round(self.seconds, 1),
            "loss_d_first": self.loss_d[0] if self.loss_d else None,
            "loss_d_last": tail(self.loss_d),
            "loss_c_first": self.loss_c[0] if self.loss_c else None,
            "loss_c_last": tail(self.loss_c),
        }


def set_seed(seed: int) -> None:
    """Same seed, same model: Python/numpy/TF seeds plus deterministic TF kernels."""
    tf = require_tensorflow("training")
    import keras

    keras.utils.set_random_seed(seed)
    with contextlib.suppress(Exception):  # older TF: seeds alone
        tf.config.experimental.enable_op_determinism()


def split_at(model, freeze_until: str | None):
    """(frozen part or None, trainable top) of an image -> feature-map model, cut at a layer's input."""
    import keras

    if not freeze_until or freeze_until.lower() == "none":
        return None, model
    names = [layer.name for layer in model.layers]
    if freeze_until not in names:
        examples = [n for n in names if n.endswith("_expand")][-4:]
        raise OvdocError(
            f"--freeze-until: no layer {freeze_until!r} in the backbone (e.g. {', '.join(examples)}, "
            "or none to train everything)"
        )
    cut = model.get_layer(freeze_until).input
    frozen = keras.Model(model.inputs, cut, name="frozen")
    top = keras.Model(cut, model.outputs, name="top")
    frozen.trainable = False
    return frozen, top


def _feature_head(top):
    """top (feature map) -> global-average-pooled `features` vector."""
    import keras

    pooled = keras.layers.GlobalAveragePooling2D(name=FEATURES)(top.outputs[0])
    return keras.Model(top.inputs, pooled, name="top_features")


def _balanced_subset(labels: np.ndarray, per_class: int | None, rng: np.random.Generator) -> np.ndarray:
    if not per_class:
        return np.arange(len(labels))
    keep = [rng.permutation(np.flatnonzero(labels == c))[:per_class] for c in np.unique(labels)]
    return np.sort(np.concatenate(keep))


def _openvino_frozen(frozen, spec: PreprocessSpec):
    """The frozen part compiled with OpenVINO (uint8 BGR in, preprocessing in-graph): several times
    faster than TF on a small CPU, and checked against TF before use; None if it cannot be built."""
    import tempfile

    from ovdoc.host.convert.keras_route import convert_keras
    from ovdoc.runtime.ir import compile_ir

    try:
        with tempfile.TemporaryDirectory(prefix="ovdoc-frozen-") as work:
            model = convert_keras(frozen, Path(work), size=(spec.height, spec.width)).model
        compiled = compile_ir(model, spec, batch=None)
    except Exception:  # any failure: the TF path below is always correct, only slower
        return None
    probe = np.random.default_rng(0).integers(0, 256, (4, spec.height, spec.width, 3), dtype=np.uint8)
    got = compiled(probe)[0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        want = np.asarray(frozen(spec.to_float(probe), training=False))
    if got.shape != want.shape or np.max(np.abs(got - want)) > 1e-3 * max(1.0, float(np.max(np.abs(want)))):
        return None
    return lambda batch_u8: compiled(batch_u8)[0]


def _run_frozen(
    frozen, spec: PreprocessSpec, images, batch: int = 128, desc: str = "", progress: bool = True, runner=None
):
    """Prepared uint8 -> cached frozen outputs (float16 to halve the memory), in chunks."""
    outs = []
    for start in progress_bar(range(0, len(images), batch), desc=desc, unit="batch", enabled=progress):
        chunk = images[start : start + batch]
        if not isinstance(chunk, np.ndarray) or chunk.ndim != 4 or chunk.shape[1] != spec.height:
            chunk = to_model_input(chunk, spec)
        if frozen is None:
            outs.append(spec.to_float(chunk))
            continue
        if runner is not None:
            y = runner(chunk)
        else:
            with warnings.catch_warnings():  # Keras nags about the input's name; harmless
                warnings.simplefilter("ignore")
                y = frozen(spec.to_float(chunk), training=False)
        outs.append(np.asarray(y, dtype=np.float16))
    return np.concatenate(outs)


@dataclass
class Prepared:
    """What every training method starts from: the split backbone and the cached frozen outputs."""

    frozen: object  # keras.Model or None
    top: object  # keras.Model: frozen outputs -> feature map
    spec: PreprocessSpec
    source: str
    cached_t: np.ndarray  # target images through the frozen part (float16)
    cached_r: np.ndarray  # reference images through the frozen part
    ref_labels: np.ndarray  # int32, 0..n_classes-1
    n_classes: int
    rng: np.random.Generator  # continues into the batch order: one seeded stream, as before the split


def prepare(target: Images, reference: Images, config: TrainConfig, *, progress: bool = True) -> Prepared:
    """Seed, build and split the backbone, augment the target, subsample the reference, cache both."""
    from ovdoc.host.train.backbone import make_backbone

    if len(target) < 2:
        raise OvdocError(f"the target set needs at least 2 images, got {len(target)}")
    set_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    backbone = make_backbone(config.weights, size=config.size, alpha=config.alpha)
    spec = backbone.spec
    frozen, top = split_at(backbone.model, config.freeze_until)

    # data: target (+ augmented copies), class-balanced reference subset with labels 0..C-1
    target_u8 = to_model_input(target.images, spec)
    copies = auto_copies(len(target_u8)) if config.augment is None else config.augment
    if copies:
        target_u8 = np.concatenate([target_u8, augment_copies(target_u8, copies, rng)])
    keep = _balanced_subset(reference.labels, config.reference_per_class, rng)
    classes, ref_labels = np.unique(reference.labels[keep], return_inverse=True)
    ref_images = (
        reference.images[keep]
        if isinstance(reference.images, np.ndarray)
        else [reference.images[i] for i in keep]
    )
    # OpenVINO pays off (about 4x) once there are more images than its conversion costs
    big = len(target_u8) + len(ref_images) >= 2000
    runner = _openvino_frozen(frozen, spec) if frozen is not None and big else None
    cached_t = _run_frozen(
        frozen, spec, target_u8, desc="frozen part: target", progress=progress, runner=runner
    )
    cached_r = _run_frozen(
        frozen, spec, ref_images, desc="frozen part: reference", progress=progress, runner=runner
    )
    return Prepared(frozen, top, spec, backbone.source, cached_t, cached_r, ref_labels.astype(np.int32),
                    len(classes), rng)


def fit_head(prep: Prepared, head, extra, losses, config: TrainConfig, *, started: float,
             progress: bool = True) -> TrainResult:
    """The shared loop: each step one target and one reference batch; `losses(zt, zr, yr)` returns
    (loss to minimise, l_D, l_C) for the record; `extra` = the method's own layers (classifier head).
    Optional weight averaging (--ema); returns the image -> features model."""
    tf = require_tensorflow("training")
    import keras

    rng = prep.rng
    optimizer = keras.optimizers.Adam(config.lr)
    if not head.trainable_variables:
        raise OvdocError("nothing to train: --freeze-until leaves no trainable layer")
    variables = head.trainable_variables + [v for layer in extra for v in layer.trainable_variables]
    if not 0.0 <= config.ema < 1.0:
        raise OvdocError(f"--ema must be in [0, 1), got {config.ema}")
    # The kNN AUC swings by +-0.02 from step to step; an average of the recent weights is steadier than
    # whichever weights the last step happened to leave (Polyak averaging).
    ema_decay = tf.constant(config.ema, tf.float32)
    weights = head.trainable_variables if config.ema else []
    averaged = [(tf.Variable(v, trainable=False), v) for v in weights]  # (shadow, weight); none without --ema
    # ImageNet BatchNorm statistics are kept; a randomly initialised network has none worth keeping
    bn_training = prep.source == "random"

    @tf.function(reduce_retracing=True)
    @tf.autograph.experimental.do_not_convert
    def step(xt, xr, yr):
        with tf.GradientTape() as tape:
            loss, loss_d, loss_c = losses(head(xt, training=bn_training), head(xr, training=bn_training), yr)
        grads = tape.gradient(loss, variables)
        optimizer.apply_gradients(zip(grads, variables, strict=True))
        for shadow, var in averaged:
            shadow.assign(ema_decay * shadow + (1.0 - ema_decay) * var)
        return loss_d, loss_c

    cached_t, cached_r = prep.cached_t, prep.cached_r
    batch = max(2, min(config.batch, len(cached_t)))
    steps = config.steps_per_epoch or math.ceil(max(len(cached_t), len(cached_r)) / batch)
    result = TrainResult(model=None, spec=prep.spec, config=config, n_target=len(cached_t),
                         n_reference=len(cached_r), n_classes=prep.n_classes, backbone=prep.source)
    t_order = np.empty(0, np.int64)
    r_order = np.empty(0, np.int64)
    for epoch in range(config.epochs):
        bar = progress_bar(
            range(steps), desc=f"epoch {epoch + 1}/{config.epochs}", unit="step", enabled=progress, leave=True
        )
        for _ in bar:
            if len(t_order) < batch:
                t_order = np.concatenate([t_order, rng.permutation(len(cached_t))])
            if len(r_order) < batch:
                r_order = np.concatenate([r_order, rng.permutation(len(cached_r))])
            ti, t_order = t_order[:batch], t_order[batch:]
            ri, r_order = r_order[:batch], r_order[batch:]
            loss_d, loss_c = step(
                cached_t[ti].astype(np.float32), cached_r[ri].astype(np.float32), prep.ref_labels[ri]
            )
            result.loss_d.append(float(loss_d))
            result.loss_c.append(float(loss_c))
            bar.set_postfix(l_D=f"{result.loss_d[-1]:.3f}", l_C=f"{result.loss_c[-1]:.4f}")
    for shadow, var in averaged:
        var.assign(shadow)
    image = keras.Input((prep.spec.height, prep.spec.width, 3), name="image")
    x = prep.frozen(image, training=False) if prep.frozen is not None else image
    result.model = keras.Model(image, head(x, training=False), name=f"{config.method}_mobilenetv2")
    result.seconds = time.perf_counter() - started
    return result


def train_doc(
    target: Images, reference: Images, config: TrainConfig, *, progress: bool = True
) -> TrainResult:
    """Fine-tune an ImageNet MobileNetV2 with DOC's joint objective; returns the image -> features model."""
    tf = require_tensorflow("training")
    import keras

    from ovdoc.host.train.losses import compactness_loss, descriptiveness_loss

    started = time.perf_counter()
    prep = prepare(target, reference, config, progress=progress)
    head = _feature_head(prep.top)
    classifier = keras.layers.Dense(prep.n_classes, name="reference_classifier")
    classifier.build((None, head.outputs[0].shape[-1]))
    lam = tf.constant(config.lam, tf.float32)

    def losses(zt, zr, yr):
        loss_d = descriptiveness_loss(yr, classifier(zr))
        loss_c = compactness_loss(zt)
        return loss_d + lam * loss_c, loss_d, loss_c

    return fit_head(prep, head, [classifier], losses, config, started=started, progress=progress)


def plot_losses(result: TrainResult, path) -> None:
    """Loss-curve PNG (both losses per step, and their moving average)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
    for ax, values, title in (
        (axes[0], result.loss_d, "ArcFace loss (both batches)" if result.config.method == "arcface"
         else "descriptiveness l_D (reference CE)"),
        (axes[1], result.loss_c, "compactness l_C (target)"),
    ):
        steps = np.arange(1, len(values) + 1)
        ax.plot(steps, values, alpha=0.3, lw=0.8)
        if len(values) >= 10:
            w = max(2, len(values) // 50)
            smooth = np.convolve(values, np.ones(w) / w, mode="valid")
            ax.plot(steps[w - 1 :], smooth, lw=1.5)
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
