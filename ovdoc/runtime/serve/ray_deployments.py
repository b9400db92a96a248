"""The Ray Serve deployments behind `ovdoc serve --ray` (imports ray: loaded only by ray_app.py).

    OvdocIngress  HTTP: the one box's API (same parsing, auth, answers and metrics), no model; groups
                  concurrent requests into one call per bundle to a scorer (a Ray call per request
                  cost more CPU than scoring the image), and answers 503 for a replica that died
    OvdocScorer   the model replicas: each compiles a bundle once (serve.multiplexed, so fifty bundles
                  share a few replicas), groups concurrent images with @serve.batch, and uses as many
                  OpenVINO/FAISS threads as the CPUs Ray reserved for it

Both take the bundle table as `user_config`: a bundle replaced on disk is pushed by the driver as an
in-place update (reconfigure, no replica restart). Its model id carries the manifest hash, so a new
bundle is a new model to the multiplexer and requests already routed finish on the old one.
"""

from __future__ import annotations

import asyncio
import time

from ray import serve

from ovdoc.errors import first_line
from ovdoc.runtime.serve.inputs import BadInput, Upload, decode_all, parse_body, truthy

SCORE_TIMEOUT_S = 60.0  # a request never hangs: past this it is a 503
RETRIES = 1  # a replica that died mid-request: once more on another, then 503
GROUPS_IN_FLIGHT = 16  # ingress -> replica calls at once (each a group of requests)


def model_id(name: str, digest: str) -> str:
    return f"{name}@{digest}"


def _decode_requests(requests: list[tuple[list[tuple[str, bytes]], bool]]) -> list:
    """Per request its decoded images, or the BadInput that refuses it (worker thread)."""
    out: list = []
    for uploads, _ in requests:
        try:
            out.append(decode_all([Upload(n, d) for n, d in uploads]))
        except BadInput as exc:
            out.append(exc)
    return out


@serve.deployment(name="OvdocScorer")
class OvdocScorer:
    def __init__(self, device: str = "CPU", batch: int = 8, max_wait_ms: float = 5.0,
                 threads: int = 1) -> None:
        from ovdoc.runtime.cpu_share import shared_core

        self.device, self.batch, self.threads = device, batch, max(1, int(threads))
        self.core = shared_core(self.threads)  # replicas sharing a node must not share its first core
        self.paths: dict[str, str] = {}
        self._batched.set_max_batch_size(batch)
        # the ingress already waited max_wait_ms to group requests; here only images of calls that
        # arrive together (several ingress groups, several requests of one group) are merged
        self._batched.set_batch_wait_timeout_s(min(max_wait_ms, 1.0) / 1000.0)

    def reconfigure(self, config: dict) -> None:
        self.paths = {name: b["path"] for name, b in config["bundles"].items()}

    @serve.multiplexed(max_num_models_per_replica=8)
    async def model(self, mid: str):
        """Load, verify and compile one bundle on this replica (once; LRU beyond 8 bundles)."""
        from ovdoc.runtime.detector import Detector

        name, _, digest = mid.partition("@")
        det = await asyncio.to_thread(Detector.load, self.paths[name], self.device, batch=self.batch,
                                      core=self.core)
        if det.manifest_.get("manifest_sha256") != digest:
            raise RuntimeError(f"bundle {name} changed on disk while loading; retry")
        return det

    async def score(self, requests: list[tuple[list[tuple[str, bytes]], bool]]) -> list[dict]:
        """Several requests' images (grouped by the ingress: one Ray call for all of them) -> per request
        {"results": [...]} or {"error": line, "status": code}; a bad image fails only its own request."""
        mid = serve.get_multiplexed_model_id()
        decoded = await asyncio.to_thread(_decode_requests, requests)  # one thread hop for the group
        answers: list[dict] = []
        pending = []
        for (_, want_map), images in zip(requests, decoded, strict=True):
            if isinstance(images, BadInput):
                answers.append({"error": str(images), "status": images.status})
                continue
            answers.append({})
            pending.append((len(answers) - 1, [self._batched(mid, im, want_map) for im in images]))
        flat = await asyncio.gather(*(c for _, calls in pending for c in calls))
        at = 0
        for i, calls in pending:
            answers[i] = {"results": list(flat[at : at + len(calls)])}
            at += len(calls)
        return answers

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.005)
    async def _batched(self, mids: list[str], images: list, want_maps: list[bool]) -> list[dict]:
        """Concurrent images of every request on this replica, one model batch per bundle."""
        from ovdoc.runtime.serve.bundles import score_images

        out: list[dict | None] = [None] * len(images)
        for mid in dict.fromkeys(mids):
            at = [i for i, m in enumerate(mids) if m == mid]
            det = await self.model(mid)
            name = mid.partition("@")[0]
            scored = await asyncio.to_thread(score_images, det, name, [images[i] for i in at],
                                             [want_maps[i] for i in at])
            for i, r in zip(at, scored, strict=True):
                out[i] = {**r, "batch": len(at)}
        return out


