"""The patch head (PatchCore-style): a score per patch from a memory bank of normal patches, and a map.

Its fit builds a patch-feature IR from the backbone (`ovdoc.runtime.patch.build_patch_model`, with a PCA
fitted on a few bank images), keeps a held-out share of the normal images (whole groups) out of the bank,
picks the bank by greedy k-center, sets a per-position normalisation on half of the held-out images and
the threshold on the other half. Its files are index.faiss (the bank) and position.npy; its manifest
section is "patch". It also owns the map helpers (smoothing, the peak, frame geometry).
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from ovdoc.errors import OvdocError
from ovdoc.runtime.calibration import calibration_record, split_groups
from ovdoc.runtime.fit_groups import group_keys, near_groups
from ovdoc.runtime.heads.base import FitInputs, FitPlan, FitSettings, Scored, sized
from ovdoc.runtime.patch import (
    MAP_SIGMA_CELLS,
    PEAK_SIGMA_CELLS,
    PatchConfig,
    PatchScorer,
    bank_split,
    build_patch_model,
    coreset_size,
    gaussian_smooth,
    greedy_coreset,
    model_layers,
    pca_matrix,
)
from ovdoc.runtime.preprocess import PreprocessSpec

# cross-fit calibration: folds of whole groups the bank images are scored out of. 5 and 10 folds set
# thresholds within noise of each other on the tile-disjoint validation (FPR 0.42 vs 0.63 %, seeds 0-5).
CROSS_FIT_FOLDS = 5

# default patch-mode input area (pixels): about 160x128. Chosen on the magnetic-tile validation split
# (benchmarks/magnetic_tile_patch_sweep.py, seeds 0-2, PCA-64, 32768-patch bank): 128x160 image AUROC
# 0.960 / pooled pixel 0.908 against 0.950 / 0.918 at 96x128 (cracks 0.965 vs 0.908), 0.956 / 0.905 at
# 160x192, 0.949 / 0.902 at 192x224. (With the earlier 4096-patch bank 96x128 won.)
PATCH_AREA = 160 * 128


def default_patch_size(aspects: list[float], area: int = PATCH_AREA) -> tuple[int, int]:
    """(width, height), multiples of 32, of about `area` pixels at the images' median width/height ratio."""
    aspect = float(np.median(aspects)) if aspects else 1.0
    aspect = min(max(aspect, 0.25), 4.0)
    height = max(32, int(round(np.sqrt(area / aspect) / 32.0)) * 32)
    width = max(32, int(round(height * aspect / 32.0)) * 32)
    return width, height


