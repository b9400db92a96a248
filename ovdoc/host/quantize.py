"""INT8 post-training quantization that keeps the detector's accuracy, or refuses.

Plain `nncf.quantize` moves this model family's features a lot (seed model on magnetic tiles: cosine to
FP32 down to ~0.63, anomaly AUC -0.04): the 1280-d DOC features feed a kNN distance, which sees every
small shift. So INT8 is *verified*, not assumed:

* the first convolution (raw pixels) and the depthwise convolutions stay FP32 (see `_sensitive_scope`):
  on the seed model this alone brings the AUC drop from 0.042 to ~0.006 at ~1.4-1.8x FP32 speed;
* with labelled evaluation images (normal + anomalous) each candidate is measured with the real metric
  (kNN anomaly AUC; index built from the calibration images by the same compiled model that scores):
  symmetric activations (preset PERFORMANCE) first, asymmetric (MIXED) next (seed model: drop 0.0001);
  if both lose more than `max_auc_drop`, NNCF's accuracy-controlled quantization runs with that metric
  and reverts the most harmful layers to FP32. The final model is re-measured through the runtime's uint8
  path and refused (VerificationError, nothing written) if the drop exceeds the bound, or if accuracy
  was kept only by reverting every layer (an "INT8" IR without INT8 layers would be a lie);
* without them (the usual one-class case: a user has normal images only, so this is allowed rather than
  required) the model is guarded by feature cosine to FP32 on held-out normal images (plain INT8 fails
  that guard on the seed model, the configuration above passes it); the report says
  `accuracy_verified: false` and warns, so nobody mistakes it for verified.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import openvino as ov

from ovdoc.errors import OvdocError, VerificationError
from ovdoc.log import get_logger, tolerant_streams
from ovdoc.runtime.arrays import cosine_rows, spread
from ovdoc.runtime.ir import RT_PREPROCESS, RT_SOURCE, annotate, name_ports, read_ir, save_ir
from ovdoc.runtime.preprocess import PreprocessSpec

MAX_CALIB = 300  # NNCF's default subset; more costs time and changes little
MAX_INDEX = 300  # normal images indexed for the validation AUC
MAX_EVAL = 500  # per class, for the validation AUC (as `ovdoc bench`)
MIN_CALIB = 10
RANKING_SUBSET = 100  # items NNCF's accuracy restorer ranks layers on (its default, 300, is slow on 2 cores)
SENSITIVE_TEXT = "the first convolution and the depthwise convolutions"
STAGE1_PRESETS = ("PERFORMANCE", "MIXED")
STRATEGIES = ("auto", "presets", "accuracy-control")
AUC_EPS = 1e-9  # a drop equal to the bound is within it (0.9875 - 0.9825 is 0.0050000000000000044)
KNN_K = 5
# Without evaluation data: refuse when features move more than this on held-out normal images.
MIN_MEDIAN_COSINE = 0.98
MIN_MIN_COSINE = 0.90

ImageSources = str | Path | Iterable[str | Path] | np.ndarray
log = get_logger(__name__)


def quantize_int8(
    fp32_xml: str | Path,
    out_xml: str | Path,
    *,
    calib_sources: ImageSources,
    eval_normal: ImageSources | None = None,
    eval_anomalous: ImageSources | None = None,
    max_auc_drop: float = 0.005,
    device: str = "CPU",
    k: int = KNN_K,
    accuracy_control: bool = True,
    progress: bool = True,
    strategy: str = "auto",
) -> dict:
    """Quantize an ovdoc FP32 IR to INT8 and write it to `out_xml` only if it keeps accuracy.

    calib_sources: normal images (any source `ovdoc.runtime.datasets` reads: folders, globs, videos, .npz,
    data-set specs, lists of them, or NHWC/list of BGR uint8 arrays);
    used for calibration statistics and as the kNN index of the validation metric.
    eval_normal / eval_anomalous: labelled evaluation images; both or neither.
    accuracy_control: with evaluation images, fall back to NNCF's accuracy-controlled quantization when
    the first pass loses too much (slow: minutes); False refuses at once instead.
    strategy: "auto" (the presets, then accuracy control when they lose too much), "presets" (never
    accuracy control; as accuracy_control=False) or "accuracy-control" (straight to NNCF's
    accuracy-controlled search, skipping the presets: for when they are known to fail on this CPU or
    data — without VNNI the INT8 kernels move features more — and so that path can be exercised).
    Returns a JSON-ready report; raises VerificationError (nothing written) when accuracy is not kept.
    """
    import nncf

    started = time.perf_counter()
    if (eval_normal is None) != (eval_anomalous is None):
        raise OvdocError("give both --eval-normal and --eval-anomalous (or neither) to verify INT8 accuracy")
    if strategy not in STRATEGIES:
        raise OvdocError(f"INT8 strategy must be one of {', '.join(STRATEGIES)}, got {strategy!r}")
    if strategy == "accuracy-control" and eval_normal is None:
        raise OvdocError(
            "the accuracy-control strategy needs labelled --eval-normal and --eval-anomalous images"
        )
    if not accuracy_control and strategy == "auto":
        strategy = "presets"
    if max_auc_drop is None or not np.isfinite(max_auc_drop):
        raise OvdocError(f"--max-auc-drop must be a number, got {max_auc_drop!r}")
    core = ov.Core()
    model, spec, xml = read_ir(fp32_xml, core)
    if _is_quantized(model):
        raise OvdocError(f"{xml} is already quantized (it has FakeQuantize layers); give the FP32 IR")
    out_xml = Path(out_xml)
    if out_xml.suffix.lower() != ".xml":
        raise OvdocError(f"the INT8 output must be an .xml path, got {out_xml}")

    calib = _prepared(calib_sources, spec, "calibration", MAX_CALIB + MAX_INDEX)
    if len(calib) < MIN_CALIB:
        raise OvdocError(f"INT8 calibration needs at least {MIN_CALIB} normal images, got {len(calib)}")
    verified = eval_normal is not None
    if verified:
        ev_n = _prepared(eval_normal, spec, "evaluation normal", MAX_EVAL)
        ev_a = _prepared(eval_anomalous, spec, "evaluation anomalous", MAX_EVAL)
        if len(ev_n) == 0 or len(ev_a) == 0:
            raise OvdocError("evaluation needs at least one normal and one anomalous image")
        index_imgs = calib[:MAX_INDEX]
        if len(index_imgs) < k + 1:
            raise OvdocError(f"the kNN index needs at least k+1={k + 1} calibration images")
    else:  # hold out a fifth of the normal images to measure feature movement on unseen data
        n_hold = max(5, len(calib) // 5)
        ev_n, ev_a, index_imgs = calib[-n_hold:], None, None
        calib = calib[:-n_hold]
    calib = calib[:MAX_CALIB]

    fp32_feats = _features(model, spec, device, core, _stack_sets(index_imgs, ev_n, ev_a))
    fp32_auc = _knn_auc(*_split_sets(fp32_feats, index_imgs, ev_n, ev_a), k) if verified else None

    calib_ds = nncf.Dataset(list(spec.to_float(calib)), lambda x: x[None])
    eval_sets = (index_imgs, ev_n, ev_a)
    ignored = _sensitive_scope(model)
    stages: list[dict] = []
    # Stage 1: plain PTQ with the sensitive layers in FP32; symmetric activations (PERFORMANCE, fastest on
    # CPU) first, asymmetric (MIXED) next. Without labelled data only the first is tried (cosine-guarded).
    presets = STAGE1_PRESETS if verified else STAGE1_PRESETS[:1]
    if strategy == "accuracy-control":
        presets, int8_auc = (), -np.inf
    for preset in presets:
        method = f"nncf.quantize(preset={preset}), FP32 kept for {SENSITIVE_TEXT}"
        with _quiet_nncf(progress):
            quantized = nncf.quantize(
                model,
                calib_ds,
                subset_size=len(calib),
                ignored_scope=ignored,
                preset=getattr(nncf.QuantizationPreset, preset),
            )
        quantized = _keep_conventions(quantized, model, spec)
        int8_feats = _features(quantized, spec, device, core, _stack_sets(*eval_sets))
        if not verified:
            break
        int8_auc = _knn_auc(*_split_sets(int8_feats, *eval_sets), k)
        stages.append({"method": method, "auc_int8": int8_auc, "auc_drop": fp32_auc - int8_auc})
        if fp32_auc - int8_auc <= max_auc_drop + AUC_EPS:
            break
    if verified and strategy != "presets" and fp32_auc - int8_auc > max_auc_drop + AUC_EPS:
        # Stage 2: NNCF reverts the quantizers that cost the most AUC until the drop is within bound.
        method = (
            "nncf.quantize_with_accuracy_control (metric: kNN AUC, drop_type ABSOLUTE), "
            f"FP32 kept for {SENSITIVE_TEXT}"
        )
        with _quiet_nncf(progress):
            quantized = _accuracy_controlled(
                model, spec, calib_ds, len(calib), eval_sets, k, max_auc_drop, ignored
            )
        quantized = _keep_conventions(quantized, model, spec)
        int8_feats = _features(quantized, spec, device, core, _stack_sets(*eval_sets))
        int8_auc = _knn_auc(*_split_sets(int8_feats, *eval_sets), k)
        stages.append(
            {
                "method": method,
                "auc_int8": int8_auc,
                "auc_drop": fp32_auc - int8_auc,
                "fake_quantize_ops": _count_fq(quantized),
            }
        )
    if _count_fq(quantized) == 0:
        raise VerificationError(
            "INT8 keeps accuracy only with every layer reverted to FP32 (no INT8 layer left); nothing "
            "written: use FP16/FP32, or give more calibration images"
        )

    eval_fp32 = fp32_feats[-(len(ev_n) + (len(ev_a) if verified else 0)) :]
    eval_int8 = int8_feats[-len(eval_fp32) :]
    cos = cosine_rows(eval_fp32, eval_int8)
    report: dict = {
        "source": str(xml),
        "int8_xml": str(out_xml),
        "method": method,
        "device": device,
        "n_calibration": int(len(calib)),
        "cosine_to_fp32_min": float(cos.min()),
        "cosine_to_fp32_median": float(np.median(cos)),
        "max_abs_diff_to_fp32": float(np.abs(eval_fp32 - eval_int8).max()),
        "accuracy_verified": verified,
        "strategy": strategy,
        "max_auc_drop": float(max_auc_drop),
        "fake_quantize_ops": _count_fq(quantized),
        "stages": stages,
    }
    if verified:
        drop = fp32_auc - int8_auc
        report.update(
            {
                "auc_fp32": fp32_auc,
                "auc_int8": int8_auc,
                "auc_drop": drop,
                "n_index": int(len(index_imgs)),
                "n_eval_normal": int(len(ev_n)),
                "n_eval_anomalous": int(len(ev_a)),
                "k": k,
            }
        )
        if drop > max_auc_drop + AUC_EPS:
            raise VerificationError(
                f"INT8 loses {drop:.4f} anomaly AUC ({fp32_auc:.4f} -> {int8_auc:.4f}), more than "
                f"--max-auc-drop {max_auc_drop}; nothing written: keep FP32/FP16 or give more "
                "calibration images"
            )
    else:
        report["warning"] = (
            "accuracy unverified: no labelled evaluation images (--eval-normal/--eval-anomalous);"
            " only feature cosine to FP32 on held-out normal images was checked"
        )
        if (
            report["cosine_to_fp32_median"] < MIN_MEDIAN_COSINE
            or report["cosine_to_fp32_min"] < MIN_MIN_COSINE
        ):
            med, low = report["cosine_to_fp32_median"], report["cosine_to_fp32_min"]
            raise VerificationError(
                f"INT8 moves the features too much (cosine to FP32 median {med:.3f}, min {low:.3f}; need "
                f">= {MIN_MEDIAN_COSINE}/{MIN_MIN_COSINE}); nothing written: give labelled "
                "--eval-normal/--eval-anomalous images to quantize with accuracy control"
            )
    save_ir(quantized, out_xml, compress_to_fp16=False)  # atomic: no half-written IR is ever visible
    report["seconds"] = round(time.perf_counter() - started, 1)
    if not verified and progress:
        log.warning(f"warning: {report['warning']}")
    return report


# --- data ------------------------------------------------------------------------------------------
def _prepared(sources: ImageSources, spec: PreprocessSpec, what: str, limit: int) -> np.ndarray:
    """At most `limit` images, evenly spread over the source, as NHWC uint8 BGR at model size."""
    if isinstance(sources, np.ndarray):
        images = [sources] if sources.ndim == 3 else list(sources)
    elif isinstance(sources, list) and sources and isinstance(sources[0], np.ndarray):
        images = sources
    else:
        from ovdoc.runtime.datasets import load_unlabelled

        try:
            images = load_unlabelled(sources).images
        except OvdocError as exc:
            raise OvdocError(f"{what} images: {exc}") from exc
    if not len(images):
        raise OvdocError(f"no {what} images")
    return spec.prepare_batch(spread(images, limit))


def _stack_sets(*sets: np.ndarray | None) -> np.ndarray:
    return np.concatenate([s for s in sets if s is not None])


def _split_sets(feats: np.ndarray, index, normal, anomalous) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    a, b = len(index), len(index) + len(normal)
    return feats[:a], feats[a:b], feats[b : b + len(anomalous)]


# --- metric ----------------------------------------------------------------------------------------
def _features(
    model: ov.Model, spec: PreprocessSpec, device: str, core: ov.Core, images: np.ndarray, batch: int = 16
) -> np.ndarray:
    """Features through the runtime's own path: uint8 BGR in, PrePostProcessor, f32 inference hint."""
    from ovdoc.runtime.features import FeatureExtractor

    extractor = FeatureExtractor(model, spec, device=device, batch=batch, hint="throughput", core=core)
    return extractor.extract_prepared(images)


