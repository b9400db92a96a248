"""Patch-level detection (PatchCore-style): local features, a greedy k-center memory bank, anomaly maps.

Three parts, all runtime side (OpenVINO, FAISS, numpy; no TensorFlow):

* `build_patch_model` turns a backbone IR into a *patch-feature IR* with OpenVINO's graph API: it taps
  intermediate maps by layer name (Keras names such as ``block_6_expand_relu`` survive as node friendly
  names), averages each over a small neighbourhood (AvgPool k x k, stride 1: a patch sees its neighbours,
  as in PatchCore), upsamples the deeper maps to the shallowest grid, concatenates and reduces the channels
  to `dim` with a MatMul: by default the principal axes of the normal patches themselves (PCA, fitted by
  `ovdoc fit` on a few normal images; keeps what varies between normal patches, which a random matrix
  spreads thin), or a fixed seeded Gaussian projection. Output ``[n, h, w, d]``: per frame the runtime
  only searches.
* `greedy_coreset` picks the memory bank: greedy k-center (each pick = the candidate farthest from the bank
  so far), which keeps rare normal patches that random sampling drops.
* `PatchScorer` holds the bank in a FAISS index (exact, or an inverted-file index once the bank is large,
  so a frame's few hundred searches stay in the millisecond range); a patch's score is the distance to its
  nearest normal patch, an image's score a robust maximum of its map (see `aggregate`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import openvino as ov

from ovdoc.errors import OvdocError, first_line
from ovdoc.irmodels.backbones import UNRECORDED_TAPS

# Chosen on the magnetic-tile validation split (benchmarks/accuracy.py, magnetic-tile, --mode patch): the
# backbone's stride-8 + stride-16 maps. As a config value it means "the backbone's stride-8 and stride-16
# taps": an IR that records its taps (rt_info ovdoc/backbone) is tapped there (`model_layers`); any other
# IR by the default backbone's names (ovdoc.irmodels.backbones, the one place layer names live).
DEFAULT_LAYERS = UNRECORDED_TAPS
AGGREGATES = ("max", "topk", "smooth_max")
# Gaussian smoothing of patch-score maps, in grid cells (8 px of model input at stride 8): the same for
# the smooth_max image score and for anomaly maps, so an image's score is the maximum of its map. 4 cells
# (32 px at the default 128x160 input) chosen on the magnetic-tile validation split (seeds 0-2, the
# current bank; benchmarks/magnetic_tile_patch_sweep.py): pooled pixel AUROC 0.903 at 3, 0.908 at 4,
# 0.910 at 6; heavier smoothing blurs small defects (blowholes) away, so 6's +0.002 was not taken.
MAP_SIGMA_CELLS = 4.0
# Where exactly (the hottest point, the centre of the event's box): the peak of a lightly smoothed grid.
# The area map's heavier smoothing spreads small defects out and moves their peak; on 40 defect tiles the
# peak landed on the mask for 31 at 1 cell, 28 at 2, 23 at 3 (tests/test_patch.py).
PEAK_SIGMA_CELLS = 1.0
# Per-position normalisation of patch scores: image borders and corners (zero padding, tile edges) have
# large nearest-neighbour distances even on normal images; dividing by / standardising with the typical
# normal distance at each grid position keeps them from hiding real defects (measured: see accuracy.py).
NORMALISATIONS = ("none", "z", "ratio")
REDUCTIONS = ("pca", "project", "none")
INDEXES = ("auto", "flat", "ivf")
# banks at least this large get an inverted-file index (exact search below it is fast enough)
IVF_MIN_BANK = 8192


@dataclasses.dataclass(frozen=True)
class PatchConfig:
    """How patch features are built, banked and aggregated; recorded in the bundle's manifest."""

    layers: tuple[str, ...] = DEFAULT_LAYERS
    # AvgPool kernel (odd); 1 = no aggregation. Inherited from PatchCore's 3x3, never varied here: not
    # chosen on the magnetic-tile protocol (docs/patch-defaults.md)
    neighbourhood: int = 3
    dim: int = 64  # reduced feature size; PCA-64 scored as all 576 channels on validation (0.956 both)
    reduce: str = "pca"  # pca (fitted on normal patches), project (seeded random matrix) or none
    pca_images: int = 64  # normal (bank) images whose patches fit the PCA
    seed: int = 0  # projection matrix, coreset start and calibration split
    # bank size: an int (patches) or a fraction (0..1] of the candidates. 32768 chosen on the magnetic-tile
    # validation split: 4096 lost 0.029 image AUROC against every patch (k-center keeps the rare patches
    # but thins the common ones, so normal patches sit far from their nearest centre), 32768 is within
    # 0.006 of it at 8.7 MB
    coreset: int | float = 32768
    max_candidates: int = 200_000  # patches the coreset chooses from (random per-image subsample above)
    projection_dim: int = 32  # random projection used for the coreset's distance computations only
    aggregate: str = "topk"
    # patches averaged by aggregate="topk" (10 of 320 at 128x160). Inherited from the first, superseded ad
    # hoc sweep (192x224 input, 4,096-patch bank: accuracy-magnetic-tile-patch-sweep.md), not re-chosen on
    # the rerunnable protocol (magnetic_tile_patch_sweep.py) that chose the other defaults
    topk: int = 10
    calib_fraction: float = 0.2  # normal images held out of the bank to calibrate the threshold
    normalise: str = "ratio"  # per-position normalisation (NORMALISATIONS), from half the held-out images
    index: str = "auto"  # FAISS index: flat (exact), ivf, auto (ivf from IVF_MIN_BANK patches)
    nprobe: int = 8  # ivf: lists searched per patch (8 of 256 by default: exact AUROC at 1/7 the time)

    def __post_init__(self) -> None:
        if not self.layers:
            raise OvdocError("patch mode needs at least one layer")
        object.__setattr__(self, "layers", tuple(self.layers))
        if self.neighbourhood < 1 or self.neighbourhood % 2 == 0:
            raise OvdocError(f"--neighbourhood must be an odd number >= 1, got {self.neighbourhood}")
        if self.reduce not in REDUCTIONS:
            raise OvdocError(f"unknown reduction {self.reduce!r}: use one of {', '.join(REDUCTIONS)}")
        if self.dim < 1:
            raise OvdocError(f"--dim must be at least 1, got {self.dim}")
        if self.pca_images < 1:
            raise OvdocError(f"PCA needs at least 1 image, got {self.pca_images}")
        if self.index not in INDEXES:
            raise OvdocError(f"unknown index {self.index!r}: use one of {', '.join(INDEXES)}")
        if self.nprobe < 1:
            raise OvdocError(f"--nprobe must be at least 1, got {self.nprobe}")
        if self.aggregate not in AGGREGATES:
            raise OvdocError(f"unknown aggregation {self.aggregate!r}: use one of {', '.join(AGGREGATES)}")
        if self.topk < 1:
            raise OvdocError(f"--topk must be at least 1, got {self.topk}")
        if isinstance(self.coreset, float) and not 0.0 < self.coreset <= 1.0:
            raise OvdocError(f"--coreset as a fraction must be in (0, 1], got {self.coreset}")
        if isinstance(self.coreset, int) and self.coreset < 1:
            raise OvdocError(f"--coreset must be at least 1 patch, got {self.coreset}")
        if self.normalise not in NORMALISATIONS:
            raise OvdocError(
                f"unknown normalisation {self.normalise!r}: use one of {', '.join(NORMALISATIONS)}"
            )
        if not 0.0 < self.calib_fraction < 1.0:
            raise OvdocError(f"calibration fraction must be in (0, 1), got {self.calib_fraction}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self) | {"layers": list(self.layers)}

    @classmethod
    def from_dict(cls, data: dict) -> PatchConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: (tuple(v) if k == "layers" else v) for k, v in data.items() if k in known})


