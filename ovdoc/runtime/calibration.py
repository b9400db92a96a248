"""Threshold calibration: pick the score above which a normal image is flagged at most `fpr` of the time.

Calibrated on the normal images themselves, never scoring an image against itself: by held-out groups
(whole folders, or blocks of consecutive frames with their neighbours) when `ovdoc fit` knows where the
images came from, else leave-one-out (each scored against all the others). The threshold weighs every
group equally and records how far it can be trusted on new groups (`group_calibration`,
docs/calibration.md).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

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


# --- groups: the threshold and its uncertainty on *new* groups -----------------------------------------
# Images of one part (its exposures), one folder or one stretch of video are not independent: what varies
# on the line is the part. So the quantile weighs every group equally (a new part is a new group), the
# FPR that the fit reports is measured on groups left out of the threshold, and the bound comes from the
# number of groups and how much their flag rates differ, not from the number of images.
ESTIMATORS = ("bootstrap", "conformal")
BOOTSTRAP_ROUNDS = 200
CV_FOLDS = 20
SUPPORT_FACTOR = 2.0  # the target is "supported" when the 95 % bound is within this factor of it
# A group quantile from a handful of groups cannot see the tail: the magnetic-tile gate's 3 held-out tiles
# gave a patch threshold that flagged 63 % of new good tiles at a 1 % target, the pooled quantile of their
# shots 10 %. So with fewer groups than this the threshold is never below the pooled (1 - fpr) quantile of
# the held-out images (global and patch bundles, image and map thresholds alike).
FEW_GROUPS = 10
_LEVELS = np.geomspace(0.05, 2.0, 40)  # bootstrap: candidate quantile levels, as multiples of the target


def _group_index(groups) -> tuple[np.ndarray, int]:
    _, inverse = np.unique(np.asarray(groups), return_inverse=True)
    inverse = inverse.astype(np.int64).ravel()
    return inverse, (int(inverse.max()) + 1 if len(inverse) else 0)


class _Sorted:
    """Held-out scores sorted once, for many group-weighted quantiles (bootstrap rounds, levels)."""

    def __init__(self, scores: np.ndarray, gid: np.ndarray) -> None:
        order = np.argsort(scores, kind="stable")
        self.s, self.g = scores[order], gid[order]
        self.sizes = np.bincount(gid).astype(np.float64)

    def quantiles(self, levels: np.ndarray, counts: np.ndarray | None = None) -> np.ndarray:
        """Per level, the smallest score with at most that share of the group-weighted mass above it
        (every group weighs 1, or `counts[g]` when a bootstrap drew it that often)."""
        w_group = (np.ones(len(self.sizes)) if counts is None else counts.astype(np.float64)) / self.sizes
        w = w_group[self.g]
        total = w.sum()
        above = total - np.cumsum(w)  # non-increasing
        idx = np.searchsorted(-above, -(np.asarray(levels) * total) - 1e-12 * total, side="left")
        return self.s[np.minimum(idx, len(self.s) - 1)]

    def rates(self, thresholds: np.ndarray) -> np.ndarray:
        """[groups, thresholds]: each group's share of images above each threshold."""
        out = np.zeros((len(self.sizes), len(thresholds)))
        np.add.at(out, self.g, (self.s[:, None] > np.asarray(thresholds)[None]).astype(np.float64))
        return out / self.sizes[:, None]


def group_rates(scores: np.ndarray, gid: np.ndarray, threshold: float) -> np.ndarray:
    """Per group, the share of its images scoring above `threshold`."""
    sizes = np.bincount(gid)
    return np.bincount(gid, weights=(scores > threshold).astype(np.float64), minlength=len(sizes)) / sizes


def conformal_threshold(scores: np.ndarray, gid: np.ndarray, fpr: float) -> float:
    """Split-conformal quantile over groups (each group's empirical distribution pooled with equal
    weight, plus one unseen group at +inf): on a new exchangeable group the expected FPR is at most
    `fpr`. Needs about 1/fpr groups; with fewer, no finite threshold guarantees it and the largest
    held-out score is returned."""
    n_groups = int(gid.max()) + 1
    level = (fpr * (n_groups + 1) - 1) / n_groups
    if level <= 0:
        return float(np.max(scores))
    return float(_Sorted(scores, gid).quantiles(np.array([level]))[0])


