"""One benchmark run: every device x precision x batch x hint x scorer asked for, on the same frames.

Rules the figures obey:
* the kNN index of a precision is extracted by the very compiled model that scores (FP16 features
  scored against an FP32 index would measure a detector nobody runs);
* a device that is absent is listed as skipped with the reason, a device that fails is reported with its
  error, and the rest goes on;
* pipeline FPS comes from `ovdoc run`'s own Pipeline and is shown against the decode-only ceiling.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import openvino as ov

from ovdoc.errors import OvdocError, VerificationError, first_line
from ovdoc.log import get_logger, quiet
from ovdoc.runtime.arrays import spread
from ovdoc.runtime.bench import measure
from ovdoc.runtime.bench.rows import failed_row
from ovdoc.runtime.heads.global_head import GlobalHead, bundle_vectors
from ovdoc.runtime.preprocess import PreprocessSpec
from ovdoc.runtime.scoring import ScorerSpec

PRECISIONS = ("FP32", "FP16", "INT8")
HINTS = ("latency", "throughput")
# `--scorers` speaks fit's vocabulary (kind + index, see ScorerSpec): exact and HNSW kNN, and LOF
SCORERS = ("knn:flat", "knn:hnsw", "lof")
MAX_NORMAL = 1000  # normal images indexed per precision
MAX_EVAL = 500  # per class
SCORER_QUERIES = 200
NEEDS_NORMAL = {
    "FP16": "needs normal images (--calib) to re-extract the kNN index with the FP16 model that scores",
    "INT8": "needs calibration images: pass --calib (normal images); add --eval-normal/--eval-anomalous "
    "to verify its accuracy",
}

log = get_logger(__name__)


@dataclasses.dataclass
class BenchConfig:
    bundle: Path
    source: Path
    devices: list[str] = dataclasses.field(default_factory=lambda: ["CPU"])
    precisions: list[str] = dataclasses.field(default_factory=lambda: ["FP32", "FP16", "INT8"])
    batches: list[int] = dataclasses.field(default_factory=lambda: [1, 8])
    hints: list[str] = dataclasses.field(default_factory=lambda: list(HINTS))
    scorers: list[str] = dataclasses.field(default_factory=lambda: list(SCORERS))
    res: tuple[int, int] | None = (640, 480)
    frames: int = 300
    calib: list[str] | None = None
    eval_normal: list[str] | None = None
    eval_anomalous: list[str] | None = None
    max_auc_drop: float = 0.005
    baselines: bool = False
    keras_model: str | None = None
    keras_weights: str | None = None
    k: int | None = None
    repeats: int = 3
    progress: bool = True


@dataclasses.dataclass
class BenchInputs:
    """What every device x precision is measured on, read once: the bundle, the frames, the images."""

    core: ov.Core
    manifest: dict
    folder: Path
    spec: PreprocessSpec
    frames: list[np.ndarray]
    prepared: np.ndarray
    normal_images: list[np.ndarray] | None  # None: score with the bundle's stored index (FP32 only)
    eval_normal: list[np.ndarray] | None
    eval_anomalous: list[np.ndarray] | None
    scorers: list[ScorerSpec]
    # INT8 is accepted (and accuracy-controlled) on these; every reported AUC uses eval_* above, which
    # are disjoint from them: a variant is never chosen and reported on the same images
    int8_eval: tuple[list[np.ndarray], list[np.ndarray]] | None = None

    @property
    def evaluates(self) -> bool:
        return self.eval_normal is not None


Halves = tuple[list, list]  # (normal images, anomalous images)


def split_for_int8(normal: list, anomalous: list, seed: int = 0) -> tuple[Halves, Halves]:
    """((selection normal, anomalous), (reported normal, anomalous)): every other image of a seeded
    shuffle, so both halves look alike. INT8 is accepted on the first; AUCs are reported on the second."""
    if len(normal) < 2 or len(anomalous) < 2:
        raise OvdocError("INT8 with --eval-normal/--eval-anomalous needs at least 2 images of each: half "
                         "accept the INT8 model, the other half are the reported AUCs")
    rng = np.random.default_rng(seed)
    halves = []
    for images in (normal, anomalous):
        order = rng.permutation(len(images))
        halves.append(([images[i] for i in order[0::2]], [images[i] for i in order[1::2]]))
    (sel_n, rep_n), (sel_a, rep_a) = halves
    return (sel_n, sel_a), (rep_n, rep_a)


def validate(cfg: BenchConfig) -> None:
    """Every bad option is one clear line before anything is compiled."""
    for p in cfg.precisions:
        if p not in PRECISIONS:
            raise OvdocError(f"unknown precision {p!r}: use {', '.join(PRECISIONS)}")
    for h in cfg.hints:
        if h not in HINTS:
            raise OvdocError(f"unknown hint {h!r}: use {', '.join(HINTS)}")
    for s in cfg.scorers:
        ScorerSpec.parse(s)
    if not cfg.batches or any(b < 1 for b in cfg.batches):
        raise OvdocError(f"--batch sizes must be positive integers, got {cfg.batches}")
    if cfg.frames < 1:
        raise OvdocError(f"--frames must be at least 1, got {cfg.frames}")
    if (cfg.eval_normal is None) != (cfg.eval_anomalous is None):
        raise OvdocError("give both --eval-normal and --eval-anomalous (or neither)")
    if not cfg.devices or not all(d.strip() for d in cfg.devices):
        raise OvdocError("--devices needs at least one device name, e.g. CPU,GPU")


def run_bench(cfg: BenchConfig) -> dict:
    """Measure everything `cfg` asks for; return the JSON-ready result (see `ovdoc bench --help`)."""
    validate(cfg)
    with quiet(not cfg.progress):
        return _run(cfg)


def _run(cfg: BenchConfig) -> dict:
    from ovdoc.runtime.bench.machine import describe_machine
    from ovdoc.runtime.bundle_format import load_manifest
    from ovdoc.runtime.heads import head_of
    from ovdoc.runtime.ir import read_ir
    from ovdoc.runtime.stream.runtime import tune_threads

    started = time.perf_counter()
    load_at_start = round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None
    manifest, folder = load_manifest(cfg.bundle)
    head = head_of(manifest, folder)
    # a head whose vectors cannot be re-indexed (patch: the bank belongs to the IR that fitted it) is timed
    # as fitted: no other scorers, no INT8 copy, no normal images, no 2019 baselines
    fixed = not head.reindexable
    core = ov.Core()
    model, spec, xml = read_ir(folder / manifest["model"]["file"], core)
    k = cfg.k or int(manifest.get("k") or manifest["scorer"].get("k", 5))
    metric = manifest["scorer"].get("metric", "euclidean")  # the bundle's distance, in every kNN row
    tune_threads()  # the same thread settings as `ovdoc run`
    res = measure._res_text(cfg.res)
    log.info(f"bench: {folder.name}, source {cfg.source}, {cfg.frames} frames at {res}")

    frames = measure.read_frames(cfg.source, cfg.res, cfg.frames)
    ceiling = measure.decode_ceiling(cfg.source, cfg.res, cfg.frames, spec)
    log.info(f"  decode + resize ceiling: {ceiling['decode_fps']} FPS")

    notes: list[str] = []
    if fixed:  # its memory bank belongs to the model that fitted it: no re-indexing, no normal images
        normal_images, normal_from = None, "bundle memory bank"
    else:
        normal_images, normal_from = _normal_images(cfg, manifest, notes)
    ev_n = ev_a = None
    if cfg.eval_normal is not None:
        ev_n, ev_a = _eval_images(cfg.eval_normal), _eval_images(cfg.eval_anomalous)
        if not ev_n or not ev_a:
            raise OvdocError("evaluation needs at least one normal and one anomalous image")
    int8_eval = None
    if ev_n is not None and "INT8" in cfg.precisions and not fixed:
        int8_eval, (ev_n, ev_a) = split_for_int8(ev_n, ev_a)
        log.info(f"  INT8 is accepted on {len(int8_eval[0])}+{len(int8_eval[1])} eval images; every AUC is "
                 f"reported on the other {len(ev_n)}+{len(ev_a)}")
    inputs = BenchInputs(
        core=core, manifest=manifest, folder=folder, spec=spec, frames=frames,
        prepared=spec.prepare_batch(frames), normal_images=normal_images, eval_normal=ev_n,
        eval_anomalous=ev_a, int8_eval=int8_eval,
        scorers=[] if fixed else [_scorer_spec(s, k, metric) for s in cfg.scorers],
    )

    results: list[dict] = []
    skipped: list[dict] = []
    fp32_reference = None
    with tempfile.TemporaryDirectory(prefix="ovdoc-bench-") as tmp:
        if fixed:
            models, int8_report = _patch_precisions(cfg, skipped), None
        else:
            models, int8_report = _precision_models(cfg, inputs, model, xml, Path(tmp), skipped)
        for device in cfg.devices:
            device_name = _check(device, core, skipped)
            if device_name is None:
                continue
            for precision, pmodel in models.items():
                log.info(f"  {device} {precision}")
                try:
                    if fixed:
                        from ovdoc.runtime.bench.patch_rows import patch_rows

                        rows, ref = patch_rows(cfg, inputs, device_name), None
                    else:
                        rows, ref = _bench_precision(cfg, inputs, device_name, precision, pmodel)
                except Exception as exc:  # a present device that fails: report it, go on
                    results.append(failed_row(device_name, precision, None, None, first_line(exc)))
                    log.info(f"    failed: {first_line(exc)}")
                    continue
                results.extend(rows)
                if precision == "FP32" and fp32_reference is None:
                    fp32_reference = ref

    # the ceiling again at the end, on a warmer and maybe quieter machine: the best of both counts
    again = measure.decode_ceiling(cfg.source, cfg.res, cfg.frames, spec)
    ceiling["decode_fps_start_end"] = [ceiling["decode_fps"], again["decode_fps"]]
    ceiling["decode_fps"] = max(ceiling["decode_fps"], again["decode_fps"])
    for row in results:
        if row.get("pipeline_fps") is not None and ceiling["decode_fps"]:
            row["fraction_of_ceiling"] = round(row["pipeline_fps"] / ceiling["decode_fps"], 3)

    baselines = _baselines(cfg, model, spec, fp32_reference, normal_images, results)
    if fixed and cfg.baselines:
        baselines["note"] = (f"the 2019 loops score one global vector per frame: no baseline for {head.mode} "
                             "mode")

    machine = describe_machine(core)
    machine["load_average_1m_at_start"] = load_at_start
    return {
        "machine": machine,
        "bundle": str(folder),
        "config": {
            "source": str(cfg.source),
            "res": measure._res_text(cfg.res),
            "frames": len(frames),
            "devices": cfg.devices,
            "precisions": cfg.precisions,
            "batches": cfg.batches,
            "hints": cfg.hints,
            "scorers": [f"{head.mode}:knn"] if fixed else [s.label for s in inputs.scorers],
            "mode": head.mode,
            "k": k,
            "metric": metric,
            "normal_images": len(normal_images) if normal_images else 0,
            "normal_from": normal_from,
            "eval_normal": len(ev_n) if ev_n else 0,
            "eval_anomalous": len(ev_a) if ev_a else 0,
            "int8_selection_images": [len(int8_eval[0]), len(int8_eval[1])] if int8_eval else None,
        },
        "ceiling": ceiling,
        "results": results,
        "skipped": skipped,
        "int8": int8_report,
        "baselines": baselines,
        "notes": notes,
        "peak_rss_mb": measure.peak_rss_mb(),
        "seconds": round(time.perf_counter() - started, 1),
    }


def _scorer_spec(text: str, k: int, metric: str) -> ScorerSpec:
    spec = ScorerSpec.parse(text, k=k)
    return dataclasses.replace(spec, metric=metric) if spec.kind == "knn" else spec


# --- inputs ----------------------------------------------------------------------------------------
def _load(sources, limit: int) -> list[np.ndarray]:
    """Images from any source the input grammar knows (folders, globs, videos, .npz, data-set specs)."""
    from ovdoc.runtime.datasets import load_unlabelled

    return spread(list(load_unlabelled(sources).images), limit)


def _eval_images(sources: list[str]) -> list[np.ndarray]:
    return _load(sources, MAX_EVAL)


def _normal_images(cfg: BenchConfig, manifest: dict, notes: list) -> tuple[list | None, str]:
    """Normal images to index each precision with: --calib, else the bundle's recorded sources if present."""
    from ovdoc.runtime.datasets import is_dataset_spec

    if cfg.calib:
        return _load(cfg.calib, MAX_NORMAL), "--calib"
    recorded = [s for s in manifest.get("normal_sources", []) if s and not s.startswith("(")]
    if recorded and all(Path(s).exists() or is_dataset_spec(s) for s in recorded):
        try:
            return _load(recorded, MAX_NORMAL), "bundle normal_sources"
        except OvdocError as exc:
            notes.append(f"the bundle's normal sources could not be read ({exc}); FP32 uses the stored index")
    notes.append(
        "no normal images (--calib, or the bundle's normal_sources on this machine): FP32 scores "
        "with the bundle's stored index; FP16/INT8 need normal images to be re-indexed"
    )
    return None, "bundle index"


