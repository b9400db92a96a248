"""Threshold calibration: pick the score above which a normal image is flagged at most `fpr` of the time.

Calibrated on the normal images themselves, never scoring an image against itself: by held-out groups
(whole folders, or blocks of consecutive frames with their neighbours) when `ovdoc fit` knows where the
images came from, else leave-one-out (each scored against all the others).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from ovdoc.errors import OvdocError


def threshold_at_fpr(loo_scores: np.ndarray, fpr: float, *, method: str) -> dict:
    """The (1 - fpr) quantile of leave-one-out scores, with a record of how it was obtained."""
    if not 0.0 < fpr < 1.0:
        raise OvdocError(f"--fpr must be between 0 and 1 (exclusive), got {fpr}")
    scores = np.asarray(loo_scores, dtype=np.float64)
    if scores.size == 0:
        raise OvdocError("no scores to calibrate a threshold on")
    finite = scores[np.isfinite(scores)]
    if finite.size == 0:
        raise OvdocError("calibration scores are all infinite (duplicated normal images?)")
    value = float(np.quantile(finite, 1.0 - fpr))
    record = {
        "value": value,
        "method": method,
        "fpr": fpr,
        "quantile": 1.0 - fpr,
        "n": int(scores.size),
        "calibration_fpr": float(np.mean(scores > value)),
        "score_min": float(finite.min()),
        "score_median": float(np.median(finite)),
        "score_max": float(finite.max()),
    }
    if scores.size * fpr < 1.0:
        record["note"] = (
            f"fewer than 1/fpr={1 / fpr:.0f} normal images: the threshold is close to the largest score"
        )
    return record


# --- held-out groups: thresholds that hold on new normal data ------------------------------------------
# Leave-one-out assumes the normal images are independent. Frames of a video, or a few shots of each
# part, are not: a left-out frame still has its near-twins in the index, its score is far lower than a new
# frame's, and the threshold flags far more than --fpr of new normal data (49 % of new faces at
# --fpr 0.01 when 10 photos per person were fitted). So whole groups are held out instead.
MAX_FOLDS = 10
MIN_BLOCK = 10  # frames per block of a sequence; fewer and there is no room for the excluded neighbours


@dataclasses.dataclass(frozen=True)
class Fold:
    """One calibration round: score `held` against an index of everything outside `excluded`."""

    held: np.ndarray  # indices held out and scored
    excluded: np.ndarray  # held plus its sequence neighbours: kept out of this round's index


@dataclasses.dataclass(frozen=True)
class Grouping:
    """How the normal images were split for calibration, and why (recorded in the manifest)."""

    kind: str  # "folders" | "blocks"
    folds: list[Fold]
    description: str


def make_grouping(keys: list[tuple[str, str]], *, k: int, max_folds: int = MAX_FOLDS) -> Grouping | None:
    """Calibration folds from where each normal image came from, in input order.

    keys[i] = (kind, group): kind "file" with group = the image's folder, or "frame" with group = the
    video (or in-memory set) it is a frame of. Image files in two or more folders: each folder is a group
    (folders dealt round-robin into at most `max_folds` folds). Otherwise (one folder, videos, arrays):
    each sequence is cut into blocks of consecutive images, and each block after the first is scored
    against what came *before* it only, less the half block just before it (adjacent frames are
    near-duplicates). Past-only, because a bundle scores frames recorded after the ones it was fitted
    on: a block with frames on both sides in the index measures interpolation, which is easier (on the
    two halves of vtest.avi it gave a threshold flagging 33 % of the second half at --fpr 0.05;
    past-only, 16 %; leave-one-out, 98 %).
    None when there is too little to hold out (the caller falls back to leave-one-out).
    """
    n = len(keys)
    folders = [g for kind, g in keys if kind == "file"]
    distinct = sorted(set(folders))
    if len(folders) == n and len(distinct) >= 2:
        fold_of = {g: i % max_folds for i, g in enumerate(distinct)}
        ids = np.array([fold_of[g] for _, g in keys])
        folds = [Fold(np.flatnonzero(ids == f), np.flatnonzero(ids == f)) for f in sorted(set(ids.tolist()))]
        folds = [f for f in folds if n - len(f.excluded) >= k + 1]
        if len(folds) < 2:
            return None
        return Grouping("folders", folds, f"{len(distinct)} folders held out whole, in {len(folds)} folds")
    # sequences: runs of the same group, in order
    runs: list[np.ndarray] = []
    start = 0
    for i in range(1, n + 1):
        if i == n or keys[i][1] != keys[start][1]:
            runs.append(np.arange(start, i))
            start = i
    folds = []
    blocks_total = 0
    for run in runs:
        m = len(run)
        n_blocks = min(max_folds, m // MIN_BLOCK)
        if n_blocks < 3:
            continue
        edges = np.linspace(0, m, n_blocks + 1).round().astype(int)
        gap = max(k, int(round(0.5 * m / n_blocks)))
        for a, b in zip(edges[1:-1], edges[2:], strict=True):  # block 0 has no past to be scored against
            held = run[a:b]
            excluded = run[max(0, a - gap) :]  # this block, its near past and its whole future
            if n - len(excluded) >= k + 1:
                folds.append(Fold(held, excluded))
                blocks_total += 1
    if len(folds) < 2:
        return None
    covered = sum(len(f.held) for f in folds)
    if covered < n // 2:  # most images sit in runs too short to block: not representative
        return None
    return Grouping("blocks", folds, f"{blocks_total} blocks of consecutive images, each scored against the "
                    "images before it less the half block just before it")


def heldout_scores(features: np.ndarray, grouping: Grouping, build) -> tuple[np.ndarray, np.ndarray]:
    """(scores, fold id) of every held-out image, each scored by `build(train_features)` fitted without
    its fold's excluded images. `build` returns a fitted scorer with `score_samples`."""
    scores, fold_ids = [], []
    n = len(features)
    for i, fold in enumerate(grouping.folds):
        keep = np.ones(n, bool)
        keep[fold.excluded] = False
        scorer = build(features[keep])
        scores.append(np.asarray(scorer.score_samples(features[fold.held]), np.float64))
        fold_ids.append(np.full(len(fold.held), i))
    return np.concatenate(scores), np.concatenate(fold_ids)


