"""OpenVINO, OpenCV and FAISS sized to a process's share of a machine (a Ray actor's or serve replica's CPUs).

Two processes on one node that each ask OpenVINO for a single thread are, by default, both pinned to the
node's *first* core (`ENABLE_CPU_PINNING`): on a 2-core box each then ran at half speed while the other
core idled (13.7 against 27 batches of 8 a second each, benchmarks/results/cluster.md). A process that
owns only a share of a node therefore limits its threads *and* leaves their placement to the kernel.
"""

from __future__ import annotations

import openvino as ov


def shared_core(cpus: int) -> ov.Core:
    """An OpenVINO core for `cpus` threads, unpinned; OpenCV and FAISS limited to the same count."""
    import cv2
    import faiss

    cpus = max(1, int(cpus))
    cv2.setNumThreads(cpus)
    faiss.omp_set_num_threads(cpus)
    core = ov.Core()
    core.set_property("CPU", {"INFERENCE_NUM_THREADS": cpus, "ENABLE_CPU_PINNING": False})
    return core
