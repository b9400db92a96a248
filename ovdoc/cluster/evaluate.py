"""`eval --ray`: the bundle's features of the test images computed on the cluster, scored on the driver
by the same Detector as a local `ovdoc eval` (so the AUC is the same)."""

from __future__ import annotations

import numpy as np

from ovdoc.errors import OvdocError
from ovdoc.runtime.extract import Extract


def cluster_scores(detector, sources: str, extract: Extract, desc: str) -> np.ndarray:
    """Scores of the images in `sources` (the one input grammar), their features computed by `extract`."""
    from ovdoc.runtime.datasets import open_unlabelled
    from ovdoc.runtime.ir import read_ir

    stream = open_unlabelled(sources, skip_unreadable=True, decode=False)
    model, _, _ = read_ir(detector.bundle_ / detector.manifest_["model"]["file"])
    got = extract(model, detector.spec_, stream.images, device=detector.device_, batch=detector.batch,
                  progress=True, total=stream.total, desc=desc)
    if got.skipped:
        raise OvdocError(f"cannot read image {got.skipped[0][1]} (corrupt or not an image)"
                         + (f" and {len(got.skipped) - 1} more" if len(got.skipped) > 1 else ""))
    if len(got.features) == 0:
        raise OvdocError(f"{sources} holds no images")
    return np.asarray(detector.score_features(got.features), np.float64)
