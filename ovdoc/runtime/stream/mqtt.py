"""`--mqtt mqtt://host:1883/prefix`: anomaly episodes and a rate-limited score stream on an MQTT broker.

Topics (camera = `cam<N>`, N the source's position on the command line, stable across restarts):

    <prefix>/status               "online" (retained); the broker publishes "offline" if ovdoc vanishes
    <prefix>/cam<N>/episode       anomaly_start / anomaly_end as JSON (see episodes.py), QoS 1
    <prefix>/cam<N>/snapshot      the episode's peak frame as JPEG bytes (with its heatmap in patch mode)
    <prefix>/cam<N>/score         at most one JSON score message per --mqtt-interval seconds, QoS 1

paho-mqtt's network thread does all I/O, so publishing never waits for the broker: when the broker goes
away the client reconnects with backoff, and QoS 1 messages published meanwhile wait in a bounded queue
(`MAX_QUEUED`; beyond it the newest are refused and counted as dropped). A broker that cannot be reached
on the first try is one warning line at once (not silence until the summary); `stats()["delivered"]` counts
what the broker acknowledged, so `ovdoc run` can fail when nothing ever arrived.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

from ovdoc.errors import OvdocError
from ovdoc.log import get_logger
from ovdoc.runtime.stream.episodes import public
from ovdoc.runtime.stream.messages import Result
from ovdoc.runtime.stream.output_spec import Output, OutputOption, RunContext, SinksRun
from ovdoc.runtime.stream.sinks import Sink, SinkContext

MAX_QUEUED = 1000
CLOSE_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class MqttTarget:
    host: str
    port: int
    prefix: str


def parse_mqtt_url(text: str) -> MqttTarget:
    """mqtt://host[:port][/prefix] -> MqttTarget (port 1883, prefix "ovdoc" by default)."""
    parts = urlsplit(text)
    if parts.scheme != "mqtt" or not parts.hostname:
        raise OvdocError(f"--mqtt must look like mqtt://host:1883/prefix, got {text!r}")
    try:
        port = parts.port or 1883
    except ValueError as exc:
        raise OvdocError(f"--mqtt has a bad port: {text!r}") from exc
    prefix = parts.path.strip("/") or "ovdoc"
    if any(c in prefix for c in "+#"):
        raise OvdocError(f"--mqtt prefix may not contain + or #: {prefix!r}")
    return MqttTarget(parts.hostname, port, prefix)


class MqttPublisher:
    """One broker connection for the whole run (every camera's sink shares it)."""

    def __init__(self, target: MqttTarget) -> None:
        from paho.mqtt import client as mqtt

        self.target = target
        self.published = 0
        self.dropped = 0
        self.connects = 0
        self.delivered = 0
        self.attempted = 0
        self._warned = False
        self._lock = threading.Lock()
        self._users = 0
        self._pending: set[int] = set()
        self._early: set[int] = set()  # acknowledged before `publish` recorded them (a fast broker)
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"ovdoc-{os.getpid()}")
        self.client.max_queued_messages_set(MAX_QUEUED)
        self.client.reconnect_delay_set(min_delay=1, max_delay=30)
        self.client.will_set(self.topic("status"), "offline", qos=1, retain=True)
        self.client.on_connect = self._on_connect
        self.client.on_publish = self._on_publish
        self.client.on_connect_fail = self._on_connect_fail

    def topic(self, *levels: str) -> str:
        return "/".join((self.target.prefix, *levels))

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if not reason_code.is_failure:
            self.connects += 1
            client.publish(self.topic("status"), "online", qos=1, retain=True)
        else:
            self._warn_unreachable(f"refused: {reason_code}")

    def _on_connect_fail(self, client, userdata) -> None:
        self._warn_unreachable("no answer or connection refused")

    def _warn_unreachable(self, why: str) -> None:
        """Once, and only before the first connection: a wrong host or port must not be silent."""
        if self._warned or self.connects:
            return
        self._warned = True
        get_logger(__name__).warning(
            f"warning: MQTT broker {self.target.host}:{self.target.port} not reachable ({why}); retrying "
            f"in the background, up to {MAX_QUEUED} messages wait meanwhile"
        )

    def _on_publish(self, client, userdata, mid, reason_code, properties) -> None:
        with self._lock:
            if mid in self._pending:
                self._pending.discard(mid)
                self.delivered += 1
            else:
                self._early.add(mid)

    def start(self) -> None:
        """Connect in the background: a broker that is not up yet is retried, never waited for."""
        with self._lock:
            self._users += 1
            if self._users > 1:
                return
        self.client.connect_async(self.target.host, self.target.port, keepalive=30)
        self.client.loop_start()

    def publish(self, topic: str, payload: bytes | str, qos: int = 1) -> None:
        from paho.mqtt import client as mqtt

        self.attempted += 1
        info = self.client.publish(topic, payload, qos=qos)
        if info.rc in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN):  # NO_CONN: queued until reconnected
            with self._lock:
                if info.mid in self._early:
                    self._early.discard(info.mid)
                    self.delivered += 1
                else:
                    self._pending.add(info.mid)
            self.published += 1
        else:
            self.dropped += 1

    def stop(self) -> None:
        """Last user: give queued messages a few seconds to go out, then disconnect cleanly."""
        with self._lock:
            self._users -= 1
            if self._users > 0:
                return
        # never connected: nothing is on its way, so waiting would only delay the exit
        deadline = time.monotonic() + (CLOSE_TIMEOUT_S if self.connects else 0.0)
        while time.monotonic() < deadline:
            with self._lock:
                if not self._pending:
                    break
            time.sleep(0.05)
        with self._lock:
            self.dropped += len(self._pending)  # never acknowledged by the broker
        if self.client.is_connected():
            with contextlib.suppress(RuntimeError, ValueError):  # lost meanwhile: the will says it instead
                self.client.publish(self.topic("status"), "offline", qos=1, retain=True).wait_for_publish(1.0)
        self.client.disconnect()
        self.client.loop_stop()

    def stats(self) -> dict:
        return {"attempted": self.attempted, "published": self.published, "delivered": self.delivered,
                "dropped": self.dropped, "connects": self.connects}


