"""Anomaly scorers over feature vectors: FAISS kNN distance (default), the original app's LOF, and the
cosine distance to the mean normal vector (the phone gate's scorer: one vector, no index).

Both follow sklearn's shape (fit / score_samples), except that here a HIGHER score means MORE anomalous,
and both can score their own training vectors leave-one-out, which is what threshold calibration needs.
Persistence is FAISS's own format or `.npy` (allow_pickle=False): nothing a user loads is a pickle.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from ovdoc.errors import OvdocError, first_line

# `--index auto`: exact search up to this many vectors, HNSW above. An exact scan reads n*d*4 bytes per
# query (6,000 x 1280-d = 31 MB): measured on a 2-core EPYC VM, 4-7 ms per frame at 6,000 vectors, more
# than the model's inference, while HNSW (M=16, efSearch=64) took 0.1-0.7 ms with scores within 0.2%
# of exact. Below ~1,000 vectors (5 MB) a scan costs about as much as a graph walk and needs no build time.
AUTO_FLAT_MAX = 1_000
INDEX_KINDS = ("auto", "flat", "hnsw")
SCORERS = ("knn", "lof", "mean-cosine")
# how each scorer scores its own training vectors (the manifest's threshold "method")
LOO_METHODS = {
    "knn": "leave-one-out",
    "lof": "leave-one-out (LOF of each training point)",
    "mean-cosine": "leave-one-out (each normal image against the mean of the others, closed form)",
}
# cosine = Euclidean distance between L2-normalised features (sqrt(2 - 2 cos)): compares the direction of
# a feature vector, not its length. On Fashion-MNIST sneaker-vs-boot it lifted an untrained 96 px backbone
# from AUC 0.789 to 0.918 and the DOC-trained 160 px product path from 0.9469 to 0.9498.
# sqrt-cosine = cosine after a signed square root of every feature (power normalisation, as in RootSIFT /
# the Hellinger kernel): a few very large pooled activations stop dominating the direction. On the shipped
# backbone's pooled features it scored CIFAR-10 one-class 0.86 against cosine's 0.84 and euclidean's 0.70,
# without cosine's loss on sneaker-vs-boot (benchmarks/results/global-defaults.md).
METRICS = ("euclidean", "cosine", "sqrt-cosine")
HNSW_M = 16
HNSW_EF_CONSTRUCTION = 100
HNSW_EF_SEARCH = 64


@runtime_checkable
class Scorer(Protocol):
    """What a bundle's scorer does: KNNScorer, LOFScorer and the patch scorer all satisfy this.

    Higher score = more anomalous; `loo_scores` scores each training vector against the others (what
    threshold calibration needs); `describe` is the manifest's "scorer" entry, which `load` reads back.
    """

    kind: str

    def fit(self, x: np.ndarray) -> Scorer: ...

    def score_samples(self, x: np.ndarray) -> np.ndarray: ...

    def loo_scores(self) -> np.ndarray: ...

    def describe(self) -> dict: ...

    def save(self, folder: Path) -> list[str]: ...

    @classmethod
    def load(cls, folder: Path, info: dict) -> Scorer: ...


@dataclass(frozen=True)
class ScorerSpec:
    """One scorer vocabulary for fit, bench and the manifest: kind {knn, lof, mean-cosine} + index {auto,
    flat, hnsw} (knn only).

    Text form `knn`, `knn:flat`, `knn:hnsw`, `lof`, `mean-cosine` (`ovdoc bench --scorers`); mean-cosine is
    cosine by definition, so its metric always reads "cosine". `flat`/`hnsw` are kept as
    explicit aliases of `knn:flat`/`knn:hnsw`. The manifest's "scorer" entry holds the same two fields
    (`kind`, `index`), so `from_manifest` reads a bundle's choice back.
    """

    kind: str = "knn"
    index: str = "auto"
    metric: str = "euclidean"
    k: int = 5

    ALIASES = {"flat": ("knn", "flat"), "hnsw": ("knn", "hnsw")}

    def __post_init__(self) -> None:
        if self.kind not in SCORERS:
            raise OvdocError(f"unknown scorer {self.kind!r}: use one of {', '.join(SCORERS)}")
        if self.index not in INDEX_KINDS:
            raise OvdocError(f"unknown index {self.index!r}: use one of {', '.join(INDEX_KINDS)}")
        if self.metric not in METRICS:
            raise OvdocError(f"unknown metric {self.metric!r}: use one of {', '.join(METRICS)}")
        if self.kind == "lof" and self.metric != "euclidean":
            raise OvdocError(f"--metric {self.metric} applies to the knn scorer only (lof is the original "
                             "baseline)")
        if self.kind == "mean-cosine":
            object.__setattr__(self, "metric", "cosine")

    @classmethod
    def parse(cls, text: str, **fields) -> ScorerSpec:
        """`knn[:INDEX]`, `lof`, or the aliases `flat`/`hnsw`; other fields (k, metric) as keywords."""
        key = text.strip().lower()
        if key in cls.ALIASES:
            kind, index = cls.ALIASES[key]
        else:
            kind, _, index = key.partition(":")
            if kind in ("lof", "mean-cosine") and index:
                raise OvdocError(f"scorer {text!r}: {kind} has no index (use {kind})")
        if kind not in SCORERS:
            names = ", ".join(["knn", *(f"knn:{i}" for i in INDEX_KINDS[1:]), "lof", "mean-cosine",
                               *cls.ALIASES])
            raise OvdocError(f"unknown scorer {text!r}: use one of {names}")
        return cls(kind=kind, index=index or "auto", **fields)

    @classmethod
    def from_manifest(cls, info: dict, **overrides) -> ScorerSpec:
        """The spec a bundle's manifest "scorer" entry describes (the index as requested at fit time)."""
        fields = {
            "kind": info.get("kind", "knn"),
            "index": info.get("index_requested", info.get("index", "auto")) if info.get("kind") == "knn"
            else "auto",
            "metric": info.get("metric", "euclidean"),
            "k": int(info.get("k", 5)),
        }
        return cls(**(fields | overrides))

    @property
    def label(self) -> str:
        """`knn:flat`, `knn:hnsw`, `knn` (auto), `lof` or `mean-cosine`: the name bench rows use."""
        if self.kind == "knn" and self.index != "auto":
            return f"knn:{self.index}"
        return self.kind

    def build(self) -> Scorer:
        if self.kind == "knn":
            return KNNScorer(k=self.k, index=self.index, metric=self.metric)
        if self.kind == "mean-cosine":
            return MeanCosineScorer()
        return LOFScorer(k=self.k)


