"""`ovdoc run --serve 127.0.0.1:8080`: a live web view of every camera, a JSON API and Prometheus metrics.

    /                  one page: each camera's annotated stream (MJPEG), live score chart, threshold slider
                       (with "save to bundle"), episode list, pause/resume
    /stream/<N>        camera N as multipart MJPEG (at most STREAM_FPS frames a second, encoded only while
                       someone watches)
    /api/status        JSON: scoring on/off, per camera threshold, counters, FPS, latency, last verdict
    /api/events        server-sent events: scores (rate-limited), episodes, threshold changes, incidents
    /api/threshold     POST {"camera": N, "value": x, "save": false}: takes effect from the next frame
    /api/scoring       POST {"action": "pause" | "resume"}
    /api/reload        POST: load the bundle again and swap it in between batches (stream/reload.py)
    /metrics           Prometheus text format: frames, anomalies, dropped, episodes, FPS, latency per camera

aiohttp serves it from a thread of its own with its own event loop; the live loop's thread only updates
`WebState` (a lock, a few assignments per frame) and commands go back through `LiveLoop.post`, so a slow
browser can never slow scoring. Binding to anything but loopback requires a token (`--serve-token` or
OVDOC_SERVE_TOKEN), given as `?token=` or `Authorization: Bearer`.
"""

from __future__ import annotations

import asyncio
import collections
import ipaddress
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from ovdoc.errors import OvdocError
from ovdoc.runtime.stream.episodes import public
from ovdoc.runtime.stream.messages import Command, Control, Result
from ovdoc.runtime.stream.output_spec import LaneContext, Output, OutputOption, OutputRun, RunContext
from ovdoc.runtime.stream.sinks import Renderer, Sink, SinkContext

STREAM_FPS = 12.0
EVENTS_PER_CAMERA_S = 8.0  # score messages per second and camera on /api/events
HISTORY = 600  # score points kept per camera for a newly opened page
LATENCY_SAMPLES = 2000


def parse_serve(text: str, token: str | None, option: str = "--serve",
                token_hint: str = "--serve-token or OVDOC_SERVE_TOKEN") -> tuple[str, int]:
    """'127.0.0.1:8080' or ':8080' (loopback) -> (host, port); a non-loopback host needs a token.

    Shared with `ovdoc serve --listen` (option, token_hint name that verb's flags in the message)."""
    host, sep, port_text = text.rpartition(":")
    if not sep:
        raise OvdocError(f"{option} must look like 127.0.0.1:8080, got {text!r}")
    host = host.strip("[]") or "127.0.0.1"
    try:
        port = int(port_text)
    except ValueError as exc:
        raise OvdocError(f"{option} must look like 127.0.0.1:8080, got {text!r}") from exc
    if not 0 <= port <= 65535:
        raise OvdocError(f"{option} port must be 0-65535, got {port}")
    if not is_loopback(host) and not token:
        raise OvdocError(f"{option} {host} is reachable from other machines: give a token ({token_hint}), "
                         "or bind 127.0.0.1")
    return host, port


def token_ok(query_token: str | None, authorization: str | None, token: str | None) -> bool:
    """True when no token is set, or the request carries it as ?token= or `Authorization: Bearer`."""
    if not token:
        return True
    import hmac

    given = query_token or (authorization or "").removeprefix("Bearer ")
    return hmac.compare_digest(given.encode(), token.encode())


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def display_name(source: str) -> str:
    """What a person calls a camera: a file's or folder's name, not its full path; a URL without its
    password (rtsp://user:secret@host). A line config's `name` arrives here as it is."""
    from urllib.parse import urlsplit

    if "://" in source:
        parts = urlsplit(source)
        if parts.password is not None:
            return parts._replace(netloc=f"{parts.username}@{parts.hostname}"
                                  + (f":{parts.port}" if parts.port else "")).geturl()
        return source
    if "/" in source or "\\" in source:
        return source.replace("\\", "/").rstrip("/").rsplit("/", 1)[-1] or source
    return source