def threshold_held_out(
    scores: np.ndarray, fold_ids: np.ndarray, fpr: float, *, method: str, loo_scores: np.ndarray | None = None
) -> dict:
    """Threshold at the (1 - fpr) quantile of held-out scores, with the FPR that holds on new groups.

    `heldout_fpr` is cross-validated: each fold is judged by a threshold set on the other folds' scores,
    so it says how often *unseen* normal groups would be flagged. `loo_fpr_on_heldout` is what the
    leave-one-out threshold would have flagged of the held-out images (how optimistic it was).
    """
    record = threshold_at_fpr(scores, fpr, method=method)
    flagged = 0
    for f in np.unique(fold_ids):
        others = scores[fold_ids != f]
        cut = float(np.quantile(others, 1.0 - fpr))
        flagged += int(np.sum(scores[fold_ids == f] > cut))
    measured = flagged / len(scores)
    record["heldout_fpr"] = round(measured, 5)
    record["target_fpr"] = fpr
    record["n_heldout"] = int(len(scores))
    record["folds"] = int(len(np.unique(fold_ids)))
    if loo_scores is not None:
        loo = threshold_at_fpr(loo_scores, fpr, method="leave-one-out")["value"]
        record["loo_threshold"] = loo
        record["loo_fpr_on_heldout"] = round(float(np.mean(scores > loo)), 5)
    sigma = float(np.sqrt(fpr * (1 - fpr) / len(scores)))
    if measured > 2 * fpr + 3 * sigma or measured < 0.5 * fpr - 3 * sigma:
        record["warning"] = (
            f"normal images held out by group were flagged at {measured:.1%} against the target "
            f"{fpr:.1%}: the groups differ from one another, so the threshold may not hold on new "
            "normal data; fit on more varied normal images, or check it with `ovdoc eval`"
        )
    return record


CALIBRATIONS = ("auto", "loo")


def calibrate(
    loo_scores: np.ndarray,
    features: np.ndarray,
    fpr: float,
    *,
    keys: list[tuple[str, str]] | None,
    k: int,
    build,
    loo_method: str = "leave-one-out",
    mode: str = "auto",
) -> dict:
    """The threshold record for global mode: held-out groups where `keys` allow (mode "auto"), else
    leave-one-out. `build(features)` fits a fresh scorer like the bundle's (used once per fold)."""
    from ovdoc.log import get_logger

    grouping = None
    if mode == "auto" and keys is not None and len(keys) == len(features):
        grouping = make_grouping(keys, k=k)
    if grouping is None:
        record = threshold_at_fpr(loo_scores, fpr, method=loo_method)
        if mode == "auto":
            record["groups_note"] = (
                "no groups to hold out (images in memory, or too few per folder/sequence): leave-one-out, "
                "which is optimistic when normal images are near-duplicates"
            )
        return record
    scores, fold_ids = heldout_scores(features, grouping, build)
    record = threshold_held_out(
        scores, fold_ids, fpr, method=f"held-out {grouping.kind}: {grouping.description}",
        loo_scores=loo_scores,
    )
    record["groups"] = grouping.kind
    if "warning" in record:
        get_logger(__name__).warning("warning: " + record["warning"])
    return record