def _as_matrix(x: np.ndarray, dim: int | None = None) -> np.ndarray:
    x = np.ascontiguousarray(np.asarray(x, dtype=np.float32))
    if x.ndim != 2:
        raise OvdocError(f"features must be a 2-D array [n, d], got shape {x.shape}")
    if dim is not None and x.shape[1] != dim:
        raise OvdocError(f"features have dimension {x.shape[1]}, the index holds {dim}-d vectors")
    if not np.isfinite(x).all():
        raise OvdocError("features contain NaN or infinity (the model produced invalid outputs)")
    return x


def metric_space(x: np.ndarray, metric: str) -> np.ndarray:
    """Features as the index holds them for `metric`: raw (euclidean), unit length (cosine), or signed
    square root then unit length (sqrt-cosine)."""
    if metric == "cosine":
        return l2_normalise(x)
    if metric == "sqrt-cosine":
        return l2_normalise(np.sign(x) * np.sqrt(np.abs(x)))
    return x


def l2_normalise(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length; an all-zero row stays zero (it has no direction to compare)."""
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return np.ascontiguousarray(x / np.where(norms > 0.0, norms, 1.0), dtype=np.float32)


def load_npy(path: Path, what: str) -> np.ndarray:
    """A stored array (never a pickle), or one line naming what could not be read."""
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise OvdocError(f"cannot read {what} in {path.parent}: {first_line(exc, 200)}") from exc


class KNNScorer:
    """Score = mean Euclidean distance to the k nearest normal vectors.

    Mean of the k distances rather than the k-th alone: it is less sensitive to a single near-duplicate
    or a single outlier in the normal set, and with k=1 both are the same. Euclidean, not squared, so
    scores scale linearly with feature distance and a threshold reads in feature units.
    With metric="cosine" the vectors are L2-normalised before they are indexed or queried, so the score
    is the mean Euclidean distance between unit vectors (0..2), same index kinds, same calibration;
    "sqrt-cosine" takes each feature's signed square root first (`metric_space`).
    """

    kind = "knn"

    def __init__(
        self,
        k: int = 5,
        index: str = "auto",
        *,
        metric: str = "euclidean",
        hnsw_m: int = HNSW_M,
        ef_construction: int = HNSW_EF_CONSTRUCTION,
        ef_search: int = HNSW_EF_SEARCH,
    ) -> None:
        if k < 1:
            raise OvdocError(f"k must be at least 1, got {k}")
        if index not in INDEX_KINDS:
            raise OvdocError(f"unknown index {index!r}: use one of {', '.join(INDEX_KINDS)}")
        if metric not in METRICS:
            raise OvdocError(f"unknown metric {metric!r}: use one of {', '.join(METRICS)}")
        self.k = k
        self.metric = metric
        self.index = index
        self.hnsw_m = hnsw_m
        self.ef_construction = ef_construction
        self.ef_search = ef_search

    def fit(self, x: np.ndarray) -> KNNScorer:
        import faiss

        x = self._prepare(_as_matrix(x))
        n, d = x.shape
        if n < self.k + 1:
            raise OvdocError(f"need at least k+1={self.k + 1} normal images to fit and calibrate, got {n}")
        kind = self.index if self.index != "auto" else ("flat" if n <= AUTO_FLAT_MAX else "hnsw")
        if kind == "flat":
            index = faiss.IndexFlatL2(d)
        else:
            index = faiss.IndexHNSWFlat(d, self.hnsw_m)
            index.hnsw.efConstruction = self.ef_construction
            index.hnsw.efSearch = self.ef_search
        index.add(x)
        self._set(index, kind)
        self._train = x
        return self

    def _prepare(self, x: np.ndarray) -> np.ndarray:
        return metric_space(x, self.metric)

    def _set(self, index, kind: str) -> None:
        self.index_ = index
        self.index_kind_ = kind
        self.n_vectors_ = int(index.ntotal)
        self.dim_ = int(index.d)

    def _search(self, x: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        d2, ids = self.index_.search(x, k)
        return np.sqrt(np.maximum(d2, 0.0)), ids

    def score_samples(self, x: np.ndarray) -> np.ndarray:
        x = self._prepare(_as_matrix(x, self.dim_))
        if len(x) == 0:
            return np.zeros(0, np.float32)
        dist, _ = self._search(x, self.k)
        return dist.mean(axis=1).astype(np.float32)

    def loo_scores(self) -> np.ndarray:
        """Each training vector scored against all the others (query k+1, drop the self match).

        Drop the entry whose id is the query's own; if a duplicate pushed it out of the k+1 results
        (ties at distance 0), drop one zero-distance entry instead, which is the same distance; if
        neither (HNSW missed it), drop the farthest. Duplicates thus still count as neighbours.
        """
        x = getattr(self, "_train", None)
        if x is None:
            raise OvdocError("leave-one-out scores need the training vectors (call fit first)")
        dist, ids = self._search(x, self.k + 1)
        keep = np.ones_like(dist, dtype=bool)
        rows = np.arange(len(x))
        own = ids == rows[:, None]
        has_own = own.any(axis=1)
        first_own = own.argmax(axis=1)
        zero = dist <= 0.0
        has_zero = zero.any(axis=1)
        first_zero = zero.argmax(axis=1)
        drop = np.where(has_own, first_own, np.where(has_zero, first_zero, self.k))
        keep[rows, drop] = False
        return dist[keep].reshape(len(x), self.k).mean(axis=1).astype(np.float32)

    def describe(self) -> dict:
        info = {
            "kind": "knn",
            "k": self.k,
            "aggregate": "mean",
            "metric": self.metric,
            "index": self.index_kind_,
            "index_requested": self.index,
            "n_vectors": self.n_vectors_,
            "index_file": "index.faiss",
        }
        if self.index_kind_ == "hnsw":
            info["hnsw"] = {
                "M": self.hnsw_m,
                "ef_construction": self.ef_construction,
                "ef_search": self.ef_search,
            }
        return info

    def save(self, folder: Path) -> list[str]:
        import faiss

        faiss.write_index(self.index_, str(folder / "index.faiss"))
        return ["index.faiss"]

    @classmethod
    def load(cls, folder: Path, info: dict) -> KNNScorer:
        import faiss

        try:
            index = faiss.read_index(str(folder / info.get("index_file", "index.faiss")))
        except Exception as exc:
            raise OvdocError(
                f"cannot read the FAISS index in {folder}: {first_line(exc, 200)}"
            ) from exc
        hnsw = info.get("hnsw", {})
        scorer = cls(
            k=int(info["k"]),
            index=info.get("index_requested", info["index"]),
            metric=info.get("metric", "euclidean"),  # bundles from before the option: euclidean
            hnsw_m=hnsw.get("M", HNSW_M),
            ef_construction=hnsw.get("ef_construction", HNSW_EF_CONSTRUCTION),
            ef_search=hnsw.get("ef_search", HNSW_EF_SEARCH),
        )
        if info["index"] == "hnsw":
            faiss.downcast_index(index).hnsw.efSearch = scorer.ef_search
        scorer._set(index, info["index"])
        return scorer


class LOFScorer:
    """The original app's scorer: sklearn LocalOutlierFactor(novelty=True), kept as a baseline.

    Score = the local outlier factor (about 1 for normal, larger for anomalies), i.e. minus sklearn's
    score_samples. Stored as the reference vectors (.npy) and refitted at load: no pickle.
    """

    kind = "lof"

    def __init__(self, k: int = 5) -> None:
        if k < 1:
            raise OvdocError(f"k must be at least 1, got {k}")
        self.k = k

    def fit(self, x: np.ndarray) -> LOFScorer:
        from sklearn.neighbors import LocalOutlierFactor

        x = _as_matrix(x)
        if len(x) < self.k + 1:
            raise OvdocError(f"need at least k+1={self.k + 1} normal images to fit LOF, got {len(x)}")
        self.lof_ = LocalOutlierFactor(n_neighbors=self.k, novelty=True).fit(x)
        self.reference_ = x
        self.dim_ = x.shape[1]
        self.n_vectors_ = len(x)
        return self

    def score_samples(self, x: np.ndarray) -> np.ndarray:
        x = _as_matrix(x, self.dim_)
        if len(x) == 0:
            return np.zeros(0, np.float32)
        return (-self.lof_.score_samples(x)).astype(np.float32)

    def loo_scores(self) -> np.ndarray:
        """LOF of each training vector among the others (sklearn excludes the point itself)."""
        return (-self.lof_.negative_outlier_factor_).astype(np.float32)

    def describe(self) -> dict:
        return {
            "kind": "lof",
            "k": self.k,
            "n_neighbors": self.k,
            "n_vectors": self.n_vectors_,
            "reference_file": "reference.npy",
            "library": "sklearn.neighbors.LocalOutlierFactor(novelty=True)",
        }

    def save(self, folder: Path) -> list[str]:
        np.save(folder / "reference.npy", self.reference_, allow_pickle=False)
        return ["reference.npy"]

    @classmethod
    def load(cls, folder: Path, info: dict) -> LOFScorer:
        ref = load_npy(folder / info.get("reference_file", "reference.npy"), "reference vectors")
        return cls(k=int(info["k"])).fit(ref)


class MeanCosineScorer:
    """Score = 1 - cos(x, m), m = the mean of the L2-normalised normal vectors (0 = on the normal direction).

    The second original design's gate: one vector instead of an index, so a phone scores with a dot
    product. Each vector is normalised before averaging, so no image counts more for having a larger
    feature norm. Stored as that unit mean (.npy, allow_pickle=False) and the count; the normal vectors
    themselves are not kept, which is why `ovdoc fit --append` refuses such a bundle.
    """

    kind = "mean-cosine"

    def fit(self, x: np.ndarray) -> MeanCosineScorer:
        x = l2_normalise(_as_matrix(x))
        if len(x) < 2:
            raise OvdocError(f"need at least 2 normal images to fit and calibrate mean-cosine, got {len(x)}")
        self._set(x.astype(np.float64).sum(axis=0), len(x))
        self._train = x
        return self

    def _set(self, total: np.ndarray, n: int) -> None:
        norm = float(np.linalg.norm(total))
        if norm == 0.0:
            raise OvdocError("the normal feature vectors average to zero: mean-cosine has no direction")
        self.mean_ = (total / norm).astype(np.float32)
        self.n_vectors_ = int(n)
        self.dim_ = int(total.shape[0])

    def score_samples(self, x: np.ndarray) -> np.ndarray:
        x = l2_normalise(_as_matrix(x, self.dim_))
        return (1.0 - x @ self.mean_).astype(np.float32)

    def loo_scores(self) -> np.ndarray:
        """Closed form: the others sum to S - u_i, so cos = (u_i.S - |u_i|^2) / (|u_i| |S - u_i|).

        An all-zero row (no direction) scores 1, as `score_samples` would give it.
        """
        u = getattr(self, "_train", None)
        if u is None:
            raise OvdocError("leave-one-out scores need the training vectors (call fit first)")
        u = u.astype(np.float64)
        total = u.sum(axis=0)
        dots = u @ total
        sq = np.einsum("ij,ij->i", u, u)
        rest = np.sqrt(np.maximum(total @ total - 2.0 * dots + sq, 0.0))
        denom = np.sqrt(sq) * rest
        cos = np.divide(dots - sq, denom, out=np.zeros_like(dots), where=denom > 0.0)
        return (1.0 - cos).astype(np.float32)

    def describe(self) -> dict:
        return {
            "kind": "mean-cosine",
            "k": 0,  # no neighbours: one mean vector
            "metric": "cosine",
            "normalise": "l2 before averaging and before scoring",
            "n_vectors": self.n_vectors_,
            "mean_file": "mean.npy",
        }

    def save(self, folder: Path) -> list[str]:
        np.save(folder / "mean.npy", self.mean_, allow_pickle=False)
        return ["mean.npy"]

    @classmethod
    def load(cls, folder: Path, info: dict) -> MeanCosineScorer:
        mean = load_npy(folder / info.get("mean_file", "mean.npy"), "the mean vector")
        if mean.ndim != 1 or not np.isfinite(mean).all():
            raise OvdocError(f"{folder}: mean.npy must be one finite vector, got shape {mean.shape}")
        scorer = cls()
        scorer._set(mean.astype(np.float64), int(info.get("n_vectors", 0)))
        return scorer


def make_scorer(kind: str, *, k: int = 5, index: str = "auto", metric: str = "euclidean") -> Scorer:
    """`ovdoc fit`'s --scorer/--index/--metric/--k as a scorer (see ScorerSpec)."""
    return ScorerSpec(kind=kind, index=index, metric=metric, k=k).build()


def load_scorer(folder: Path, info: dict) -> Scorer:
    kind = info.get("kind")
    if kind == "knn":
        return KNNScorer.load(folder, info)
    if kind == "lof":
        return LOFScorer.load(folder, info)
    if kind == "mean-cosine":
        return MeanCosineScorer.load(folder, info)
    raise OvdocError(f"bundle uses unknown scorer {kind!r}; this ovdoc knows {', '.join(SCORERS)}")
