"""The threshold's one owner: every camera's current value, where it came from, and its changes.

A camera's threshold is, in this order: its own (a line config's camera), the run's `--threshold`, or
the calibrated one of the bundle that scores it. It is resolved here once; the Decider compares with
it, results carry it to the outputs (the web view, MQTT and OPC UA show it), the pipeline's summary and
the outputs' starting values read it. A slider (`Control.SET_THRESHOLD`) changes it from the next frame,
and with `save` writes it into the bundle's manifest so the next start uses it; a reload resolves it
again from the new bundle (a camera's own value and --threshold still win; a slider's value does not
survive a reload). Patch bundles also carry the map's calibrated level (`map_value`), which only a
reload changes.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ovdoc.runtime.stream.live_detector import LiveDetector


@dataclass
class Threshold:
    """One camera's threshold. `origin`: "camera", "run" (--threshold), "bundle", or "set by <who>"."""

    value: float
    origin: str = "given"
    map_value: float | None = None  # patch mode: the smoothed map's level; None in global mode


@dataclass
class _Bundle:
    path: str | Path
    calibrated: float
    map_value: float | None


def _bundle(det: LiveDetector) -> _Bundle:
    map_value = float(det.map_threshold_) if det.has_maps_ else None
    return _Bundle(det.bundle_, float(det.threshold_), map_value)


class Thresholds:
    """Every camera's Threshold. `cameras`: per camera (its bundle's position in `detectors`, its own
    threshold or None); `run_value`: --threshold or None."""

    def __init__(self, detectors: Sequence[LiveDetector], cameras: Sequence[tuple[int, float | None]],
                 run_value: float | None = None) -> None:
        self.run_value = None if run_value is None else float(run_value)
        self._bundles = [_bundle(det) for det in detectors]
        self._cameras = [(int(model), None if own is None else float(own)) for model, own in cameras]
        for i, (model, _) in enumerate(self._cameras):
            if not 0 <= model < len(self._bundles):
                raise ValueError(f"camera {i} names model {model}; the run has {len(self._bundles)}")
        self._now = [self._resolve(i) for i in range(len(self._cameras))]

    def __getitem__(self, camera: int) -> Threshold:
        return self._now[camera]

    def __len__(self) -> int:
        return len(self._now)

    def model_of(self, camera: int) -> int:
        return self._cameras[camera][0]

    def default(self, model: int = 0) -> float:
        """The run's threshold for a bundle's cameras without their own: --threshold, else the bundle's."""
        return self.run_value if self.run_value is not None else self._bundles[model].calibrated

    def _resolve(self, camera: int) -> Threshold:
        model, own = self._cameras[camera]
        bundle = self._bundles[model]
        if own is not None:
            return Threshold(own, "camera", bundle.map_value)
        if self.run_value is not None:
            return Threshold(self.run_value, "run", bundle.map_value)
        return Threshold(bundle.calibrated, "bundle", bundle.map_value)

    def set(self, cameras: Sequence[int], value: float, *, by: str,
            save: bool = False) -> list[tuple[int, float, str | None]]:
        """The slider: `value` for these cameras from their next frame on; with `save`, written into each
        of their bundles (re-hashed; one write per bundle). Per camera: (camera, previous value, the
        manifest written or None), for `changed_record`."""
        value = float(value)
        saved: dict[int, str] = {}
        if save:
            from ovdoc.runtime.bundle import save_threshold

            for model in sorted({self.model_of(i) for i in cameras}):
                saved[model] = str(save_threshold(self._bundles[model].path, value, by=by))
        changes = []
        for i in cameras:
            now = self._now[i]
            changes.append((i, now.value, saved.get(self.model_of(i))))
            now.value, now.origin = value, f"set by {by}"
        return changes

    def rebase(self, model: int, det: LiveDetector) -> None:
        """Bundle `model` was reloaded: its cameras' thresholds resolved again from the new bundle."""
        self._bundles[model] = _bundle(det)
        for i, (m, _) in enumerate(self._cameras):
            if m == model:
                fresh = self._resolve(i)
                now = self._now[i]  # the same object: the Decider holds it
                now.value, now.origin, now.map_value = fresh.value, fresh.origin, fresh.map_value


def changed_record(source: str, value: float, previous: float, by: str, saved_to: str | None) -> dict:
    """The `threshold_changed` event (events file, web view, MQTT, OPC UA)."""
    record = {"event": "threshold_changed", "source": source, "threshold": float(value), "previous": previous,
              "by": by, "time": time.time()}
    if saved_to is not None:
        record["saved_to"] = saved_to
    return record
