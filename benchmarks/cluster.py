"""The Ray cluster path against the one-box path, on this machine (issue 26's measurements).

1. Cameras: the same clip (looped) scored by `ovdoc run` on this box (a child process) and by
   `ovdoc run --ray` (one camera actor of 1 CPU on a local cluster), each for --frames and for
   --long-frames frames. The cost per frame is the slope between the two (extra CPU-seconds over extra
   frames): what a camera costs once it runs, without either path's start-up (process, imports, compile;
   for the actor also Ray's worker process). Frames per CPU-second of that slope, cluster against local,
   is the goal figure (>= 0.85); the whole-run figure at --long-frames is beside it, with the start-up
   time (actor placed, bundle compiled, first poll), the fixed CPU of a camera actor (the intercept) and
   the object store memory in use while it runs. The cluster's CPU is the driver's plus the camera
   actor's process (Ray's own daemons, raylet/GCS, are not counted: they are shared by every camera of a
   cluster). One short cluster run first, untimed: the driver's one-off imports are not a camera's cost.
2. Big image sets: feature extraction of the same image files by a local fit's extractor and by Ray Data
   (`RayExtract`, one actor per CPU) on one worker node with this box's CPUs — one node against the same
   box — images per second, alternating the two for --repeats passes.
   Ray Data pays a fixed cost per call (starting its actor pool: new worker processes that import and
   compile, about 3 s on this box); its per-image rate apart from that is the throughput a big image set
   approaches (goal: >= 0.8 of local). It is the slope between a call on a sixth of the images and a call
   on all of them (both pay the fixed cost once; a slope from a tiny call was mostly start-up noise).
   The magnetic tiles' defect-free files are repeated to reach --images.
3. Why actors turn CPU pinning off: two processes that each compile the shipped model with one OpenVINO
   thread, run side by side for a few seconds, with OpenVINO's default pinning and with it off
   (`ovdoc.runtime.cpu_share.shared_core`): inferences per second of each.

    python benchmarks/cluster.py [--frames 249] [--long-frames 1245] [--images 2400] [--repeats 3]
                                 [--out benchmarks/results]

Writes cluster.json and cluster.md under --out. On a shared machine the figures are noise: run a smoke
(`--frames 60 --long-frames 300 --images 48 --repeats 1 --out /tmp/cluster-smoke`) and do not record it.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("OVDOC_SHARED", REPO.parent / "shared")).resolve()
STORE = 100 * 1024 * 1024


def start_cluster(workers: int, cpus: int = 1):
    """A head that only schedules and `workers` nodes of `cpus` CPUs each."""
    import ray
    from ray.cluster_utils import Cluster

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 0, "object_store_memory": STORE, "include_dashboard": False})
    for _ in range(workers):
        cluster.add_node(num_cpus=cpus, object_store_memory=STORE)
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, log_to_driver=False, logging_level="ERROR")
    return ray, cluster


def local_run(bundle: Path, clip: Path, frames: int) -> dict:
    """`ovdoc run` in a child process: its CPU seconds from the kernel's accounting of children."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "ovdoc", "run", str(bundle), "--source", str(clip),
                          "--headless", "--max-frames", str(frames), "--loop", "--json"],
                         capture_output=True, text=True, check=True, cwd=REPO,
                         env={**os.environ, "PYTHONPATH": str(REPO)})
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    summary = json.loads(out.stdout[out.stdout.index("{"):])
    return {"frames": summary["frames"], "cpu_s": round(cpu, 3), "wall_s": round(wall, 2),
            "frames_per_cpu_s": round(summary["frames"] / cpu, 2)}


