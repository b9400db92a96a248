"""Detector bundles: the one folder a user copies to the board.

    model.xml / model.bin   the IR, with its preprocessing in rt_info
    index.faiss             the kNN index (FAISS's own format)   -- or reference.npy for the LOF baseline,
                            or mean.npy (one unit vector) for the mean-cosine scorer
    manifest.json           format version, preprocessing, k, threshold and how it was calibrated, the
                            device/precision the index was built with, library versions, sha256 of files

Loading verifies the format version and every hash and refuses a mismatch with one line: features from
a different model or a hand-edited threshold would silently give wrong answers on the board.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import hashlib
import json
import platform
import shutil
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import openvino as ov

from ovdoc._version import __version__
from ovdoc.atomic import atomic_dir
from ovdoc.errors import OvdocError
from ovdoc.runtime.calibration import (
    CALIBRATIONS,
    ESTIMATORS,
    NEAR_DUPLICATES,
    calibrate,
    calibration_record,
    split_groups,
)
from ovdoc.runtime.datasets import UNREADABLE_NAMED
from ovdoc.runtime.extract import Extract, LocalExtract
from ovdoc.runtime.groups import parse_groups, regroup
from ovdoc.runtime.ir import RT_PREPROCESS, annotate, export_source_of, read_ir, save_ir
from ovdoc.runtime.patch import MAP_SIGMA_CELLS, PatchConfig, model_layers
from ovdoc.runtime.preprocess import RESIZE_MODES, PreprocessSpec

FORMAT = "ovdoc-bundle"
# 2: "mode" (global | patch) and the patch section; version-1 bundles (global, from before) still load
FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)
MODES = ("global", "patch")
# default patch-mode input area (pixels): about 160x128. Chosen on the magnetic-tile validation split
# (benchmarks/magnetic_tile_patch_sweep.py, seeds 0-2, PCA-64, 32768-patch bank): 128x160 image AUROC
# 0.960 / pooled pixel 0.908 against 0.950 / 0.918 at 96x128 (cracks 0.965 vs 0.908), 0.956 / 0.905 at
# 160x192, 0.949 / 0.902 at 192x224. (With the earlier 4096-patch bank 96x128 won.)
PATCH_AREA = 160 * 128
MANIFEST = "manifest.json"
SELF_HASH_KEY = "manifest_sha256"


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _canonical(manifest: dict) -> bytes:
    body = {k: v for k, v in manifest.items() if k != SELF_HASH_KEY}
    return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()


def library_versions() -> dict:
    import cv2
    import faiss
    import sklearn

    return {
        "ovdoc": __version__,
        "openvino": ov.__version__,
        "faiss": faiss.__version__,
        "numpy": np.__version__,
        "opencv": cv2.__version__,
        "scikit-learn": sklearn.__version__,
        "python": platform.python_version(),
    }


def weight_precision(model: ov.Model) -> str:
    """FP32 / FP16 / INT8 from the weights themselves, not from a folder name."""
    types = {op.get_type_name() for op in model.get_ops()}
    if "FakeQuantize" in types or "FakeConvert" in types:
        return "INT8"
    for op in model.get_ops():
        if op.get_type_name() == "Constant" and op.get_output_element_type(0) == ov.Type.f16:
            return "FP16"
    return "FP32"


def write_model(model: ov.Model, spec, source_xml: Path, folder: Path) -> None:
    """Copy the IR byte for byte when it already records its preprocessing; else record it and save."""
    if model.has_rt_info(RT_PREPROCESS):
        shutil.copyfile(source_xml, folder / "model.xml")
        shutil.copyfile(source_xml.with_suffix(".bin"), folder / "model.bin")
    else:
        save_ir(annotate(model.clone(), spec), folder / "model.xml", compress_to_fp16=False)


@dataclasses.dataclass(frozen=True)
class FitConfig:
    """Everything `ovdoc fit` decides, in one typed record (global kNN or patch mode).

    size is (width, height) of the model input; None = the model's own size (global mode) or, in patch
    mode, one chosen from the normal images' median aspect ratio (`default_patch_size`). resize None =
    the model's recorded mode (global) or "stretch" (patch: the whole frame is scored).
    """

    mode: str = "global"
    k: int = 5
    index: str = "auto"
    fpr: float = 0.01
    scorer: str = "knn"
    metric: str = "euclidean"
    batch: int = 8
    device: str = "CPU"
    size: tuple[int, int] | None = None
    resize: str | None = None
    patch: PatchConfig = dataclasses.field(default_factory=PatchConfig)
    calibration: str = "auto"  # global mode: held-out groups where known (auto), or leave-one-out (loo)
    near_duplicates: str = "auto"  # one folder of image files: group near-duplicate shots (auto) or not
    estimator: str = "bootstrap"  # the group quantile: bootstrap (aims at the target) or conformal
    groups: str = "subfolder"  # which images show one part (ovdoc.runtime.groups): held out together

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise OvdocError(f"unknown mode {self.mode!r}: use one of {', '.join(MODES)}")
        if not 0.0 < self.fpr < 1.0:
            raise OvdocError(f"--fpr must be between 0 and 1 (exclusive), got {self.fpr}")
        if self.batch < 1:
            raise OvdocError(f"batch must be at least 1, got {self.batch}")
        if self.size is not None and (len(self.size) != 2 or min(self.size) < 32):
            raise OvdocError(f"--size must be WxH with both at least 32, got {self.size}")
        if self.resize is not None and self.resize not in RESIZE_MODES:
            raise OvdocError(f"unknown resize mode {self.resize!r}: use {', '.join(RESIZE_MODES)}")
        if self.calibration not in CALIBRATIONS:
            raise OvdocError(f"unknown calibration {self.calibration!r}: use {', '.join(CALIBRATIONS)}")
        if self.near_duplicates not in NEAR_DUPLICATES:
            raise OvdocError(f"unknown --near-duplicates {self.near_duplicates!r}: use "
                             f"{', '.join(NEAR_DUPLICATES)}")
        if self.estimator not in ESTIMATORS:
            raise OvdocError(f"unknown threshold estimator {self.estimator!r}: use {', '.join(ESTIMATORS)}")
        parse_groups(self.groups)
        if self.mode == "patch" and self.scorer != "knn":
            raise OvdocError(f"patch mode scores patches by nearest-neighbour distance: no --scorer "
                             f"{self.scorer}")


def parse_size(text: str) -> tuple[int, int]:
    """`--size 256x224` (width x height) or `--size 224` (square)."""
    parts = str(text).lower().replace(" ", "").split("x")
    try:
        values = [int(v) for v in parts]
    except ValueError:
        raise OvdocError(f"--size: expected WxH (e.g. 256x192) or one number, got {text!r}") from None
    if len(values) == 1:
        values = values * 2
    if len(values) != 2 or min(values) < 32:
        raise OvdocError(f"--size: expected WxH with both at least 32, got {text!r}")
    return values[0], values[1]


def default_patch_size(aspects: list[float], area: int = PATCH_AREA) -> tuple[int, int]:
    """(width, height), multiples of 32, of about `area` pixels at the images' median width/height ratio."""
    aspect = float(np.median(aspects)) if aspects else 1.0
    aspect = min(max(aspect, 0.25), 4.0)
    height = max(32, int(round(np.sqrt(area / aspect) / 32.0)) * 32)
    width = max(32, int(round(height * aspect / 32.0)) * 32)
    return width, height


