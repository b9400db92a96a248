"""The global head: one feature vector per image, scored by kNN distance (FAISS), LOF or mean-cosine.

Its fit indexes every normal image's vector and calibrates the threshold on held-out groups (or
leave-one-out scores) of those same vectors; its files are the scorer's (index.faiss, reference.npy or
mean.npy). The scorers themselves live in `ovdoc.runtime.scoring`.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from ovdoc.errors import OvdocError
from ovdoc.runtime.calibration import calibrate, calibration_record
from ovdoc.runtime.fit_groups import group_keys, near_groups, thumbnailed
from ovdoc.runtime.heads.base import FitInputs, FitPlan, FitSettings, Scored, sized
from ovdoc.runtime.ir import export_source_of
from ovdoc.runtime.scoring import LOO_METHODS, ScorerSpec, load_scorer, make_scorer


@dataclasses.dataclass(frozen=True)
class GlobalOptions:
    """The global head's own fit options: which scorer, its neighbours, index and distance."""

    scorer: str = "knn"  # knn | lof | mean-cosine (ovdoc.runtime.scoring.SCORERS)
    k: int = 5
    index: str = "auto"  # auto | flat | hnsw (knn only)
    # None: the model's default: a shipped backbone's `global_metric` (sqrt-cosine), any other IR euclidean
    metric: str | None = None


def defaults_for(xml: str | Path) -> tuple[str | None, str | None]:
    """(metric, resize) global mode uses on `xml` when the user gives neither: the shipped backbone's
    validated choice, or (None, None) for any other model (euclidean, the IR's own resize)."""
    from ovdoc.irmodels.backbones import shipped_backbone_at

    b = shipped_backbone_at(xml)
    return (b.global_metric, b.global_resize) if b is not None else (None, None)