def knn_auc(index: np.ndarray, normal: np.ndarray, anomalous: np.ndarray, k: int = KNN_K) -> float:
    """Anomaly AUC of mean-kNN-distance scores (exact FAISS search), as `ovdoc fit` would score."""
    return _knn_auc(index, normal, anomalous, k)


def _knn_auc(index: np.ndarray, normal: np.ndarray, anomalous: np.ndarray, k: int) -> float:
    from sklearn.metrics import roc_auc_score

    from ovdoc.runtime.scoring import KNNScorer

    scorer = KNNScorer(k=min(k, len(index) - 1), index="flat").fit(index)
    scores = np.r_[scorer.score_samples(normal), scorer.score_samples(anomalous)]
    labels = np.r_[np.zeros(len(normal)), np.ones(len(anomalous))]
    return float(roc_auc_score(labels, scores))


def _accuracy_controlled(model, spec, calib_ds, subset_size, eval_sets, k, max_auc_drop, ignored):
    """NNCF's accuracy-controlled PTQ with the detector's own metric as the validation function."""
    import nncf
    from nncf.quantization.advanced_parameters import AdvancedAccuracyRestorerParameters

    index_imgs, ev_n, ev_a = eval_sets
    items = (
        [("index", x[None]) for x in spec.to_float(index_imgs)]
        + [("normal", x[None]) for x in spec.to_float(ev_n)]
        + [("anomalous", x[None]) for x in spec.to_float(ev_a)]
    )
    return nncf.quantize_with_accuracy_control(
        model,
        calib_ds,
        nncf.Dataset(items, lambda item: item[1]),
        validation_fn=_make_validation_fn(k),
        max_drop=max(float(max_auc_drop), 0.0),
        drop_type=nncf.DropType.ABSOLUTE,
        subset_size=subset_size,
        ignored_scope=ignored,
        advanced_accuracy_restorer_parameters=AdvancedAccuracyRestorerParameters(
            ranking_subset_size=RANKING_SUBSET, num_ranking_workers=1
        ),
    )


