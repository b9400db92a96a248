"""Which images show the same physical thing: group keys for splits and calibration.

Several shots of one part (exposures, angles), one person's photos or one stretch of video are not
independent: scored against each other they look far more normal than a new part would. Every split
(bank vs calibration in `ovdoc fit`, train/validation/test in the benchmarks) must therefore keep a
group on one side. A group is named by a string key, one per image:

  subfolder      the image's folder (the default: one folder per part, person or session)
  pattern:REGEX  the first capture group of REGEX searched in the file name (the whole match if it has
                 none), e.g. `pattern:^(part\\d+)_` for part17_left.jpg, part17_right.jpg
  none           no groups: every image on its own (leave-one-out style calibration)

`tile_groups` is the magnetic-tile data set's physical-tile rule (shots named expK_num_N.jpg).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ovdoc.errors import OvdocError

GROUP_MODES = ("subfolder", "pattern:REGEX", "none")
GROUPS_HELP = ("subfolder (each folder one group), pattern:REGEX (the first capture group, or the whole "
               "match, of REGEX in the file name) or none")


def parse_groups(text: str) -> tuple[str, re.Pattern | None]:
    """`--groups` value -> (kind, compiled regex or None); one clear error for anything else."""
    text = (text or "").strip()
    if text in ("subfolder", "none"):
        return text, None
    if text.startswith("pattern:"):
        source = text[len("pattern:"):]
        if not source:
            raise OvdocError("--groups pattern: needs a regular expression, e.g. pattern:^(part\\d+)_")
        try:
            return "pattern", re.compile(source)
        except re.error as e:
            raise OvdocError(f"--groups {text!r}: not a regular expression ({e})") from None
    raise OvdocError(f"--groups {text!r}: use {GROUPS_HELP}")


def group_of(path: str | Path, kind: str, regex: re.Pattern | None = None) -> str | None:
    """The group key of one image file (None for `none`). A name the pattern does not match is an
    error: silently putting it in a group of its own would hide a typo in the pattern."""
    path = Path(path)
    if kind == "none":
        return None
    if kind == "subfolder":
        return str(path.parent)
    if regex is None:
        raise OvdocError("--groups pattern needs a regular expression")
    m = regex.search(path.name)
    if m is None:
        raise OvdocError(f"--groups pattern:{regex.pattern}: file name {path.name!r} does not match")
    return m.group(1) if m.groups() and m.group(1) is not None else m.group(0)


def group_keys(paths: Sequence[str | Path], spec: str) -> list[str] | None:
    """One group key per image path for a `--groups` value; None for `none`."""
    kind, regex = parse_groups(spec)
    if kind == "none":
        return None
    return [str(group_of(p, kind, regex)) for p in paths]


def regroup(keys: list[tuple[str, str]], paths: list[str | None], spec: str) -> list[tuple[str, str]] | None:
    """Calibration keys (see calibration.make_grouping) with each image file's group replaced by the
    `--groups` rule; frames of videos and arrays keep their sequence key. None for `none`."""
    kind, regex = parse_groups(spec)
    if kind == "none":
        return None
    if kind == "subfolder":
        return list(keys)
    out = []
    for (k, g), p in zip(keys, paths, strict=True):
        out.append((k, str(group_of(p, kind, regex))) if k == "file" and p is not None else (k, g))
    return out


def count_groups(keys: Sequence[str] | None) -> int | None:
    return None if keys is None else len(set(keys))


# --- magnetic tiles: one physical tile = 5-6 shots under exposures exp1..exp6 -------------------------
# The data set's num_ counter runs across all its folders (one tile's shots under different exposures can
# sit in MT_Free and in a defect folder), and two tiles are sometimes photographed alternately. Measured on
# the 1,344 images: shots of one tile are 12-60 numbers apart, different tiles mostly hundreds or more;
# "new group when an exposure repeats" splits the alternating tiles (nearest-neighbour check 90 % vs 96 %),
# so the rule is gap-only, plus a merge of nearby runs whose shots look alike (the same tile photographed
# again a few hundred numbers later, or duplicated files).
TILE_GAP = 150  # a larger jump in num_ starts a new run
TILE_LINK_WINDOW = 5000  # runs this close in num_ ...
TILE_LINK_CORR = 0.95  # ... merge when two of their shots correlate this well (exposure-normalised 24x24)
TILE_LINK_SHAPE = 0.07  # ... and have (log) height and width within 7 %
_NUM = re.compile(r"exp(\d+)_num_(\d+)", re.IGNORECASE)


def tile_number(path: str | Path) -> tuple[int, int]:
    """(exposure, num) from a magnetic-tile file name expK_num_N.jpg."""
    m = _NUM.search(Path(path).name)
    if m is None:
        raise OvdocError(f"{Path(path).name!r} is not a magnetic-tile file name (expK_num_N.jpg)")
    return int(m.group(1)), int(m.group(2))


def thumbnail(path: str | Path, side: int = 24) -> tuple[np.ndarray, tuple[int, int]]:
    """Exposure-normalised (zero mean, unit norm) grey thumbnail and the image's (h, w)."""
    import cv2

    im = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    if im is None:
        raise OvdocError(f"cannot read {path}")
    t = cv2.resize(im.astype(np.float32), (side, side), interpolation=cv2.INTER_AREA).ravel()
    t = t - t.mean()
    return t / (np.linalg.norm(t) + 1e-6), im.shape[:2]