class PatchHead:
    """A fitted or loaded memory bank of normal patches, with the geometry to put its maps on a frame."""

    mode: ClassVar[str] = "patch"
    has_maps: ClassVar[bool] = True
    reindexable: ClassVar[bool] = False
    reads_files: ClassVar[bool] = False  # the input size comes from every image's shape: decoded here
    cli_options: ClassVar[tuple[str, ...]] = ("coreset", "seed", "layers", "dim", "reduce", "nprobe",
                                              "neighbourhood", "aggregate", "topk")

    def __init__(self, scorer: PatchScorer, manifest: dict | None = None) -> None:
        self.scorer = scorer
        manifest = manifest or {}
        self.spec = PreprocessSpec.from_dict(manifest["preprocess"]) if "preprocess" in manifest else None
        self.sigma = float((manifest.get("patch") or {}).get("map_sigma_cells", 1.0))
        self.fitted_: dict = {}

    # --- options -------------------------------------------------------------------------------------
    @classmethod
    def options(cls, current: Any, given: dict) -> PatchConfig:
        scorer = given.get("scorer")
        if scorer is not None and scorer != "knn":
            raise OvdocError(f"patch mode scores patches by nearest-neighbour distance: no --scorer {scorer}")
        if given.get("patch") is not None:
            return given["patch"]
        return current if isinstance(current, PatchConfig) else PatchConfig()

    @classmethod
    def options_from_cli(cls, values: dict) -> dict:
        from ovdoc.runtime.patch import parse_coreset

        if values["index"] == "hnsw":
            raise OvdocError("patch mode's bank index is flat or ivf (--index hnsw is for global bundles)")
        layers = values.get("layers")
        own = {"layers": tuple(v.strip() for v in layers.split(",") if v.strip()) if layers else None}
        own |= {key: values.get(key) for key in cls.cli_options if key not in ("layers", "coreset")}
        own["index"] = values["index"]
        if values.get("coreset") is not None:
            own["coreset"] = parse_coreset(values["coreset"])
        return {"scorer": values["scorer"],
                "patch": PatchConfig(**{key: v for key, v in own.items() if v is not None})}

    # --- fitting -------------------------------------------------------------------------------------
    @classmethod
    def plan(cls, inputs: FitInputs, config: FitSettings, *, extract, progress: bool) -> FitPlan:
        """Sizes, groups and the bank / held-out split from the decoded images; the PCA; the patch IR."""
        from ovdoc.log import progress_bar
        from ovdoc.runtime.ir import annotate

        if config.calibration == "loo":
            raise OvdocError("--calibration loo is for global mode: a patch bundle holds whole images out of "
                             "its bank (auto, held-out or cross-fit)")
        model, xml = inputs.model, inputs.xml
        pc = dataclasses.replace(config.head, layers=model_layers(model, config.head.layers))
        images = list(progress_bar(inputs.images, total=inputs.total, desc="reading normal images",
                                   enabled=progress))
        if len(images) < 2:
            raise OvdocError(f"patch mode needs at least 2 normal images (bank + calibration), got "
                             f"{len(images)}")
        size = config.size or default_patch_size([im.shape[1] / im.shape[0] for im in images])
        spec = sized(dataclasses.replace(inputs.spec, width=size[0], height=size[1]), config, "stretch")
        keys = group_keys(inputs.report, config.groups)
        labels, unit = patch_groups(images, keys, config)
        # frames of a sequence: a fold's neighbours in time would stay in its bank and its scores read low,
        # so `auto` sets the threshold on the held-out stretches only
        sequence = bool(keys) and all(kind == "frame" for kind, _ in keys)
        rng, first, rest = bank_split(len(images), pc)
        order = np.concatenate([first, rest])  # seeded order; with one image per group, the same split
        cal, bank_order = split_groups(labels, order, len(first))  # every shot of a part on one side
        if len(bank_order) == 0 or len(np.unique(labels[cal])) < 2:  # too few groups: each image alone
            labels, unit = np.arange(len(images)), "images"
            cal, bank_order = first, rest
        matrix = None
        if pc.reduce == "pca":
            full_model, full_record = build_patch_model(model, spec.height, spec.width, pc)
            fitting = [images[i] for i in bank_order[: pc.pca_images]]
            full = extract(full_model, spec, fitting, device=config.device, batch=config.batch,
                           progress=progress, total=len(fitting), desc="patches for the PCA").features
            matrix = pca_matrix(full.reshape(-1, full_record["channels"]), pc.dim)
            del full
        patch_model, record = build_patch_model(model, spec.height, spec.width, pc, matrix)
        annotate(patch_model, spec, {"patch_of": Path(xml).name})
        state = {"pc": pc, "labels": labels, "unit": unit, "sequence": sequence, "rng": rng, "cal": cal,
                 "bank_imgs": np.sort(bank_order), "pca": matrix is not None, "record": record}
        return FitPlan(model=patch_model, spec=spec, xml=xml, images=images, total=len(images),
                       desc="normal patches", copy_model=False, report=inputs.report, state=state)

    @classmethod
    def fit(cls, plan: FitPlan, features: np.ndarray, config: FitSettings, *, progress: bool) -> PatchHead:
        """The bank (greedy k-center over the bank images' patches) and the per-position normalisation."""
        st = plan.state
        pc, record, labels, unit, cal = st["pc"], st["record"], st["labels"], st["unit"], st["cal"]
        h, w = record["grid"]
        dim = record["dim"]
        feats = features.reshape(len(features), h * w, dim)
        n_all = len(st["bank_imgs"]) * h * w
        t0 = time.perf_counter()
        scorer, bank, n_candidates = _bank(feats[st["bank_imgs"]], pc, st["rng"], (h, w), pc.normalise,
                                           progress=progress)
        m = len(bank.vectors)
        coreset_s = time.perf_counter() - t0
        n_cal = len(cal)
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
        head = cls(scorer)
        head.fitted_ = {"cal": cal, "method": method, "feats": feats, "bank": bank, "coreset": {
            "method": "greedy k-center", "size": int(m), "candidates": int(n_candidates),
            "patches_total": int(n_all), "bank_images": int(len(st["bank_imgs"])),
            "projection_dim": pc.projection_dim, "seconds": round(coreset_s, 2)}}
        return head

    def calibrate(self, plan: FitPlan, features: np.ndarray, config: FitSettings) -> dict:
        """Image threshold on the held-out images' scores; map threshold on their smoothed maps' maxima.
        Cross-fit (`auto` unless the images are frames of a sequence) scores every bank image too, against
        the bank less its fold's patches: the held-out images alone are a handful of parts, and a 1 %
        quantile of those swung the flag rate on new tiles from 0 to 8 % between fits."""
        labels, unit = plan.state["labels"], plan.state["unit"]
        cal, feats = self.fitted_["cal"], self.fitted_["feats"]
        cal_maps = self.scorer.patch_maps(feats[cal])
        scores, keys = self.scorer.image_scores(cal_maps), labels[cal]
        smoothed_max = _smoothed_max(cal_maps)
        method = self.fitted_["method"]
        scores_from = "held-out"
        if cross_fits(config.calibration, plan.state["sequence"]):
            fold_scores, fold_max, fold_keys, folds = self._cross_fit(plan)
            if folds:
                scores, smoothed_max = np.r_[scores, fold_scores], np.r_[smoothed_max, fold_max]
                keys = np.r_[keys, fold_keys]
                scores_from = "cross-fit"
                method += (f"; cross-fit: the {len(fold_keys)} bank images scored too, each against the bank "
                           f"less its fold's patches ({folds} folds of whole {unit})")
        threshold = _group_threshold(scores, keys, config, method, unit)
        threshold["scores_from"] = scores_from
        threshold["map"] = _group_threshold(smoothed_max, keys, config, "the smoothed map's maximum",
                                            unit, full=False)
        threshold["map_value"] = threshold["map"]["value"]
        return threshold

    def _cross_fit(self, plan: FitPlan) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
        """(image scores, smoothed-map maxima, group keys, folds) of the bank images, each scored against the
        fit's own bank less the patches its fold contributed (same index and normalisation). Carved from
        the bank rather than re-selected by k-center per fold: on the tile-disjoint validation (seeds 0-5)
        the thresholds agree within noise (new-tile FPR 0.36 vs 0.42 %, TPR 19.5 vs 20.2 %) and the five
        folds cost ~1 s instead of five more k-center runs (~30-60 s)."""
        st = plan.state
        pc, labels, bank_imgs = st["pc"], st["labels"], np.asarray(st["bank_imgs"])
        groups = np.unique(labels[bank_imgs])
        folds = min(CROSS_FIT_FOLDS, len(groups))
        empty = np.zeros(0, np.float32)
        if folds < 2:
            return empty, empty, labels[bank_imgs][:0], 0
        rng = np.random.default_rng(pc.seed + 1)
        fold_of = dict(zip(groups[rng.permutation(len(groups))], np.arange(len(groups)) % folds, strict=True))
        fold = np.asarray([fold_of[g] for g in labels[bank_imgs]])
        bank, feats = self.fitted_["bank"], self.fitted_["feats"]
        out_scores, out_max, out_keys = [], [], []
        for k in range(folds):
            scorer = self.scorer.with_bank(bank.vectors[fold[bank.source] != k])
            held = bank_imgs[fold == k]
            maps = scorer.patch_maps(feats[held])
            out_scores.append(scorer.image_scores(maps))
            out_max.append(_smoothed_max(maps))
            out_keys.append(labels[held])
        return np.concatenate(out_scores), np.concatenate(out_max), np.concatenate(out_keys), folds

    def manifest_section(self, plan: FitPlan, features: np.ndarray, threshold: dict) -> dict:
        pc, record = plan.state["pc"], plan.state["record"]
        n_bank = len(plan.state["bank_imgs"])
        patch = record | {
            "projection_seed": pc.seed,
            **({"pca_images": int(min(pc.pca_images, n_bank))} if plan.state["pca"] else {}),
            "config": pc.to_dict(),
            "coreset": self.fitted_["coreset"],
            "aggregate": pc.aggregate,
            "topk": pc.topk,
            "map_sigma_cells": MAP_SIGMA_CELLS,
            "bank_bytes": self.scorer.index_bytes(),
        }
        return {
            "feature_dim": int(record["dim"]),
            "n_images": int(len(features)),
            "scorer": self.scorer.describe(),
            "k": 1,
            "threshold": threshold,
            "calibration": calibration_record(threshold),
            "patch": patch,
        }

    def save(self, folder: Path) -> list[str]:
        return self.scorer.save(folder)

    # --- loading -------------------------------------------------------------------------------------
    @classmethod
    def check_manifest(cls, manifest: dict, folder: Path) -> None:
        """A patch bundle must say how its features were built; refuse a half-written or foreign one."""
        patch = manifest.get("patch")
        try:
            grid = [int(v) for v in patch["grid"]]
            dim = int(patch["dim"])
            layers = list(patch["layers"])
            ok = (len(grid) == 2 and min(grid) > 0 and dim > 0 and layers
                  and int(manifest["feature_dim"]) == dim)
        except (KeyError, TypeError, ValueError):
            ok = False
        if not ok:
            raise OvdocError(
                f"bundle {folder}: its patch section (grid, dim, layers) is missing or inconsistent; "
                "rebuild it with `ovdoc fit --mode patch`"
            )

    @classmethod
    def check_outputs(cls, manifest: dict, dim: int, folder: Path) -> None:
        grid, depth = manifest["patch"]["grid"], int(manifest["patch"]["dim"])
        if dim != grid[0] * grid[1] * depth:
            raise OvdocError(
                f"bundle {folder}: the IR outputs {dim} values per image, the manifest's patch "
                f"grid is {grid[0]}x{grid[1]}x{depth}; rebuild it with `ovdoc fit --mode patch`"
            )

    @classmethod
    def load(cls, folder: Path, manifest: dict) -> PatchHead:
        return cls(PatchScorer.load(folder, manifest["scorer"], manifest["patch"]), manifest)

    # --- scoring and maps ----------------------------------------------------------------------------
    def score_outputs(self, outputs: np.ndarray) -> Scored:
        """Nearest-normal-patch distance per patch (one batched FAISS search) -> maps, robust-max scores."""
        maps = self.scorer.patch_maps(outputs)
        return Scored(scores=self.scorer.image_scores(maps), maps=maps)

    def patch_maps(self, outputs: np.ndarray) -> np.ndarray:
        """Raw patch-score grids [n, h, w] of model outputs."""
        return self.scorer.patch_maps(outputs)

    @property
    def map_baseline(self) -> float:
        """The scorer's level of a typical normal patch (see `Detector.map_baseline_`)."""
        return float(getattr(self.scorer, "map_baseline", 0.0))

    def smooth_map(self, map_hw: np.ndarray) -> np.ndarray:
        """Gaussian smoothing (sigma recorded in the bundle, in grid cells), relative to `map_baseline`."""
        return gaussian_smooth(np.asarray(map_hw, np.float32)[None], self.sigma)[0] - self.map_baseline

    def peak_point(self, map_hw: np.ndarray, frame_shape: tuple[int, ...]) -> tuple[int, int]:
        """(x, y) in frame pixels where the anomaly is: the peak of the grid smoothed lightly
        (PEAK_SIGMA_CELLS), which keeps small defects in place where the area map blurs them."""
        grid = gaussian_smooth(np.asarray(map_hw, np.float32)[None], PEAK_SIGMA_CELLS)[0]
        gy, gx = np.unravel_index(int(np.argmax(grid)), grid.shape)
        gh, gw = grid.shape
        x0, y0, cw, ch = self.grid_area(frame_shape)
        fh, fw = int(frame_shape[0]), int(frame_shape[1])
        x = min(fw - 1, int(x0 + (gx + 0.5) * cw / gw))
        y = min(fh - 1, int(y0 + (gy + 0.5) * ch / gh))
        return x, y

    def grid_area(self, frame_shape: tuple[int, ...]) -> tuple[int, int, int, int]:
        """(x0, y0, w, h) of the frame the patch grid covers: all of it (stretch) or the centred crop."""
        fh, fw = int(frame_shape[0]), int(frame_shape[1])
        if self.spec.resize == "stretch":
            return 0, 0, fw, fh
        aspect = self.spec.width / self.spec.height
        if fw / fh > aspect:
            cw, ch = max(1, round(fh * aspect)), fh
        else:
            cw, ch = fw, max(1, round(fw / aspect))
        return (fw - cw) // 2, (fh - ch) // 2, cw, ch

    def map_to_frame(self, map_hw: np.ndarray, frame_shape: tuple[int, ...]) -> np.ndarray:
        """A [h, w] map in model-input geometry -> float32 map of the frame's size, undoing crop/resize.

        stretch: the grid covers the whole frame; center_crop: it covers the centred crop, and the
        cropped-away margins (never scored) get the map's minimum.
        """
        import cv2

        fh, fw = int(frame_shape[0]), int(frame_shape[1])
        m = np.asarray(map_hw, np.float32)
        if self.spec.resize == "stretch":
            return cv2.resize(m, (fw, fh), interpolation=cv2.INTER_LINEAR)
        x0, y0, cw, ch = self.grid_area(frame_shape)
        out = np.full((fh, fw), float(m.min()) if m.size else 0.0, np.float32)
        out[y0 : y0 + ch, x0 : x0 + cw] = cv2.resize(m, (cw, ch), interpolation=cv2.INTER_LINEAR)
        return out

    @classmethod
    def fit_summary(cls, manifest: dict) -> tuple[dict, list[str]]:
        s, p = manifest["scorer"], manifest["patch"]
        summary = {"size": [manifest["preprocess"]["width"], manifest["preprocess"]["height"]],
                   "resize": manifest["preprocess"]["resize"], "grid": p["grid"], "dim": p["dim"],
                   "layers": p["layers"], "reduce": p.get("reduce", "project"),
                   "coreset": p["coreset"]["size"], "index": s.get("index"),
                   "aggregate": p["aggregate"], "bank_mb": round(p["bank_bytes"] / 1e6, 2)}
        line = (f"patch mode: {summary['size'][0]}x{summary['size'][1]} ({summary['resize']}) -> "
                f"{summary['grid'][0]}x{summary['grid'][1]} "
                f"patches of {summary['dim']}-d ({summary['reduce']}) from {', '.join(summary['layers'])}; "
                "bank "
                f"{summary['coreset']} patches ({summary['bank_mb']} MB, greedy k-center, {summary['index']} "
                f"index); score = {summary['aggregate']}")
        return {"mode": "patch", "patch": summary}, [line]


