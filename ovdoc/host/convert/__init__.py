"""Model conversion to verified OpenVINO IR (`ovdoc convert`).

Importing this package imports no TensorFlow: Keras/TF/TFLite routes import it inside the functions
that need it, so the ONNX route and `ovdoc convert --help` work on a TensorFlow-free install.
"""

from ovdoc.host.convert.api import Int8Options, convert_keras_model, convert_source
from ovdoc.host.convert.keras_legacy import load_keras_source

__all__ = ["Int8Options", "convert_keras_model", "convert_source", "load_keras_source"]
