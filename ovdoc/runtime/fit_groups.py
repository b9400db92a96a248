"""Which normal images belong together when a fit holds some out to calibrate (shared by every head).

Shots of one part, one folder, a block of video frames: calibration holds a whole group out, so the
threshold holds on new parts. These helpers read the groups from the input report (`open_unlabelled`)
and, for one folder of look-alike shots, from near-duplicate thumbnails.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np

from ovdoc.errors import OvdocError
from ovdoc.runtime.groups import regroup


def thumbnailed(images: Iterable, thumbs: list[np.ndarray]) -> Iterable:
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


def near_groups(keys: list | None, thumbs: list[np.ndarray]) -> np.ndarray | None:
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


def group_keys(report: dict | None, groups: str) -> list[tuple[str, str]] | None:
    """Calibration keys (kind, group) of the images read, grouped by the `--groups` rule."""
    keys = (report or {}).get("keys")
    if not keys:
        return None
    paths = (report or {}).get("paths") or [None] * len(keys)
    return regroup(keys, paths if len(paths) == len(keys) else [None] * len(keys), groups)