def bootstrap_threshold(scores: np.ndarray, gid: np.ndarray, fpr: float, *, rounds: int = BOOTSTRAP_ROUNDS,
                        seed: int = 0) -> float:
    """Group bootstrap: find the quantile level whose threshold, set on a resample of the groups, flags
    `fpr` of the groups left out of that resample on average; apply that level to all groups. Aims at
    the target on average (the plain quantile of few groups flags more on new ones than it says)."""
    n_groups = int(gid.max()) + 1
    data = _Sorted(scores, gid)
    levels = fpr * _LEVELS
    if n_groups < 3:
        return float(data.quantiles(np.array([fpr]))[0])
    rng = np.random.default_rng(seed)
    oob, used = np.zeros(len(levels)), 0
    for _ in range(rounds):
        counts = np.bincount(rng.integers(0, n_groups, n_groups), minlength=n_groups)
        out = counts == 0
        if not out.any():
            continue
        used += 1
        oob += data.rates(data.quantiles(levels, counts))[out].mean(axis=0)
    if used == 0:
        return float(data.quantiles(np.array([fpr]))[0])
    oob /= used
    ok = np.flatnonzero(oob <= fpr)  # the out-of-bag rate rises with the level
    if len(ok) == 0:
        return float(np.max(scores))
    j = int(ok.max())
    level = levels[j]
    if j + 1 < len(levels) and oob[j + 1] > oob[j]:  # between the two levels around the target
        level += (fpr - oob[j]) / (oob[j + 1] - oob[j]) * (levels[j + 1] - levels[j])
    return float(data.quantiles(np.array([level]))[0])


def choose_threshold(scores: np.ndarray, gid: np.ndarray, fpr: float, estimator: str, *, seed: int = 0,
                     rounds: int = BOOTSTRAP_ROUNDS) -> float:
    """The estimator's threshold; with fewer than FEW_GROUPS groups, never below the pooled quantile."""
    if estimator == "conformal":
        value = conformal_threshold(scores, gid, fpr)
    elif estimator == "bootstrap":
        value = bootstrap_threshold(scores, gid, fpr, rounds=rounds, seed=seed)
    else:
        raise OvdocError(f"unknown threshold estimator {estimator!r}: use {', '.join(ESTIMATORS)}")
    if int(gid.max()) + 1 < FEW_GROUPS:
        value = max(value, float(np.quantile(scores, 1.0 - fpr)))
    return value


