"""Anomaly episodes: one start and one end message per defect, not one verdict per frame.

A downstream system (a PLC, a dashboard, a person's phone) wants to hear "something is wrong on camera
2" once, and "it is over, it lasted 3.2 s, here is the worst frame" once — not 30 anomalous frames a
second. An episode opens on the first anomalous (smoothed) verdict of a source and closes on the first
normal one after it, or when the run ends (`open_at_end`). The tracker keeps the frame with the highest
smoothed score (and its anomaly map, in patch mode) as the episode's snapshot.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ovdoc.runtime.stream.messages import Result


@dataclass
class Episode:
    """One open episode of one source."""

    number: int
    start_frame: int
    start_timestamp: float
    start_wall: float
    peak_score: float
    peak_frame: int
    frames: int = 1
    peak: Result | None = None  # the peak frame's result, its image copied (the source reuses buffers)
    snapshot: Path | None = None
    extra: dict = field(default_factory=dict)


class EpisodeTracker:
    """Per source: feed every scored Result; `update` returns the record to publish, if any.

    `keep_snapshot`: copy the peak frame's pixels (needs the frame at --res: the loop then keeps the
    resize). The snapshot image itself is made by `snapshot_image` when an output asks for it.
    """

    def __init__(self, source_name: str, *, keep_snapshot: bool = False) -> None:
        self.source_name = source_name
        self.keep_snapshot = keep_snapshot
        self.open: Episode | None = None
        self.count = 0

    def update(self, result: Result) -> dict | None:
        if result.score is None:  # scoring paused: an open episode stays open, nothing is measured
            return None
        frame, score = result.frame, float(result.smoothed)
        if result.anomalous:
            if self.open is None:
                self.count += 1
                self.open = Episode(
                    number=self.count,
                    start_frame=frame.index,
                    start_timestamp=frame.timestamp,
                    start_wall=time.time(),
                    peak_score=score,
                    peak_frame=frame.index,
                )
                self._keep(result)
                return self._record("anomaly_start", frame.index, frame.timestamp, score=score)
            ep = self.open
            ep.frames += 1
            if score > ep.peak_score:
                ep.peak_score, ep.peak_frame = score, frame.index
                self._keep(result)
            return None
        if self.open is not None:
            return self.close(frame.index, frame.timestamp)
        return None

    def close(self, frame_index: int, timestamp: float, *, at_end: bool = False) -> dict | None:
        """End the open episode at this frame (the first normal one, or the last one of the run)."""
        ep = self.open
        if ep is None:
            return None
        record = self._record(
            "anomaly_end",
            frame_index,
            timestamp,
            start_frame=ep.start_frame,
            frames=ep.frames,
            duration_s=round(max(timestamp - ep.start_timestamp, 0.0), 3),
            peak_score=ep.peak_score,
            peak_frame=ep.peak_frame,
            **({"open_at_end": True} if at_end else {}),
        )
        record["_peak"] = ep.peak  # for outputs that attach the snapshot; dropped before writing
        self.open = None
        return record

    def _keep(self, result: Result) -> None:
        if not self.keep_snapshot:
            return
        frame = result.frame
        copy = type(frame)(frame.index, frame.timestamp, frame.image.copy(), frame.source_id)
        self.open.peak = Result(
            copy,
            result.score,
            result.smoothed,
            result.anomalous,
            result.threshold,
            None if result.map is None else result.map.copy(),
            result.box,
            result.peak,
            result.map_threshold,
        )

    def _record(self, event: str, frame_index: int, timestamp: float, **fields: object) -> dict:
        return {
            "event": event,
            "source": self.source_name,
            "episode": self.open.number if self.open is not None else self.count,
            "frame": frame_index,
            "timestamp": round(timestamp, 6),
            "time": time.time(),
            **fields,
        }


def public(record: dict) -> dict:
    """The record as outputs publish it (no private fields)."""
    return {k: v for k, v in record.items() if not k.startswith("_")}


def snapshot_image(peak: Result) -> np.ndarray:
    """The peak frame as a person would want to see it: heatmap and box in patch mode, score banner."""
    from ovdoc.runtime.stream.display import annotate, overlay_heatmap

    image = peak.frame.image
    if peak.map is not None:
        level = peak.map_threshold or peak.threshold
        image = overlay_heatmap(image, peak.map, level, box=peak.box, anomalous=True)
    return annotate(image, score=peak.smoothed, threshold=peak.threshold, anomalous=True, fps=0.0)


def snapshot_jpeg(peak: Result, quality: int = 85) -> bytes:
    import cv2

    ok, buf = cv2.imencode(".jpg", snapshot_image(peak), [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError("cannot encode the episode snapshot as JPEG")
    return buf.tobytes()
