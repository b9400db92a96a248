"""A process that owns only a share of a node (a Ray actor, a serve replica) must not pin its OpenVINO
threads: two such processes would both sit on the node's first core (benchmarks/results/cluster.md)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from conftest import REPO

# Compile the shipped model on a core and run it in a thread while reading every thread's allowed CPUs
# from /proc: the narrowest affinity seen, and whether OpenVINO says it pins.
PROBE = """
import json, os, sys, threading
from pathlib import Path
import numpy as np, openvino as ov
from ovdoc.irmodels import resolve_model
from ovdoc.runtime.cpu_share import shared_core

def widths():
    out = []
    for task in Path("/proc/self/task").iterdir():
        try:
            status = (task / "status").read_text()
        except OSError:  # a thread that ended since the listing
            continue
        for line in status.splitlines():
            if line.startswith("Cpus_allowed_list:"):
                spans = [p.partition("-") for p in line.split(":", 1)[1].strip().split(",")]
                out.append(sum(1 + int(b or a) - int(a) for a, _, b in spans))
    return out

def narrowest(core):
    model = core.read_model(str(resolve_model(None)))
    shape = [d.get_length() for d in list(model.inputs[0].get_partial_shape())[1:]]
    model.reshape([1, *shape])
    compiled = core.compile_model(model, "CPU", {"PERFORMANCE_HINT": "THROUGHPUT"})
    request, x = compiled.create_infer_request(), np.zeros([1, *shape], np.float32)
    done = threading.Event()

    def infer():  # OpenVINO pins the threads that run inference while they run it
        while not done.is_set():
            request.infer({0: x})

    worker = threading.Thread(target=infer)
    worker.start()
    seen = []
    try:
        for _ in range(200):
            seen += widths()
    finally:
        done.set()
        worker.join()
    return min(seen), bool(compiled.get_property("ENABLE_CPU_PINNING"))

if sys.argv[1] == "shared":
    core = shared_core(1)
else:
    core = ov.Core()
    core.set_property("CPU", {"INFERENCE_NUM_THREADS": 1})
width, pinned = narrowest(core)
print(json.dumps({"narrowest": width, "pinned": pinned, "cpus": len(os.sched_getaffinity(0))}))
"""


def _probe(which: str) -> dict:
    out = subprocess.run([sys.executable, "-c", PROBE, which], capture_output=True, text=True, timeout=300,
                         cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux") or len(os.sched_getaffinity(0)) < 2,
                    reason="thread affinity is read from Linux's /proc, and pinning needs two CPUs to matter")
def test_shared_core_leaves_thread_placement_to_the_kernel():
    # OpenVINO's default, one thread: a thread narrowed to one core (what two actors would share)
    default = _probe("default")
    assert default["pinned"] and default["narrowest"] == 1, default
    shared = _probe("shared")
    assert not shared["pinned"] and shared["narrowest"] == shared["cpus"], shared
