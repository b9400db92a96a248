"""`--webhook URL`: POST each anomaly episode as JSON, from a thread of its own.

A slow or failing endpoint must never slow scoring: episodes wait in a bounded queue (the oldest goes
when it is full, counted as dropped), each POST has a timeout and is retried with backoff on a network
error or a 5xx answer, and a 4xx answer (the endpoint refuses it) is not retried. anomaly_end carries
the peak frame as base64 JPEG (`snapshot_jpeg`), since the receiver cannot read the box's disk.
"""

from __future__ import annotations

import base64
import json
import queue
import threading
import time
import urllib.error
import urllib.request
from urllib.parse import urlsplit

from ovdoc.errors import OvdocError
from ovdoc.log import get_logger
from ovdoc.runtime.stream.episodes import public
from ovdoc.runtime.stream.output_spec import Output, OutputOption, SinksRun
from ovdoc.runtime.stream.sinks import Sink, SinkContext

QUEUE_SIZE = 256
BACKOFF_S = 0.5
log = get_logger("run")


def check_webhook_url(text: str) -> str:
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise OvdocError(f"--webhook must be an http:// or https:// URL, got {text!r}")
    return text


class WebhookSink(Sink):
    name = "webhook"
    needs_pixels = False
    wants_snapshots = True

    def __init__(self, url: str, *, timeout_s: float = 5.0, retries: int = 3, drain_s: float = 10.0) -> None:
        self.url = check_webhook_url(url)
        self.timeout_s = timeout_s
        self.retries = retries
        self.drain_s = drain_s
        self.queue: queue.Queue = queue.Queue(maxsize=QUEUE_SIZE)
        self.sent = self.failed = self.dropped = self.retried = 0
        self._thread: threading.Thread | None = None
        self._closing = threading.Event()
        self._deadline = float("inf")  # set by close(): how long the queue may still be drained

    def open(self, ctx: SinkContext) -> None:
        super().open(ctx)
        self._thread = threading.Thread(target=self._run, name=f"ovdoc-webhook-{ctx.source_id}", daemon=True)
        self._thread.start()

    def episode(self, record: dict) -> None:
        body = public(record)
        if record.get("_jpeg") is not None:
            body["snapshot_jpeg"] = base64.b64encode(record["_jpeg"]).decode("ascii")
        payload = json.dumps(body).encode("utf-8")
        while True:
            try:
                self.queue.put_nowait(payload)
                return
            except queue.Full:
                try:
                    self.queue.get_nowait()
                    self.dropped += 1
                except queue.Empty:
                    pass

    def _post(self, payload: bytes) -> bool:
        request = urllib.request.Request(
            self.url, data=payload, method="POST", headers={"Content-Type": "application/json"}
        )
        for attempt in range(self.retries + 1):
            if attempt:
                wait = BACKOFF_S * 2 ** (attempt - 1)
                if self._closing.is_set():  # draining at exit: never past the deadline
                    wait = min(wait, self._deadline - time.monotonic())
                    if wait <= 0:
                        break
                time.sleep(wait)
                self.retried += 1
            try:
                with urllib.request.urlopen(request, timeout=self.timeout_s) as answer:
                    answer.read()
                return True
            except urllib.error.HTTPError as exc:
                if exc.code < 500:  # the endpoint refuses this message: retrying will not help
                    log.warning(f"webhook {self.url}: {exc.code} {exc.reason}; episode not delivered")
                    return False
            except (urllib.error.URLError, OSError, TimeoutError):
                pass
        log.warning(f"webhook {self.url}: no answer after {self.retries + 1} tries; episode not delivered")
        return False

    def _run(self) -> None:
        while True:
            try:
                payload = self.queue.get(timeout=0.1)
            except queue.Empty:
                if self._closing.is_set():
                    return
                continue
            if self._closing.is_set() and time.monotonic() > self._deadline:
                self.dropped += 1
                continue
            if self._post(payload):
                self.sent += 1
            else:
                self.failed += 1

    def stats(self) -> dict:
        return {"sent": self.sent, "failed": self.failed, "dropped": self.dropped, "retried": self.retried}

    def close(self, ok: bool) -> None:
        """Deliver what is queued, for at most `drain_s` seconds (a dead endpoint must not hang the exit)."""
        if self._thread is None:
            return
        self._deadline = time.monotonic() + self.drain_s
        self._closing.set()
        self._thread.join(self.drain_s + self.timeout_s)


OUTPUT = Output(
    "webhook",
    (
        OutputOption("--webhook", "POST each episode (anomaly_start, anomaly_end with its snapshot) as JSON "
                     "to URL, from a thread of its own, with retries: a slow endpoint never slows scoring.",
                     metavar="URL"),
        OutputOption("--webhook-timeout", "Timeout of one webhook POST.", kind="float", default=5.0, low=0.1,
                     high=600, metavar="SECONDS"),
    ),
    enabled=lambda values: bool(values.get("webhook")),
    check=lambda values: check_webhook_url(values["webhook"]),
    build=lambda values, run: SinksRun(
        lambda lane: WebhookSink(values["webhook"], timeout_s=values["webhook_timeout"])),
)