def summary_line(stats: dict) -> str:
    """'mqtt: 40 of 44 messages delivered, 4 dropped' for the run's closing lines."""
    n = stats["connects"]
    return (f"mqtt: {stats['delivered']} of {stats['attempted']} messages delivered, "
            f"{stats['dropped']} dropped, {n} connection{'s' if n != 1 else ''}")


def nothing_delivered(stats: dict, url: str) -> str | None:
    """The error for a run whose broker never acknowledged one message (a wrong host or port), else None."""
    if stats["delivered"] or not stats["attempted"]:
        return None
    reached = "was never reached" if not stats["connects"] else "acknowledged none of them"
    return (f"--mqtt {url}: the broker {reached}; none of {stats['attempted']} messages delivered, "
            f"{stats['dropped']} dropped (is it running, and is host:port right?)")


class MqttSink(Sink):
    """One camera's messages through the shared publisher."""

    name = "mqtt"
    needs_pixels = False
    wants_snapshots = True

    def __init__(self, publisher: MqttPublisher, interval_s: float = 1.0) -> None:
        self.publisher = publisher
        self.interval_s = interval_s
        self._next_score = 0.0

    def open(self, ctx: SinkContext) -> None:
        super().open(ctx)
        self.camera = f"cam{ctx.source_id}"
        self.publisher.start()

    def handle(self, result: Result) -> None:
        if result.score is None:
            return
        now = time.monotonic()
        if now < self._next_score:
            return
        self._next_score = now + self.interval_s
        frame = result.frame
        message = {
            "source": self.ctx.source_name,
            "frame": frame.index,
            "timestamp": round(frame.timestamp, 6),
            "score": result.score,
            "smoothed": result.smoothed,
            "anomalous": result.anomalous,
            "threshold": result.threshold,
            "time": time.time(),
        }
        self.publisher.publish(self.publisher.topic(self.camera, "score"), json.dumps(message))

    def episode(self, record: dict) -> None:
        self.publisher.publish(self.publisher.topic(self.camera, "episode"), json.dumps(public(record)))
        jpeg = record.get("_jpeg")
        if jpeg is not None:
            self.publisher.publish(self.publisher.topic(self.camera, "snapshot"), jpeg)

    def stats(self) -> dict:
        return self.publisher.stats()

    def close(self, ok: bool) -> None:
        if getattr(self, "camera", None) is not None:
            self.publisher.stop()


def _build_mqtt(values, run: RunContext) -> SinksRun:
    publisher = MqttPublisher(parse_mqtt_url(values["mqtt"]))  # one connection, every camera's sink
    return SinksRun(lambda lane: MqttSink(publisher, values["mqtt_interval"]))


OUTPUT = Output(
    "mqtt",
    (
        OutputOption("--mqtt", "Publish episodes, their snapshots and a score stream to "
                     "mqtt://host:1883/prefix (QoS 1, reconnecting; topics "
                     "prefix/cam<N>/episode|snapshot|score, prefix/status).", metavar="URL"),
        OutputOption("--mqtt-interval", "At most one score message per camera per SECONDS.", kind="float",
                     default=1.0, low=0.01, high=3600, metavar="SECONDS"),
    ),
    enabled=lambda values: bool(values.get("mqtt")),
    check=lambda values: parse_mqtt_url(values["mqtt"]),
    build=_build_mqtt,
)