def _precision_models(cfg: BenchConfig, inputs: BenchInputs, model, xml, tmp: Path, skipped: list):
    """precision -> ov.Model; FP16 = the same weights compressed; INT8 = verified `quantize_int8`."""
    from ovdoc.runtime.ir import save_ir

    models: dict[str, ov.Model] = {}
    int8_report = None
    core = ov.Core()
    for precision in cfg.precisions:
        if precision == "FP32":
            models["FP32"] = model
        elif inputs.normal_images is None:  # FP16 and INT8 are re-indexed by the model that scores
            skipped.append({"precision": precision, "reason": NEEDS_NORMAL[precision]})
        elif precision == "FP16":
            path = save_ir(model.clone(), tmp / "FP16" / "model.xml", compress_to_fp16=True)
            models["FP16"] = core.read_model(str(path))
        elif precision == "INT8":
            from ovdoc.runtime.host_extras import available, host_module, unavailable_reason

            if not available("int8"):
                skipped.append({"precision": "INT8", "reason": unavailable_reason("int8")})
                log.info(f"  skipped INT8: {unavailable_reason('int8')}")
                continue
            quantize_int8 = host_module("int8").quantize_int8

            log.info("  quantizing to INT8 (accuracy-controlled when --eval-* are given)")
            try:
                int8_report = quantize_int8(
                    xml,
                    tmp / "INT8" / "model.xml",
                    calib_sources=inputs.normal_images,
                    eval_normal=inputs.int8_eval[0] if inputs.int8_eval else None,
                    eval_anomalous=inputs.int8_eval[1] if inputs.int8_eval else None,
                    max_auc_drop=cfg.max_auc_drop,
                    progress=False,
                )
            except VerificationError as exc:
                skipped.append({"precision": "INT8", "reason": str(exc)})
                continue
            models["INT8"] = core.read_model(str(tmp / "INT8" / "model.xml"))
    return models, int8_report