def fit_bundle(
    model_path: str | Path,
    normal_sources: str | Path | Iterable[str | Path],
    out_dir: str | Path,
    config: FitConfig | None = None,
    *,
    progress: bool = True,
    cache_dir: str | Path | None = None,
    extract: Extract | None = None,
    **overrides,
) -> dict:
    """Extract features of the normal images, index them, calibrate the threshold, write the bundle.

    `config` says what to build; keyword `overrides` (FitConfig field names: k=, metric=, mode=, ...)
    replace single fields of it, for short calls such as `fit_bundle(ir, good, out, metric="cosine")`.
    `extract`: where features are computed (default here, `LocalExtract`; `ovdoc fit --ray`: a cluster).
    """
    from ovdoc.runtime.datasets import open_unlabelled

    config = _configure(config, overrides)
    # folders, globs, videos, .npz and data-set specs (the one input grammar); clear errors before any compile
    # unreadable image files are skipped (named in one warning); stream.report says where each image came
    # from, so global-mode calibration can hold out whole folders / video blocks. An extractor that reads
    # files itself (a cluster's workers) gets image files as paths; patch mode needs every image's shape
    # up front (its input size), so it always decodes here.
    paths = extract is not None and extract.reads_files and config.mode == "global"
    stream = open_unlabelled(normal_sources, skip_unreadable=True, decode=not paths)
    return fit_bundle_images(model_path, stream.images, out_dir, config, progress=progress,
                             cache_dir=cache_dir, total=stream.total, sources=stream.names,
                             input_report=stream.report, extract=extract)


