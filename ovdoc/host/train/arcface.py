"""ArcFace training (additive angular margin, Deng et al. 2019): the phone gate's metric learning.

Embedding = L2-normalised linear projection of the pooled features, so every image lies on the unit
sphere and a class is a direction. Logits are s * cos(theta_j) against unit class weights, with the true
class's angle widened by m: s * cos(theta_y + m). The margin forces each class into a tight cone, which
is what scoring by the cosine to the mean normal embedding relies on.

Classes (`arcface_target`): `own-class` = the reference classes plus the target as one more class;
`vs-reference` = two classes, target and every reference image as one negative class. The frozen
lower layers, their cached outputs, the batches and weight averaging are DOC training's (doc.py).
"""

from __future__ import annotations

import math
import time

import numpy as np

from ovdoc.errors import OvdocError
from ovdoc.host import require_tensorflow
from ovdoc.host.train.doc import FEATURES, Prepared, TrainConfig, TrainResult, fit_head, prepare
from ovdoc.runtime.datasets import Images

TARGET_MODES = ("own-class", "vs-reference")


def arcface_logits_numpy(z: np.ndarray, w: np.ndarray, labels: np.ndarray, s: float, m: float) -> np.ndarray:
    """Reference arithmetic for tests: s * cos(theta + m) for the true class, s * cos(theta) otherwise."""
    z = z / np.linalg.norm(z, axis=1, keepdims=True)
    w = w / np.linalg.norm(w, axis=0, keepdims=True)
    cos = np.clip(z @ w, -1.0, 1.0)
    theta = np.arccos(cos)
    rows = np.arange(len(z))
    out = cos.copy()
    out[rows, labels] = np.where(theta[rows, labels] + m <= math.pi, np.cos(theta[rows, labels] + m),
                                 cos[rows, labels] - m * math.sin(m))
    return s * out


def arcface_logits(z, w, labels, s: float, m: float):
    """TensorFlow version of `arcface_logits_numpy` (cos(theta+m) without arccos, for a clean gradient).

    Past theta = pi - m, cos(theta + m) would turn back up; there the margin becomes the linear
    cos(theta) - m sin(m) (InsightFace's usual guard), which keeps the logit decreasing in theta.
    """
    import tensorflow as tf

    z = tf.math.l2_normalize(tf.cast(z, tf.float32), axis=1)
    w = tf.math.l2_normalize(w, axis=0)
    cos = tf.clip_by_value(tf.matmul(z, w), -1.0 + 1e-7, 1.0 - 1e-7)
    sin = tf.sqrt(1.0 - tf.square(cos))
    with_margin = cos * math.cos(m) - sin * math.sin(m)
    with_margin = tf.where(cos > math.cos(math.pi - m), with_margin, cos - m * math.sin(m))
    onehot = tf.one_hot(labels, tf.shape(w)[1], dtype=tf.float32)
    return s * (onehot * with_margin + (1.0 - onehot) * cos)


def embedding_head(top, dim: int):
    """top (feature map) -> pooled -> linear projection -> unit-length `features` embedding."""
    import keras

    pooled = keras.layers.GlobalAveragePooling2D(name="pooled")(top.outputs[0])
    embedded = keras.layers.Dense(dim, use_bias=False, name="embedding")(pooled)
    unit = keras.layers.UnitNormalization(axis=-1, name=FEATURES)(embedded)
    return keras.Model(top.inputs, unit, name="top_embedding")


def check(config: TrainConfig) -> None:
    if config.arcface_s <= 0:
        raise OvdocError(f"--arcface-s must be positive, got {config.arcface_s}")
    if not 0.0 <= config.arcface_m < math.pi / 2:
        raise OvdocError(f"--arcface-m must be in [0, pi/2) radians, got {config.arcface_m}")
    if config.arcface_target not in TARGET_MODES:
        raise OvdocError(f"unknown --arcface-target {config.arcface_target!r}: use {', '.join(TARGET_MODES)}")
    if config.embedding_dim < 2:
        raise OvdocError(f"--embedding-dim must be at least 2, got {config.embedding_dim}")


def train_arcface(
    target: Images, reference: Images, config: TrainConfig, *, progress: bool = True
) -> TrainResult:
    """Fine-tune MobileNetV2 with an ArcFace head; returns the image -> unit embedding model.

    Recorded as l_D = the ArcFace loss over both batches, l_C = the target batch's compactness (DOC's
    measure, only monitored here: the margin is what compacts the target).
    """
    tf = require_tensorflow("training")

    from ovdoc.host.train.losses import compactness_loss

    check(config)
    started = time.perf_counter()
    prep: Prepared = prepare(target, reference, config, progress=progress)
    head = embedding_head(prep.top, config.embedding_dim)
    own = config.arcface_target == "own-class"
    n_classes = prep.n_classes + 1 if own else 2
    target_label = prep.n_classes if own else 0
    centres = ArcFaceCentres(n_classes, config.embedding_dim)
    s, m = float(config.arcface_s), float(config.arcface_m)

    def losses(zt, zr, yr):
        yr = yr if own else tf.ones_like(yr)  # vs-reference: every reference image is class 1
        yt = tf.fill(tf.shape(zt)[:1], target_label)
        z = tf.concat([zt, zr], axis=0)
        y = tf.concat([yt, tf.cast(yr, tf.int32)], axis=0)
        logits = arcface_logits(z, centres.w, y, s, m)
        loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=logits))
        return loss, loss, compactness_loss(zt)

    result = fit_head(prep, head, [centres], losses, config, started=started, progress=progress)
    result.n_classes = n_classes
    return result


class ArcFaceCentres:
    """The ArcFace class weights [dim, classes] as one trainable variable (what `fit_head` trains)."""

    def __init__(self, classes: int, dim: int) -> None:
        import keras

        init = keras.initializers.GlorotUniform()
        self.w = keras.Variable(init((dim, classes)), name="arcface_centres")
        self.trainable_variables = [self.w]