def cross_validated_rates(scores: np.ndarray, gid: np.ndarray, fpr: float, estimator: str, *,
                          folds: int = CV_FOLDS, seed: int = 0) -> np.ndarray:
    """Per group, its flag rate at a threshold chosen (the same way) without it: what new groups see."""
    n_groups = int(gid.max()) + 1
    fold_of = np.random.default_rng(seed).permutation(n_groups) % min(folds, n_groups)
    rates = np.zeros(n_groups)
    for f in np.unique(fold_of):
        held = fold_of == f
        keep = ~held[gid]
        sub_gid = _group_index(gid[keep])[0]
        t = choose_threshold(scores[keep], sub_gid, fpr, estimator, seed=seed, rounds=BOOTSTRAP_ROUNDS // 4)
        rates[held] = group_rates(scores, gid, t)[held]
    return rates


def effective_groups(rates: np.ndarray, sizes: np.ndarray) -> float:
    """How many independent observations the groups' flag rates are worth, counted cautiously.

    Kish's design effect: p(1-p) / Var(mean rate), the variance from the spread of the group rates. It
    lies between the number of groups (a group's images flagged all alike) and the number of images
    (independent). But a variance seen in few groups is itself a guess, and with rare flags only the
    flagged groups inform it: nine video blocks with a held-out rate of 0.6 %, the few flagged frames
    spread thinly, looked like all 321 frames independent, and the 1.9 % bound that gave was exceeded
    4x on the next stretch of the video. So the spread used is its upper 95 % confidence limit
    (chi-square) with one degree of freedom per flagged group less one: with few flagged groups it
    counts the groups, and it approaches the plain Kish count as flagged groups accumulate. With fewer
    than two flagged groups the groups are counted (a Clopper-Pearson bound over the groups is valid for
    rates in [0, 1]: a Bernoulli is the most spread-out variable with a given mean)."""
    from scipy.stats import chi2

    n_groups, n = len(rates), int(sizes.sum())
    p = float(rates.mean())
    flagged = int(np.count_nonzero(rates))
    spread = float(rates.var(ddof=1)) if n_groups > 1 else 0.0
    if p <= 0 or p >= 1 or spread <= 0 or flagged < 2:
        return float(n_groups)
    dof = min(flagged, n_groups) - 1
    spread_upper = spread * dof / float(chi2.ppf(0.05, dof))
    return float(np.clip(p * (1 - p) * n_groups / spread_upper, n_groups, n))


def upper_bound(p: float, n_eff: float, confidence: float = 0.95) -> float:
    """One-sided Clopper-Pearson upper bound on a rate seen as p over n_eff independent observations
    (as a Beta quantile, which also takes the fractional counts of an effective sample size)."""
    from scipy.stats import beta

    n_eff = max(float(n_eff), 1.0)
    k = min(max(p, 0.0), 1.0) * n_eff
    if k >= n_eff:
        return 1.0
    return float(beta.ppf(confidence, k + 1, n_eff - k))


def observations_needed(fpr: float, factor: float = SUPPORT_FACTOR) -> int:
    """Independent observations at which a rate of `fpr` has its 95 % upper bound within `factor` x."""
    n = max(10, int(np.ceil(1 / fpr)))
    while upper_bound(fpr, n) > factor * fpr and n < 10_000_000:
        n = int(np.ceil(n * 1.05))
    return n


def group_calibration(scores: np.ndarray, groups, fpr: float, *, estimator: str = "bootstrap",
                      seed: int = 0, unit: str = "groups") -> dict:
    """Threshold and its honesty record from held-out scores and the group of each.

    `value`: the estimator's quantile, never below the pooled quantile with fewer than FEW_GROUPS groups
    (`floor` says when that decided). `heldout_fpr`: mean over groups of their flag rate at a threshold
    set without them, the same way (20-fold over groups). `fpr_upper_95`: Clopper-Pearson bound on that
    rate over the effective number of groups (`effective_groups`). `message`: one line when the bound is
    more than SUPPORT_FACTOR x the target, with about how many more groups (`unit`: parts, folders, video
    blocks) would bring it there.
    """
    scores = np.asarray(scores, np.float64)
    gid, n_groups = _group_index(groups)
    value = choose_threshold(scores, gid, fpr, estimator, seed=seed)
    pooled = float(np.quantile(scores, 1.0 - fpr))
    if n_groups >= 2:
        rates = cross_validated_rates(scores, gid, fpr, estimator, seed=seed)
    else:
        rates = group_rates(scores, gid, value)
    n_eff = effective_groups(rates, np.bincount(gid))
    heldout = float(rates.mean())
    upper = upper_bound(heldout, n_eff)
    record = {
        "value": value,
        "estimator": f"group-{estimator}",
        "groups": n_groups,
        "n_effective": round(n_eff, 1),
        "target_fpr": fpr,
        "heldout_fpr": round(heldout, 5),
        "fpr_upper_95": round(upper, 5),
        "group_fpr_spread": round(float(rates.std(ddof=1)) if n_groups > 1 else 0.0, 5),
        "pooled_value": pooled,
    }
    if n_groups < FEW_GROUPS and value == pooled:
        record["floor"] = (f"the pooled quantile of the held-out images: only {n_groups} {unit}, fewer than "
                           f"{FEW_GROUPS}, so the {estimator} quantile alone is not trusted")
    other = "conformal" if estimator == "bootstrap" else "bootstrap"
    record["alternative"] = {"estimator": f"group-{other}",  # for comparison (benchmarks/calibration.py)
                             "value": choose_threshold(scores, gid, fpr, other, seed=seed)}
    record.update(support_message(fpr, heldout, upper, n_groups, n_eff, unit))
    return record


def support_message(fpr: float, rate: float, upper: float, n_groups: int, n_eff: float, unit: str) -> dict:
    """{"message", "groups_more_needed"} when the bound is over SUPPORT_FACTOR x the target, else {}."""
    if upper <= SUPPORT_FACTOR * fpr:
        return {}
    need = observations_needed(fpr)
    more = int(np.ceil(max(need - n_eff, 1.0) * n_groups / max(n_eff, 1.0)))
    return {"groups_more_needed": more, "message": (
        f"target FPR {fpr:g} is finer than the data supports ({n_groups} independent {unit}; new ones "
        f"may see up to {upper:.1%}): about {more} more good {unit} would bring the bound within "
        f"{SUPPORT_FACTOR:g}x of the target")}


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

    kind: str  # "folders" | "groups" (named by a pattern) | "near-duplicates" | "blocks"
    folds: list[Fold]
    description: str
    labels: np.ndarray | None = None  # group of every image (the independent units the bound counts)
    unit: str = "groups"  # what one group is, in words ("folders", "parts", "video blocks")


def make_grouping(keys: list[tuple[str, str]], *, k: int, max_folds: int = MAX_FOLDS,
                  near: np.ndarray | None = None) -> Grouping | None:
    """Calibration folds from where each normal image came from, in input order.

    keys[i] = (kind, group): kind "file" with group = the image's folder (or the group a `--groups`
    pattern named), or "frame" with group = the video (or in-memory set) it is a frame of. Image files in
    two or more folders or named groups: each is a group (dealt round-robin into at most `max_folds`
    folds; called folders only when they are folders). Otherwise (one folder, videos, arrays):
    each sequence is cut into blocks of consecutive images, and each block after the first is scored
    against what came *before* it only, less the half block just before it (adjacent frames are
    near-duplicates). Past-only, because a bundle scores frames recorded after the ones it was fitted
    on: a block with frames on both sides in the index measures interpolation, which is easier (on the
    two halves of vtest.avi it gave a threshold flagging 33 % of the second half at --fpr 0.05;
    past-only, 16 %; leave-one-out, 98 %).
    `near` (image files in one folder, or an in-memory image set): near-duplicate group per image
    (near_duplicates.py); each group is held out whole, like a folder, and the index keeps the rest
    (an in-memory set is a sample of independent images, not a sequence in time).
    None when there is too little to hold out (the caller falls back to leave-one-out).
    """
    n = len(keys)
    folders = [g for kind, g in keys if kind == "file"]
    distinct = sorted(set(folders))
    if len(folders) == n and len(distinct) >= 2:
        index = {g: i for i, g in enumerate(distinct)}
        labels = np.array([index[g] for _, g in keys])
        if any(Path(g).is_dir() for g in distinct):  # folders (and, `fit --append`, the previous images)
            return _whole_groups(labels, k, max_folds, "folders",
                                 f"{len(distinct)} folders held out whole", "folders")
        # groups named by `--groups pattern:...`: not folders
        return _whole_groups(labels, k, max_folds, "groups",
                             f"{len(distinct)} named groups of images held out whole", "groups")
    if near is not None and len(near) == n and len(np.unique(near)) >= 2:
        labels = np.unique(np.asarray(near), return_inverse=True)[1].ravel()
        unit = "parts" if len(folders) == n else "images"
        return _whole_groups(labels, k, max_folds, "near-duplicates",
                             f"{labels.max() + 1} groups of near-duplicate images held out whole", unit)
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
    labels = np.full(n, -1)
    for i, fold in enumerate(folds):
        labels[fold.held] = i
    return Grouping("blocks", folds, f"{blocks_total} blocks of consecutive images, each scored against the "
                    "images before it less the half block just before it", labels, _block_unit(keys))


def _block_unit(keys: list[tuple[str, str]]) -> str:
    """What one block is, in words: a stretch of a video, or a block of an in-memory image set."""
    video = all(kind == "frame" and not g.startswith("array:") for kind, g in keys)
    return "stretches of video" if video else "blocks of images"


def _whole_groups(labels: np.ndarray, k: int, max_folds: int, kind: str, description: str,
                  unit: str) -> Grouping | None:
    """Groups dealt round-robin into at most `max_folds` folds, each fold held out whole."""
    n = len(labels)
    ids = labels % max_folds
    folds = [Fold(np.flatnonzero(ids == f), np.flatnonzero(ids == f)) for f in sorted(set(ids.tolist()))]
    folds = [f for f in folds if n - len(f.excluded) >= k + 1]
    if len(folds) < 2:
        return None
    return Grouping(kind, folds, f"{description}, in {len(folds)} folds", labels, unit)


def heldout_scores(features: np.ndarray, grouping: Grouping,
                   build) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(scores, fold id, image index) of every held-out image, each scored by `build(train_features)`
    fitted without its fold's excluded images. `build` returns a fitted scorer with `score_samples`."""
    scores, fold_ids, held = [], [], []
    n = len(features)
    for i, fold in enumerate(grouping.folds):
        keep = np.ones(n, bool)
        keep[fold.excluded] = False
        scorer = build(features[keep])
        scores.append(np.asarray(scorer.score_samples(features[fold.held]), np.float64))
        fold_ids.append(np.full(len(fold.held), i))
        held.append(fold.held)
    return np.concatenate(scores), np.concatenate(fold_ids), np.concatenate(held)


def threshold_held_out(
    scores: np.ndarray, fold_ids: np.ndarray, fpr: float, *, method: str,
    loo_scores: np.ndarray | None = None, groups: np.ndarray | None = None, estimator: str = "bootstrap",
    unit: str = "groups", seed: int = 0,
) -> dict:
    """Threshold from held-out scores, every group weighing the same, with the FPR that holds on new
    groups (`group_calibration`; `groups` defaults to the folds).

    `pooled_value` is the plain (1 - fpr) quantile of the held-out images, as before this record;
    `loo_fpr_on_heldout` is what the leave-one-out threshold would have flagged of the held-out images
    (how optimistic it was).
    """
    record = threshold_at_fpr(scores, fpr, method=method)
    record["pooled_value"] = record["value"]
    groups = fold_ids if groups is None else groups
    cal = group_calibration(scores, groups, fpr, estimator=estimator, unit=unit, seed=seed)
    record.update(cal)
    record["method"] = f"{method}; {cal['estimator']} quantile over {cal['groups']} {unit}"
    record["calibration_fpr"] = float(np.mean(scores > record["value"]))
    record["n_heldout"] = int(len(scores))
    record["folds"] = int(len(np.unique(fold_ids)))
    if loo_scores is not None:
        loo = threshold_at_fpr(loo_scores, fpr, method="leave-one-out")["value"]
        record["loo_threshold"] = loo
        record["loo_fpr_on_heldout"] = round(float(np.mean(scores > loo)), 5)
    measured = record["heldout_fpr"]
    sigma = float(np.sqrt(fpr * (1 - fpr) / len(scores)))  # what independent images would allow
    if record.get("loo_fpr_on_heldout", 0.0) > 2 * fpr + 3 * sigma:
        record["optimism"] = (
            f"leave-one-out would have flagged {record['loo_fpr_on_heldout']:.1%} of the held-out {unit} "
            f"at a target of {fpr:.1%}: the normal images hold near-duplicates, so the threshold is set on "
            f"whole {unit} instead"
        )
    if measured > 2 * fpr + 3 * sigma or measured < 0.5 * fpr - 3 * sigma:
        record["warning"] = (
            f"normal images held out by group were flagged at {measured:.1%} against the target "
            f"{fpr:.1%}: the groups differ from one another, so the threshold may not hold on new "
            "normal data; fit on more varied normal images, or check it with `ovdoc eval`"
        )
    return record


# auto / loo: how a global bundle holds normal images out (groups, or leave-one-out). Patch mode: held-out
# (the images kept out of the bank only), cross-fit (those and every bank image, scored against the bank
# less its fold of whole groups), auto (cross-fit, but held-out for frames: videos and image arrays)
CALIBRATIONS = ("auto", "loo", "held-out", "cross-fit")
NEAR_DUPLICATES = ("auto", "off")


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
    near: np.ndarray | None = None,
    estimator: str = "bootstrap",
) -> dict:
    """The threshold record for global mode: held-out groups where `keys` (and, for one folder of image
    files, the near-duplicate groups `near`) allow (mode "auto"), else leave-one-out.
    `build(features)` fits a fresh scorer like the bundle's (used once per fold)."""
    from ovdoc.log import get_logger

    grouping = None
    if mode == "auto" and keys is not None and len(keys) == len(features):
        grouping = make_grouping(keys, k=k, near=near)
    if grouping is None:
        record = loo_record(loo_scores, fpr, method=loo_method)
        if mode == "auto":
            record["groups_note"] = (
                "no groups to hold out (images in memory, or too few per folder, group or sequence): "
                "leave-one-out, which is optimistic when normal images are near-duplicates"
            )
        return record
    scores, fold_ids, held = heldout_scores(features, grouping, build)
    record = threshold_held_out(
        scores, fold_ids, fpr, method=f"held-out {grouping.kind}: {grouping.description}",
        loo_scores=loo_scores, groups=grouping.labels[held], estimator=estimator, unit=grouping.unit,
    )
    record["grouping"] = grouping.kind
    log = get_logger(__name__)
    for key in ("warning", "message"):
        if key in record:
            log.warning("warning: " + record[key])
    return record


