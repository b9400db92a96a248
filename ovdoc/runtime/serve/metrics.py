"""Prometheus text exposition for `ovdoc serve`, by hand (the web view does the same; no client library).

Per bundle: requests by status code, images scored, errors by reason, request latency and batch size as
histograms, reloads by outcome. Updated from the event loop and the watcher thread, hence the lock.
"""

from __future__ import annotations

import collections
import threading

LATENCY_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)


class Histogram:
    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * len(bounds)
        self.total = 0
        self.sum = 0.0

    def observe(self, value: float) -> None:
        for i, bound in enumerate(self.bounds):
            if value <= bound:
                self.counts[i] += 1
        self.total += 1
        self.sum += value


class Metrics:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requests: collections.Counter = collections.Counter()  # (bundle, code)
        self.images: collections.Counter = collections.Counter()  # bundle
        self.errors: collections.Counter = collections.Counter()  # (bundle, reason)
        self.reloads: collections.Counter = collections.Counter()  # (bundle, outcome)
        self.latency: dict[str, Histogram] = {}
        self.batches: dict[str, Histogram] = {}

    def request(self, bundle: str, code: int, seconds: float, images: int = 0) -> None:
        with self._lock:
            self.requests[(bundle, str(code))] += 1
            self.images[bundle] += images
            self.latency.setdefault(bundle, Histogram(LATENCY_BUCKETS_S)).observe(seconds)

    def error(self, bundle: str, reason: str) -> None:
        with self._lock:
            self.errors[(bundle, reason)] += 1

    def batch(self, bundle: str, size: int) -> None:
        with self._lock:
            self.batches.setdefault(bundle, Histogram(BATCH_BUCKETS)).observe(size)

    def reload(self, bundle: str, outcome: str) -> None:
        with self._lock:
            self.reloads[(bundle, outcome)] += 1

    def text(self, queued: dict[str, int] | None = None) -> str:
        with self._lock:
            lines: list[str] = []
            _counter(lines, "ovdoc_serve_requests_total", "HTTP requests to /v1/score",
                     {_labels(bundle=b, code=c): v for (b, c), v in self.requests.items()})
            _counter(lines, "ovdoc_serve_images_total", "Images scored",
                     {_labels(bundle=b): v for b, v in self.images.items()})
            _counter(lines, "ovdoc_serve_errors_total", "Requests refused or failed, by reason",
                     {_labels(bundle=b, reason=r): v for (b, r), v in self.errors.items()})
            _counter(lines, "ovdoc_serve_reloads_total", "Bundle reloads from disk, by outcome",
                     {_labels(bundle=b, outcome=o): v for (b, o), v in self.reloads.items()})
            _histogram(lines, "ovdoc_serve_request_seconds", "Time to answer /v1/score", self.latency)
            _histogram(lines, "ovdoc_serve_batch_images", "Images per model batch", self.batches)
        if queued is not None:
            lines += ["# HELP ovdoc_serve_queued_images Images waiting for a batch",
                      "# TYPE ovdoc_serve_queued_images gauge"]
            lines += [f"ovdoc_serve_queued_images{{{_labels(bundle=b)}}} {v}" for b, v in queued.items()]
        return "\n".join(lines) + "\n"


def _escape(value: str) -> str:
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _labels(**labels: str) -> str:
    return ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items())


def _counter(lines: list[str], name: str, help_text: str, values: dict[str, float]) -> None:
    lines += [f"# HELP {name} {help_text}", f"# TYPE {name} counter"]
    lines += [f"{name}{{{labels}}} {value}" for labels, value in sorted(values.items())]


def _histogram(lines: list[str], name: str, help_text: str, hists: dict[str, Histogram]) -> None:
    lines += [f"# HELP {name} {help_text}", f"# TYPE {name} histogram"]
    for bundle, h in sorted(hists.items()):
        b = _labels(bundle=bundle)
        for bound, count in zip(h.bounds, h.counts, strict=True):
            lines.append(f'{name}_bucket{{{b},le="{bound:g}"}} {count}')
        lines += [f'{name}_bucket{{{b},le="+Inf"}} {h.total}', f"{name}_sum{{{b}}} {h.sum:.6f}",
                  f"{name}_count{{{b}}} {h.total}"]