def _configure(config: FitConfig | None, overrides: dict) -> FitConfig:
    config = config or FitConfig()
    unknown = set(overrides) - {f.name for f in dataclasses.fields(FitConfig)}
    if unknown:
        raise TypeError(f"unknown fit option(s) {', '.join(sorted(unknown))}: see FitConfig")
    return dataclasses.replace(config, **overrides) if overrides else config


def fit_bundle_images(
    model_path: str | Path,
    images: Iterable[np.ndarray],
    out_dir: str | Path,
    config: FitConfig | None = None,
    *,
    progress: bool = True,
    cache_dir: str | Path | None = None,
    total: int | None = None,
    sources: list[str] | None = None,
    input_report: dict | None = None,
    export_source: dict | None = None,
    extract: Extract | None = None,
    **overrides,
) -> dict:
    """`fit_bundle` for images already in memory (BGR uint8, any size): data sets, benchmarks.

    `input_report` (from `open_unlabelled(skip_unreadable=True)`): skipped files and each image's group.
    `export_source` (global mode): the manifest's record of the model the IR came from, e.g.
    {"format": "keras", "file": "../model.keras", "sha256": ...}, which `ovdoc export` needs.
    """
    from ovdoc.runtime.features import default_cache_dir

    config = _configure(config, overrides)
    core = ov.Core()
    model, spec, xml = read_ir(model_path, core)
    cache_dir = cache_dir if cache_dir is not None else default_cache_dir()
    extract = extract or LocalExtract(core=core, cache_dir=cache_dir)
    if config.mode == "patch":
        return _fit_patch(model, spec, xml, images, out_dir, config, core=core, progress=progress,
                          extract=extract, total=total, sources=sources, report=input_report)
    return _fit_global(model, spec, xml, images, out_dir, config, core=core, progress=progress,
                       extract=extract, total=total, sources=sources, report=input_report,
                       export_source=export_source)


def _sized(spec: PreprocessSpec, config: FitConfig, default_resize: str) -> PreprocessSpec:
    resize = config.resize or default_resize
    if config.size is None:
        return dataclasses.replace(spec, resize=resize)
    return dataclasses.replace(spec, width=config.size[0], height=config.size[1], resize=resize)


def _fit_global(model, spec, xml, images, out_dir, config: FitConfig, *, core, progress, extract: Extract,
                total, sources, report=None, export_source=None) -> dict:
    from ovdoc.runtime.datasets import drop_unreadable
    from ovdoc.runtime.scoring import LOO_METHODS, make_scorer

    scorer_obj = make_scorer(config.scorer, k=config.k, index=config.index, metric=config.metric)
    spec = _sized(spec, config, spec.resize)
    thumbs: list[np.ndarray] = []
    if config.near_duplicates == "auto" and config.calibration == "auto":
        images = _thumbnailed(images, thumbs)
    extractor = extract(model, spec, images, device=config.device, batch=config.batch, progress=progress,
                        total=total, desc="normal features")
    if extractor.skipped and report is not None:  # files the workers could not decode: as if skipped here
        drop_unreadable(report, extractor.skipped)
    feats = extractor.features
    if len(feats) == 0:
        raise OvdocError("no images could be read from the normal sources")
    scorer_obj.fit(feats)
    method = LOO_METHODS[scorer_obj.kind]
    keys = _group_keys(report, config.groups)
    threshold = calibrate(
        scorer_obj.loo_scores(), feats, config.fpr, keys=keys, k=config.k,
        build=lambda x: make_scorer(config.scorer, k=config.k, index="flat", metric=config.metric).fit(x),
        loo_method=method, mode=config.calibration, near=_near_groups(keys, thumbs),
        estimator=config.estimator,
    )
    manifest = _manifest_head(model, spec, xml, "global", sources, report) | {
        "feature_dim": int(feats.shape[1]),
        "n_images": int(len(feats)),
        "scorer": scorer_obj.describe(),
        "k": config.k,
        "threshold": threshold,
        "calibration": calibration_record(threshold),
        "built_with": _built_with(core, extractor, config.batch),
    }
    # an IR from `ovdoc train` names its model.keras: a bundle fitted from it alone exports as well
    export_source = export_source or export_source_of(model, xml, out_dir)
    if export_source:
        manifest["export_source"] = export_source
    # an IR whose size was changed is saved with its new preprocessing; else copied byte for byte
    resized = config.size is not None or config.resize is not None
    return _write_bundle(out_dir, manifest, scorer_obj, model, spec, xml, copy=not resized)