def parse_coreset(text: str) -> int | float:
    """`--coreset 4096` (patches) or `--coreset 0.1` / `10%` (fraction of the candidate patches)."""
    text = str(text).strip()
    try:
        if text.endswith("%"):
            return float(text[:-1]) / 100.0
        if "." in text:
            return float(text)
        return int(text)
    except ValueError:
        raise OvdocError(
            f"--coreset: expected a patch count (4096) or a fraction (0.1 or 10%), got {text!r}"
        ) from None


# --- the patch-feature graph ----------------------------------------------------------------------
def find_layer(model: ov.Model, layer: str) -> ov.Output:
    """The output of the node for Keras layer `layer`: exact friendly name, else the last node of its scope.

    IRs converted so that Keras names survive carry them as friendly names; TF-style scoped names
    (``model/block_6_expand_relu/Relu6``) are matched on their path components, last node wins.
    """
    exact = None
    scoped = None
    for op in model.get_ordered_ops():
        if op.get_type_name() in ("Constant", "Result"):
            continue
        name = op.get_friendly_name()
        if name == layer:
            exact = op
        elif layer in name.split("/") or any(
            layer in t.split("/") for o in op.outputs() for t in o.get_names()
        ):
            scoped = op
    node = exact or scoped
    if node is None:
        raise OvdocError(
            f"the model has no layer named {layer!r} (patch mode taps layers by their Keras names, e.g. "
            f"{', '.join(DEFAULT_LAYERS)}); use an IR from `ovdoc convert`/`ovdoc train` or the shipped "
            "imagenet backbone"
        )
    return node.output(0)