@dataclass
class Camera:
    """What the web view knows of one source."""

    id: int
    name: str
    threshold: float
    source: str = ""
    latest: Result | None = None
    latest_seq: int = 0
    frames: int = 0
    anomalies: int = 0
    episodes: int = 0
    history: collections.deque = field(default_factory=lambda: collections.deque(maxlen=HISTORY))
    latency_ms: collections.deque = field(
        default_factory=lambda: collections.deque(maxlen=LATENCY_SAMPLES)
    )
    rate: collections.deque = field(default_factory=lambda: collections.deque(maxlen=120))  # (t, frames)
    next_event: float = 0.0
    renderer: Renderer = field(default_factory=Renderer)


class WebState:
    """Shared between the live loop (writes) and the web server (reads), under one lock."""

    def __init__(self, names: list[str], threshold: float | list[float], post: Callable[[Command], None],
                 counters: Callable[[int], dict], scoring: Callable[[], bool]) -> None:
        thresholds = threshold if isinstance(threshold, list) else [threshold] * len(names)
        self.cameras = [Camera(i, display_name(name), float(t), name)
                        for i, (name, t) in enumerate(zip(names, thresholds, strict=True))]
        self.episodes: collections.deque = collections.deque(maxlen=200)
        self.lock = threading.Lock()
        self.post = post
        self.counters = counters  # camera id -> {"dropped": ..., ...} from the loop's lanes
        self.scoring = scoring
        self.started = time.time()
        self.outputs: list[str] = []  # every output on in this run (output_registry), for /api/status
        # (camera id, after_seq) -> (seq, JPEG) | None, where the frames are not here (a Ray cluster's nodes)
        self.pictures: Callable[[int, int], tuple[int, bytes] | None] | None = None
        self._subscribers: list[tuple[asyncio.AbstractEventLoop, asyncio.Queue]] = []

    # --- from the live loop's thread ---------------------------------------------------------------
    def on_result(self, camera_id: int, result: Result) -> None:
        cam = self.cameras[camera_id]
        now = time.monotonic()
        with self.lock:
            cam.latest = result
            cam.latest_seq += 1
            if result.score is None:
                return
            cam.frames += 1
            cam.anomalies += result.anomalous
            cam.threshold = result.threshold
            cam.history.append((round(time.time(), 3), result.frame.index, result.smoothed, result.anomalous))
            if result.frame.read_at:
                cam.latency_ms.append(1000.0 * (now - result.frame.read_at))
            if not cam.rate or now - cam.rate[-1][0] >= 0.5:
                cam.rate.append((now, cam.frames))
            due = now >= cam.next_event
            if due:
                cam.next_event = now + 1.0 / EVENTS_PER_CAMERA_S
        if due:
            self.publish({"type": "score", "camera": camera_id, "frame": result.frame.index,
                          "score": result.score, "smoothed": result.smoothed, "anomalous": result.anomalous,
                          "threshold": result.threshold, "time": time.time()})

    def on_episode(self, camera_id: int, record: dict) -> None:
        message = {"type": "episode", "camera": camera_id, **public(record)}
        with self.lock:
            self.episodes.append(message)
            if record["event"] == "anomaly_start":
                self.cameras[camera_id].episodes += 1
        self.publish(message)

    def on_event(self, camera_id: int, record: dict) -> None:
        if record.get("event") in ("threshold_changed", "bundle_reloaded"):
            with self.lock:
                self.cameras[camera_id].threshold = float(record["threshold"])
        self.publish({"type": "event", "camera": camera_id, **record})

    def publish(self, message: dict) -> None:
        text = json.dumps(message, default=float)
        for loop, q in list(self._subscribers):
            loop.call_soon_threadsafe(_offer, q, text)

    # --- from the server's thread ------------------------------------------------------------------
    def subscribe(self, loop: asyncio.AbstractEventLoop) -> asyncio.Queue:
        q: asyncio.Queue = asyncio.Queue(maxsize=256)
        self._subscribers.append((loop, q))
        return q

    def unsubscribe(self, q: asyncio.Queue) -> None:
        self._subscribers = [(lp, qq) for lp, qq in self._subscribers if qq is not q]

    def fps(self, cam: Camera) -> float:
        if len(cam.rate) < 2:
            return 0.0
        (t0, f0), (t1, f1) = cam.rate[0], cam.rate[-1]
        return (f1 - f0) / (t1 - t0) if t1 > t0 else 0.0

    def status(self) -> dict:
        with self.lock:
            cams = []
            for cam in self.cameras:
                lat = np.asarray(cam.latency_ms, dtype=np.float64)
                last = cam.latest
                cams.append({
                    "id": cam.id,
                    "name": cam.name,
                    "source": cam.source,
                    "threshold": cam.threshold,
                    "frames": cam.frames,
                    "anomalies": cam.anomalies,
                    "episodes": cam.episodes,
                    "fps": round(self.fps(cam), 2),
                    "latency_ms_p50": round(float(np.percentile(lat, 50)), 2) if lat.size else None,
                    "latency_ms_p99": round(float(np.percentile(lat, 99)), 2) if lat.size else None,
                    "last": None if last is None or last.score is None else {
                        "frame": last.frame.index, "score": last.score, "smoothed": last.smoothed,
                        "anomalous": last.anomalous},
                    "history": list(cam.history)[-200:],
                    **self.counters(cam.id),
                })
            episodes = list(self.episodes)[-50:]
        return {"scoring": self.scoring(), "uptime_s": round(time.time() - self.started, 1),
                "cameras": cams, "episodes": episodes, "outputs": list(self.outputs)}

    def metrics(self) -> str:
        status = self.status()
        lines = []
        series = [
            ("ovdoc_frames_total", "counter", "Frames scored", "frames"),
            ("ovdoc_anomalous_frames_total", "counter", "Frames judged anomalous", "anomalies"),
            ("ovdoc_episodes_total", "counter", "Anomaly episodes started", "episodes"),
            ("ovdoc_dropped_frames_total", "counter", "Frames dropped: scoring fell behind", "dropped"),
            ("ovdoc_fps", "gauge", "Frames scored per second (recent)", "fps"),
            ("ovdoc_latency_p50_ms", "gauge", "Read-to-decision latency, median (ms)", "latency_ms_p50"),
            ("ovdoc_latency_p99_ms", "gauge", "Read-to-decision latency, p99 (ms)", "latency_ms_p99"),
            ("ovdoc_threshold", "gauge", "Current threshold", "threshold"),
            ("ovdoc_flag_rate", "gauge", "Share of flagged frames in the recent window", "flag_rate"),
            ("ovdoc_flag_rate_target", "gauge", "The bundle's target FPR", "flag_rate_target"),
            ("ovdoc_flag_rate_upper", "gauge", "The bundle's 95 % bound on the FPR", "flag_rate_upper"),
            ("ovdoc_flagged_frames_per_hour", "gauge", "Flagged frames per hour (window)",
             "flagged_frames_per_hour"),
            ("ovdoc_episodes_per_hour", "gauge", "Episodes started per hour (window)", "episodes_per_hour"),
            ("ovdoc_flag_rate_high", "gauge", "1 while the flagged share stays over the bound",
             "flag_rate_high"),
        ]
        for name, kind, help_text, key in series:
            lines += [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]
            for cam in status["cameras"]:
                value = cam.get(key)
                if value is not None:
                    label = cam["source"].replace("\\", "\\\\").replace('"', '\\"')
                    lines.append(f'{name}{{camera="{cam["id"]}",source="{label}"}} {float(value)}')
        lines += ["# HELP ovdoc_scoring Whether scoring is on (1) or paused (0)",
                  "# TYPE ovdoc_scoring gauge", f"ovdoc_scoring {int(status['scoring'])}"]
        return "\n".join(lines) + "\n"

    def frame_jpeg(self, camera_id: int, after_seq: int) -> tuple[int, bytes] | None:
        """The camera's latest frame, annotated, as JPEG — if newer than `after_seq`."""
        import cv2

        if self.pictures is not None:
            return self.pictures(camera_id, after_seq)
        cam = self.cameras[camera_id]
        with self.lock:
            result, seq = cam.latest, cam.latest_seq
        if result is None or seq == after_seq:
            return None
        image = cam.renderer.render(result)
        ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 80])
        return (seq, buf.tobytes()) if ok else None