def _thumbnailed(images: Iterable[np.ndarray], thumbs: list[np.ndarray]) -> Iterable[np.ndarray]:
    """The images unchanged, each one's near-duplicate thumbnail appended to `thumbs` on the way."""
    from ovdoc.runtime.images import read_image
    from ovdoc.runtime.near_duplicates import thumbnail

    for item in images:
        image = item
        if isinstance(item, (str, Path)):  # a Ray extraction streams paths (its workers decode them)
            try:
                image = read_image(Path(item))
            except OvdocError:  # unreadable: the workers skip it too, so it gets no thumbnail either
                yield item
                continue
        thumbs.append(thumbnail(image))
        yield item


def _near_groups(keys: list | None, thumbs: list[np.ndarray]) -> np.ndarray | None:
    """Near-duplicate groups when every image is a file of one folder, or all come from in-memory image
    sets (data sets, .npz); else None (several folders: the folders are the groups; video frames:
    blocks of the sequence, each scored against its past)."""
    if not keys or len(keys) != len(thumbs):
        return None
    files = all(kind == "file" for kind, _ in keys)
    arrays = all(kind == "frame" and group.startswith("array:") for kind, group in keys)
    if not (files and len({group for _, group in keys}) == 1) and not arrays:
        return None
    from ovdoc.runtime.near_duplicates import near_duplicate_groups

    return near_duplicate_groups(np.stack(thumbs))


def _group_keys(report: dict | None, groups: str) -> list[tuple[str, str]] | None:
    """Calibration keys (kind, group) of the images read, grouped by the `--groups` rule."""
    keys = (report or {}).get("keys")
    if not keys:
        return None
    paths = (report or {}).get("paths") or [None] * len(keys)
    return regroup(keys, paths if len(paths) == len(keys) else [None] * len(keys), groups)


