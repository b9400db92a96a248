"""Batch scorer: prepared frames in, scored frames out in the order they went in.

Uses only the Detector's public live-loop API (`batch`, `set_callback`, `submit`, `wait`,
`score_outputs`; in patch mode `map_to_frame`, and `smooth_map` when the detector has it), so any
object with those methods can stand in for it: several sources share one scorer (one compiled model)
and a fake detector tests it.

Inference runs in OpenVINO's threads and finishes out of order; the callback only files the outputs
under the batch's sequence number. `ready()` hands back, in the calling thread, every batch whose
predecessors are all done, and only then pays for scoring (FAISS search) — so the callback thread
stays short and one scorer object is never used from two threads.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ovdoc.runtime.stream.sources import Frame


@dataclass(slots=True)
class Scored:
    """One frame scored: raw score, and in patch mode its frame-sized map."""

    frame: Frame
    score: float
    map: np.ndarray | None = None
    peak_xy: tuple[int, int] | None = None  # patch mode: where the anomaly is (Detector.peak_point)


class BatchScorer:
    def __init__(self, detector) -> None:
        self.det = detector
        self.batch = int(detector.batch)
        self._done: dict[int, tuple[list[Frame], np.ndarray]] = {}
        self._lock = threading.Lock()
        self._submitted = 0
        self._next = 0
        patch = getattr(detector, "mode_", "global") == "patch"
        self._smooth = (getattr(detector, "smooth_map", None) if patch else None) or (lambda m: m)
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

    def ready(self, wait: bool = False) -> list[Scored]:
        """Scored frames of every finished batch that is next in order; `wait` first lets all finish."""
        if wait and self._next < self._submitted:
            self.det.wait()
        out: list[Scored] = []
        while True:
            with self._lock:
                item = self._done.pop(self._next, None)
            if item is None:
                return out
            self._next += 1
            frames, outputs = item
            scored = self.det.score_outputs(outputs)
            scores = scored.scores.tolist()
            if scored.maps is None:
                out.extend(Scored(f, s) for f, s in zip(frames, scores, strict=True))
            else:
                to_frame, smooth = self.det.map_to_frame, self._smooth
                point = getattr(self.det, "peak_point", None)
                out.extend(
                    Scored(f, s, to_frame(smooth(m), f.image.shape),
                           point(m, f.image.shape) if point is not None else None)
                    for f, s, m in zip(frames, scores, scored.maps, strict=True)
                )