def tile_groups(paths: Sequence[str | Path], *, gap: int = TILE_GAP, link: bool = True) -> list[str]:
    """Physical-tile key per magnetic-tile image (all folders at once: one tile's shots cross folders).

    Sorted by num_, a run ends where the next number is more than `gap` away. With `link`, two runs
    within TILE_LINK_WINDOW whose shots are near-identical after exposure normalisation are merged
    (merging two tiles only makes a group larger; splitting one would leak). Key = 'tile-<first num>'.
    """
    nums = np.array([tile_number(p)[1] for p in paths])
    order = np.argsort(nums, kind="stable")
    run = np.empty(len(paths), int)
    run[order] = np.concatenate([[0], np.cumsum(np.diff(nums[order]) > gap)]) if len(paths) else []
    parent = list(range(int(run.max()) + 1 if len(paths) else 0))

    def find(a: int) -> int:
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    if link and len(paths) > 1:
        thumbs, shapes = zip(*(thumbnail(p) for p in paths), strict=True)
        t = np.stack(thumbs)
        logs = np.log(np.array(shapes, float))
        corr = t @ t.T
        close = np.abs(nums[:, None] - nums[None, :]) <= TILE_LINK_WINDOW
        shape_ok = np.abs(logs[:, None, :] - logs[None, :, :]).max(-1) <= TILE_LINK_SHAPE
        for i, j in zip(*np.nonzero(np.triu(close & shape_ok & (corr >= TILE_LINK_CORR), 1)), strict=True):
            a, b = find(run[i]), find(run[j])
            if a != b:
                parent[max(a, b)] = min(a, b)
    roots = np.array([find(r) for r in run])
    first = {r: int(nums[roots == r].min()) for r in set(roots.tolist())}
    return [f"tile-{first[r]}" for r in roots]


def group_summary(normal_scores: np.ndarray, anomalous_scores: np.ndarray, normal_keys: Sequence[str],
                  anomalous_keys: Sequence[str], threshold: float) -> dict:
    """Part-level figures for `ovdoc eval --groups`: a part counts as flagged when any of its shots is.

    Shots of one part are not independent trials, so image-level rates overstate how many *parts* were
    seen; these count each group once (its score = its highest shot's). A group name found on both
    sides is reported: it means a part is labelled both normal and anomalous (or the rule is too coarse).
    """
    from ovdoc.runtime.evaluation import auc

    def per_group(scores: np.ndarray, keys: Sequence[str]) -> dict[str, float]:
        best: dict[str, float] = {}
        for s, k in zip(np.asarray(scores, float), keys, strict=True):
            best[k] = max(best.get(k, -np.inf), float(s))
        return best

    normal, anomalous = per_group(normal_scores, normal_keys), per_group(anomalous_scores, anomalous_keys)
    n, a = np.array(list(normal.values())), np.array(list(anomalous.values()))
    out = {
        "normal_groups": len(normal),
        "anomalous_groups": len(anomalous),
        "group_auc": auc(n, a) if len(n) and len(a) else None,
        "group_tpr_at_threshold": float(np.mean(a > threshold)) if len(a) else None,
        "group_fpr_at_threshold": float(np.mean(n > threshold)) if len(n) else None,
        "groups_on_both_sides": len(set(normal) & set(anomalous)),
    }
    return out
