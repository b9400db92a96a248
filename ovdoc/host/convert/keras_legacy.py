"""Loading Keras models of every vintage ovdoc meets: Keras 3 `.keras`, full-model `.h5`, and the
original project's Keras 2.2.4 `model.json` + `weights.h5` pair.

Keras 3 cannot read a Keras 2.2.4 architecture JSON (`batch_input_shape`, old layer configs); tf_keras
(Keras 2 on today's TensorFlow) reads it and its weights as they are, so the legacy pair goes through
tf_keras and nothing is rewritten by hand.
"""

from __future__ import annotations

import contextlib
import io
import warnings
from pathlib import Path

from ovdoc.errors import OvdocError, first_line
from ovdoc.host import require_tensorflow
from ovdoc.host.convert import formats


def load_keras_source(src: str | Path, weights: str | Path | None = None):
    """Load a Keras model from `.keras`, full `.h5`, or `model.json` + `weights` (legacy Keras 2.x)."""
    source = formats.detect(src, weights)
    if source.format not in formats.KERAS_FORMATS:
        raise OvdocError(f"{source.path} is a {source.format} model, not a Keras model")
    return load_detected(source)


def load_detected(source: formats.Source):
    require_tensorflow("loading a Keras model")
    with _quiet():
        if source.format == formats.KERAS:
            return _load_keras3(source.path)
        if source.format == formats.KERAS_H5:
            return _load_h5(source.path)
        return _load_json_pair(source.path, source.weights)


def _load_keras3(path: Path):
    import keras

    try:
        return keras.saving.load_model(path, compile=False)
    except Exception as exc:
        raise OvdocError(f"cannot load Keras model {path}: {first_line(exc)}") from exc


def _load_h5(path: Path):
    """Keras 3 reads full-model .h5 written by Keras 2.4+; older files need tf_keras."""
    import keras

    try:
        return keras.models.load_model(path, compile=False)
    except Exception as first:
        try:
            import tf_keras
        except ImportError:
            raise OvdocError(f"cannot load Keras .h5 model {path}: {first_line(first)}") from first
        try:
            return tf_keras.models.load_model(path, compile=False)
        except Exception as exc:
            raise OvdocError(f"cannot load Keras .h5 model {path}: {first_line(exc)}") from exc


def _load_json_pair(json_path: Path, weights: Path):
    try:
        import tf_keras
    except ImportError as exc:
        raise OvdocError(
            "a legacy Keras model.json needs tf_keras (Keras 2 for today's TensorFlow): pip install tf-keras"
        ) from exc
    try:
        model = tf_keras.models.model_from_json(json_path.read_text(encoding="utf-8"))
    except Exception as exc:
        raise OvdocError(f"cannot build the Keras architecture in {json_path}: {first_line(exc)}") from exc
    try:
        model.load_weights(str(weights))
    except Exception as exc:
        raise OvdocError(
            f"cannot load weights {weights} into {json_path.name}: {first_line(exc)} "
            "(corrupt/truncated file, or weights of another model?)"
        ) from exc
    return model


@contextlib.contextmanager
def _quiet():
    """Keras prints deprecation chatter to stdout; keep stdout for --json."""
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        yield