def model_layers(model: ov.Model, layers: tuple[str, ...]) -> tuple[str, ...]:
    """The layers to tap: the IR's recorded stride-8/stride-16 taps when `layers` is the default."""
    from ovdoc.runtime.ir import backbone_info

    info = backbone_info(model) if tuple(layers) == DEFAULT_LAYERS else None
    taps = info["taps"] if info else {}
    return (taps["stride8"], taps["stride16"]) if "stride8" in taps and "stride16" in taps else tuple(layers)


def _tap_shapes(model: ov.Model, layers: tuple[str, ...], height: int, width: int) -> list[list[int]]:
    probe = model.clone()
    probe.reshape({probe.inputs[0]: ov.PartialShape([1, height, width, 3])})
    shapes = []
    for layer in layers:
        shape = find_layer(probe, layer).get_partial_shape()
        if not shape.is_static or shape.rank.get_length() != 4:
            raise OvdocError(f"layer {layer!r} does not output a 4-D feature map (shape {shape})")
        shapes.append([d.get_length() for d in shape])
    return shapes


def tap_layouts(model: ov.Model, layers: tuple[str, ...], height: int, width: int) -> list[tuple[str, int]]:
    """(layout, channels) of each tapped map: the channel axis is the one that does not follow input size."""
    a = _tap_shapes(model, layers, height, width)
    b = _tap_shapes(model, layers, height + 64, width + 32)
    out = []
    for layer, sa, sb in zip(layers, a, b, strict=True):
        if sa[1] == sb[1] and sa[3] != sb[3]:
            out.append(("NCHW", sa[1]))
        elif sa[3] == sb[3] and sa[1] != sb[1]:
            out.append(("NHWC", sa[3]))
        else:
            raise OvdocError(f"cannot tell the channel axis of layer {layer!r} (shapes {sa}, {sb})")
    return out


def projection_matrix(channels: int, dim: int, seed: int) -> np.ndarray:
    """Seeded Gaussian N(0, 1/dim) matrix [channels, dim]: the same seed gives the same features."""
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((channels, dim)) / np.sqrt(dim)).astype(np.float32)


def pca_matrix(patches: np.ndarray, dim: int) -> np.ndarray:
    """[channels, dim] float32: the `dim` principal axes of `patches` ([..., channels]), largest first.

    Centring is left out of the graph on purpose: a shared offset does not change nearest-neighbour
    distances. Each axis's sign is fixed (largest entry positive), so the same patches give the same IR.
    """
    x = np.asarray(patches, np.float64).reshape(-1, np.shape(patches)[-1])
    if len(x) < 2:
        raise OvdocError("PCA needs at least 2 patches")
    x = x - x.mean(axis=0)
    _, vectors = np.linalg.eigh(x.T @ x / len(x))
    axes = vectors[:, ::-1][:, : min(dim, x.shape[1])]
    signs = np.sign(axes[np.abs(axes).argmax(axis=0), np.arange(axes.shape[1])])
    return (axes * np.where(signs == 0, 1.0, signs)).astype(np.float32)