def loo_record(loo_scores: np.ndarray, fpr: float, *, method: str) -> dict:
    """Leave-one-out threshold; its bound counts every image as independent (said in the record)."""
    record = threshold_at_fpr(loo_scores, fpr, method=method)
    n = record["n"]
    upper = upper_bound(fpr, n)
    record.update({"estimator": "leave-one-out", "groups": n, "n_effective": float(n), "target_fpr": fpr,
                   "fpr_upper_95": round(upper, 5),
                   "bound_note": "every image counted as independent: optimistic for near-duplicates"})
    record.update(support_message(fpr, fpr, upper, n, float(n), "images"))
    return record


def split_groups(labels: np.ndarray, order: np.ndarray, count: int) -> tuple[np.ndarray, np.ndarray]:
    """(taken, rest) image indices: whole groups taken in the order their images first appear in
    `order` (a seeded permutation of the images) until at least `count` images are taken. With one
    image per group this is `order[:count]`, `order[count:]` exactly."""
    labels = np.asarray(labels)
    taken_groups: set = set()
    taken = 0
    for i in order:
        if taken >= count:
            break
        g = labels[i].item()
        if g not in taken_groups:
            taken_groups.add(g)
            taken += int(np.count_nonzero(labels == g))
    mask = np.isin(labels[order], list(taken_groups))
    return order[mask], order[~mask]