def _make_validation_fn(k: int):
    """NNCF calls this with a compiled candidate and (role, tensor) items; all roles go through it."""

    def validate(compiled: ov.CompiledModel, items: Iterable) -> float:
        feats: dict[str, list[np.ndarray]] = {"index": [], "normal": [], "anomalous": []}
        request = compiled.create_infer_request()
        for role, tensor in items:
            out = request.infer([tensor])[0]
            feats[role].append(np.array(out.reshape(len(out), -1), np.float32))
        parts = [np.concatenate(feats[r]) if feats[r] else None for r in ("index", "normal", "anomalous")]
        if any(p is None for p in parts) or len(parts[0]) < 2:
            raise ValueError("validation subset lacks a role")  # NNCF then ranks layers by output change
        return _knn_auc(parts[0], parts[1], parts[2], k)

    return validate


# --- model -----------------------------------------------------------------------------------------
def _is_quantized(model: ov.Model) -> bool:
    return any(op.get_type_name() == "FakeQuantize" for op in model.get_ops())


def _count_fq(model: ov.Model) -> int:
    return sum(op.get_type_name() == "FakeQuantize" for op in model.get_ops())


def _sensitive_scope(model: ov.Model):
    """The layers kept in FP32 before anything else: the first convolution and the depthwise ones.

    Measured on the seed model (magnetic tiles, 300 calibration images): plain INT8 AUC -0.042, cosine
    to FP32 min 0.63; first conv kept -0.022 / 0.87; first conv + depthwise kept -0.006 / 0.965 and
    still ~1.8x the FP32 throughput (depthwise convolutions are a small share of MobileNetV2's work,
    but per-tensor activation ranges fit them badly).
    """
    import nncf

    convs = [
        op for op in model.get_ordered_ops() if op.get_type_name() in ("Convolution", "GroupConvolution")
    ]
    names = [op.get_friendly_name() for op in convs[:1]]
    names += [op.get_friendly_name() for op in convs if op.get_type_name() == "GroupConvolution"]
    return nncf.IgnoredScope(names=sorted(set(names)), validate=False) if names else None