def build_patch_model(
    backbone: ov.Model, height: int, width: int, config: PatchConfig, matrix: np.ndarray | None = None
) -> tuple[ov.Model, dict]:
    """Backbone IR -> patch-feature IR ``[n, h, w, d]`` (input ``[n, height, width, 3]``) and its record.

    `matrix` [channels, dim] reduces the channels (reduce="pca": fitted by the caller; without it the
    IR outputs every channel, which is what the PCA is fitted on). reduce="project" builds its own.
    """
    import openvino.opset13 as ops

    layouts = tap_layouts(backbone, config.layers, height, width)
    model = backbone.clone()
    model.reshape({model.inputs[0]: ov.PartialShape([-1, height, width, 3])})
    maps = []
    for layer, (layout, _) in zip(config.layers, layouts, strict=True):
        x = find_layer(model, layer)
        if layout == "NHWC":
            x = ops.transpose(x, ops.constant(np.array([0, 3, 1, 2], np.int64))).output(0)
        if config.neighbourhood > 1:
            p = config.neighbourhood // 2
            x = ops.avg_pool(x, [1, 1], [p, p], [p, p], [config.neighbourhood] * 2, exclude_pad=True).output(
                0
            )
        maps.append(x)
    grids = [tuple(int(d.get_length()) for d in m.get_partial_shape()[2:]) for m in maps]
    h, w = max(grids, key=lambda g: g[0] * g[1])
    resized = []
    for x, grid in zip(maps, grids, strict=True):
        if grid != (h, w):
            x = ops.interpolate(
                x,
                ops.constant(np.array([h, w], np.int64)),
                "linear",
                "sizes",
                axes=ops.constant(np.array([2, 3], np.int64)),
                coordinate_transformation_mode="half_pixel",
            ).output(0)
        resized.append(x)
    x = ops.concat(resized, 1) if len(resized) > 1 else resized[0]
    x = ops.transpose(x, ops.constant(np.array([0, 2, 3, 1], np.int64)))
    channels = sum(c for _, c in layouts)
    dim = channels
    if matrix is None and config.reduce == "project" and config.dim < channels:
        matrix = projection_matrix(channels, config.dim, config.seed)
    if matrix is not None:
        if matrix.shape[0] != channels:
            raise OvdocError(
                f"reduction matrix is for {matrix.shape[0]} channels, the layers give {channels}"
            )
        x = ops.matmul(x, ops.constant(np.ascontiguousarray(matrix, np.float32)), False, False)
        dim = int(matrix.shape[1])
    result = ops.result(x)
    patch = ov.Model([result], model.get_parameters(), "ovdoc-patch")
    from ovdoc.runtime.ir import name_ports

    name_ports(patch)
    record = {
        "layers": list(config.layers),
        "layer_channels": [c for _, c in layouts],
        "grid": [h, w],
        "dim": dim,
        "channels": channels,
        "stride": [height / h, width / w],
        "reduce": config.reduce if matrix is not None else "none",
    }
    return patch, record


# --- memory bank ----------------------------------------------------------------------------------
def greedy_coreset(
    x: np.ndarray, n: int, *, projection_dim: int = 32, seed: int = 0, progress: bool = False
) -> np.ndarray:
    """Indices of `n` rows of `x` chosen by greedy k-center (farthest-point) selection, in pick order.

    Distances are computed in a `projection_dim` random projection (PatchCore's speed-up: the order of
    picks barely changes, the cost drops d/projection_dim-fold). Start: a seeded random row.
    One BLAS matrix-vector product per pick: a triangle-inequality-pruned variant (same picks) was tried
    and measured 3-4x slower on a quiet machine (2026-12-07, 952 tiles: bank 40 s vs 10 s), its per-pick
    gathers costing more than the dense product they save.
    """
    x = np.asarray(x, np.float32)
    m = len(x)
    if n >= m:
        return np.arange(m)
    if projection_dim and projection_dim < x.shape[1]:
        z = x @ projection_matrix(x.shape[1], projection_dim, seed + 1)
    else:
        z = x
    z = np.ascontiguousarray(z, np.float32)
    sq = np.einsum("ij,ij->i", z, z)
    start = int(np.random.default_rng(seed).integers(m))
    picks = np.empty(n, np.int64)
    picks[0] = start
    best = np.maximum(sq - 2.0 * (z @ z[start]) + sq[start], 0.0)
    best[start] = -1.0
    from ovdoc.log import progress_bar

    bar = progress_bar(total=n, desc="memory bank (greedy k-center)", unit="patch", enabled=progress)
    shown = 0
    for i in range(1, n):
        j = int(np.argmax(best))
        picks[i] = j
        d = sq - 2.0 * (z @ z[j]) + sq[j]
        np.minimum(best, d, out=best)
        best[j] = -1.0
        if i % 1024 == 0:  # the bar's own bookkeeping per pick would cost more than a pick
            bar.update(i - shown)
            shown = i
    bar.update(n - shown)
    bar.close()
    return picks


