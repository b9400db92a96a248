"""`ovdoc export`: a global bundle's feature model for phones (TFLite, ONNX, CoreML) plus the JSON an app
needs to score with it. Host side: the bundle holds only an OpenVINO IR, so the model is rebuilt from its
Keras source (see source.py) and every export is checked against the bundle's IR where it can be run."""

from ovdoc.host.export.api import FORMATS, export_bundle

__all__ = ["FORMATS", "export_bundle"]
