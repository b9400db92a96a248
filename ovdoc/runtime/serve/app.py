"""The one-box server: aiohttp (the web view's stack), one micro-batcher per bundle, token rules of the
web view (loopback needs none; any other address requires one, as `?token=` or `Authorization: Bearer`).

Every refusal is a 4xx JSON body with one line, `{"error": "..."}`; a fault of the server itself is a 500
with one line too, never a traceback. SIGINT/SIGTERM: /readyz turns 503, requests in flight finish, exit.
"""

from __future__ import annotations

import asyncio
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

from ovdoc.errors import first_line
from ovdoc.runtime.serve.batching import MicroBatcher
from ovdoc.runtime.serve.bundles import ServedBundle, Watcher
from ovdoc.runtime.serve.inputs import MAX_BODY_BYTES, MAX_IMAGES, BadInput, decode_all, parse_body, truthy
from ovdoc.runtime.serve.metrics import Metrics

UNAUTHENTICATED = ("/healthz", "/readyz")  # probes: they reveal nothing
REASONS = {400: "bad_request", 401: "unauthorized", 404: "unknown_bundle", 405: "method", 413: "too_large",
           415: "not_an_image", 503: "unavailable"}


@dataclass
class ServeOptions:
    host: str = "127.0.0.1"
    port: int = 8000
    token: str | None = None
    max_wait_ms: float = 5.0
    max_batch: int | None = None  # None: the bundle's model batch
    max_queue: int = 256
    max_body: int = MAX_BODY_BYTES
    max_images: int = MAX_IMAGES
    watch_s: float | None = 1.0  # poll bundles for replacement; None: never


