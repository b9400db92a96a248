"""Hot bundle reload: a running `ovdoc run` takes a changed bundle without stopping its cameras.

Asked for by SIGHUP, by the web view's reload button, or by the bundle's manifest changing on disk
(`ovdoc fit --append` replaces the bundle atomically; the watcher polls the manifest every
WATCH_INTERVAL_S). The new bundle is loaded and verified in a thread of its own while the old one keeps
scoring; the loop swaps them between batches, after the old model's batches in flight are delivered, so
no frame is dropped and frame order holds. A bundle that fails verification, or that would change the
input geometry or the mode (frames already prepared for the old one are in the queues), is refused and
the old one keeps running; either way the outcome is an event.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

from ovdoc.errors import first_line
from ovdoc.runtime.stream.messages import Command, Control

WATCH_INTERVAL_S = 1.0


def load_like(detector):
    """A fresh Detector from the running one's bundle, on the same device with the same batch."""
    from ovdoc.runtime.detector import Detector

    return Detector.load(detector.bundle_, device=detector.device_, batch=detector.batch)


class Reloader:
    """One reload at a time: `start` loads in the background; `take` hands the outcome to the loop."""

    def __init__(self, load: Callable[[object], object] = load_like) -> None:
        self.load = load
        self._lock = threading.Lock()
        self._busy = False
        self._outcome: tuple[object | None, str | None, str] | None = None  # (detector, error, by)

    def start(self, current, by: str) -> bool:
        with self._lock:
            if self._busy:
                return False
            self._busy = True
        # not a daemon: exiting in the middle of a native compile would abort the process
        threading.Thread(target=self._run, args=(current, by), name="ovdoc-reload", daemon=False).start()
        return True

    def _run(self, current, by: str) -> None:
        try:
            new = self.load(current)
            problem = incompatible(current, new)
            outcome = (None, problem, by) if problem else (new, None, by)
        except Exception as exc:  # a broken bundle: one line, the old one keeps running
            outcome = (None, first_line(exc), by)
        with self._lock:
            self._outcome = outcome
            self._busy = False

    def take(self) -> tuple[object | None, str | None, str] | None:
        with self._lock:
            outcome, self._outcome = self._outcome, None
        return outcome


def reload_failed(reason: str | None, by: str, kept: object) -> dict:
    """The event of a refused reload (the running bundle, `kept`, goes on scoring)."""
    return {"event": "bundle_reload_failed", "reason": reason, "by": by, "time": time.time(),
            "kept": str(kept)}


def reloaded(new, by: str, threshold: float) -> dict:
    """The event of a bundle swapped in, with the threshold its camera now uses."""
    return {"event": "bundle_reloaded", "bundle": str(new.bundle_), "by": by, "threshold": threshold,
            "n_images": new.manifest_.get("n_images"), "time": time.time()}


def incompatible(current, new) -> str | None:
    """Why `new` cannot replace `current` in a running loop, or None."""
    if getattr(new, "mode_", "global") != getattr(current, "mode_", "global"):
        return f"the new bundle is {new.mode_} mode, the running one {current.mode_}: restart to switch"
    if new.preprocess != current.preprocess:
        return "the new bundle changes the model's input (size, crop or colour): restart to use it"
    return None


class BundleWatcher:
    """Polls the bundle's manifest; posts a reload when it changes (a new bundle was written over it)."""

    def __init__(self, bundle: str | Path, post: Callable[[Command], None],
                 interval_s: float = WATCH_INTERVAL_S) -> None:
        self.manifest = Path(bundle) / "manifest.json"
        self.post = post
        self.interval_s = interval_s
        self.stop = threading.Event()
        self._last = self._stamp()
        self._thread = threading.Thread(target=self._run, name="ovdoc-bundle-watch", daemon=True)

    def _stamp(self):
        try:
            st = self.manifest.stat()
            return st.st_ino, st.st_mtime_ns, st.st_size
        except OSError:
            return None

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        while not self.stop.wait(self.interval_s):
            stamp = self._stamp()
            if stamp is not None and stamp != self._last:
                self._last = stamp
                self.post(Command(Control.RELOAD, by="bundle changed on disk"))

    def close(self) -> None:
        self.stop.set()