def patch_groups(images: list[np.ndarray], keys: list | None, config: FitSettings) -> tuple[np.ndarray, str]:
    """(group per image, what a group is): folders, near-duplicate shots in one folder, blocks of
    consecutive frames; images in memory with no record of their origin are one group each."""
    from ovdoc.runtime.calibration import sequence_groups

    if not keys or len(keys) != len(images):
        return np.arange(len(images)), "images"
    if config.near_duplicates == "auto":
        from ovdoc.runtime.near_duplicates import thumbnail

        near = near_groups(keys, [thumbnail(im) for im in images])
        if near is not None:
            return near, ("parts" if keys[0][0] == "file" else "images")
    if all(kind == "file" for kind, _ in keys):
        if len({group for _, group in keys}) == 1:  # one folder, near-duplicates off: each image alone
            return np.arange(len(images)), "images"
        # folders, or groups named by `--groups pattern:` (not folders: say so, as global mode does)
        named = not any(Path(group).is_dir() for _, group in keys)
        return sequence_groups(keys), "groups" if named else "folders"
    arrays = all(group.startswith("array:") for _, group in keys)
    return sequence_groups(keys), "blocks of images" if arrays else "stretches of video"


def cross_fits(calibration: str, sequence: bool) -> bool:
    """Whether a patch fit scores its bank images out of fold for the threshold (see `CALIBRATIONS`)."""
    return calibration == "cross-fit" or (calibration == "auto" and not sequence)