class ServeApp:
    """Routes and handlers over a set of loaded bundles (the first is the default)."""

    def __init__(self, bundles: dict[str, ServedBundle], options: ServeOptions,
                 metrics: Metrics | None = None, version: str = "") -> None:
        self.bundles, self.opt = bundles, options
        self.default = next(iter(bundles))
        self.metrics = metrics or Metrics()
        self.version = version
        self.draining = False
        self.batchers: dict[str, MicroBatcher] = {}

    def application(self):
        from aiohttp import web

        app = web.Application(middlewares=[self._errors, self._auth], client_max_size=self.opt.max_body)
        app.add_routes([
            web.post("/v1/score", self.score),
            web.get("/v1/bundles", self.list_bundles),
            web.get("/healthz", self.healthz),
            web.get("/readyz", self.readyz),
            web.get("/metrics", self.prometheus),
            web.get("/openapi.json", self.openapi),
        ])  # fmt: skip
        app.on_startup.append(self._start_batchers)
        app.on_cleanup.append(self._stop_batchers)
        return app

    async def _start_batchers(self, app) -> None:
        for name, b in self.bundles.items():
            batcher = MicroBatcher(b.score, self.opt.max_batch or b.batch, self.opt.max_wait_ms / 1000.0,
                                   self.opt.max_queue, name,
                                   on_batch=lambda n, _n=name: self.metrics.batch(_n, n))
            batcher.start()
            self.batchers[name] = batcher

    async def _stop_batchers(self, app) -> None:
        for batcher in self.batchers.values():
            await batcher.close()

    # --- middlewares -----------------------------------------------------------------------------------
    @property
    def _errors(self):
        from aiohttp import web

        @web.middleware
        async def errors(request, handler):
            try:
                return await handler(request)
            except BadInput as exc:
                return self._refuse(request, exc.status, str(exc))
            except web.HTTPException as exc:  # aiohttp's own: 404 route, 405, 413 over client_max_size
                if exc.status < 400:
                    raise
                text = exc.text if exc.text and not exc.text.startswith(f"{exc.status}:") else exc.reason
                if exc.status == 413:
                    text = f"the request body is over the limit of {self.opt.max_body} bytes"
                return self._refuse(request, exc.status, text)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a fault of ours: one line to the client and to the log
                print(f"ovdoc serve: {request.method} {request.path}: {type(exc).__name__}: "
                      f"{first_line(exc)}", file=sys.stderr, flush=True)
                return self._refuse(request, 500, f"internal error: {first_line(exc)}")

        return errors

    @property
    def _auth(self):
        from aiohttp import web

        from ovdoc.runtime.stream.web import token_ok

        @web.middleware
        async def auth(request, handler):
            if request.path not in UNAUTHENTICATED and not token_ok(
                    request.query.get("token"), request.headers.get("Authorization"), self.opt.token):
                raise web.HTTPUnauthorized(text="token required: ?token= or Authorization: Bearer")
            return await handler(request)

        return auth

    def _refuse(self, request, status: int, text: str):
        from aiohttp import web

        line = " ".join(str(text).split()) or f"HTTP {status}"
        if request.path == "/v1/score":
            name = request.query.get("bundle") or self.default
            name = name if name in self.bundles else "(unknown)"
            self.metrics.error(name, REASONS.get(status, "internal" if status >= 500 else str(status)))
            self.metrics.request(name, status, time.perf_counter() - request.get("t0", time.perf_counter()))
        headers = {"Retry-After": "1"} if status == 503 else None
        return web.json_response({"error": line}, status=status, headers=headers)

    # --- handlers --------------------------------------------------------------------------------------
    async def score(self, request):
        from aiohttp import web

        request["t0"] = t0 = time.perf_counter()
        name = request.query.get("bundle") or self.default
        if name not in self.bundles:
            raise BadInput(f"unknown bundle {name!r}; served: {', '.join(self.bundles)}", status=404)
        if self.draining:
            raise BadInput("shutting down; retry on another instance", status=503)
        body = await request.read()
        uploads, want_map = parse_body(request.headers.get("Content-Type"), body, self.opt.max_images)
        want_map = want_map or truthy(request.query.get("map"))
        loop = asyncio.get_running_loop()
        images = await loop.run_in_executor(None, decode_all, uploads)  # decoding off the event loop
        results = await self.batchers[name].score(images, want_map)
        for upload, result in zip(uploads, results, strict=True):
            result["name"] = upload.name
        self.metrics.request(name, 200, time.perf_counter() - t0, len(images))
        return web.json_response({"results": results})

    async def list_bundles(self, request):
        from aiohttp import web

        infos = [b.info() for b in self.bundles.values()]
        return web.json_response({"default": self.default, "bundles": infos})

    async def healthz(self, request):
        from aiohttp import web

        return web.json_response({"status": "ok"})

    async def readyz(self, request):
        from aiohttp import web

        if self.draining or len(self.batchers) != len(self.bundles):
            return web.json_response({"error": "not ready"}, status=503)
        return web.json_response({"ready": True, "bundles": list(self.bundles)})

    async def prometheus(self, request):
        from aiohttp import web

        text = self.metrics.text({n: b.queued for n, b in self.batchers.items()})
        return web.Response(body=text.encode("utf-8"),
                            headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"})

    async def openapi(self, request):
        from aiohttp import web

        from ovdoc.runtime.serve.openapi import spec

        return web.json_response(spec(self.version))


def run_server(app: ServeApp, on_listening: Callable[[str], None]) -> None:
    """Serve until SIGINT/SIGTERM (blocking); `on_listening(url)` once the socket is bound."""
    asyncio.run(_serve(app, on_listening))


async def _serve(app: ServeApp, on_listening: Callable[[str], None]) -> None:
    from aiohttp import web

    from ovdoc.errors import OvdocError

    runner = web.AppRunner(app.application(), access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, app.opt.host, app.opt.port, shutdown_timeout=5.0)
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        raise OvdocError(f"--listen {app.opt.host}:{app.opt.port}: {exc.strerror or exc}") from None
    port = site._server.sockets[0].getsockname()[1]  # the real one when 0 was asked for
    host = f"[{app.opt.host}]" if ":" in app.opt.host else app.opt.host
    watcher = None
    if app.opt.watch_s:
        watcher = Watcher(list(app.bundles.values()), app.opt.watch_s)
        watcher.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    on_listening(f"http://{host}:{port}")
    try:
        await stop.wait()
    finally:
        app.draining = True
        if watcher is not None:
            watcher.close()
        await runner.cleanup()