def _keep_conventions(quantized: ov.Model, original: ov.Model, spec: PreprocessSpec) -> ov.Model:
    """Port names and rt_info (preprocessing, source) as in the FP32 IR, plus the quantization record."""
    name_ports(quantized)
    source = original.get_rt_info(RT_SOURCE).astype(str) if original.has_rt_info(RT_SOURCE) else None
    annotate(quantized, spec)
    if source:
        quantized.set_rt_info(source, RT_SOURCE)
    if not quantized.has_rt_info(RT_PREPROCESS):
        raise OvdocError("internal: the INT8 model lost its preprocessing record")
    return quantized


@contextlib.contextmanager
def _quiet_nncf(progress: bool):
    """NNCF logs every skipped quantizer at INFO and draws progress bars on stdout: keep warnings, and
    send the bars to stderr (stdout may carry a command's --json) or nowhere. The bars draw a `•`, so
    neither place may be an ASCII-strict stream (a `LANG=C` box): that would crash the quantization."""
    logger = logging.getLogger("nncf")
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        if progress:
            tolerant_streams()
            with contextlib.redirect_stdout(sys.stderr):
                yield
        else:
            with open(os.devnull, "w", encoding="utf-8") as devnull, contextlib.redirect_stdout(devnull):
                yield
    finally:
        logger.setLevel(level)
