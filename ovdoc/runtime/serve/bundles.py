"""A served bundle: its verified, compiled Detector, what one image's answer holds, and hot reload.

`ServedBundle.score` runs in a worker thread (batching.py) on a whole micro-batch. It reads
`self.detector` once per batch, so a reload swaps the model between batches: a request is scored
entirely by the old bundle or entirely by the new one (its answer's `bundle.hash` says which), and
none is dropped. A replacement that fails verification (hashes, format) leaves the old one serving.
"""

from __future__ import annotations

import base64
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ovdoc.errors import OvdocError, first_line

MAP_LEVELS = 255  # a map PNG is 8-bit: 0 = the typical normal patch, 255 = twice the map threshold


def parse_bundles(items: tuple[str, ...]) -> dict[str, Path]:
    """('tiles.bundle', 'caps=/srv/caps.bundle') -> {'tiles': ..., 'caps': ...}; the first is the default."""
    out: dict[str, Path] = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep or "/" in name or not name:
            path, name = item, Path(item).name.removesuffix(".bundle") or "bundle"
        if name in out:
            raise OvdocError(f"bundle name {name!r} given twice: name them, e.g. {name}2={path}")
        out[name] = Path(path)
    return out


def load_detector(path: Path, device: str, batch: int, core=None):
    from ovdoc.runtime.detector import Detector

    return Detector.load(path, device=device, batch=batch, core=core)


class ServedBundle:
    """One named bundle behind the API."""

    def __init__(self, name: str, path: Path, device: str = "CPU", batch: int = 8, core=None,
                 on_reload: Callable[[str, str], None] | None = None) -> None:
        self.name, self.path, self.device, self.core = name, Path(path), device, core
        self.detector = load_detector(self.path, device, batch, core)
        self.loaded_at = time.time()
        self.reloads = 0
        self.reload_error: str | None = None
        self.on_reload = on_reload  # (bundle name, "ok" | "failed")
        self._reloading = threading.Lock()

    @property
    def hash(self) -> str:
        return str(self.detector.manifest_.get("manifest_sha256", ""))

    @property
    def batch(self) -> int:
        return self.detector.batch

    def info(self) -> dict:
        det = self.detector
        return {"name": self.name, "path": str(self.path), "hash": self.hash, "mode": det.mode_,
                "threshold": det.threshold_, "batch": det.batch, "device": det.device_,
                "input": {"width": det.preprocess.width, "height": det.preprocess.height},
                "loaded_at": round(self.loaded_at, 3), "reloads": self.reloads,
                "last_reload_error": self.reload_error}

    # --- scoring (worker thread) ---------------------------------------------------------------------
    def score(self, images: list[np.ndarray], want_map: list[bool]) -> list[dict]:
        """Per image its answer; the same numbers as Detector.score_samples on these images."""
        return score_images(self.detector, self.name, images, want_map)

    # --- reload (watcher thread) ---------------------------------------------------------------------
    def reload(self) -> bool:
        """Load and verify the bundle again; swap it in if it loads, keep the old one if not."""
        with self._reloading:
            try:
                new = load_detector(self.path, self.device, self.detector.batch, self.core)
            except Exception as exc:  # a half-copied or corrupt bundle: the old one keeps serving
                self.reload_error = first_line(exc)
                if self.on_reload:
                    self.on_reload(self.name, "failed")
                return False
            self.detector, self.loaded_at, self.reload_error = new, time.time(), None
            self.reloads += 1
            if self.on_reload:
                self.on_reload(self.name, "ok")
            return True


def score_images(det, name: str, images: list[np.ndarray], want_map: list[bool]) -> list[dict]:
    """Score a batch through one Detector: features once, then per image score, verdict, box, map."""
    feats = det.features(images)
    scored = det.score_outputs(feats)
    bundle = {"name": name, "hash": str(det.manifest_.get("manifest_sha256", ""))}
    threshold = float(det.threshold_)
    out = []
    for i, image in enumerate(images):
        score = float(scored.scores[i])
        item = {"score": score, "anomalous": bool(score > threshold), "threshold": threshold,
                "bundle": bundle, "width": int(image.shape[1]), "height": int(image.shape[0])}
        if scored.maps is not None:
            item.update(_where(det, scored.maps[i], image.shape, want_map[i]))
        out.append(item)
    return out


def _where(det, grid: np.ndarray, shape: tuple[int, ...], want_map: bool) -> dict:
    """Patch mode: the hottest region's box (as `ovdoc run` draws it), its peak, and optionally the map."""
    from ovdoc.runtime.stream.regions import hottest_region

    frame_map = det.map_to_frame(det.smooth_map(grid), shape)
    peak_xy = det.peak_point(grid, shape)
    box, peak = hottest_region(frame_map, at=peak_xy)
    out = {"box": list(box), "peak": list(peak_xy), "map_peak": float(peak),
           "map_threshold": float(det.map_threshold_)}
    if want_map:
        out["map_png"] = map_png(frame_map, det.map_threshold_)
        out["map_scale"] = 2.0 * float(det.map_threshold_) / MAP_LEVELS
    return out


def map_png(frame_map: np.ndarray, map_threshold: float) -> str:
    """Base64 8-bit grey PNG: level = map value / map_scale, so 128 is the map threshold."""
    import cv2

    full = 2.0 * float(map_threshold) if map_threshold > 0 else float(frame_map.max() or 1.0)
    levels = np.clip(np.asarray(frame_map, np.float32) / full * MAP_LEVELS, 0, MAP_LEVELS).astype(np.uint8)
    ok, buf = cv2.imencode(".png", levels)
    if not ok:
        raise OvdocError("could not encode the anomaly map as PNG")
    return base64.b64encode(buf.tobytes()).decode("ascii")


class Watcher:
    """Polls each bundle's manifest (like `ovdoc run`'s BundleWatcher); a change triggers a reload."""

    def __init__(self, bundles: list[ServedBundle], interval_s: float = 1.0) -> None:
        self.bundles = bundles
        self.interval_s = interval_s
        self.stop = threading.Event()
        self._stamps = {b.name: _stamp(b.path) for b in bundles}
        self._thread = threading.Thread(target=self._run, name="ovdoc-serve-watch", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        while not self.stop.wait(self.interval_s):
            for b in self.bundles:
                stamp = _stamp(b.path)
                if stamp is not None and stamp != self._stamps[b.name]:
                    self._stamps[b.name] = stamp
                    b.reload()

    def close(self) -> None:
        self.stop.set()


def _stamp(bundle: Path):
    """Every file's identity in the bundle folder: a replaced folder, or any file rewritten, changes it
    (a copy that was caught half-way and failed verification is retried once it changes again)."""
    try:
        return tuple(sorted((p.name, st.st_ino, st.st_mtime_ns, st.st_size)
                            for p in Path(bundle).iterdir() for st in [p.stat()]))
    except OSError:
        return None