def _fit_patch(model, spec, xml, images, out_dir, config: FitConfig, *, core, progress, extract: Extract,
               total, sources, report=None) -> dict:
    """Patch mode: patch-feature IR, greedy coreset bank from most normals, threshold on held-out normals."""
    import time

    from ovdoc.runtime.patch import (
        PatchScorer,
        bank_split,
        build_patch_model,
        coreset_size,
        greedy_coreset,
        pca_matrix,
    )

    pc = dataclasses.replace(config.patch, layers=model_layers(model, config.patch.layers))
    from ovdoc.log import progress_bar

    images = list(progress_bar(images, total=total, desc="reading normal images", enabled=progress))
    if len(images) < 2:
        raise OvdocError(f"patch mode needs at least 2 normal images (bank + calibration), got {len(images)}")
    size = config.size or default_patch_size([im.shape[1] / im.shape[0] for im in images])
    spec = _sized(dataclasses.replace(spec, width=size[0], height=size[1]), config, "stretch")
    labels, unit = _patch_groups(images, _group_keys(report, config.groups), config)
    rng, first, rest = bank_split(len(images), pc)
    order = np.concatenate([first, rest])  # seeded order; with one image per group, the same split
    cal, bank_order = split_groups(labels, order, len(first))  # every shot of a part on one side
    if len(bank_order) == 0 or len(np.unique(labels[cal])) < 2:  # too few groups: each image alone
        labels, unit = np.arange(len(images)), "images"
        cal, bank_order = first, rest
    n_cal, bank_imgs = len(cal), np.sort(bank_order)
    matrix = None
    if pc.reduce == "pca":
        full_model, full_record = build_patch_model(model, spec.height, spec.width, pc)
        fitting = [images[i] for i in bank_order[: pc.pca_images]]
        full = extract(full_model, spec, fitting, device=config.device, batch=config.batch, progress=progress,
                       total=len(fitting), desc="patches for the PCA").features
        matrix = pca_matrix(full.reshape(-1, full_record["channels"]), pc.dim)
        del full
    patch_model, record = build_patch_model(model, spec.height, spec.width, pc, matrix)
    annotate(patch_model, spec, {"patch_of": Path(xml).name})
    extractor = extract(patch_model, spec, images, device=config.device, batch=config.batch,
                        progress=progress, total=len(images), desc="normal patches")
    feats = extractor.features
    h, w = record["grid"]
    dim = record["dim"]
    feats = feats.reshape(len(feats), h * w, dim)
    candidates = feats[bank_imgs].reshape(-1, dim)
    n_all = len(candidates)
    if n_all > pc.max_candidates:
        candidates = candidates[np.sort(rng.choice(n_all, pc.max_candidates, replace=False))]
    m = coreset_size(pc, len(candidates))
    t0 = time.perf_counter()
    picks = greedy_coreset(candidates, m, projection_dim=pc.projection_dim, seed=pc.seed,
                           progress=progress and m < len(candidates))
    coreset_s = time.perf_counter() - t0
    scorer = PatchScorer((h, w), dim, aggregate=pc.aggregate, topk=pc.topk, normalise=pc.normalise,
                         index=pc.index, nprobe=pc.nprobe)
    scorer.fit(candidates[picks])
    n_groups = len(np.unique(labels[cal]))
    method = (f"held-out split: {n_cal} normal images ({n_groups} {unit}) kept out of the bank "
              f"(seed {pc.seed})")
    if pc.normalise != "none" and n_cal >= 2:
        # half of the held-out images give the per-position statistics, the other half the threshold (by
        # image, not by group: with the few groups a small set holds out, halving by group left the
        # threshold to 2-3 parts, which flagged 63 % of new good magnetic tiles in the CI gate's window)
        stats, cal = cal[: n_cal // 2], cal[n_cal // 2 :]
        scorer.fit_position(scorer.raw_maps(feats[stats]))
        method += f"; {len(stats)} of them set the per-position normalisation, {len(cal)} the threshold"
    elif pc.normalise != "none":
        scorer.normalise = "none"
    cal_maps = scorer.patch_maps(feats[cal])
    threshold = _group_threshold(scorer.image_scores(cal_maps), labels[cal], config, method, unit)
    from ovdoc.runtime.patch import gaussian_smooth

    smoothed_max = gaussian_smooth(cal_maps, MAP_SIGMA_CELLS).reshape(len(cal_maps), -1).max(axis=1)
    threshold["map"] = _group_threshold(smoothed_max, labels[cal], config, "the smoothed map's maximum",
                                        unit, full=False)
    threshold["map_value"] = threshold["map"]["value"]
    patch = record | {
        "projection_seed": pc.seed,
        **({"pca_images": int(min(pc.pca_images, len(bank_imgs)))} if matrix is not None else {}),
        "config": pc.to_dict(),
        "coreset": {"method": "greedy k-center", "size": int(m), "candidates": int(len(candidates)),
                    "patches_total": int(n_all), "bank_images": int(len(bank_imgs)),
                    "projection_dim": pc.projection_dim, "seconds": round(coreset_s, 2)},
        "aggregate": pc.aggregate,
        "topk": pc.topk,
        "map_sigma_cells": MAP_SIGMA_CELLS,
        "bank_bytes": scorer.index_bytes(),
    }
    manifest = _manifest_head(patch_model, spec, xml, "patch", sources, report) | {
        "feature_dim": int(dim),
        "n_images": int(len(feats)),
        "scorer": scorer.describe(),
        "k": 1,
        "threshold": threshold,
        "calibration": calibration_record(threshold),
        "patch": patch,
        "built_with": _built_with(core, extractor, config.batch),
    }
    return _write_bundle(out_dir, manifest, scorer, patch_model, spec, xml, copy=False)


def _patch_groups(images: list[np.ndarray], keys: list | None, config: FitConfig) -> tuple[np.ndarray, str]:
    """(group per image, what a group is): folders, near-duplicate shots in one folder, blocks of
    consecutive frames; images in memory with no record of their origin are one group each."""
    from ovdoc.runtime.calibration import sequence_groups

    if not keys or len(keys) != len(images):
        return np.arange(len(images)), "images"
    if config.near_duplicates == "auto":
        from ovdoc.runtime.near_duplicates import thumbnail

        near = _near_groups(keys, [thumbnail(im) for im in images])
        if near is not None:
            return near, ("parts" if keys[0][0] == "file" else "images")
    if all(kind == "file" for kind, _ in keys):
        if len({group for _, group in keys}) == 1:  # one folder, near-duplicates off: each image alone
            return np.arange(len(images)), "images"
        return sequence_groups(keys), "folders"
    arrays = all(group.startswith("array:") for _, group in keys)
    return sequence_groups(keys), "blocks of images" if arrays else "stretches of video"


def _group_threshold(scores: np.ndarray, labels: np.ndarray, config: FitConfig, method: str, unit: str, *,
                     full: bool = True) -> dict:
    """A patch bundle's threshold record: summary of the held-out scores, the group quantile and bound."""
    from ovdoc.runtime.calibration import group_calibration, threshold_at_fpr

    record = threshold_at_fpr(scores, config.fpr, method=method) if full else {}
    pooled = float(np.quantile(scores, 1.0 - config.fpr))
    cal = group_calibration(scores, labels, config.fpr, estimator=config.estimator, seed=config.patch.seed,
                            unit=unit)
    record.update(cal, pooled_value=pooled)
    if full:
        record["method"] = f"{method}; {record['estimator']} quantile over {cal['groups']} {unit}"
        record["calibration_fpr"] = float(np.mean(scores > record["value"]))
        from ovdoc.log import get_logger

        if "message" in cal:
            get_logger(__name__).warning("warning: " + cal["message"])
    return record


def _manifest_head(model, spec, xml, mode: str, sources, report: dict | None = None) -> dict:
    head = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "mode": mode,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "model": {"file": "model.xml", "weights": "model.bin", "source": str(xml),
                  "weight_precision": weight_precision(model)},
        "preprocess": spec.to_dict(),
        "normal_sources": sources or ["(images in memory)"],
    }
    if report and "image_files" in report:  # what `ovdoc fit` read from files: skipped ones counted, named
        head["normal_input"] = {"image_files": report["image_files"],
                                "unreadable": len(report["unreadable"]),
                                "unreadable_files": report["unreadable"][:UNREADABLE_NAMED]}
    return head


