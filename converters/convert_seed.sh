#!/usr/bin/env bash
# Reproduce the seed model's conversion: the original project's Keras 2.2.4 pair
# (model.json + weights.h5, MobileNetV2 96x96, RGB, x/255) -> verified OpenVINO IR (FP32 + FP16).
#
#   converters/convert_seed.sh [SEED_DIR] [OUT_DIR]
#
# SEED_DIR defaults to ../shared/models/seed-doc-faces beside the checkout; OUT_DIR to
# irmodels/seed-doc-faces (git-ignored: the seed model's files are never committed). Each output
# folder holds FP32/ and FP16/ model.xml+.bin and convert.json (the verification report).
# The ONNX, frozen-TF and weight-quantized TFLite copies are converted too, into OUT_DIR/cross-check/.
# The TFLite file converts because ovdoc rewrites its UINT8-stored 8-bit weights as float32 the way
# TFLite's hybrid kernels read them; converted as is (--no-tflite-fix) it is refused by verification,
# which the last step shows.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
seed="${1:-$repo/../shared/models/seed-doc-faces}"
out="${2:-$repo/irmodels/seed-doc-faces}"

ovdoc convert "$seed/keras/model.json" --weights "$seed/keras/weights.h5" --out "$out" \
    --name seed-doc-faces --color RGB --scale unit --keep-frozen
ovdoc convert "$seed/onnx/weights.onnx" --out "$out/cross-check/onnx" --name seed-doc-faces
ovdoc convert "$seed/tensorflow/weights.pb" --out "$out/cross-check/tf" --name seed-doc-faces

ovdoc convert "$seed/tflite/weights.tflite" --out "$out/cross-check/tflite" --name seed-doc-faces

scratch="$(mktemp -d)"
err="$scratch/stderr"
trap 'rm -rf "$scratch"' EXIT
if ovdoc convert "$seed/tflite/weights.tflite" --no-tflite-fix --out "$scratch/as-is" 2> "$err"; then
    echo "unexpected: the weight-quantized TFLite passed verification without the weight fix" >&2
    exit 1
fi
echo "tflite without the weight fix refused as expected: $(tail -n 1 "$err")" >&2