class GlobalHead:
    """A fitted or loaded scorer over one feature vector per image."""

    mode: ClassVar[str] = "global"
    has_maps: ClassVar[bool] = False
    reindexable: ClassVar[bool] = True
    reads_files: ClassVar[bool] = True
    cli_options: ClassVar[tuple[str, ...]] = ()
    map_baseline = 0.0

    def __init__(self, scorer: Any, options: GlobalOptions | None = None) -> None:
        self.scorer = scorer
        self.options_ = options or GlobalOptions()

    # --- options -------------------------------------------------------------------------------------
    @classmethod
    def options(cls, current: Any, given: dict) -> GlobalOptions:
        base = current if isinstance(current, GlobalOptions) else GlobalOptions()
        known = {f.name for f in dataclasses.fields(GlobalOptions)}
        changes = {key: value for key, value in given.items() if key in known}
        return dataclasses.replace(base, **changes) if changes else base

    @classmethod
    def options_from_cli(cls, values: dict) -> dict:
        if values["index"] == "ivf":
            raise OvdocError("--index ivf is for patch bundles (--mode patch); global bundles use flat or "
                             "hnsw")
        return {key: values[key] for key in ("scorer", "k", "index", "metric")}

    # --- fitting -------------------------------------------------------------------------------------
    @classmethod
    def plan(cls, inputs: FitInputs, config: FitSettings, *, extract, progress: bool) -> FitPlan:
        if config.calibration in ("cross-fit", "held-out"):
            raise OvdocError(f"--calibration {config.calibration} is for --mode patch (a global bundle holds "
                             "groups out: auto, or loo)")
        metric, resize = defaults_for(inputs.xml)
        o = config.head
        metric = metric if o.scorer == "knn" and o.metric is None else None
        o = dataclasses.replace(o, metric=o.metric or metric or "euclidean")
        make_scorer(o.scorer, k=o.k, index=o.index, metric=o.metric)  # a bad choice fails before extraction
        thumbs: list[np.ndarray] = []
        images = inputs.images
        if config.near_duplicates == "auto" and config.calibration == "auto":
            images = thumbnailed(images, thumbs)
        # an IR whose size or intensity normalisation was changed is saved with its new preprocessing; else
        # copied byte for byte
        spec = sized(inputs.spec, config, resize or inputs.spec.resize)
        changed = (config.size is not None or config.resize is not None or spec.resize != inputs.spec.resize
                   or spec.intensity != inputs.spec.intensity)
        # an IR from `ovdoc train` names its model.keras: a bundle fitted from it alone exports as well
        export_source = inputs.export_source
        if not export_source and inputs.out_dir is not None:
            export_source = export_source_of(inputs.model, inputs.xml, inputs.out_dir)
        return FitPlan(model=inputs.model, spec=spec,
                       xml=inputs.xml, images=images, total=inputs.total, desc="normal features",
                       copy_model=not changed,
                       report=inputs.report,
                       state={"thumbs": thumbs, "export_source": export_source, "options": o,
                              "backbone_defaults": {**({"metric": o.metric} if metric else {}),
                                                    **({"resize": spec.resize}
                                                       if config.resize is None and resize else {})}})

    @classmethod
    def fit(cls, plan: FitPlan, features: np.ndarray, config: FitSettings, *, progress: bool) -> GlobalHead:
        if len(features) == 0:
            raise OvdocError("no images could be read from the normal sources")
        o = plan.state["options"]  # the metric resolved for this model (`defaults_for`)
        return cls(make_scorer(o.scorer, k=o.k, index=o.index, metric=o.metric).fit(features), o)

    def calibrate(self, plan: FitPlan, features: np.ndarray, config: FitSettings) -> dict:
        o = self.options_
        keys = group_keys(plan.report, config.groups)
        return calibrate(
            self.scorer.loo_scores(), features, config.fpr, keys=keys, k=o.k,
            build=lambda x: make_scorer(o.scorer, k=o.k, index="flat", metric=o.metric).fit(x),
            loo_method=LOO_METHODS[self.scorer.kind], mode=config.calibration,
            near=near_groups(keys, plan.state.get("thumbs", [])), estimator=config.estimator,
        )

    def manifest_section(self, plan: FitPlan, features: np.ndarray, threshold: dict) -> dict:
        export = plan.state.get("export_source")
        chosen = plan.state.get("backbone_defaults")
        extra = {"export_source": export} if export else {}
        extra |= {"backbone_defaults": chosen} if chosen else {}
        return extra | {
            "feature_dim": int(features.shape[1]),
            "n_images": int(len(features)),
            "scorer": self.scorer.describe(),
            "k": self.options_.k,
            "threshold": threshold,
            "calibration": calibration_record(threshold),
        }

    def save(self, folder: Path) -> list[str]:
        return self.scorer.save(folder)

    # --- appending (ovdoc fit --append) --------------------------------------------------------------
    @classmethod
    def check_append(cls, manifest: dict, folder: Path) -> None:
        if manifest["scorer"].get("kind") == "mean-cosine":
            raise OvdocError(f"--append needs the normal vectors, and {folder} (mean-cosine) keeps only "
                             "their mean: refit it with all normal images (`ovdoc fit --scorer mean-cosine`)")

    @classmethod
    def append(cls, folder: Path, manifest: dict, new: np.ndarray,
               keys: list) -> tuple[GlobalHead, dict, int]:
        """The bundle's vectors plus `new`, re-indexed; the threshold recalibrated at the bundle's FPR with
        the previous images as one group and `keys` (one per new image) for the rest."""
        old = bundle_vectors(folder, manifest)
        feats = np.concatenate([old, new]).astype(np.float32)
        spec_info = ScorerSpec.from_manifest(manifest["scorer"])
        scorer = spec_info.build().fit(feats)
        keys = [("file", "(the bundle's previous images)")] * len(old) + list(keys)
        threshold = calibrate(
            scorer.loo_scores(), feats, float(manifest["threshold"]["fpr"]),
            keys=keys if len(keys) == len(feats) else None, k=spec_info.k,
            build=lambda x: dataclasses.replace(spec_info, index="flat").build().fit(x),
            loo_method=LOO_METHODS[spec_info.kind],
        )
        return cls(scorer), threshold, int(len(feats))

    # --- loading -------------------------------------------------------------------------------------
    @classmethod
    def check_manifest(cls, manifest: dict, folder: Path) -> None:
        return None

    @classmethod
    def check_outputs(cls, manifest: dict, dim: int, folder: Path) -> None:
        if dim != int(manifest["feature_dim"]):
            raise OvdocError(
                f"bundle {folder}: the IR outputs {dim}-d features, the index holds "
                f"{manifest['feature_dim']}-d; rebuild it with `ovdoc fit`"
            )

    @classmethod
    def load(cls, folder: Path, manifest: dict) -> GlobalHead:
        return cls(load_scorer(folder, manifest["scorer"]))

    # --- scoring -------------------------------------------------------------------------------------
    def score_outputs(self, outputs: np.ndarray) -> Scored:
        return Scored(scores=np.asarray(self.scorer.score_samples(outputs), dtype=np.float32), maps=None)

    @classmethod
    def fit_summary(cls, manifest: dict) -> tuple[dict, list[str]]:
        chosen = manifest.get("backbone_defaults")
        if not chosen:
            return {}, []
        whole = " (the whole frame)" if chosen.get("resize") == "stretch" else ""
        what = {"metric": f"--metric {chosen.get('metric')}",
                "resize": f"--resize {chosen.get('resize')}{whole}"}
        given = " and ".join(what[key] for key in ("metric", "resize") if key in chosen)
        return {"backbone_defaults": chosen}, [
            f"{given}: the shipped backbone's global defaults, chosen on validation over four data sets "
            "(docs/fit.md); give the option to choose otherwise"]


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
