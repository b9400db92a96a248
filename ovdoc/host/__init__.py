"""Host-side work: conversion from Keras/TF/ONNX/TFLite, DOC training, INT8 quantization.

Needs the `ovdoc[train]` extra (TensorFlow, tf-keras, NNCF, ONNX); a board never imports this package.
"""
