"""Fitting a bundle, as explicit steps: *plan* (the head says what to extract) -> *extract features* ->
*fit the head* -> *calibrate* -> *write*.

Extraction is the `ovdoc.runtime.extract` seam (here, on a Ray cluster): its output is plain features in
input order, so it can also run on shards whose features are concatenated (`extract_features` takes any
`Extract`; `fit_features` takes the concatenation) and give the same bundle as one pass. Everything a
mode does differently is its head's (`ovdoc.runtime.heads`); the file format is
`ovdoc.runtime.bundle_format`'s.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import openvino as ov

from ovdoc.errors import OvdocError
from ovdoc.runtime.bundle_format import (
    built_with,
    load_manifest,
    manifest_head,
    now,
    recorded_precision,
    write_bundle,
    write_model,
)
from ovdoc.runtime.calibration import CALIBRATIONS, ESTIMATORS, NEAR_DUPLICATES, calibration_record
from ovdoc.runtime.extract import Extract, Extracted, LocalExtract
from ovdoc.runtime.groups import parse_groups
from ovdoc.runtime.heads import FitInputs, FitPlan, Head, head_class, head_of
from ovdoc.runtime.preprocess import INTENSITY_MODES, RESIZE_MODES

# FitConfig keyword fields that belong to a head's options (kept so `FitConfig(k=3)`,
# `FitConfig(mode="patch", patch=PatchConfig(...))` and `fit_bundle(..., metric="cosine")` still work)
HEAD_FIELDS = ("scorer", "k", "index", "metric", "patch")


@dataclasses.dataclass(frozen=True, init=False)
class FitConfig:
    """Everything `ovdoc fit` decides: the options every mode shares, and `head`, the mode's own options
    (`GlobalOptions`: scorer, k, index, metric; `PatchConfig`: how patches are built, banked, scored).

    The head's options may also be given as keywords (k=, scorer=, index=, metric=, patch=) and read as
    attributes (config.k, config.patch), as before the split. size is (width, height) of the model input;
    None = the model's own size (global mode) or, in patch mode, one chosen from the normal images'
    median aspect ratio (`default_patch_size`). resize None = the model's recorded mode (global) or
    "stretch" (patch: the whole frame is scored). intensity None = the model's recorded per-image intensity
    normalisation (none unless its IR says otherwise); "mean" / "meanstd" = `PreprocessSpec.intensity`,
    recorded in the bundle so run, serve and eval prepare frames the same way.
    """

    mode: str = "global"
    fpr: float = 0.01
    batch: int = 8
    device: str = "CPU"
    size: tuple[int, int] | None = None
    resize: str | None = None
    intensity: str | None = None  # per-image intensity normalisation (PreprocessSpec.intensity)
    calibration: str = "auto"  # global: held-out groups (auto) or leave-one-out (loo); patch: calibration.py
    near_duplicates: str = "auto"  # one folder of image files: group near-duplicate shots (auto) or not
    estimator: str = "bootstrap"  # the group quantile: bootstrap (aims at the target) or conformal
    groups: str = "subfolder"  # which images show one part (ovdoc.runtime.groups): held out together
    head: Any = None  # the mode's own options; None = its defaults

    def __init__(self, mode: str = "global", fpr: float = 0.01, batch: int = 8, device: str = "CPU",
                 size: tuple[int, int] | None = None, resize: str | None = None, calibration: str = "auto",
                 near_duplicates: str = "auto", estimator: str = "bootstrap", groups: str = "subfolder",
                 head: Any = None, intensity: str | None = None, **head_fields: Any) -> None:
        unknown = set(head_fields) - set(HEAD_FIELDS)
        if unknown:
            raise TypeError(f"unknown fit option(s) {', '.join(sorted(unknown))}: see FitConfig")
        common = {"mode": mode, "fpr": fpr, "batch": batch, "device": device, "size": size, "resize": resize,
                  "intensity": intensity, "calibration": calibration, "near_duplicates": near_duplicates,
                  "estimator": estimator, "groups": groups}
        for name, value in common.items():
            object.__setattr__(self, name, value)
        cls = head_class(mode)
        object.__setattr__(self, "head", cls.options(head, head_fields))
        self._check()

    def _check(self) -> None:
        if not 0.0 < self.fpr < 1.0:
            raise OvdocError(f"--fpr must be between 0 and 1 (exclusive), got {self.fpr}")
        if self.batch < 1:
            raise OvdocError(f"batch must be at least 1, got {self.batch}")
        if self.size is not None and (len(self.size) != 2 or min(self.size) < 32):
            raise OvdocError(f"--size must be WxH with both at least 32, got {self.size}")
        if self.resize is not None and self.resize not in RESIZE_MODES:
            raise OvdocError(f"unknown resize mode {self.resize!r}: use {', '.join(RESIZE_MODES)}")
        if self.intensity is not None and self.intensity not in INTENSITY_MODES:
            raise OvdocError(f"unknown --intensity {self.intensity!r}: use {', '.join(INTENSITY_MODES)}")
        if self.calibration not in CALIBRATIONS:
            raise OvdocError(f"unknown calibration {self.calibration!r}: use {', '.join(CALIBRATIONS)}")
        if self.near_duplicates not in NEAR_DUPLICATES:
            raise OvdocError(f"unknown --near-duplicates {self.near_duplicates!r}: use "
                             f"{', '.join(NEAR_DUPLICATES)}")
        if self.estimator not in ESTIMATORS:
            raise OvdocError(f"unknown threshold estimator {self.estimator!r}: use {', '.join(ESTIMATORS)}")
        parse_groups(self.groups)

    # the head's options under their old names (read-only)
    def _head_option(self, name: str, default: Any) -> Any:
        return getattr(self.head, name, default)

    @property
    def scorer(self) -> str:
        return self._head_option("scorer", "knn")

    @property
    def k(self) -> int:
        return self._head_option("k", 5)

    @property
    def index(self) -> str:
        return self._head_option("index", "auto")

    @property
    def metric(self) -> str | None:
        """None: the model's default (`global_head.defaults_for`)."""
        return self._head_option("metric", None)

    @property
    def patch(self):
        """The patch head's options (PatchConfig; its defaults for another mode)."""
        from ovdoc.runtime.patch import PatchConfig

        return self.head if isinstance(self.head, PatchConfig) else PatchConfig()


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