@serve.deployment(name="OvdocIngress", ray_actor_options={"num_cpus": 0})
class OvdocIngress:
    def __init__(self, scorer, token: str | None = None, version: str = "", max_images: int = 64,
                 batch: int = 8, max_wait_ms: float = 5.0) -> None:
        from ovdoc.runtime.serve.metrics import Metrics

        self._grouped.set_max_batch_size(batch)
        self._grouped.set_batch_wait_timeout_s(max_wait_ms / 1000.0)
        self.scorer, self.token, self.version, self.max_images = scorer, token, version, max_images
        self.metrics = Metrics()
        self.bundles: dict[str, dict] = {}
        self.default = ""

    def reconfigure(self, config: dict) -> None:
        self.bundles, self.default = config["bundles"], config["default"]

    async def __call__(self, request):
        from starlette.responses import JSONResponse, Response

        from ovdoc.runtime.stream.web import token_ok

        path = request.url.path
        if path not in ("/healthz", "/readyz") and not token_ok(
                request.query_params.get("token"), request.headers.get("authorization"), self.token):
            return JSONResponse({"error": "token required: ?token= or Authorization: Bearer"}, 401)
        if path == "/v1/score" and request.method == "POST":
            return await self._score(request)
        if request.method != "GET":
            return JSONResponse({"error": "Method Not Allowed"}, 405)
        if path == "/v1/bundles":
            return JSONResponse({"default": self.default, "bundles": [
                {"name": n, **b} for n, b in self.bundles.items()]})
        if path == "/healthz":
            return JSONResponse({"status": "ok"})
        if path == "/readyz":
            return JSONResponse({"ready": True, "bundles": list(self.bundles)}) if self.bundles else \
                JSONResponse({"error": "not ready"}, 503)
        if path == "/metrics":
            return Response(self.metrics.text(), media_type="text/plain; version=0.0.4; charset=utf-8")
        if path == "/openapi.json":
            from ovdoc.runtime.serve.openapi import spec

            return JSONResponse(spec(self.version))
        return JSONResponse({"error": "Not Found"}, 404)

    async def _score(self, request):
        from starlette.responses import JSONResponse

        t0 = time.perf_counter()
        name = request.query_params.get("bundle") or self.default
        label = name if name in self.bundles else "(unknown)"
        try:
            if name not in self.bundles:
                raise BadInput(f"unknown bundle {name!r}; served: {', '.join(self.bundles)}", status=404)
            body = await request.body()
            uploads, want_map = parse_body(request.headers.get("content-type"), body, self.max_images)
            want_map = want_map or truthy(request.query_params.get("map"))
            answer = await self._call_scorer(name, [(u.name, u.data) for u in uploads], want_map)
            if "error" in answer:
                raise BadInput(answer["error"], answer["status"])
        except BadInput as exc:
            from ovdoc.runtime.serve.app import REASONS

            self.metrics.error(label, REASONS.get(exc.status, str(exc.status)))
            self.metrics.request(label, exc.status, time.perf_counter() - t0)
            headers = {"Retry-After": "1"} if exc.status == 503 else None
            return JSONResponse({"error": " ".join(str(exc).split())}, exc.status, headers=headers)
        results = answer["results"]
        for upload, r in zip(uploads, results, strict=True):
            r["name"] = upload.name
            self.metrics.batch(name, r.pop("batch", 1))
        self.metrics.request(name, 200, time.perf_counter() - t0, len(results))
        return JSONResponse({"results": results})

    async def _call_scorer(self, name: str, uploads: list[tuple[str, bytes]], want_map: bool) -> dict:
        return await self._grouped((model_id(name, self.bundles[name]["hash"]), uploads, want_map))

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.005, max_concurrent_batches=GROUPS_IN_FLIGHT)
    async def _grouped(self, items: list[tuple[str, list[tuple[str, bytes]], bool]]) -> list[dict]:
        """Concurrent requests, one scorer call per bundle: the ingress->replica hop (a Ray actor call,
        after the proxy the dearest step per request) is paid once per group, not once per request."""
        out: list[dict] = [{}] * len(items)
        groups: dict[str, list[int]] = {}
        for i, (mid, _, _) in enumerate(items):
            groups.setdefault(mid, []).append(i)

        async def send(mid: str, at: list[int]) -> None:
            answers = await self._send(mid, [(items[i][1], items[i][2]) for i in at])
            for i, answer in zip(at, answers, strict=True):
                out[i] = answer

        await asyncio.gather(*(send(mid, at) for mid, at in groups.items()))
        return out

    async def _send(self, mid: str, requests: list[tuple[list[tuple[str, bytes]], bool]]) -> list[dict]:
        problem = ""
        deadline = time.monotonic() + SCORE_TIMEOUT_S  # for the call, retry included
        for attempt in range(RETRIES + 1):
            try:
                call = self.scorer.options(multiplexed_model_id=mid).score.remote(requests)
                return await asyncio.wait_for(call, max(0.1, deadline - time.monotonic()))
            except asyncio.TimeoutError:
                problem = f"no answer within {SCORE_TIMEOUT_S:g} s"
                break
            except Exception as exc:  # a replica died or is unreachable: once more, elsewhere
                problem = first_line(exc, 160)
                if attempt < RETRIES:
                    await asyncio.sleep(0.2)
        return [{"error": f"scoring unavailable, retry: {problem}", "status": 503}] * len(requests)
