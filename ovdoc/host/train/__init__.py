"""Host-side DOC training (`ovdoc train`). Submodules import TensorFlow lazily, inside functions."""
