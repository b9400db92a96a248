"""Load test of `ovdoc serve`: N concurrent clients for T seconds against one box and against Ray Serve
(2 replicas), beside in-process `Detector.score_samples` on the same images, in one run.

    python benchmarks/serve_load.py --clients 8 --seconds 10 [--targets one-box,ray] [--replicas 2,1x2]
                                    [--ray-ingress proxy,haproxy] [--json] [--record]

Like with like: every target gets the same PNG bodies, one image per request, from the same client (a
thread per connection in this process); the in-process baseline decodes those bodies too. Each row also
says where the CPU went: the server's processes (all of a private Ray's) per image answered, and the
share of a core the load generator itself used on the same machine.

Loopback only, bounded in clients (<= 64), time (<= 120 s per phase) and requests. Each target gets two
phases: `max` (every client sends as soon as its last answer came: the throughput ceiling) and `half`
(open loop at half that rate: the latency a line sees when the server is not saturated). The issue's goals
on a 2-core box: throughput >= 0.7 x in-process, p99 < 50 ms at half load, zero errors.
--record writes benchmarks/results/serve-load.{json,md}; without it nothing is written (timings on a
shared machine are not results).
"""

from __future__ import annotations

import datetime as dt
import http.client
import json
import os
import platform
import socket
import sys
import threading
import time
from pathlib import Path

import click
import numpy as np

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
sys.path.insert(0, str(REPO / "tests"))
MAX_REQUESTS_PER_PHASE = 200_000


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def in_process(bundle: Path, bodies: list[bytes], seconds: float) -> dict:
    """Decode the same PNG bodies the clients send and score_samples them, batch after batch, for
    `seconds`: images per second. The servers decode every body too, so the baseline pays that work."""
    import cv2

    from ovdoc.runtime.detector import Detector

    det = Detector.load(bundle)

    def decoded(chunk: list[bytes]) -> list[np.ndarray]:
        return [cv2.imdecode(np.frombuffer(b, np.uint8), cv2.IMREAD_COLOR) for b in chunk]

    det.score_samples(decoded(bodies[: det.batch]))  # compile, warm up
    done, t0, cpu0 = 0, time.perf_counter(), time.process_time()
    while time.perf_counter() - t0 < seconds:
        for i in range(0, len(bodies), det.batch):
            det.score_samples(decoded(bodies[i : i + det.batch]))
            done += len(bodies[i : i + det.batch])
    elapsed, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    return {"target": "in-process", "phase": "max", "images": done, "seconds": round(elapsed, 3),
            "throughput": round(done / elapsed, 2), "cpu_ms_per_image": round(1000 * cpu / max(1, done), 3)}


def process_kind(pid: int) -> str:
    """What a server process is, from its command line: where a Ray server's CPU goes."""
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode("utf-8", "replace")
    except OSError:
        return "gone"
    for needle, kind in (("OvdocIngress", "ingress"), ("OvdocScorer", "replicas"), ("haproxy", "haproxy"),
                         ("ovdoc serve", "server"), ("-m ovdoc", "server")):
        if needle in cmd:
            return kind
    return "ray services"


def tree_cpu(root: int) -> dict[str, float]:
    """CPU seconds (user + system) used so far by `root` and every process under it (a private Ray's
    proxy, ingress and replicas run under the `ovdoc serve --ray local` process), by process kind."""
    from _serve_helpers import pids_under

    tick = os.sysconf("SC_CLK_TCK")
    total: dict[str, float] = {}
    for pid in pids_under(root):
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:  # ended since the walk
            continue
        kind = process_kind(pid)
        total[kind] = total.get(kind, 0.0) + (int(fields[11]) + int(fields[12])) / tick
    return total


