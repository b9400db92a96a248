"""What every head (mode) is: the `Head` protocol and the records that pass between the steps of a fit.

A head is one way of turning a model's outputs into anomaly scores: global (one vector per image, a kNN /
LOF / mean-cosine scorer) or patch (a score per patch and a map). The detector, the bundle writer, bench,
eval and `ovdoc fit` talk to a head only through this protocol, so a new mode is one new file in this
package (plus its entry in `ovdoc.runtime.heads.HEADS`, or a `register` call).

A fit runs in four steps, and a head takes part in three: `plan` (which IR gives the features, at what
preprocessing, over which images), then *extract* (the `ovdoc.runtime.extract` seam: here, on a Ray
cluster, or in shards whose features are concatenated), then `fit` (index / bank) and `calibrate` (which
held-out scores the threshold is set on; the arithmetic is `ovdoc.runtime.calibration`'s), then the
bundle is written by `ovdoc.runtime.bundle_format`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol, runtime_checkable

import numpy as np
import openvino as ov

from ovdoc.runtime.preprocess import PreprocessSpec


@dataclass
class Scored:
    """What `Detector.score_outputs` returns for one batch (live-loop API).

    scores: [n] float32, higher = more anomalous. maps: [n, h, w] float32 patch scores in the model
    input's geometry (heads with maps), None otherwise; `Detector.map_to_frame` maps them onto a frame.
    """

    scores: np.ndarray
    maps: np.ndarray | None = None


class FitSettings(Protocol):
    """The options every head reads (`ovdoc.runtime.fitting.FitConfig`); `head` holds its own."""

    mode: str
    fpr: float
    batch: int
    device: str
    size: tuple[int, int] | None
    resize: str | None
    intensity: str | None
    calibration: str
    near_duplicates: str
    estimator: str
    groups: str
    head: Any


@dataclass
class FitInputs:
    """What a fit starts from: the IR as read (model, its preprocessing, its file), the normal images (BGR
    arrays, or paths where the extractor `reads_files`), and the record of where they came from."""

    model: ov.Model
    spec: PreprocessSpec
    xml: Path
    images: Iterable
    total: int | None = None
    report: dict | None = None
    reads_files: bool = False
    out_dir: Path | None = None
    export_source: dict | None = None  # the manifest's record of the model the IR came from (`ovdoc export`)


@dataclass
class FitPlan:
    """A head's answer to "what should be extracted": the feature IR, its preprocessing and the images in
    order (step 1's input, which may be cut into shards). `copy_model`: the bundle gets the source IR byte
    for byte (else `model` is saved with `spec` recorded). `state`: what the head keeps for its fit."""

    model: ov.Model
    spec: PreprocessSpec
    xml: Path
    images: Iterable
    total: int | None
    desc: str
    copy_model: bool
    report: dict | None = None
    state: dict = field(default_factory=dict)


@runtime_checkable
class Head(Protocol):
    """One mode: fit from features, save / load its files and manifest section, score model outputs.

    Class attributes say what the rest of ovdoc may do with it: `has_maps` (anomaly maps, regions, pixel
    metrics), `reindexable` (its vectors can be re-indexed with other scorers, quantised and re-scored by
    `ovdoc bench`, and appended to by `ovdoc fit --append`), `reads_files` (its fit can hand image files
    as paths to an extractor that decodes them), `cli_options` (the `ovdoc fit` options only it reads).
    """

    mode: ClassVar[str]
    has_maps: ClassVar[bool]
    reindexable: ClassVar[bool]
    reads_files: ClassVar[bool]
    cli_options: ClassVar[tuple[str, ...]]
    scorer: Any  # the fitted index / bank (`Detector.scorer_`)

    # --- options -------------------------------------------------------------------------------------
    @classmethod
    def options(cls, current: Any, given: dict) -> Any:
        """This head's options from the previous ones (or None) and `FitConfig`'s keyword fields."""

    @classmethod
    def options_from_cli(cls, values: dict) -> dict:
        """`ovdoc fit`'s option values -> `FitConfig` keyword fields for this head (one line on a bad one)."""

    # --- fitting: plan -> (extract) -> fit -> calibrate ----------------------------------------------
    @classmethod
    def plan(cls, inputs: FitInputs, config: FitSettings, *, extract, progress: bool) -> FitPlan:
        """What to extract (step 1); may run small extractions of its own (the patch head's PCA)."""

    @classmethod
    def fit(cls, plan: FitPlan, features: np.ndarray, config: FitSettings, *, progress: bool) -> Head:
        """Step 2: the index / bank from the extracted features."""

    def calibrate(self, plan: FitPlan, features: np.ndarray, config: FitSettings) -> dict:
        """Step 3: the threshold record, on the held-out scores this head is calibrated on."""

    def manifest_section(self, plan: FitPlan, features: np.ndarray, threshold: dict) -> dict:
        """The manifest entries this head owns (feature_dim, n_images, scorer, k, its own section, ...)."""

    def save(self, folder: Path) -> list[str]:
        """Write the head's files into a bundle folder; their names."""

    # --- loading -------------------------------------------------------------------------------------
    @classmethod
    def check_manifest(cls, manifest: dict, folder: Path) -> None:
        """Refuse a manifest whose section for this head is missing or inconsistent (one line)."""

    @classmethod
    def check_outputs(cls, manifest: dict, dim: int, folder: Path) -> None:
        """Refuse an IR whose per-image output size does not match the head's files."""

    @classmethod
    def load(cls, folder: Path, manifest: dict) -> Head:
        """The head of a verified bundle."""

    # --- scoring -------------------------------------------------------------------------------------
    def score_outputs(self, outputs: np.ndarray) -> Scored:
        """Scores (and maps, for a head with maps) of a batch of model outputs."""

    @classmethod
    def fit_summary(cls, manifest: dict) -> tuple[dict, list[str]]:
        """`ovdoc fit`'s extra JSON entries and lines for a bundle of this head."""


def sized(spec: PreprocessSpec, config: FitSettings, default_resize: str) -> PreprocessSpec:
    """`spec` at the fit's --size / --resize / --intensity (defaults: the model's size, `default_resize`,
    the model's intensity normalisation)."""
    changes = {"resize": config.resize or default_resize}
    if config.intensity is not None:
        changes["intensity"] = config.intensity
    if config.size is not None:
        changes |= {"width": config.size[0], "height": config.size[1]}
    return dataclasses.replace(spec, **changes)
