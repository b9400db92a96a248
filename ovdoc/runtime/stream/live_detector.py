"""`LiveDetector`: everything the live loop asks of a detector, and nothing more.

The loop, its stages and the tests type against this protocol, never against `Detector` itself, so how
features are extracted and scored (global kNN, patch maps, a future head) can change behind it, and a
fake detector (tests/test_stages.py) can stand in for a real one. `isinstance(x, LiveDetector)` checks
that every member is there (runtime_checkable: names only, not signatures).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np


@runtime_checkable
class LiveDetector(Protocol):
    """A loaded bundle as the live loop sees it."""

    # identity: events, the summary, reloads (a reload loads `bundle_` again on `device_`)
    bundle_: str | Path
    device_: str
    manifest_: dict  # the bundle's manifest (a reload's event reports its n_images)
    # decisions: the calibrated threshold (and the map's level in patch mode), the flag-rate target
    threshold_: float
    calibration_: dict

    @property
    def mode_(self) -> str:
        """'global' or 'patch': named in events and compared on reload (a change needs a restart)."""

    @property
    def has_maps_(self) -> bool:
        """True if each image also gets an anomaly map (the head's capability, patch mode today): the
        loop then draws maps and boxes and reads `map_threshold_`."""

    @property
    def map_threshold_(self) -> float:
        """Patch mode: the smoothed map's calibrated level (not read in global mode)."""

    @property
    def preprocess(self) -> Any:
        """The input geometry and colour (compared on reload: a change needs a restart)."""

    @property
    def batch(self) -> int:
        """Images per inference request."""

    # preparing frames (reader threads)
    def prepare(self, image_bgr: np.ndarray) -> np.ndarray: ...

    def prepare_at(self, image_bgr: np.ndarray, res: tuple[int, int] | None) -> np.ndarray: ...

    # asynchronous inference (the scorer)
    def set_callback(self, fn: Callable[[np.ndarray, object], None]) -> None: ...

    def submit(self, prepared: np.ndarray, userdata: object = None) -> None: ...

    def wait(self) -> None: ...

    def score_outputs(self, outputs: np.ndarray) -> Any:
        """A batch's model outputs -> an object with `scores` [n] and `maps` ([n, h, w] or None)."""

    # patch mode: the map on the frame, and where the anomaly is
    def smooth_map(self, map_hw: np.ndarray) -> np.ndarray: ...

    def map_to_frame(self, map_hw: np.ndarray, frame_shape: tuple[int, ...]) -> np.ndarray: ...

    def peak_point(self, map_hw: np.ndarray, frame_shape: tuple[int, ...]) -> tuple[int, int]: ...


def members() -> frozenset[str]:
    """The protocol's member names (a test holds a real detector to exactly these)."""
    names = {name for name in vars(LiveDetector) if not name.startswith("_")}
    return frozenset(names | set(LiveDetector.__annotations__))