MIN_SPLIT_GROUPS = 4  # fewer groups than this: hold out single images, as without groups


def bank_split(
    n_images: int, config: PatchConfig, groups: Sequence[str] | None = None
) -> tuple[np.random.Generator, np.ndarray, np.ndarray]:
    """(rng, held-out images, bank images in seeded order) for `n_images` normal images.

    The held-out `calib_fraction` never enters the bank or the PCA: half of it sets the per-position
    normalisation, half the threshold, so no image is scored against its own patches. With `groups`
    (one key per image: a part, a folder; at least MIN_SPLIT_GROUPS of them) whole groups are held out,
    so no held-out image has another shot of its part in the bank (which set thresholds that flagged
    19 % of new magnetic tiles at a 1 % target). The PCA fits on the first `pca_images` of the bank
    order; `rng` goes on to subsample candidate patches.
    """
    rng = np.random.default_rng(config.seed)
    order = rng.permutation(n_images)
    n_cal = min(n_images - 1, max(1, int(round(config.calib_fraction * n_images))))
    if groups is not None and len(groups) == n_images and len(set(groups)) >= MIN_SPLIT_GROUPS:
        keys = np.asarray([str(g) for g in groups])
        names = np.unique(keys)
        held: list[np.ndarray] = []
        taken = 0
        for name in names[rng.permutation(len(names))]:
            if taken >= n_cal:
                break
            members = order[keys[order] == name]  # in the seeded order
            if taken + len(members) > n_images - 1:
                continue
            held.append(members)
            taken += len(members)
        cal = np.concatenate(held)
        in_cal = np.zeros(n_images, bool)
        in_cal[cal] = True
        return rng, cal, order[~in_cal[order]]
    return rng, order[:n_cal], order[n_cal:]


def coreset_size(config: PatchConfig, candidates: int) -> int:
    if isinstance(config.coreset, float):
        return max(1, min(candidates, int(round(config.coreset * candidates))))
    return max(1, min(candidates, int(config.coreset)))