def _configure(config: FitConfig | None, overrides: dict) -> FitConfig:
    config = config or FitConfig()
    known = {f.name for f in dataclasses.fields(FitConfig)} | set(HEAD_FIELDS)
    unknown = set(overrides) - known
    if unknown:
        raise TypeError(f"unknown fit option(s) {', '.join(sorted(unknown))}: see FitConfig")
    return dataclasses.replace(config, **overrides) if overrides else config


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
    # from, so calibration can hold out whole folders / video blocks. An extractor that reads files itself
    # (a cluster's workers) gets image files as paths where the head allows it (patch mode needs every
    # image's shape up front, its input size, so it always decodes here).
    paths = extract is not None and extract.reads_files and head_class(config.mode).reads_files
    stream = open_unlabelled(normal_sources, skip_unreadable=True, decode=not paths)
    return fit_bundle_images(model_path, stream.images, out_dir, config, progress=progress,
                             cache_dir=cache_dir, total=stream.total, sources=stream.names,
                             input_report=stream.report, extract=extract)


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
    extract = extract or LocalExtract(core=core, cache_dir=cache_dir if cache_dir is not None
                                      else default_cache_dir())
    plan = plan_fit(model_path, images, config, core=core, extract=extract, progress=progress, total=total,
                    input_report=input_report, out_dir=out_dir, export_source=export_source)
    extracted = extract_features(plan, config, extract, progress=progress)
    return fit_features(plan, extracted, out_dir, config, core=core, sources=sources, progress=progress)


def plan_fit(model_path: str | Path, images: Iterable, config: FitConfig, *, core: ov.Core | None = None,
             extract: Extract | None = None, progress: bool = False, total: int | None = None,
             input_report: dict | None = None, out_dir: str | Path | None = None,
             export_source: dict | None = None) -> FitPlan:
    """Step 0: read the IR; the head says which IR to run over which images at what preprocessing."""
    from ovdoc.runtime.ir import read_ir

    core = core or ov.Core()
    extract = extract or LocalExtract(core=core)
    model, spec, xml = read_ir(model_path, core)
    inputs = FitInputs(model=model, spec=spec, xml=xml, images=images, total=total, report=input_report,
                       reads_files=extract.reads_files,
                       out_dir=Path(out_dir) if out_dir is not None else None,
                       export_source=export_source)
    return head_class(config.mode).plan(inputs, config, extract=extract, progress=progress)


def extract_features(plan: FitPlan, config: FitConfig, extract: Extract, *, progress: bool = False,
                     images: Iterable | None = None, total: int | None = None) -> Extracted:
    """Step 1: the plan's IR over its images (or over `images`, one shard of them), in input order."""
    return extract(plan.model, plan.spec, plan.images if images is None else images, device=config.device,
                   batch=config.batch, progress=progress, total=plan.total if images is None else total,
                   desc=plan.desc)


def concat_extracted(parts: list[Extracted]) -> Extracted:
    """Shards' features in shard order, as one pass over all the images would have given them."""
    if not parts:
        raise OvdocError("no feature shards to merge")
    offsets = np.cumsum([0] + [len(p.features) + len(p.skipped) for p in parts[:-1]])
    skipped = [(int(pos + off), name)
               for p, off in zip(parts, offsets, strict=True) for pos, name in p.skipped]
    return Extracted(np.concatenate([p.features for p in parts]), parts[0].device,
                     parts[0].inference_precision, skipped)


