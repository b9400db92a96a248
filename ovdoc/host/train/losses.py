"""DOC's two losses (Perera & Patel 2018), written once for TensorFlow and once in numpy for tests."""

from __future__ import annotations

import numpy as np


def compactness_loss_numpy(z: np.ndarray) -> float:
    """Mean over samples and feature dims of ||z_i - m_i||^2, m_i = mean of the OTHER n-1 samples.

    Equals n^2/(n-1)^2 times the per-dimension batch variance, averaged: the paper's compactness loss.
    """
    z = np.asarray(z, np.float64)
    n = z.shape[0]
    others = (z.sum(axis=0, keepdims=True) - z) / (n - 1)
    return float(np.mean((z - others) ** 2))


def compactness_loss(z):
    """TensorFlow version of `compactness_loss_numpy` (batch of n >= 2 feature vectors)."""
    import tensorflow as tf

    z = tf.cast(z, tf.float32)
    n = tf.cast(tf.shape(z)[0], tf.float32)
    others = (tf.reduce_sum(z, axis=0, keepdims=True) - z) / (n - 1.0)
    return tf.reduce_mean(tf.square(z - others))


def descriptiveness_loss(labels, logits):
    """Cross-entropy of the reference batch: keeps features descriptive of many classes."""
    import tensorflow as tf

    return tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits))