def _offer(q: asyncio.Queue, text: str) -> None:
    if q.full():  # a slow page loses the oldest messages, never blocks anyone
        q.get_nowait()
    q.put_nowait(text)


class WebSink(Sink):
    """One camera's results into the shared WebState."""

    name = "web"
    needs_pixels = True  # the page shows the frames

    def __init__(self, state: WebState) -> None:
        self.state = state

    def open(self, ctx: SinkContext) -> None:
        super().open(ctx)

    def handle(self, result: Result) -> None:
        self.state.on_result(self.ctx.source_id, result)

    def episode(self, record: dict) -> None:
        self.state.on_episode(self.ctx.source_id, record)

    def event(self, record: dict) -> None:
        self.state.on_event(self.ctx.source_id, record)


class WebServer:
    """aiohttp in a daemon thread; `start` returns once it listens (or raises one line)."""

    def __init__(self, state: WebState, host: str, port: int, token: str | None = None) -> None:
        self.state, self.host, self.port, self.token = state, host, port, token
        self.loop: asyncio.AbstractEventLoop | None = None
        self._runner = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="ovdoc-web", daemon=True)
        self._closing = False

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/"

    def start(self) -> None:
        self._thread.start()
        self._ready.wait(15)
        if self._error is not None:
            raise OvdocError(f"--serve {self.host}:{self.port}: {self._error}")
        if not self._ready.is_set():
            raise OvdocError(f"--serve {self.host}:{self.port}: the web server did not start")

    def stop(self) -> None:
        if self.loop is None or not self._thread.is_alive():
            return
        self._closing = True
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)

    def _run(self) -> None:
        from aiohttp import web

        self.loop = loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        app = web.Application(middlewares=[self._auth_middleware()])
        app.add_routes([
            web.get("/", self._page),
            web.get("/stream/{camera}", self._stream),
            web.get("/api/status", self._status),
            web.get("/api/events", self._events),
            web.post("/api/threshold", self._threshold),
            web.post("/api/scoring", self._scoring),
            web.post("/api/reload", self._reload),
            web.get("/metrics", self._metrics),
        ])  # fmt: skip
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        try:
            loop.run_until_complete(self._runner.setup())
            site = web.TCPSite(self._runner, self.host, self.port, shutdown_timeout=1.0)
            loop.run_until_complete(site.start())
            self.port = site._server.sockets[0].getsockname()[1]  # the real one when 0 was asked for
        except OSError as exc:
            self._error = exc.strerror or exc
            self._ready.set()
            return
        self._ready.set()
        loop.run_forever()
        loop.close()

    # --- handlers ------------------------------------------------------------------------------------
    def _middleware_check(self, request) -> bool:
        return token_ok(request.query.get("token"), request.headers.get("Authorization"), self.token)

    def _auth_middleware(self):
        from aiohttp import web

        @web.middleware
        async def auth(request, handler):
            if not self._middleware_check(request):
                return web.json_response({"error": "token required"}, status=401)
            return await handler(request)

        return auth

    async def _page(self, request):
        from aiohttp import web

        from ovdoc.runtime.stream.web_page import PAGE

        return web.Response(text=PAGE, content_type="text/html")

    def _camera(self, request, value) -> int:
        from aiohttp import web

        try:
            camera = int(value)
        except (TypeError, ValueError):
            raise web.HTTPBadRequest(text="camera must be a number") from None
        if not 0 <= camera < len(self.state.cameras):
            raise web.HTTPNotFound(text=f"no camera {camera}")
        return camera

    async def _stream(self, request):
        from aiohttp import web

        camera = self._camera(request, request.match_info["camera"])
        response = web.StreamResponse(headers={
            "Content-Type": "multipart/x-mixed-replace; boundary=frame", "Cache-Control": "no-store"})
        await response.prepare(request)
        seq = -1
        loop = asyncio.get_running_loop()
        try:
            while not self._closing:
                got = await loop.run_in_executor(None, self.state.frame_jpeg, camera, seq)
                if got is not None:
                    seq, jpeg = got
                    await response.write(b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: "
                                         + str(len(jpeg)).encode() + b"\r\n\r\n" + jpeg + b"\r\n")
                await asyncio.sleep(1.0 / STREAM_FPS)
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        return response

    async def _status(self, request):
        from aiohttp import web

        return web.json_response(self.state.status(), dumps=lambda o: json.dumps(o, default=float))

    async def _events(self, request):
        from aiohttp import web

        headers = {"Content-Type": "text/event-stream", "Cache-Control": "no-store"}
        response = web.StreamResponse(headers=headers)
        await response.prepare(request)
        q = self.state.subscribe(asyncio.get_running_loop())
        try:
            while not self._closing:
                try:
                    text = await asyncio.wait_for(q.get(), timeout=10)
                    await response.write(f"data: {text}\n\n".encode())
                except asyncio.TimeoutError:
                    await response.write(b": keep-alive\n\n")
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            self.state.unsubscribe(q)
        return response

    async def _json_body(self, request) -> dict:
        from aiohttp import web

        try:
            body = await request.json()
        except (json.JSONDecodeError, ValueError):
            raise web.HTTPBadRequest(text="the body must be JSON") from None
        if not isinstance(body, dict):
            raise web.HTTPBadRequest(text="the body must be a JSON object")
        return body

    async def _threshold(self, request):
        import math

        from aiohttp import web

        body = await self._json_body(request)
        camera = None if body.get("camera") in (None, "all") else self._camera(request, body.get("camera"))
        try:
            value = float(body["value"])
        except (KeyError, TypeError, ValueError):
            raise web.HTTPBadRequest(text="value must be a number") from None
        if not math.isfinite(value):
            raise web.HTTPBadRequest(text="value must be finite")
        save = bool(body.get("save", False))
        self.state.post(Command(Control.SET_THRESHOLD, camera, value=value, save=save, by="web"))
        answer = {"camera": camera, "threshold": value, "save": save, "applied": "next frame"}
        return web.json_response(answer, status=202)

    async def _scoring(self, request):
        from aiohttp import web

        body = await self._json_body(request)
        action = body.get("action")
        if action not in ("pause", "resume"):
            raise web.HTTPBadRequest(text='action must be "pause" or "resume"')
        self.state.post(Command(Control.PAUSE if action == "pause" else Control.RESUME))
        return web.json_response({"action": action}, status=202)

    async def _reload(self, request):
        from aiohttp import web

        self.state.post(Command(Control.RELOAD, by="web"))
        return web.json_response({"reload": "requested"}, status=202)

    async def _metrics(self, request):
        from aiohttp import web

        return web.Response(body=self.state.metrics().encode("utf-8"),
                            headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"})


class WebRun(OutputRun):
    """`--serve`: one WebState and server for the run, a WebSink per camera feeding it."""

    def __init__(self, values, run: RunContext) -> None:
        host, port = parse_serve(values["serve"], values["serve_token"])
        thresholds = [run.threshold(i) for i in range(len(run.names))]
        self.state = WebState(list(run.names), thresholds, post=lambda command: run.post(command),
                              counters=lambda i: run.counters(i), scoring=lambda: run.scoring())
        self.state.outputs = list(run.active)
        self.server = WebServer(self.state, host, port, values["serve_token"])

    def sink(self, lane: LaneContext) -> WebSink:
        return WebSink(self.state)

    def start(self) -> None:
        from ovdoc.log import get_logger

        self.server.start()
        get_logger("run").info(f"web view on {self.server.url}")

    def stop(self) -> None:
        self.server.stop()

    def summary(self) -> dict:
        return {"url": self.server.url}


OUTPUT = Output(
    "web",
    (
        OutputOption("--serve", "Live web view of every camera (stream, score chart, threshold sliders, "
                     "episodes, pause), with /api/status, /api/events and /metrics, e.g. 127.0.0.1:8080. "
                     "Another host than loopback needs a token.", metavar="HOST:PORT"),
        OutputOption("--serve-token", "Token the web view asks for (?token= or Authorization: Bearer); "
                     "required off loopback.", metavar="TOKEN", envvar="OVDOC_SERVE_TOKEN"),
    ),
    enabled=lambda values: bool(values.get("serve")),
    check=lambda values: parse_serve(values["serve"], values["serve_token"]),
    build=WebRun,
)
