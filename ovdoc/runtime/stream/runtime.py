"""Process-wide settings for live scoring on small CPUs, and loading a Detector for `ovdoc run`.

On a 2-core board, OpenVINO's inference threads, FAISS's OpenMP pool and OpenCV's own pool fight for
the same cores; decoding and resizing tiny frames gains nothing from OpenCV threads, and FAISS searches
a batch at a time, so both are pinned to one thread and OpenVINO gets the rest.
"""

from __future__ import annotations

from pathlib import Path

import cv2


def tune_threads() -> None:
    import faiss

    cv2.setNumThreads(1)
    faiss.omp_set_num_threads(1)


def load_detector_for_run(bundle: str | Path, device: str, *, batch: int = 8):
    """Check the device first (one line listing what is present), then load with model caching on."""
    from ovdoc.runtime.detector import Detector
    from ovdoc.runtime.devices import check_device

    device = check_device(device)
    tune_threads()
    return Detector.load(bundle, device=device, batch=batch)