# --- scoring --------------------------------------------------------------------------------------
def gaussian_smooth(maps: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur of each [h, w] map (OpenCV), sigma in map cells."""
    import cv2

    if sigma <= 0:
        return maps
    out = np.empty_like(maps)
    for i, m in enumerate(maps):
        out[i] = cv2.GaussianBlur(m, (0, 0), sigmaX=sigma, sigmaY=sigma, borderType=cv2.BORDER_REFLECT)
    return out


def aggregate(maps: np.ndarray, method: str, topk: int = 10) -> np.ndarray:
    """Image score from patch-score maps [n, h, w]: a robust maximum.

    max: the hottest patch; topk: mean of the `topk` hottest patches (one noisy patch cannot flag an
    image alone); smooth_max: the maximum after a Gaussian blur of sigma 1 cell.
    """
    n = len(maps)
    flat = maps.reshape(n, -1)
    if method == "max":
        return flat.max(axis=1).astype(np.float32)
    if method == "topk":
        k = min(topk, flat.shape[1])
        return np.partition(flat, -k, axis=1)[:, -k:].mean(axis=1).astype(np.float32)
    if method == "smooth_max":
        return gaussian_smooth(maps.astype(np.float32), MAP_SIGMA_CELLS).reshape(n, -1).max(axis=1)
    raise OvdocError(f"unknown aggregation {method!r}: use one of {', '.join(AGGREGATES)}")


class PatchScorer:
    """Memory bank of normal patch features in a FAISS index; nearest-patch distance per patch."""

    kind = "patch"

    def __init__(
        self,
        grid: tuple[int, int],
        dim: int,
        *,
        aggregate: str = "topk",
        topk: int = 10,
        normalise: str = "none",
        index: str = "flat",
        nprobe: int = 8,
    ) -> None:
        self.grid = (int(grid[0]), int(grid[1]))
        self.index = index
        self.nprobe = int(nprobe)
        self.dim = int(dim)
        self.aggregate = aggregate
        self.topk = int(topk)
        self.normalise = normalise
        self.index_ = None
        self.position_: np.ndarray | None = None  # [2, h, w]: typical normal distance (centre, spread)

    def fit_position(self, normal_maps: np.ndarray) -> PatchScorer:
        """Per-position statistics of raw maps of normal images that are NOT in the bank."""
        raw = np.asarray(normal_maps, np.float32)
        mu = raw.mean(axis=0)
        sd = raw.std(axis=0) if len(raw) > 1 else np.zeros_like(mu)
        floor = max(float(np.median(sd)), 1e-6) * 0.1  # a position that never varied must not explode
        self.position_ = np.stack([mu, np.maximum(sd, floor)]).astype(np.float32)
        return self

    @property
    def map_baseline(self) -> float:
        """Where a typical normal patch sits on this scorer's scale: ratio-normalised scores at 1, z-scores
        at 0, raw distances at the median normal distance when it was measured (else 0)."""
        if self.normalise == "ratio":
            return 1.0
        if self.normalise == "z" or self.position_ is None:
            return 0.0
        return float(np.median(self.position_[0]))

    def normalised(self, raw_maps: np.ndarray) -> np.ndarray:
        if self.normalise == "none" or self.position_ is None:
            return raw_maps
        mu, sd = self.position_
        if self.normalise == "z":
            return ((raw_maps - mu) / sd).astype(np.float32)
        return (raw_maps / np.maximum(mu, 1e-6)).astype(np.float32)

    def fit(self, bank: np.ndarray) -> PatchScorer:
        import faiss

        bank = np.ascontiguousarray(bank, np.float32)
        if bank.ndim != 2 or bank.shape[1] != self.dim:
            raise OvdocError(f"memory bank must be [n, {self.dim}], got {bank.shape}")
        if self.index == "ivf" or (self.index == "auto" and len(bank) >= IVF_MIN_BANK):
            # about 128 patches per list, 1..1024 lists, and >= 39 training patches per list (FAISS's minimum)
            nlist = int(2 ** np.clip(np.round(np.log2(max(len(bank), 1) / 128)), 0, 10))
            nlist = max(1, min(nlist, len(bank) // 39))
            index = faiss.IndexIVFFlat(faiss.IndexFlatL2(self.dim), self.dim, nlist)
            index.cp.seed = 0  # k-means start fixed: the same bank gives the same index
            index.train(bank)
            index.add(bank)
            self.nprobe = index.nprobe = min(self.nprobe, nlist)  # the manifest records what is searched
            self.index = "ivf"
        else:
            index = faiss.IndexFlatL2(self.dim)
            index.add(bank)
            self.index = "flat"
        self.index_ = index
        return self

    def with_bank(self, bank: np.ndarray) -> PatchScorer:
        """A scorer like this one (index kind, aggregation, per-position statistics) over another bank."""
        other = PatchScorer(self.grid, self.dim, aggregate=self.aggregate, topk=self.topk,
                            normalise=self.normalise, index=self.index, nprobe=self.nprobe)
        other.position_ = self.position_
        return other.fit(bank)

    def index_bytes(self) -> int:
        """Size of the serialised FAISS index (the bank plus, for ivf, its lists and centroids)."""
        import faiss

        return int(faiss.serialize_index(self.index_).nbytes)

    @property
    def n_vectors(self) -> int:
        return int(self.index_.ntotal) if self.index_ is not None else 0

    def patch_maps(self, outputs: np.ndarray) -> np.ndarray:
        """[n, h, w] patch scores from raw model outputs (normalised per position if the bundle says so)."""
        return self.normalised(self.raw_maps(outputs))

    def raw_maps(self, outputs: np.ndarray) -> np.ndarray:
        """[n, h, w] distance of each patch to its nearest normal patch, from raw model outputs."""
        h, w = self.grid
        feats = np.ascontiguousarray(np.asarray(outputs, np.float32).reshape(-1, self.dim))
        n = len(feats) // (h * w)
        if n * h * w != len(feats):
            raise OvdocError(f"model outputs do not match the bundle's {h}x{w}x{self.dim} patch grid")
        if n == 0:
            return np.zeros((0, h, w), np.float32)
        d2, _ = self.index_.search(feats, 1)
        return np.sqrt(np.maximum(d2[:, 0], 0.0)).reshape(n, h, w).astype(np.float32)

    def image_scores(self, maps: np.ndarray) -> np.ndarray:
        return aggregate(maps, self.aggregate, self.topk)

    def describe(self) -> dict:
        return {
            "kind": "patch",
            "k": 1,
            "aggregate": self.aggregate,
            "topk": self.topk,
            "normalise": self.normalise,
            "index": self.index,
            **({"nlist": int(self.index_.nlist), "nprobe": self.nprobe} if self.index == "ivf" else {}),
            "metric": "euclidean",
            "n_vectors": self.n_vectors,
            "index_file": "index.faiss",
        }

    def save(self, folder: Path) -> list[str]:
        import faiss

        faiss.write_index(self.index_, str(folder / "index.faiss"))
        if self.position_ is None:
            return ["index.faiss"]
        np.save(folder / "position.npy", self.position_, allow_pickle=False)
        return ["index.faiss", "position.npy"]

    @classmethod
    def load(cls, folder: Path, info: dict, patch: dict) -> PatchScorer:
        import faiss

        try:
            index = faiss.read_index(str(folder / info.get("index_file", "index.faiss")))
        except Exception as exc:
            raise OvdocError(f"cannot read the FAISS index in {folder}: {first_line(exc, 200)}") from exc
        if int(index.d) != int(patch["dim"]):
            raise OvdocError(
                f"bundle {folder}: the index holds {index.d}-d patches, the manifest says {patch['dim']}-d; "
                "rebuild it with `ovdoc fit --mode patch`"
            )
        if int(index.ntotal) != int(info.get("n_vectors", index.ntotal)):
            raise OvdocError(
                f"bundle {folder}: the index holds {index.ntotal} patches, the manifest says "
                f"{info['n_vectors']}; rebuild it with `ovdoc fit --mode patch`"
            )
        kind = info.get("index", "flat")
        is_ivf = isinstance(index, faiss.IndexIVF)
        if kind not in ("flat", "ivf") or is_ivf != (kind == "ivf"):
            raise OvdocError(
                f"bundle {folder}: the manifest says a {kind!r} index, the file holds "
                f"{'an inverted-file' if is_ivf else 'an exact'} one; rebuild it with "
                "`ovdoc fit --mode patch`"
            )
        scorer = cls(
            tuple(patch["grid"]),
            int(patch["dim"]),
            aggregate=info.get("aggregate", "topk"),
            topk=int(info.get("topk", 10)),
            normalise=info.get("normalise", "none"),
            index=kind,
            nprobe=int(info.get("nprobe", 8)),
        )
        if is_ivf:
            index.nprobe = min(scorer.nprobe, int(index.nlist))
        scorer.index_ = index
        if scorer.normalise != "none":
            try:
                position = np.load(folder / "position.npy", allow_pickle=False)
            except (OSError, ValueError) as exc:
                raise OvdocError(f"bundle {folder}: cannot read position.npy ({exc}); rebuild it") from exc
            if position.shape != (2, *scorer.grid):
                raise OvdocError(
                    f"bundle {folder}: position.npy is {position.shape}, the patch grid is {scorer.grid}; "
                    "rebuild it with `ovdoc fit --mode patch`"
                )
            scorer.position_ = position.astype(np.float32)
        return scorer
