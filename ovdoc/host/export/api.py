"""`export_bundle`: bundle -> DIR with the feature model in a phone format, scoring.json and, for kNN, the
normal vectors. Written into a hidden folder and renamed into place only when every check passed."""

from __future__ import annotations

import datetime as _dt
import importlib.util
import json
from pathlib import Path

import numpy as np

from ovdoc import __version__
from ovdoc.atomic import atomic_dir
from ovdoc.errors import OvdocError, VerificationError
from ovdoc.log import get_logger

FORMATS = ("tflite", "onnx", "coreml")
# format -> (packages it needs, the extra that brings them)
NEEDS = {
    "tflite": (("tensorflow",), "train"),
    "onnx": (("tensorflow", "tf2onnx", "onnx"), "train"),
    "coreml": (("tensorflow", "coremltools"), "export"),
}
SCORING = "scoring.json"
VECTORS = "normal_vectors.f32"
FP16_WARN = 0.999

log = get_logger(__name__)


def check_format(to: str) -> None:
    """Unknown format or a missing extra: one line before any bundle is read."""
    if to not in FORMATS:
        raise OvdocError(f"unknown export format {to!r}: use one of {', '.join(FORMATS)}")
    packages, extra = NEEDS[to]
    for package in reversed(packages):  # the format's own package first; nothing is imported here
        try:
            found = importlib.util.find_spec(package) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            raise OvdocError(
                f"ovdoc export --to {to} needs {package}, a host-side extra: pip install 'ovdoc[{extra}]'"
            )


def export_bundle(bundle: str | Path, to: str, out: str | Path) -> dict:
    """Export a global bundle's feature model to `to` in `out`; returns the report (also in scoring.json)."""
    from ovdoc.host.convert import verify
    from ovdoc.host.export.source import keras_source
    from ovdoc.runtime.bundle import load_manifest
    from ovdoc.runtime.preprocess import PreprocessSpec

    check_format(to)
    manifest, folder = load_manifest(bundle)
    if manifest.get("mode", "global") != "global":
        raise OvdocError(f"bundle {folder} is a {manifest['mode']}-mode bundle: its patch graph and memory "
                         "bank do not export; export a global bundle (`ovdoc fit` without --mode patch)")
    kind = manifest["scorer"]["kind"]
    if kind not in ("knn", "mean-cosine"):
        raise OvdocError(f"bundle {folder} scores with {kind}, which a phone app cannot reproduce: refit it "
                         "with --scorer mean-cosine (one vector) or knn")
    spec = PreprocessSpec.from_dict(manifest["preprocess"])
    model, source = keras_source(manifest, folder, spec)
    shape = tuple(model.inputs[0].shape)[1:3]
    if shape != (spec.height, spec.width):
        raise OvdocError(f"the Keras source takes {shape[0]}x{shape[1]} images, the bundle {spec.height}x"
                         f"{spec.width}: export the bundle `ovdoc train` fitted, not a resized refit")
    probe = verify.synthetic_probe(spec)
    reference = verify.ir_features(folder / manifest["model"]["file"], probe)
    x = spec.to_float(probe)
    out = Path(out)
    log.info(f"ovdoc export: {folder} -> {out} ({to}; source {source['format']})")
    with atomic_dir(out) as tmp:
        bound = _reference(manifest, model, spec, probe, reference, tmp)
        files, checks = _write(to, model, spec, tmp, x, bound, int(manifest["feature_dim"]))
        scorer = _scorer(manifest, folder, tmp)
        report = {
            "format": "ovdoc-export",
            "format_version": 1,
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "ovdoc": __version__,
            "bundle": str(folder),
            "bundle_manifest_sha256": manifest["manifest_sha256"],
            "source": source,
            "target": to,
            "model": files,
            "preprocess": spec.to_dict() | {
                "layout": "NHWC", "dtype": "float32",
                "how": ("take the largest centred crop of the image's aspect ratio "
                        f"{spec.width}:{spec.height}, " if spec.resize == "center_crop" else "")
                + f"resize to {spec.width}x{spec.height} (area averaging when shrinking, bilinear when "
                f"enlarging), {intensity_how(spec.intensity)}put the channels in {spec.color} order, then "
                "x = (pixel - mean) / std per channel (pixels 0..255)",
            },
            "scorer": scorer,
            "threshold": {"value": float(manifest["threshold"]["value"]), "fpr": manifest["threshold"]["fpr"],
                          "rule": "anomalous when score > value"},
            "verification": checks,
            "numeric_verified": all(c.get("numeric_verified") for c in checks.values() if c.get("primary")),
        }
        (tmp / SCORING).write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
    return report


def intensity_how(mode: str) -> str:
    """The intensity step of the export's preprocessing recipe (empty when the bundle has none)."""
    from ovdoc.runtime.preprocess import INTENSITY_MEAN, INTENSITY_MIN_MEAN, INTENSITY_MIN_STD, INTENSITY_STD

    if mode == "mean":
        return (f"multiply every value by {INTENSITY_MEAN:g} / max(m, {INTENSITY_MIN_MEAN:g}) where m is the "
                "mean of all the resized image's values, round and clip to 0..255, ")
    if mode == "meanstd":
        return (f"map every value v to (v - m) * {INTENSITY_STD:g} / max(s, {INTENSITY_MIN_STD:g}) + "
                f"{INTENSITY_MEAN:g} where m and s are the mean and standard deviation of all the resized "
                "image's values, round and clip to 0..255, ")
    return ""