def _smoothed_max(maps: np.ndarray) -> np.ndarray:
    """Each map's maximum after the area map's smoothing: what the map threshold is set on."""
    return gaussian_smooth(maps, MAP_SIGMA_CELLS).reshape(len(maps), -1).max(axis=1)


@dataclasses.dataclass(frozen=True)
class Bank:
    """The bank's patches and, for each, which of the bank images it came from (cross-fit folds)."""

    vectors: np.ndarray  # [m, dim]
    source: np.ndarray  # [m] index into the images the bank was built from


def _bank(feats: np.ndarray, pc: PatchConfig, rng: np.random.Generator, grid: tuple[int, int],
          normalise: str, *, progress: bool = False) -> tuple[PatchScorer, Bank, int]:
    """(scorer over a greedy k-center bank, the bank, candidates) from images' patches [n, h*w, dim]:
    a random `max_candidates` of the patches, then `coreset_size` of them."""
    n, per_image, dim = feats.shape
    rows = np.arange(n * per_image)
    if len(rows) > pc.max_candidates:
        rows = np.sort(rng.choice(len(rows), pc.max_candidates, replace=False))
    candidates = feats.reshape(-1, dim)[rows]
    m = coreset_size(pc, len(candidates))
    picks = greedy_coreset(candidates, m, projection_dim=pc.projection_dim, seed=pc.seed,
                           progress=progress and m < len(candidates))
    scorer = PatchScorer(grid, dim, aggregate=pc.aggregate, topk=pc.topk, normalise=normalise,
                         index=pc.index, nprobe=pc.nprobe)
    bank = Bank(candidates[picks], rows[picks] // per_image)
    return scorer.fit(bank.vectors), bank, len(candidates)


def _group_threshold(scores: np.ndarray, labels: np.ndarray, config: FitSettings, method: str, unit: str, *,
                     full: bool = True) -> dict:
    """A patch bundle's threshold record: summary of the held-out scores, the group quantile and bound."""
    from ovdoc.runtime.calibration import group_calibration, threshold_at_fpr

    record = threshold_at_fpr(scores, config.fpr, method=method) if full else {}
    pooled = float(np.quantile(scores, 1.0 - config.fpr))
    cal = group_calibration(scores, labels, config.fpr, estimator=config.estimator, seed=config.patch.seed,
                            unit=unit)
    record.update(cal, pooled_value=pooled)  # (the few-groups pooled floor: calibration.group_calibration)
    if full:
        record["method"] = f"{method}; {record['estimator']} quantile over {cal['groups']} {unit}"
        record["calibration_fpr"] = float(np.mean(scores > record["value"]))
        from ovdoc.log import get_logger

        if "message" in cal:
            get_logger(__name__).warning("warning: " + cal["message"])
    return record
