"""`ovdoc serve BUNDLE [NAME=BUNDLE ...]`: score pictures over HTTP (one box, or Ray Serve with --ray)."""

from __future__ import annotations

import json
import os

import click

from ovdoc.errors import OvdocError


@click.command("serve")
@click.argument("bundles", nargs=-1)
@click.option("--listen", default="127.0.0.1:8000", show_default=True,
              help="HOST:PORT to listen on (port 0: any free one). Beyond loopback a token is required.")
@click.option("--token", envvar="OVDOC_SERVE_TOKEN", default=None,
              help="Token clients send as ?token= or 'Authorization: Bearer' (or OVDOC_SERVE_TOKEN).")
@click.option("--device", default="CPU", show_default=True, help="OpenVINO device: CPU, GPU, NPU, AUTO, ...")
@click.option("--batch", type=click.IntRange(1, 256), default=8, show_default=True,
              help="The model's batch: concurrent requests are grouped up to this many images.")
@click.option("--max-wait-ms", type=click.FloatRange(0, 1000), default=None,
              help="How long a short batch waits for more requests before it is scored (default 5; with "
              "--ray 10: its ingress groups requests into one call to a replica, and fuller groups cost "
              "less CPU per image).")
@click.option("--max-queue", type=click.IntRange(1), default=256, show_default=True,
              help="Images waiting per bundle beyond which requests get 503 (retry) at once.")
@click.option("--watch/--no-watch", default=True, show_default=True,
              help="Reload (and verify) a bundle replaced on disk, without dropping requests.")
@click.option("--ray", "ray_address", default=None, metavar="ADDRESS|auto",
              help="Run as a Ray Serve application on this cluster (needs ovdoc[serve]).")
@click.option("--replicas", type=click.IntRange(1), default=None,
              help="Ray: a fixed number of scoring replicas (default 1).")
@click.option("--min-replicas", type=click.IntRange(0), default=None, help="Ray: autoscaling lower bound.")
@click.option("--max-replicas", type=click.IntRange(1), default=None, help="Ray: autoscaling upper bound.")
@click.option("--replica-cpus", type=click.FloatRange(0.1), default=1.0, show_default=True,
              help="Ray: CPUs reserved per replica; OpenVINO and FAISS use that many threads.")
@click.option("--ray-ingress", type=click.Choice(["proxy", "haproxy"]), default="proxy", show_default=True,
              help="Ray: HTTP in front of the replicas. haproxy (with --ray local): HAProxy hands requests "
                   "straight to the ingress replica instead of Ray's Python proxy: about a third of the "
                   "CPU per request; its stats ports bind every interface.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON line (url, bundles) once listening.")
def serve(bundles: tuple[str, ...], listen: str, token: str | None, device: str, batch: int,
          max_wait_ms: float | None, max_queue: int, watch: bool, ray_address: str | None,
          replicas: int | None, min_replicas: int | None, max_replicas: int | None, replica_cpus: float,
          ray_ingress: str, as_json: bool) -> None:
    """Score pictures over HTTP: POST /v1/score (an image, a multipart form, or a JSON batch of base64
    images; ?bundle=NAME), GET /v1/bundles, /healthz, /readyz, /metrics, /openapi.json.

    \b
    Several bundles: ovdoc serve caps=caps.bundle labels=labels.bundle  (the first is the default)
    No BUNDLE: the built-in demo, named "demo".
      curl --data-binary @part.png -H 'Content-Type: image/png' http://127.0.0.1:8000/v1/score
    """
    from ovdoc.runtime.serve.bundles import parse_bundles
    from ovdoc.runtime.stream.web import parse_serve

    if not bundles:
        from ovdoc.irmodels import demo_bundle

        bundles = (f"demo={demo_bundle()}",)
    paths = parse_bundles(bundles)
    host, port = parse_serve(listen, token, option="--listen", token_hint="--token or OVDOC_SERVE_TOKEN")
    for name, path in paths.items():
        if not (path / "manifest.json").is_file():
            raise OvdocError(f"bundle {name}: {path} is not an ovdoc bundle (no manifest.json)")
    if ray_address is not None:
        from ovdoc.runtime.serve.ray_app import RayOptions, run_ray

        if replicas is not None and (min_replicas is not None or max_replicas is not None):
            raise OvdocError("--replicas is a fixed count: give it or --min/--max-replicas, not both")
        run_ray(paths, RayOptions(address=ray_address, host=host, port=port, token=token, device=device,
                                  batch=batch, **_given(max_wait_ms=max_wait_ms), replicas=replicas or 1,
                                  min_replicas=min_replicas, max_replicas=max_replicas,
                                  replica_cpus=replica_cpus, watch=watch, ingress=ray_ingress),
                on_listening=lambda url: _announce(url, paths, as_json))
        return
    _serve_one_box(paths, host, port, token, device, batch, max_wait_ms, max_queue, watch, as_json)


def _given(**options) -> dict:
    """The options the user gave; the rest keep their options class's default (one box and Ray differ)."""
    return {name: value for name, value in options.items() if value is not None}


def _serve_one_box(paths, host, port, token, device, batch, max_wait_ms, max_queue, watch, as_json) -> None:
    from ovdoc import __version__
    from ovdoc.runtime.serve.app import ServeApp, ServeOptions, run_server
    from ovdoc.runtime.serve.bundles import ServedBundle
    from ovdoc.runtime.serve.metrics import Metrics

    metrics = Metrics()
    served = {name: ServedBundle(name, path, device, batch, on_reload=metrics.reload)
              for name, path in paths.items()}
    options = ServeOptions(host=host, port=port, token=token, **_given(max_wait_ms=max_wait_ms),
                           max_batch=batch, max_queue=max_queue, watch_s=1.0 if watch else None)
    app = ServeApp(served, options, metrics, version=__version__)
    run_server(app, lambda url: _announce(url, paths, as_json))


def _announce(url: str, paths: dict, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps({"url": url, "bundles": {k: str(v) for k, v in paths.items()},
                               "pid": os.getpid()}))
    else:
        click.echo(f"ovdoc serve: {', '.join(paths)} on {url} (POST {url}/v1/score; Ctrl+C stops)", err=True)