def _reference(manifest: dict, model, spec, probe: np.ndarray, bundle_ref: np.ndarray, tmp: Path) -> dict:
    """What the FP32 export is held to. A bundle IR with FP32 weights (every `ovdoc train` bundle): itself,
    at cosine >= 0.9999. One with FP16 weights (the shipped backbone) agrees with any FP32 model only to
    FP16 rounding (cosine ~0.9998), so the export is held to an FP32 IR of the same source at 0.9999, and
    to the bundle's IR at the FP16 bound 0.999; both are reported."""
    from ovdoc.host.convert import convert_keras_model, verify

    bounds = {"bundle IR": (bundle_ref, verify.FP32_MIN_COSINE)}
    if manifest["model"].get("weight_precision") == "FP16":
        from ovdoc.log import quiet

        with quiet():  # an internal reference model: its conversion lines would name a temporary folder
            convert_keras_model(model, tmp / ".fp32-ir", spec=spec, precisions=("FP32",), name="export-check")
        fp32 = verify.ir_features(tmp / ".fp32-ir" / "FP32" / "model.xml", probe)
        import shutil

        shutil.rmtree(tmp / ".fp32-ir")
        bounds = {"FP32 IR of the source": (fp32, verify.FP32_MIN_COSINE),
                  "bundle IR (FP16 weights)": (bundle_ref, verify.FP16_WARN_COSINE)}
    return bounds


def _write(to: str, model, spec, tmp: Path, x: np.ndarray, bounds: dict, dim: int):
    """(file records, verification per file); FP32 files below their bound to the IR are refused."""

    checks: dict[str, dict] = {}
    if to == "coreml":
        from ovdoc.host.export import coreml

        files = coreml.write(model, spec, tmp)
        checks[coreml.FILE] = coreml.check(tmp / coreml.FILE, spec, dim) | {"primary": True}
        return files, checks
    if to == "tflite":
        from ovdoc.host.export import tflite

        files = tflite.write(model, spec, tmp)
        for variant, record in files.items():
            got = tflite.run(tmp / record["file"], x)
            checks[record["file"]] = _judged(variant, got, bounds, "tf.lite.Interpreter", variant == "fp32")
            checks[record["file"]]["uint8_tensors"] = 0
        inp, outp = tflite.io_names(tmp / files["fp32"]["file"])
    else:
        from ovdoc.host.export import onnx_target

        files = onnx_target.write(model, spec, tmp)
        got, runner = onnx_target.run(tmp / onnx_target.FILE, x)
        checks[onnx_target.FILE] = _judged("fp32", got, bounds, runner, True)
        inp, outp = onnx_target.io_names(tmp / onnx_target.FILE)
    for record in files.values():
        record |= {"input": inp, "output": outp}
    return files, checks


def _judged(variant: str, got: np.ndarray, bounds: dict, runner: str, primary: bool) -> dict:
    """Cosine of `got` to each reference; the FP32 file must meet every bound or nothing is written."""
    from ovdoc.host.convert import verify

    record = {"run_by": runner, "probe": "16 synthetic images", "primary": primary, "against": {}}
    for name, (reference, bound) in bounds.items():
        metrics = verify.compare(reference, got)
        record["against"][name] = {"cosine_min": round(metrics["cosine_min"], 6), "bound": bound,
                                   "cosine_median": round(metrics["cosine_median"], 6),
                                   "max_abs_diff": float(metrics["max_abs_diff"])}
        if variant == "fp32" and metrics["cosine_min"] < bound:
            raise VerificationError(f"the exported FP32 model disagrees with the {name} (cosine min "
                                    f"{metrics['cosine_min']:.6f} < {bound}): nothing written")
    record["cosine_min"] = min(v["cosine_min"] for v in record["against"].values())
    if variant == "fp32":
        record["numeric_verified"] = True
    else:  # reported, not required: reduced-precision weights move the features by design
        record["numeric_verified"] = None
        record["note"] = "reduced-precision variant: reported, not held to the FP32 bound"
        if variant == "fp16" and record["cosine_min"] < FP16_WARN:
            log.warning(f"warning: the FP16 TFLite file reaches cosine {record['cosine_min']:.5f} only")
    return record


def _scorer(manifest: dict, folder: Path, tmp: Path) -> dict:
    """What the app computes from the feature vector f: the mean-cosine vector inline, or kNN's vectors."""
    info = manifest["scorer"]
    if info["kind"] == "mean-cosine":
        mean = np.load(folder / info.get("mean_file", "mean.npy"), allow_pickle=False).astype(np.float32)
        return {"kind": "mean-cosine", "formula": "score = 1 - dot(f / |f|, mean)  (mean has unit length)",
                "mean": [float(v) for v in mean], "dim": int(mean.shape[0])}
    from ovdoc.runtime.bundle import bundle_vectors

    vectors = np.ascontiguousarray(bundle_vectors(folder, manifest), dtype="<f4")
    (tmp / VECTORS).write_bytes(vectors.tobytes())
    metric = info.get("metric", "euclidean")
    formula = "score = mean Euclidean distance from f to its k nearest rows of vectors"
    if metric in ("cosine", "sqrt-cosine"):
        formula = "f = f / |f|; " + formula + " (the rows are already in this space)"
    if metric == "sqrt-cosine":
        formula = "f = sign(f) * sqrt(|f|) per element; " + formula
    return {"kind": "knn", "k": int(info["k"]), "metric": metric, "formula": formula,
            "vectors_file": VECTORS, "shape": [int(v) for v in vectors.shape],
            "dtype": "float32 little-endian"}
