"""Near-duplicate groups: several shots of one part in one folder count as one part for calibration.

A folder of magnetic tiles holds 5-6 exposures of each tile. Held out one image at a time, each exposure
still has its siblings in the index, scores low, and the threshold flags far more new tiles than --fpr
says. So images that are much closer to each other than to the rest are linked into one group, and a
group is held out (and counted) as one.

How: each image becomes a 16x16 grey thumbnail, zero-mean and unit-norm (brightness and contrast do
not matter, the layout does); an image is linked to those of its 9 nearest neighbours that are closer
than LINK_RATIO x its distance to its 10th nearest; groups are the connected components. A ratio,
not a fixed distance, so it adapts to how varied the normal images are. Thumbnails rather than the
model's features: on the 952 MT_Free images (150 tiles, sibling = same tile by photograph number) the
nearest thumbnail was a sibling for 97 % of images against 92 % in the shipped backbone's feature
space; at LINK_RATIO 0.7 the thumbnails gave 183 groups (150 tiles, largest 12 images) while 900
Fashion-MNIST sneakers (no duplicates) stayed 826 groups. Erring towards merging is the safe side: a
merged pair only costs a little of the bound's sample size, a missed sibling makes calibration optimistic.
"""

from __future__ import annotations

import numpy as np

THUMB = 16
NEIGHBOURS = 10
LINK_RATIO = 0.7


def thumbnail(image: np.ndarray, size: int = THUMB) -> np.ndarray:
    """A size x size grey thumbnail, zero-mean and unit-norm, flattened (float32)."""
    import cv2

    grey = image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    small = cv2.resize(grey, (size, size), interpolation=cv2.INTER_AREA).astype(np.float32).ravel()
    small -= small.mean()
    return small / (float(np.linalg.norm(small)) + 1e-6)


def near_duplicate_groups(thumbs: np.ndarray, *, neighbours: int = NEIGHBOURS,
                          ratio: float = LINK_RATIO) -> np.ndarray:
    """Group label per image (0..G-1) from its thumbnail; every image alone when there are fewer than 9."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    x = np.asarray(thumbs, np.float32)
    n = len(x)
    neighbours = min(neighbours, n // 3)  # a small set: the reference neighbour must still be "the rest"
    if neighbours < 3:
        return np.arange(n)
    rows, cols = [], []
    sq = (x * x).sum(1)
    for start in range(0, n, 1024):  # blocks of rows: 1024 x n distances at a time
        block = x[start : start + 1024]
        d = np.sqrt(np.maximum(sq[start : start + 1024, None] + sq[None] - 2.0 * block @ x.T, 0.0))
        d[np.arange(len(block)), np.arange(start, start + len(block))] = np.inf
        near = np.argpartition(d, neighbours - 1, axis=1)[:, :neighbours]
        dn = np.take_along_axis(d, near, 1)
        order = np.argsort(dn, 1)
        near, dn = np.take_along_axis(near, order, 1), np.take_along_axis(dn, order, 1)
        linked = dn[:, :-1] < ratio * dn[:, -1:]
        r, c = np.nonzero(linked)
        rows.append(r + start)
        cols.append(near[r, c])
    rows_a, cols_a = np.concatenate(rows), np.concatenate(cols)
    graph = coo_matrix((np.ones(len(rows_a)), (rows_a, cols_a)), shape=(n, n))
    return connected_components(graph, directed=False)[1].astype(np.int64)
