"""Batch scorer: prepared frames in, scored frames out in the order they went in.

Uses only the `LiveDetector` protocol (`batch`, `set_callback`, `submit`, `wait`; post-processing's
`score_outputs` and patch-map members), so any object with those methods can stand in for it: several
sources share one scorer (one compiled model) and a fake detector tests it.

Inference runs in OpenVINO's threads and finishes out of order; the callback only files the outputs
under the batch's sequence number. `ready()` hands back, in the calling thread, every batch whose
predecessors are all done, and only then pays for scoring (FAISS search) — so the callback thread
stays short and one scorer object is never used from two threads.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

import numpy as np

from ovdoc.runtime.stream.live_detector import LiveDetector
from ovdoc.runtime.stream.postprocess import FrameScore, PostProcess
from ovdoc.runtime.stream.sources import Frame


class BatchScorer:
    """One detector's batches, submitted in order and handed back in order as FrameScores."""

    def __init__(self, detector: LiveDetector) -> None:
        self.det = detector
        self.post = PostProcess(detector)
        self.batch = int(detector.batch)
        self._done: dict[int, tuple[list[Frame], np.ndarray]] = {}
        self._lock = threading.Lock()
        self._submitted = 0
        self._next = 0
        detector.set_callback(self._on_done)

    @property
    def pending(self) -> int:
        """Batches submitted and not yet handed back by `ready`."""
        return self._submitted - self._next

    def _on_done(self, outputs: np.ndarray, userdata: tuple[int, list[Frame]]) -> None:
        seq, frames = userdata
        with self._lock:
            self._done[seq] = (frames, outputs)

    def submit(self, frames: list[Frame], prepared: Sequence[np.ndarray]) -> None:
        """Queue one batch (1..batch frames with their prepared model inputs); may block while busy."""
        self.det.submit(np.stack(prepared), (self._submitted, frames))
        self._submitted += 1

    def ready(self, wait: bool = False) -> list[FrameScore]:
        """Scored frames of every finished batch that is next in order; `wait` first lets all finish."""
        if wait and self._next < self._submitted:
            self.det.wait()
        out: list[FrameScore] = []
        while True:
            with self._lock:
                item = self._done.pop(self._next, None)
            if item is None:
                return out
            self._next += 1
            out.extend(self.post(*item))