def cluster_run(ray, address: str, bundle: Path, clip: Path, frames: int, tmp: Path) -> dict:
    from ovdoc.cluster.line import run_line
    from ovdoc.runtime.stream.line_config import load_line_config

    config = tmp / "line.json"
    config.write_text(json.dumps({"bundle": str(bundle), "cameras": [{"source": str(clip), "name": "cam"}]}))
    store: list[float] = []

    def used(_line) -> None:
        total, free = ray.cluster_resources(), ray.available_resources()
        store.append(total.get("object_store_memory", 0) - free.get("object_store_memory", 0))

    cpu0 = time.process_time()
    summary = run_line(address, load_line_config(config), {"max_frames": frames, "smooth": 10, "loop": True},
                       cpus=1, on_start=used)
    driver = time.process_time() - cpu0
    actor = summary["actor_cpu_s"]
    cpu = driver + actor
    return {"frames": summary["frames"], "cpu_s": round(cpu, 3), "driver_cpu_s": round(driver, 3),
            "actor_cpu_s": actor, "startup_s": summary["startup_s"], "wall_s": summary["wall_s"],
            "object_store_used_mb": round(max(store or [0]) / 1e6, 2),
            "frames_per_cpu_s": round(summary["frames"] / cpu, 2)}


def cameras_pass(ray, address: str, bundle: Path, clip: Path, short: int, long: int, tmp: Path) -> dict:
    """Both paths at both lengths, alternating (a busy moment hits both); slopes and ratios."""
    runs = {}
    for n in (short, long):
        runs[("local", n)] = local_run(bundle, clip, n)
        runs[("cluster", n)] = cluster_run(ray, address, bundle, clip, n, tmp)
    row = {}
    for path in ("local", "cluster"):
        a, b = runs[(path, short)], runs[(path, long)]
        slope = max(b["cpu_s"] - a["cpu_s"], 1e-6) / (b["frames"] - a["frames"])  # CPU-s per frame
        row[path] = {"short": a, "long": b, "steady_frames_per_cpu_s": round(1.0 / slope, 1),
                     "fixed_cpu_s": round(a["cpu_s"] - a["frames"] * slope, 3)}
    local, remote = row["local"], row["cluster"]
    a, b = runs[("cluster", short)], runs[("cluster", long)]  # the driver's share: what a head box pays
    remote["driver_us_per_frame"] = round(1e6 * max(b["driver_cpu_s"] - a["driver_cpu_s"], 0.0)
                                          / (b["frames"] - a["frames"]), 1)
    row["ratio"] = round(remote["steady_frames_per_cpu_s"] / local["steady_frames_per_cpu_s"], 3)
    row["ratio_whole_run"] = round(remote["long"]["frames_per_cpu_s"] / local["long"]["frames_per_cpu_s"], 3)
    return row