def _patch_precisions(cfg: BenchConfig, skipped: list) -> dict[str, None]:
    """A patch bundle runs at the precision it was fitted with; other precisions would need a new fit."""
    for precision in cfg.precisions:
        if precision != "FP32":
            skipped.append({
                "precision": precision,
                "reason": "a patch bundle's memory bank belongs to the model that fitted it: fit a "
                f"{precision} patch bundle (`ovdoc fit --mode patch` on a {precision} IR) to measure it",
            })
    return {"FP32": None} if "FP32" in cfg.precisions else {}


def _check(device: str, core: ov.Core, skipped: list) -> str | None:
    from ovdoc.runtime.devices import check_device

    try:
        return check_device(device, core)
    except OvdocError as exc:
        skipped.append({"device": device, "reason": str(exc)})
        return None


# --- one device x precision -------------------------------------------------------------------------
def _bench_precision(cfg: BenchConfig, inputs: BenchInputs, device: str, precision: str, model):
    from ovdoc.runtime.features import FeatureExtractor

    spec, core, manifest = inputs.spec, inputs.core, inputs.manifest
    first = FeatureExtractor(model, spec, device=device, batch=cfg.batches[0], hint="throughput", core=core)
    if inputs.normal_images is not None:
        normal = first.extract(inputs.normal_images, progress=False)
        index_note = None
    else:
        normal = bundle_vectors(inputs.folder, manifest)
        index_note = "index from the bundle (built on {})".format(
            (manifest.get("built_with") or {}).get("device", "?")
        )
    scorers = {s.label: (s, *_fit_scorer(s, normal)) for s in inputs.scorers}
    queries = first.extract_prepared(inputs.prepared[:SCORER_QUERIES])
    per_scorer: dict[str, dict] = {}
    eval_feats = None
    if inputs.evaluates:
        eval_feats = (
            first.extract(inputs.eval_normal, progress=False),
            first.extract(inputs.eval_anomalous, progress=False),
        )
    for label, (_, scorer, _threshold) in scorers.items():
        info = measure.scorer_speed(scorer, queries)
        if eval_feats is not None:
            from ovdoc.runtime.evaluation import auc

            info["auc"] = round(
                auc(scorer.score_samples(eval_feats[0]), scorer.score_samples(eval_feats[1])), 4
            )
        per_scorer[label] = info
    ttfr = measure.time_to_first_result(
        model, spec, device, cfg.batches[0], inputs.frames[0], next(iter(scorers.values()))[1]
    )
    rows = []
    for batch in cfg.batches:
        for hint in cfg.hints:
            try:
                extractor = FeatureExtractor(model, spec, device=device, batch=batch, hint=hint, core=core)
                speed = measure.model_speed(extractor, inputs.prepared)
            except Exception as exc:
                rows.append(failed_row(device, precision, batch, hint, first_line(exc)))
                continue
            for label, (scorer_spec, scorer, threshold) in scorers.items():
                row = {
                    "device": device,
                    "precision": precision,
                    "batch": batch,
                    "hint": hint,
                    "scorer": label,
                    "scorer_kind": scorer_spec.kind,
                    "index": scorer.describe().get("index"),
                    **speed,
                    **per_scorer[label],
                    "auc": per_scorer[label].get("auc"),
                    **ttfr,
                    "inference_precision": extractor.inference_precision,
                    "index_vectors": len(normal),
                }
                if index_note:
                    row["index_note"] = index_note
                detector = _detector(manifest, inputs.folder, scorer, threshold, extractor)
                rows.append(measure.add_pipeline(row, detector, cfg))
                log.info(
                    f"    batch {batch:>3} {hint:<10} {label:<8} model {row['model_ips']:>8.1f} img/s  "
                    f"pipeline {row.get('pipeline_fps') or 0:>7.1f} FPS"
                )
    return rows, normal if precision == "FP32" else None


