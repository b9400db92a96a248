"""`ovdoc bench` rows for a patch-mode bundle: the bundle's own model, memory bank and calibration.

A patch bundle's memory bank was chosen (greedy coreset) from the features of the model that fitted it;
re-indexing it at another precision would mean a new fit, so patch bundles are measured at the precision
they were fitted with, and other precisions are listed as skipped with that reason. Per batch x hint:
model images/s and latency, the scorer's microseconds per *frame* (one batched nearest-neighbour search
over every patch of the frame, plus the map's aggregation), end-to-end FPS through `ovdoc run`'s own
pipeline with a map computed for every frame, and image AUC with --eval-*.
"""

from __future__ import annotations

import time

import numpy as np

from ovdoc.errors import first_line
from ovdoc.log import get_logger
from ovdoc.runtime.bench import measure

log = get_logger(__name__)
SCORER_FRAMES = 64


def scorer_us_per_frame(detector, outputs: np.ndarray, *, repeats: int = 3) -> float:
    """Best-of-`repeats` microseconds for `score_outputs` of ONE frame (as the live loop scores a frame)."""
    best = None
    for _ in range(repeats):
        start = time.perf_counter()
        for i in range(len(outputs)):
            detector.score_outputs(outputs[i : i + 1])
        per = (time.perf_counter() - start) / len(outputs) * 1e6
        best = per if best is None else min(best, per)
    return round(float(best), 1)


def patch_rows(cfg, inputs, device: str) -> list[dict]:
    """Every batch x hint of `cfg` for the patch bundle in `inputs`, on `device`."""
    from ovdoc.runtime.bench.rows import failed_row
    from ovdoc.runtime.detector import Detector
    from ovdoc.runtime.evaluation import auc

    rows: list[dict] = []
    auc_value = None
    scorer_us = None
    for batch in cfg.batches:
        for hint in cfg.hints:
            try:
                det = Detector.load(inputs.folder, device=device, batch=batch, hint=hint, core=inputs.core)
                speed = measure.model_speed(det.extractor_, inputs.prepared)
            except Exception as exc:
                rows.append(failed_row(device, "FP32", batch, hint, first_line(exc)))
                continue
            if scorer_us is None:  # the scorer does not depend on batch or hint: measure it once
                outputs = det.extractor_.extract_prepared(inputs.prepared[:SCORER_FRAMES])
                scorer_us = scorer_us_per_frame(det, outputs)
                if inputs.evaluates:
                    normal = det.score_samples(inputs.eval_normal)
                    auc_value = round(auc(normal, det.score_samples(inputs.eval_anomalous)), 4)
            patch = inputs.manifest.get("patch") or {}
            row = {
                "device": det.device_,
                "precision": "FP32",
                "batch": batch,
                "hint": hint,
                "mode": "patch",
                "scorer": "patch:knn",
                "scorer_kind": "patch",
                "index": det.scorer_.describe().get("index"),
                "index_vectors": det.scorer_.n_vectors,
                "grid": patch.get("grid"),
                **speed,
                "scorer_us_per_frame": scorer_us,
                "auc": auc_value,
                "inference_precision": det.extractor_.inference_precision,
            }
            rows.append(measure.add_pipeline(row, det, cfg))
            log.info(
                f"    batch {batch:>3} {hint:<10} patch    model {row['model_ips']:>8.1f} img/s  "
                f"scorer {scorer_us:>8.1f} us/frame  pipeline {row.get('pipeline_fps') or 0:>7.1f} FPS"
            )
    return rows