def extraction(ray, images: list[Path], repeats: int) -> list[dict]:
    """Images per second: local extractor vs Ray Data on one node with this box's CPUs, one 1-CPU actor
    per CPU (the driver reads nothing).

    Both include their compile (a fit compiles once); the Ray path also starts its actor pool. After one
    warm-up call, each runs on a sixth of the images and on all of them: the difference gives its
    per-image rate (`ratio_steady`, Ray's against local's: what a large set approaches) and the
    intercept its fixed cost per call (`ray_fixed_s`, `local_fixed_s`)."""
    import openvino as ov

    from ovdoc.cluster.extract import RayExtract
    from ovdoc.irmodels import resolve_model
    from ovdoc.runtime.extract import LocalExtract
    from ovdoc.runtime.images import read_image
    from ovdoc.runtime.ir import read_ir

    model, spec, _ = read_ir(resolve_model(None), ov.Core())
    runs = []
    for _ in range(repeats):
        row = {}
        small = images[: max(8, len(images) // 6)]
        RayExtract(ray)(model, spec, images[:8], device="CPU", batch=8, progress=False)  # warm-up
        sides = (("local", LocalExtract, lambda some: (read_image(p) for p in some)),
                 ("ray", lambda: RayExtract(ray), list))
        extra = max(len(images) - len(small), 1)
        for name, make, items in sides:
            for size, some in (("small", small), ("all", images)):
                extract = make()
                t0, c0 = time.perf_counter(), time.process_time()
                got = extract(model, spec, items(some), device="CPU", batch=8, progress=False,
                              total=len(some))
                row[f"{name}_{size}_s"] = time.perf_counter() - t0
                # CPU: this process (local: all of it; Ray: the driver) plus Ray's worker processes
                here = row[f"{name}_{size}_here_cpu_s"] = time.process_time() - c0
                row[f"{name}_{size}_cpu_s"] = here + getattr(extract, "worker_cpu_s", 0.0)
            row[name] = round(len(got.features) / row[f"{name}_all_s"], 2)
            per_image = max(row[f"{name}_all_s"] - row[f"{name}_small_s"], 1e-6) / extra
            row[f"{name}_steady"] = round(1.0 / per_image, 2)
            row[f"{name}_fixed_s"] = round(row[f"{name}_small_s"] - len(small) * per_image, 2)
            cpu_per_image = max(row[f"{name}_all_cpu_s"] - row[f"{name}_small_cpu_s"], 1e-6) / extra
            row[f"{name}_images_per_cpu_s"] = round(1.0 / cpu_per_image, 1)
        row |= {"ratio": round(row["ray"] / row["local"], 3),
                "ratio_steady": round(row["ray_steady"] / row["local_steady"], 3),
                "ratio_cpu": round(row["ray_images_per_cpu_s"] / row["local_images_per_cpu_s"], 3)}
        row |= {k: round(v, 2) for k, v in row.items() if k.endswith("_s")}
        runs.append(row)
    return runs


PINNING_PROBE = """
import sys, time
import numpy as np, openvino as ov
from ovdoc.irmodels import resolve_model
from ovdoc.runtime.cpu_share import shared_core
core = shared_core(1) if sys.argv[1] == "off" else ov.Core()
if sys.argv[1] != "off":
    core.set_property("CPU", {"INFERENCE_NUM_THREADS": 1})
model = core.read_model(str(resolve_model(None)))
shape = [d.get_length() for d in list(model.inputs[0].get_partial_shape())[1:]]
model.reshape([8, *shape])
hints = {"PERFORMANCE_HINT": "THROUGHPUT", "INFERENCE_PRECISION_HINT": "f32"}
compiled = core.compile_model(model, "CPU", hints)
request, x = compiled.create_infer_request(), np.zeros([8, *shape], np.float32)
request.infer({0: x})
start, n = time.perf_counter(), 0
while time.perf_counter() - start < float(sys.argv[2]):
    request.infer({0: x})
    n += 1
print(n / (time.perf_counter() - start), compiled.get_property("ENABLE_CPU_PINNING"))
"""


def pinning(seconds: float = 6.0) -> dict:
    """Two 1-thread OpenVINO processes side by side, OpenVINO's default pinning against shared_core's
    (off): batches of 8 per second of each. With pinning both sit on the first core."""
    out = {}
    for mode in ("default", "off"):
        procs = [subprocess.Popen([sys.executable, "-c", PINNING_PROBE, mode, str(seconds)], cwd=REPO,
                                  stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                                  env={**os.environ, "PYTHONPATH": str(REPO)}) for _ in range(2)]
        rates, pinned = [], []
        for p in procs:
            text, _ = p.communicate(timeout=300)
            rate, flag = text.split()
            rates.append(round(float(rate), 1))
            pinned.append(flag == "True")
        out[mode] = {"batches_per_s_each": rates, "pinned": pinned}
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=249)
    parser.add_argument("--long-frames", type=int, default=1245)
    parser.add_argument("--images", type=int, default=2400)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    args = parser.parse_args()
    if args.long_frames <= args.frames:
        parser.error("--long-frames must be more than --frames (the cost per frame is the slope between)")
    sys.path.insert(0, str(REPO))
    import tempfile

    from ovdoc.irmodels import demo_bundle, demo_stream

    bundle, clip = Path(demo_bundle()), Path(demo_stream())
    free = sorted((SHARED / "data" / "magnetic-tile" / "MT_Free").rglob("*.jpg"))
    tiles = (free * -(-args.images // max(1, len(free))))[: args.images]
    from ovdoc.runtime.bench.machine import describe_machine

    machine = describe_machine()  # CPU, ISA flags and the load before the run
    ray, cluster = start_cluster(workers=1, cpus=os.cpu_count() or 1)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            cluster_run(ray, cluster.address, bundle, clip, min(args.frames, 30), Path(tmp))  # warm-up
            cameras = [cameras_pass(ray, cluster.address, bundle, clip, args.frames, args.long_frames,
                                    Path(tmp)) for _ in range(args.repeats)]
        extract = extraction(ray, tiles, args.repeats)
    finally:
        ray.shutdown()
        cluster.shutdown()
    pinned = pinning()
    result = {
        "time": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "command": "python " + " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
        "load_1min_after": os.getloadavg()[0], "cpus": os.cpu_count(), "ray": ray.__version__,
        "machine": machine,
        "cameras": cameras, "extraction": extract, "pinning": pinned,
        "camera_ratio_median": statistics.median(r["ratio"] for r in cameras),
        "camera_ratio_whole_run_median": statistics.median(r["ratio_whole_run"] for r in cameras),
        "extraction_ratio_median": statistics.median(r["ratio"] for r in extract),
        "extraction_ratio_steady_median": statistics.median(r["ratio_steady"] for r in extract),
        "extraction_ratio_cpu_median": statistics.median(r["ratio_cpu"] for r in extract),
        "goals": {"camera_ratio": 0.85, "extraction_ratio": 0.8},
    }
    write(result, args.out)
    print(json.dumps({k: result[k] for k in ("camera_ratio_median", "camera_ratio_whole_run_median",
                                             "extraction_ratio_median", "extraction_ratio_steady_median")}))
    return 0


def write(result: dict, out: Path) -> None:
    from ovdoc.runtime.bench.machine import summary_line

    out.mkdir(parents=True, exist_ok=True)
    (out / "cluster.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = ["# The Ray cluster path against one box", "", f"`{result['command']}`", "",
             f"{result['time']} · {summary_line(result['machine'])} · Ray {result['ray']} · load before "
             f"{result['machine']['load_average_1m']}, after {result['load_1min_after']:.2f}", "",
             "Cameras: frames per CPU-second once running (the slope between the two run lengths), the "
             "whole long run, and the cluster camera's start-up.", "",
             "| pass | local frames/CPU-s | cluster frames/CPU-s | ratio (goal 0.85) | whole-run ratio "
             "| cluster start-up s | cluster fixed CPU-s | local fixed CPU-s | driver µs/frame | store MB |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for i, row in enumerate(result["cameras"]):
        local, remote = row["local"], row["cluster"]
        lines.append(f"| {i + 1} | {local['steady_frames_per_cpu_s']} | {remote['steady_frames_per_cpu_s']} "
                     f"| {row['ratio']} | {row['ratio_whole_run']} | {remote['long']['startup_s']} "
                     f"| {remote['fixed_cpu_s']} | {local['fixed_cpu_s']} | {remote['driver_us_per_frame']} "
                     f"| {remote['long']['object_store_used_mb']} |")
    lines += ["", "Extraction: images per second of the whole call (each side compiles; Ray also starts its "
              "actor pool), and the per-image rates apart from each side's fixed cost per call (what a big "
              "image set approaches: the throughput goal).", "",
              "| pass | local images/s | Ray Data images/s (1 node) | whole-call ratio | Ray fixed s/call "
              "| local fixed s/call | per-image ratio (goal 0.8) | images per CPU-s local / Ray (ratio) |",
              "|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for i, row in enumerate(result["extraction"]):
        lines.append(f"| {i + 1} | {row['local']} | {row['ray']} | {row['ratio']} | {row['ray_fixed_s']} "
                     f"| {row['local_fixed_s']} | {row['ratio_steady']} | {row['local_images_per_cpu_s']} / "
                     f"{row['ray_images_per_cpu_s']} ({row['ratio_cpu']}) |")
    pin = result["pinning"]
    lines += ["", "Two processes, each compiling the shipped model with one OpenVINO thread, side by side "
              "(batches of 8 per second of each): OpenVINO's default pins both to the first core; "
              "`shared_core` (every Ray actor and serve replica) turns pinning off.", "",
              "| pinning | process 1 | process 2 | pinned |", "|---|---:|---:|---|"]
    for mode, label in (("default", "OpenVINO default"), ("off", "off (shared_core)")):
        a, b = pin[mode]["batches_per_s_each"]
        lines.append(f"| {label} | {a} | {b} | {', '.join(map(str, pin[mode]['pinned']))} |")
    (out / "cluster.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    raise SystemExit(main())