def _fit_scorer(spec: ScorerSpec, normal: np.ndarray):
    from ovdoc.runtime.calibration import threshold_at_fpr

    scorer = dataclasses.replace(spec, k=min(spec.k, len(normal) - 1)).build().fit(normal)
    return scorer, threshold_at_fpr(scorer.loo_scores(), 0.01, method="leave-one-out")


def _detector(manifest: dict, folder: Path, scorer, threshold: dict, extractor):
    """A `Detector` around this run's extractor and scorer: the runtime's class, not a look-alike."""
    from ovdoc.runtime.detector import Detector

    m = dict(manifest)
    m["scorer"] = scorer.describe()
    m["threshold"] = threshold
    m["feature_dim"] = extractor.dim
    return Detector(m, folder, GlobalHead(scorer), extractor)


# --- baselines ---------------------------------------------------------------------------------------
def _baselines(cfg, model, spec, reference, normal_images, results) -> dict:
    """The 2018/2019 loops, and ovdoc's speed-up over them two ways: like with like (CPU, FP32 weights,
    LOF: the baselines' own precision and scorer, so only the loop differs) and, on its own line, the
    best configuration of this run (which also changes precision, scorer, batch)."""
    timed = [r for r in results if r.get("pipeline_fps")]
    best = max(timed, key=lambda r: r["pipeline_fps"], default=None)
    like = max((r for r in timed if (r["device"], r["precision"], r.get("scorer")) == ("CPU", "FP32", "lof")),
               key=lambda r: r["pipeline_fps"], default=None)
    out: dict = {
        "original_app_fps": None,
        "openvino_2019_fps": None,
        "speedup_vs_original_app": None,
        "speedup_vs_openvino_2019": None,
        "best_speedup_vs_original_app": None,
        "best_speedup_vs_openvino_2019": None,
    }
    if not cfg.baselines:
        out["note"] = "not measured (pass --baselines)"
        return out
    if reference is None:
        out["note"] = "needs the FP32 results (add FP32 to --precisions) for the LOF reference vectors"
        return out
    from ovdoc.runtime.bench.baselines import Clip, run_baselines

    log.info("  baselines: original app loop (Keras + LOF) and the 2019 OpenVINO port (sync + LOF)")
    keras_src = (cfg.keras_model, cfg.keras_weights) if cfg.keras_model else None
    clip = Clip(cfg.source, cfg.res, cfg.frames)
    out.update(run_baselines(model, spec, clip, reference, normal_images, keras_src))
    fields = ("device", "precision", "batch", "hint", "scorer", "pipeline_fps")
    for name, row, prefix in (("ovdoc_like", like, ""), ("ovdoc_best", best, "best_")):
        if row is None:
            continue
        out[name] = {key: row.get(key) for key in fields}
        for key, base in (
            ("speedup_vs_original_app", "original_app_fps"),
            ("speedup_vs_openvino_2019", "openvino_2019_fps"),
        ):
            if out.get(base):
                out[prefix + key] = round(row["pipeline_fps"] / out[base], 2)
    if like is None:
        out["like_note"] = ("no CPU FP32 lof row to compare like with like: add lof to --scorers and FP32 "
                            "to --precisions")
    return out
