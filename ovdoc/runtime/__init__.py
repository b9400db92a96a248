"""The edge runtime: everything a board needs to fit, run, evaluate and benchmark a detector.

Nothing under `ovdoc.runtime` may import TensorFlow, Keras, NNCF or `ovdoc.host` (a test enforces it):
a LattePanda-class board installs only the runtime requirements.
"""