def _built_with(core, extractor, batch: int) -> dict:
    return {"device": extractor.device, "inference_precision": extractor.inference_precision,
            "batch": batch, "device_full_name": _full_name(core, extractor.device)}


def _write_bundle(out_dir, manifest: dict, scorer, model, spec, xml, *, copy: bool) -> dict:
    manifest = manifest | {"versions": library_versions()}
    with atomic_dir(out_dir) as tmp:
        if copy:
            write_model(model, spec, xml, tmp)
        else:
            save_ir(annotate(model.clone(), spec), tmp / "model.xml", compress_to_fp16=False)
        scorer.save(tmp)
        manifest["files"] = {p.name: sha256_file(p) for p in sorted(tmp.iterdir()) if p.name != MANIFEST}
        manifest[SELF_HASH_KEY] = hashlib.sha256(_canonical(manifest)).hexdigest()
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return manifest


def bundle_vectors(folder: Path, manifest: dict) -> np.ndarray:
    """The normal feature vectors stored in a global bundle (FAISS index vectors or LOF reference)."""
    info = manifest["scorer"]
    if info.get("kind") == "mean-cosine":
        raise OvdocError(f"bundle {folder} (mean-cosine) stores one mean vector, not the normal images' "
                         "vectors: give the normal images again (e.g. --calib) or refit the bundle")
    if info.get("kind") == "lof":
        return np.load(folder / info.get("reference_file", "reference.npy"), allow_pickle=False)
    import faiss

    index = faiss.read_index(str(folder / info.get("index_file", "index.faiss")))
    return index.reconstruct_n(0, index.ntotal)


