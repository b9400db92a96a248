"""A small real Ray cluster on this machine for the cluster tests: a head with no CPUs (it only
schedules) and worker nodes with one CPU each and a small object store, so the suite stays light on a
2-core box. Ray is imported lazily: the rest of the suite never loads it."""

from __future__ import annotations

import os
from contextlib import contextmanager

from conftest import need_package

STORE = 100 * 1024 * 1024  # bytes of object store per node
BOUND_S = 600  # a cluster's tests that have not finished by then dump their threads and end the run


@contextmanager
def local_cluster(workers: int = 2, resources: list[dict] | None = None):
    """Start head + `workers` 1-CPU nodes (custom resources per node optional), join it, stop it after.

    Bounded: a hang anywhere in Ray (a dataset that never finishes, an actor never placed) ends the test
    run after BOUND_S with every thread's stack, instead of holding CI until its own limit."""
    import faulthandler

    ray = need_package("ray", "the Ray cluster tests")
    need_package("pyarrow", "Ray Data (pip install 'ovdoc[cluster]')")
    from ray.cluster_utils import Cluster

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    # a node's raylet waits this long for its dashboard agent (a Python process) to start: on a loaded
    # 2-core box it can take longer than Ray's default, and the node fails to start (seen with another
    # Ray cluster starting beside this one)
    os.environ.setdefault("RAY_agent_register_timeout_ms", "120000")
    faulthandler.dump_traceback_later(BOUND_S, exit=True)
    try:
        # a dead node is noticed within ~3 s (the default health check takes ~15 s)
        cluster = Cluster(initialize_head=True, head_node_args={
            "num_cpus": 0, "object_store_memory": STORE, "include_dashboard": False,
            "_system_config": {"health_check_period_ms": 1000, "health_check_failure_threshold": 3}})
    except BaseException:
        faulthandler.cancel_dump_traceback_later()
        raise
    nodes = []
    try:
        for i in range(workers):
            extra = (resources or [{}] * workers)[i]
            nodes.append(cluster.add_node(num_cpus=1, object_store_memory=STORE, resources=extra))
        cluster.wait_for_nodes()
        ray.init(address=cluster.address, log_to_driver=False, logging_level="ERROR")
        yield cluster, nodes
    finally:
        ray.shutdown()
        cluster.shutdown()
        faulthandler.cancel_dump_traceback_later()