def fit_features(plan: FitPlan, extracted: Extracted, out_dir: str | Path, config: FitConfig, *,
                 core: ov.Core | None = None, sources: list[str] | None = None,
                 progress: bool = False) -> dict:
    """Steps 2-4: fit the head on the extracted features, calibrate its threshold, write the bundle."""
    head, threshold = fit_head(plan, extracted, config, progress=progress)
    return write_fitted(plan, extracted, head, threshold, out_dir, config, core=core, sources=sources)


def fit_head(plan: FitPlan, extracted: Extracted, config: FitConfig, *,
             progress: bool = False) -> tuple[Head, dict]:
    """Steps 2-3: the head's index / bank from the features, and its threshold record."""
    if extracted.skipped and plan.report is not None:  # files the workers could not decode: as if skipped
        from ovdoc.runtime.datasets import drop_unreadable

        drop_unreadable(plan.report, extracted.skipped)
    head = head_class(config.mode).fit(plan, extracted.features, config, progress=progress)
    return head, head.calibrate(plan, extracted.features, config)


def write_fitted(plan: FitPlan, extracted: Extracted, head: Head, threshold: dict, out_dir: str | Path,
                 config: FitConfig, *, core: ov.Core | None = None, sources: list[str] | None = None) -> dict:
    """Step 4: the manifest (common head + the head's section + where it was built) and the files."""
    manifest = manifest_head(plan.model, plan.spec, plan.xml, config.mode, sources, plan.report) \
        | head.manifest_section(plan, extracted.features, threshold) \
        | {"built_with": built_with(core or ov.Core(), extracted, config.batch)}

    def write_files(folder: Path) -> None:
        write_model(plan.model, plan.spec, plan.xml, folder, copy=plan.copy_model)
        head.save(folder)

    return write_bundle(out_dir, manifest, write_files)


def append_bundle(bundle: str | Path, normal_sources: list[str], out_dir: str | Path | None = None, *,
                  progress: bool = True, cache_dir: str | Path | None = None) -> dict:
    """Add normal images to a bundle without refitting from scratch: their features (same model, same
    preprocessing) join the index and the threshold is recalibrated at the bundle's --fpr, the previous
    images and each new folder / video held out as groups. Writes `out_dir` (default: the bundle itself)
    atomically; the old bundle stays as it was until the new one is complete. Heads whose vectors can be
    re-indexed only (global)."""
    from ovdoc.runtime.datasets import open_unlabelled
    from ovdoc.runtime.features import FeatureExtractor, default_cache_dir
    from ovdoc.runtime.ir import read_ir
    from ovdoc.runtime.preprocess import PreprocessSpec

    manifest, folder = load_manifest(bundle)
    head_cls = head_of(manifest, folder)
    if not head_cls.reindexable:
        raise OvdocError(f"--append adds to global bundles; {folder} is a {manifest['mode']} bundle: "
                         f"refit it with all normal images (`ovdoc fit --mode {manifest['mode']}`)")
    head_cls.check_append(manifest, folder)
    stream = open_unlabelled(normal_sources, skip_unreadable=True)
    core = ov.Core()
    model, spec, xml = read_ir(folder / manifest["model"]["file"], core)
    spec = PreprocessSpec.from_dict(manifest["preprocess"])
    built = manifest["built_with"]
    cache_dir = cache_dir if cache_dir is not None else default_cache_dir()
    # the new features in the precision the bundle's own were computed in
    extractor = FeatureExtractor(model, spec, device=built["device"], batch=int(built.get("batch", 8)),
                                 core=core, cache_dir=cache_dir,
                                 inference_precision=recorded_precision(manifest))
    new = extractor.extract(stream.images, progress=progress, total=stream.total, desc="new normal features")
    if len(new) == 0:
        raise OvdocError("no images could be read from the new normal sources")
    head, threshold, n_total = head_cls.append(folder, manifest, new, stream.report.get("keys", []))
    old_threshold = manifest["threshold"]
    appended = list(manifest.get("appended", [])) + [{
        "sources": stream.names, "n_images": int(len(new)), "previous_threshold": old_threshold["value"],
        "time": now()}]
    new_manifest = manifest | {
        "n_images": n_total,
        "scorer": head.scorer.describe(),
        "threshold": threshold,
        "normal_sources": list(manifest.get("normal_sources", [])) + stream.names,
        "appended": appended,
        "calibration": calibration_record(threshold),
    }

    def write_files(tmp: Path) -> None:
        for name in manifest["files"]:  # the model files, byte for byte (the index is rewritten below)
            if name in (manifest["model"]["file"], manifest["model"]["weights"]):
                import shutil

                shutil.copy2(folder / name, tmp / name)
        head.save(tmp)

    target = Path(out_dir) if out_dir is not None else folder
    return write_bundle(target, new_manifest, write_files) | {"added": int(len(new))}