def append_bundle(bundle: str | Path, normal_sources: list[str], out_dir: str | Path | None = None, *,
                  progress: bool = True, cache_dir: str | Path | None = None) -> dict:
    """Add normal images to a global bundle without refitting from scratch: their features (same model,
    same preprocessing) join the index and the threshold is recalibrated at the bundle's --fpr, the
    previous images and each new folder / video held out as groups. Writes `out_dir` (default: the
    bundle itself) atomically; the old bundle stays as it was until the new one is complete."""
    from ovdoc.runtime.datasets import open_unlabelled
    from ovdoc.runtime.features import FeatureExtractor, default_cache_dir
    from ovdoc.runtime.scoring import LOO_METHODS, ScorerSpec

    manifest, folder = load_manifest(bundle)
    if manifest.get("mode", "global") != "global":
        raise OvdocError(f"--append adds to global bundles; {folder} is a {manifest['mode']} bundle: "
                         "refit it with all normal images (`ovdoc fit --mode patch`)")
    if manifest["scorer"].get("kind") == "mean-cosine":
        raise OvdocError(f"--append needs the normal vectors, and {folder} (mean-cosine) keeps only their "
                         "mean: refit it with all normal images (`ovdoc fit --scorer mean-cosine`)")
    stream = open_unlabelled(normal_sources, skip_unreadable=True)
    core = ov.Core()
    model, spec, xml = read_ir(folder / manifest["model"]["file"], core)
    spec = PreprocessSpec.from_dict(manifest["preprocess"])
    built = manifest["built_with"]
    cache_dir = cache_dir if cache_dir is not None else default_cache_dir()
    # the new features in the precision the bundle's own were computed in (bf16 and f32 differ ~5 %)
    extractor = FeatureExtractor(model, spec, device=built["device"], batch=int(built.get("batch", 8)),
                                 core=core, cache_dir=cache_dir,
                                 inference_precision=built.get("inference_precision") or "f32")
    new = extractor.extract(stream.images, progress=progress, total=stream.total, desc="new normal features")
    if len(new) == 0:
        raise OvdocError("no images could be read from the new normal sources")
    old = bundle_vectors(folder, manifest)
    feats = np.concatenate([old, new]).astype(np.float32)
    spec_info = ScorerSpec.from_manifest(manifest["scorer"])
    scorer_obj = spec_info.build().fit(feats)
    old_threshold = manifest["threshold"]
    fpr = float(old_threshold["fpr"])
    keys = [("file", "(the bundle's previous images)")] * len(old) + list(stream.report.get("keys", []))
    method = LOO_METHODS[spec_info.kind]
    threshold = calibrate(
        scorer_obj.loo_scores(), feats, fpr, keys=keys if len(keys) == len(feats) else None, k=spec_info.k,
        build=lambda x: dataclasses.replace(spec_info, index="flat").build().fit(x), loo_method=method,
    )
    appended = list(manifest.get("appended", [])) + [{
        "sources": stream.names, "n_images": int(len(new)), "previous_threshold": old_threshold["value"],
        "time": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}]
    new_manifest = {k: v for k, v in manifest.items() if k not in ("files", SELF_HASH_KEY, "versions")} | {
        "n_images": int(len(feats)),
        "scorer": scorer_obj.describe(),
        "threshold": threshold,
        "normal_sources": list(manifest.get("normal_sources", [])) + stream.names,
        "appended": appended,
        "calibration": calibration_record(threshold),
    }
    target = Path(out_dir) if out_dir is not None else folder
    with atomic_dir(target) as tmp:
        for name in manifest["files"]:  # the model files, byte for byte (the index is rewritten below)
            if name in (manifest["model"]["file"], manifest["model"]["weights"]):
                shutil.copy2(folder / name, tmp / name)
        scorer_obj.save(tmp)
        new_manifest["versions"] = library_versions()
        new_manifest["files"] = {p.name: sha256_file(p) for p in sorted(tmp.iterdir()) if p.name != MANIFEST}
        new_manifest[SELF_HASH_KEY] = hashlib.sha256(_canonical(new_manifest)).hexdigest()
        (tmp / MANIFEST).write_text(json.dumps(new_manifest, indent=2, sort_keys=True) + "\n")
    return new_manifest | {"added": int(len(new))}