def load(url: str, bodies: list[bytes], clients: int, seconds: float, rate: float | None,
         server_pid: int | None = None) -> dict:
    """`clients` threads with keep-alive connections POSTing raw PNGs; rate None = closed loop."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    assert host in ("127.0.0.1", "localhost"), "loopback only"
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    start = time.perf_counter() + 0.05
    end = start + seconds
    interval = clients / rate if rate else 0.0

    def client(k: int) -> None:
        conn = http.client.HTTPConnection(host, int(port), timeout=30)
        due = start + (k * interval / clients if interval else 0.0)
        i = k
        while True:
            now = time.perf_counter()
            if interval:
                if due > now:
                    time.sleep(due - now)
                due += interval
            if time.perf_counter() >= end or len(latencies) + len(errors) >= MAX_REQUESTS_PER_PHASE:
                break
            t0 = time.perf_counter()
            try:
                conn.request("POST", "/v1/score", body=bodies[i % len(bodies)],
                             headers={"Content-Type": "image/png"})
                response = conn.getresponse()
                response.read()
                ok = response.status == 200
                problem = f"HTTP {response.status}"
            except (OSError, http.client.HTTPException) as exc:
                ok, problem = False, type(exc).__name__
                conn.close()
                conn = http.client.HTTPConnection(host, int(port), timeout=30)
            with lock:
                (latencies.append(time.perf_counter() - t0) if ok else errors.append(problem))
            i += clients
        conn.close()

    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    server0, client0 = tree_cpu(server_pid) if server_pid else {}, time.process_time()
    for t in threads:
        t.start()
    for t in threads:
        t.join(seconds + 60)
    elapsed = max(1e-9, min(time.perf_counter(), end + 30) - start)
    split = {k: v - server0.get(k, 0.0) for k, v in tree_cpu(server_pid).items()} if server_pid else {}
    server_cpu = sum(split.values()) if server_pid else None
    client_cpu = time.process_time() - client0
    lat = np.asarray(latencies) * 1000
    return {"clients": clients, "requests": len(latencies) + len(errors), "errors": len(errors),
            "error_kinds": sorted(set(errors))[:5], "seconds": round(elapsed, 3),
            "throughput": round(len(latencies) / elapsed, 2),
            "p50_ms": round(float(np.percentile(lat, 50)), 2) if lat.size else None,
            "p99_ms": round(float(np.percentile(lat, 99)), 2) if lat.size else None,
            "offered_rate": round(rate, 2) if rate else None,
            # where the 2 cores went: the server's processes per image answered, and the load
            # generator's own share (it runs on the same cores)
            "cpu_ms_per_image": round(1000 * server_cpu / max(1, len(latencies)), 3) if server_cpu else None,
            "client_cpu_share": round(client_cpu / elapsed, 3),
            # cores each kind of server process used during the phase (Ray: ingress, replicas, ...)
            "cores_by_process": {k: round(v / elapsed, 3) for k, v in sorted(split.items()) if v > 0}}


def run_target(name: str, args: list[str], bodies: list[bytes], clients: int, seconds: float) -> list[dict]:
    from _serve_helpers import Server

    srv = Server(*args, timeout=300)
    try:
        load(srv.url, bodies, min(clients, 2), min(2.0, seconds), None)  # warm-up (the batch-1 copy)
        peak = load(srv.url, bodies, clients, seconds, None, srv.proc.pid)
        half = load(srv.url, bodies, clients, seconds, max(1.0, peak["throughput"] / 2), srv.proc.pid)
    finally:
        srv.stop()
    return [{"target": name, "phase": "max", **peak}, {"target": name, "phase": "half", **half}]


@click.command()
@click.option("--bundle", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
              help="Bundle to serve (default: the shipped demo).")
@click.option("--clients", type=click.IntRange(1, 64), default=8, show_default=True)
@click.option("--seconds", type=click.FloatRange(0.5, 120), default=10.0, show_default=True)
@click.option("--images", type=click.IntRange(1, 256), default=32, show_default=True,
              help="Distinct images (frames of the demo clip) cycled through.")
@click.option("--targets", default="one-box,ray", show_default=True, help="one-box, ray, or both.")
@click.option("--replicas", default="2", show_default=True,
              help="Ray layouts, comma-separated: N replicas, or NxC (N replicas of C CPUs each; C defaults "
                   "to 1). E.g. 2,1x2 runs two replicas of one CPU, then one replica of two CPUs.")
@click.option("--ray-ingress", "ray_ingress", default="proxy,haproxy", show_default=True,
              help="Ray HTTP paths to measure, comma-separated: proxy (Ray's proxy actor), haproxy.")
@click.option("--batch", type=click.IntRange(1, 64), default=8, show_default=True)
@click.option("--max-wait-ms", type=float, default=None,
              help="Passed to every server; default: each target's own (`ovdoc serve`'s defaults).")
@click.option("--json", "as_json", is_flag=True)
@click.option("--record", is_flag=True, help="Write benchmarks/results/serve-load.{json,md}.")
def main(bundle, clients, seconds, images, targets, replicas, ray_ingress, batch, max_wait_ms, as_json,
         record) -> None:
    from _serve_helpers import demo_frames, png

    from ovdoc.irmodels import demo_bundle

    layouts = ray_layouts(replicas)  # refused before anything runs
    ingresses = [t.strip() for t in ray_ingress.split(",") if t.strip()]
    if not set(ingresses) <= {"proxy", "haproxy"}:
        raise click.BadParameter(f"{ray_ingress!r}: proxy and/or haproxy", param_hint="--ray-ingress")
    bundle = bundle or demo_bundle()
    frames = demo_frames(images)
    bodies = [png(f) for f in frames]
    wait = [] if max_wait_ms is None else ["--max-wait-ms", str(max_wait_ms)]
    common = [str(bundle), "--batch", str(batch), *wait, "--no-watch"]
    from ovdoc.runtime.bench.machine import describe_machine

    load_before = round(os.getloadavg()[0], 2)
    machine = describe_machine()
    rows = [in_process(bundle, bodies, seconds)]
    wanted = [t.strip() for t in targets.split(",") if t.strip()]
    if "one-box" in wanted:
        rows += run_target("one-box", common, bodies, clients, seconds)
    if "ray" in wanted:
        for ingress in ingresses:
            for n, cpus in layouts:
                rows += run_target(f"ray-{ingress}-{n}x{cpus:g}",
                                   [*common, "--ray", "local", "--replicas", str(n), "--replica-cpus",
                                    f"{cpus:g}", "--ray-ingress", ingress, "--listen",
                                    f"127.0.0.1:{free_port()}"], bodies, clients, seconds)
    base = rows[0]["throughput"]
    for r in rows[1:]:
        if r["phase"] == "max":  # the half phase's throughput is the rate it was offered
            r["vs_in_process"] = round(r["throughput"] / base, 3) if base else None
    report = {"host": platform.node(), "cpu": platform.processor() or platform.machine(),
              "machine": machine, "load_before": load_before,
              "load_after": round(os.getloadavg()[0], 2),
              "time": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
              "command": "python " + " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
              "bundle": str(bundle), "clients": clients, "seconds": seconds, "batch": batch,
              "max_wait_ms": max_wait_ms, "rows": rows}
    table = markdown(report)
    if as_json:
        click.echo(json.dumps(report, indent=2))
    else:
        click.echo(table)
    if record:
        RESULTS.mkdir(parents=True, exist_ok=True)
        (RESULTS / "serve-load.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
        (RESULTS / "serve-load.md").write_text(table, encoding="utf-8")


def ray_layouts(text: str) -> list[tuple[int, float]]:
    """'2,1x2' -> [(2, 1.0), (1, 2.0)]; a bad item is one line and exit 2 (click's usage error)."""
    out = []
    for item in filter(None, (t.strip() for t in text.split(","))):
        n, _, cpus = item.partition("x")
        try:
            layout = (int(n), float(cpus or 1))
        except ValueError:
            raise click.BadParameter(f"{item!r}: N or NxCPUS expected", param_hint="--replicas") from None
        if not (1 <= layout[0] <= 8 and 0.1 <= layout[1] <= 64):
            raise click.BadParameter(f"{item!r}: 1-8 replicas of 0.1-64 CPUs", param_hint="--replicas")
        out.append(layout)
    return out


def markdown(report: dict) -> str:
    from ovdoc.runtime.bench.machine import summary_line

    lines = [f"`ovdoc serve` load: {report['clients']} clients, {report['seconds']} s per phase, batch "
             f"{report['batch']}, wait " + (f"{report['max_wait_ms']} ms" if report["max_wait_ms"] is not None
                                             else "each target's default (one box 5 ms, Ray 10 ms)"), "",
             f"{report.get('time', '')} · {summary_line(report['machine']) if 'machine' in report else ''} "
             f"· load (1 min) before {report.get('load_before', '')}, "
             f"after {report.get('load_after', '')} · `{report.get('command', '')}`", "",
             "| target | phase | requests | errors | images/s | x in-process | p50 ms | p99 ms "
             "| CPU ms/image | client CPU |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in report["rows"]:
        lines.append(f"| {r['target']} | {r['phase']} | {r.get('requests', r.get('images'))} | "
                     f"{r.get('errors', 0)} | {r['throughput']} | {r.get('vs_in_process', '')} | "
                     f"{r.get('p50_ms', '')} | {r.get('p99_ms', '')} | {r.get('cpu_ms_per_image', '')} | "
                     f"{r.get('client_cpu_share', '')} |")
    kinds = ["server", "ingress", "replicas", "haproxy", "ray services"]
    lines += ["", "Cores each kind of server process used (Ray: Ray's own proxy and services under `ray "
              "services`):", "", "| target | phase | " + " | ".join(kinds) + " |",
              "|---|---|" + "---:|" * len(kinds)]
    for r in report["rows"]:
        split = r.get("cores_by_process")
        if split:
            lines.append(f"| {r['target']} | {r['phase']} | "
                         + " | ".join(str(split.get(k, "")) for k in kinds) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