def sequence_groups(keys: list[tuple[str, str]], *, blocks: int = 2 * MAX_FOLDS) -> np.ndarray:
    """Group per image for one split (patch mode): the folder of each file; for frames, `blocks` runs
    of consecutive frames per sequence (at least MIN_BLOCK frames each)."""
    labels = np.zeros(len(keys), np.int64)
    names: dict = {}
    start = 0
    for i in range(1, len(keys) + 1):
        if i == len(keys) or keys[i] != keys[start]:
            kind, group = keys[start]
            if kind == "file":
                labels[start:i] = names.setdefault(keys[start], len(names))
            else:
                m = i - start
                per = max(MIN_BLOCK, int(np.ceil(m / blocks)))
                base = len(names)
                for j in range(0, m, per):
                    names[(kind, group, j)] = len(names)
                labels[start:i] = base + np.arange(m) // per
            start = i
    return labels


RECORD_KEYS = ("method", "scores_from", "estimator", "grouping", "groups", "n_effective", "target_fpr",
               "heldout_fpr", "fpr_upper_95", "group_fpr_spread", "floor", "message", "groups_more_needed",
               "bound_note", "warning", "optimism", "loo_fpr_on_heldout")


def calibration_record(threshold: dict) -> dict:
    """The manifest's and `ovdoc fit --json`'s `calibration`: how the threshold was chosen and how far it
    can be trusted on new groups (a subset of the threshold record; `map` for a patch bundle's map)."""
    record = {key: threshold[key] for key in RECORD_KEYS if key in threshold}
    record.setdefault("target_fpr", threshold.get("fpr"))
    if "map" in threshold:
        record["map"] = {key: threshold["map"][key] for key in RECORD_KEYS if key in threshold["map"]}
    return record
