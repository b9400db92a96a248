#!/usr/bin/env bash
# Record `ovdoc bench` figures for THIS machine under benchmarks/results/bench-<name>/.
#
# The seed DOC model (the original project's Keras 2.2.4 model.json + weights.h5) is converted with
# `ovdoc convert` (so the bundle records its Keras source and the original-app baseline can run it),
# fitted on 300 normal magnetic tiles, then benchmarked on vtest.avi at 640x480 with FP32/FP16/INT8,
# batch 1 and 8, both hints, all three scorers, AUC on 200 held-out normal tiles vs 392 defective ones,
# and both baselines (original Keras + LOF loop; 2019 OpenVINO sync loop + LOF).
#
# Usage: benchmarks/bench_this_machine.sh [name]        (default name: this host's name)
# Needs ../shared (or OVDOC_SHARED) and the host-side extras (TensorFlow) for conversion and the Keras
# baseline. Runs ~10-30 minutes on a 2-core box (INT8's accuracy control dominates). Extra `ovdoc bench`
# options can be passed in BENCH_ARGS, e.g. BENCH_ARGS="--devices CPU,GPU,NPU".
set -euo pipefail
case "${1:-}" in -h | --help) sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;; esac
cd "$(dirname "$0")/.."
NAME="${1:-$(hostname -s 2>/dev/null || echo machine)}"
SHARED="${OVDOC_SHARED:-$(cd .. && pwd)/shared}"
SEED="$SHARED/models/seed-doc-faces/keras"
TILES="$SHARED/data/magnetic-tile"
VIDEO="$SHARED/data/video/vtest.avi"
OUT="benchmarks/results/bench-$NAME"
for need in "$SEED/model.json" "$SEED/weights.h5" "$TILES/MT_Free" "$VIDEO"; do
  [ -e "$need" ] || { echo "missing $need (set OVDOC_SHARED)" >&2; exit 2; }
done

WORK="$(mktemp -d -t ovdoc-bench-XXXXXX)"
trap 'rm -rf "$WORK"' EXIT
# Deterministic split of the normal tiles: 300 to fit on, the next 200 held out for AUC.
mkdir -p "$WORK/normal" "$WORK/eval-normal" "$WORK/eval-anomalous"
find "$TILES/MT_Free" -name '*.jpg' | sort | sed -n '1,300p' | xargs -I{} ln -s {} "$WORK/normal/"
find "$TILES/MT_Free" -name '*.jpg' | sort | sed -n '301,500p' | xargs -I{} ln -s {} "$WORK/eval-normal/"
find "$TILES" -path '*MT_Free*' -prune -o -name '*.jpg' -print | sort | xargs -I{} ln -s {} "$WORK/eval-anomalous/"

ovdoc convert "$SEED/model.json" --weights "$SEED/weights.h5" --out "$WORK/ir"
ovdoc fit "$WORK/ir" --normal "$WORK/normal" --out "$WORK/seed.bundle"
# shellcheck disable=SC2086
ovdoc bench "$WORK/seed.bundle" --source "$VIDEO" --res 640x480 --frames 300 \
  --precisions FP32,FP16,INT8 --batch 1,8 --hints latency,throughput --scorers knn:flat,knn:hnsw,lof \
  --calib "$WORK/normal" --eval-normal "$WORK/eval-normal" --eval-anomalous "$WORK/eval-anomalous" \
  --baselines --out "$OUT" ${BENCH_ARGS:-}
echo "recorded in $OUT" >&2
