"""What flows between the live loop's stages: per-frame results out to sinks, control commands in.

Kept free of OpenCV and OpenVINO so the loop's logic, and anything that consumes results (a web view,
MQTT), can be tested and written without either.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

import numpy as np

from ovdoc.runtime.stream.sources import Frame


class Control(str, Enum):
    """A command for the loop: sinks (window keys, later a web view) post them, only the loop acts."""

    QUIT = "quit"
    SAVE = "save"  # sinks that can snapshot save the current frame (and its heatmap)
    TOGGLE_SCORING = "toggle"
    PAUSE = "pause"
    RESUME = "resume"
    SET_THRESHOLD = "threshold"  # value = the new threshold; save = also write it into the bundle
    RELOAD = "reload"  # load the bundle again (changed on disk) and swap it in between batches


@dataclass(slots=True)
class Command:
    """A control message; `source_id` None = every source (one model scores them all)."""

    control: Control
    source_id: int | None = None
    value: float | None = None
    save: bool = False
    by: str = "user"  # who asked (window, web): written to the events with the change


@dataclass(slots=True)
class Result:
    """One frame's outcome, handed to every sink of its source.

    score/smoothed are None when scoring is paused (the frame is still shown and saved). In patch mode
    `map` is a frame-sized float32 anomaly map, `box` [x0, y0, x1, y1] the hottest region (inclusive
    pixel bounds) and `peak` the map's maximum; all None in global mode. `map_threshold` is the level
    the map is compared with (patch bundles calibrate it apart from the image threshold).
    """

    frame: Frame
    score: float | None
    smoothed: float | None
    anomalous: bool
    threshold: float
    map: np.ndarray | None = None
    box: tuple[int, int, int, int] | None = None
    peak: float | None = None
    map_threshold: float | None = None

    @property
    def source_id(self) -> int:
        return self.frame.source_id

    @property
    def scoring(self) -> bool:
        return self.score is not None