def save_threshold(bundle: str | Path, value: float, *, by: str = "user") -> Path:
    """Write a new threshold into a bundle's manifest (verified first, re-hashed, replaced atomically);
    the calibrated one stays on record under threshold.history."""
    import math

    from ovdoc.atomic import write_text_atomic

    if not math.isfinite(value):
        raise OvdocError(f"a threshold must be a finite number, got {value}")
    manifest, folder = load_manifest(bundle)
    threshold = dict(manifest["threshold"])
    history = list(threshold.get("history", []))
    history.append({"value": threshold["value"], "replaced_by": float(value), "by": by,
                    "time": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")})
    threshold.update(value=float(value), history=history)
    manifest = {k: v for k, v in manifest.items() if k != SELF_HASH_KEY} | {"threshold": threshold}
    manifest[SELF_HASH_KEY] = hashlib.sha256(_canonical(manifest)).hexdigest()
    write_text_atomic(folder / MANIFEST, json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return folder / MANIFEST


def load_manifest(bundle: str | Path) -> tuple[dict, Path]:
    """Read and verify a bundle's manifest and every file's hash; one clear line on any mismatch."""
    folder = Path(bundle)
    if not folder.exists():
        raise OvdocError(f"bundle not found: {folder}")
    if not folder.is_dir():
        raise OvdocError(f"{folder} is not a bundle folder (make one with `ovdoc fit`)")
    path = folder / MANIFEST
    if not path.is_file():
        raise OvdocError(f"{folder} is not an ovdoc bundle (no {MANIFEST}); make one with `ovdoc fit`")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise OvdocError(f"{path} is corrupt ({exc}); rebuild the bundle with `ovdoc fit`") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise OvdocError(f"{path} is not an ovdoc bundle manifest; rebuild the bundle with `ovdoc fit`")
    version = manifest.get("format_version")
    if version not in READABLE_VERSIONS:
        raise OvdocError(
            f"bundle {folder} has format version {version}; this ovdoc {__version__} reads versions "
            f"{', '.join(map(str, READABLE_VERSIONS))}: rebuild it with `ovdoc fit`"
        )
    expected = manifest.get(SELF_HASH_KEY)
    if expected != hashlib.sha256(_canonical(manifest)).hexdigest():
        raise OvdocError(
            f"bundle {folder}: {MANIFEST} was modified after `ovdoc fit` (hash mismatch); "
            "rebuild the bundle with `ovdoc fit`"
        )
    files = manifest.get("files") or {}
    for name, digest in sorted(files.items()):
        file = folder / name
        if not file.is_file():
            raise OvdocError(f"bundle {folder} is incomplete: {name} is missing")
        if sha256_file(file) != digest:
            raise OvdocError(
                f"bundle {folder}: {name} does not match its sha256 in {MANIFEST} (modified or "
                "corrupt); rebuild the bundle with `ovdoc fit`"
            )
    check_mode(manifest, folder)
    return manifest, folder


def check_mode(manifest: dict, folder: Path) -> None:
    """A patch bundle must say how its features were built; refuse a half-written or foreign one."""
    mode = manifest.get("mode", "global")
    if mode not in MODES:
        raise OvdocError(f"bundle {folder} has mode {mode!r}; ovdoc {__version__} knows {', '.join(MODES)}")
    if mode != "patch":
        return
    patch = manifest.get("patch")
    try:
        grid = [int(v) for v in patch["grid"]]
        dim = int(patch["dim"])
        layers = list(patch["layers"])
        ok = len(grid) == 2 and min(grid) > 0 and dim > 0 and layers and int(manifest["feature_dim"]) == dim
    except (KeyError, TypeError, ValueError):
        ok = False
    if not ok:
        raise OvdocError(
            f"bundle {folder}: its patch section (grid, dim, layers) is missing or inconsistent; "
            "rebuild it with `ovdoc fit --mode patch`"
        )


def _full_name(core: ov.Core, device: str) -> str | None:
    try:
        return str(core.get_property(device.split(":")[0].split(".")[0], "FULL_DEVICE_NAME"))
    except Exception:
        return None
