"""Joining a Ray cluster from the driver: one clear line when Ray is missing or the address is wrong.

`ray.init(address=...)` on an address nobody listens on retries for minutes and prints pages of warnings;
a TCP probe of the head's port first turns that into one line within seconds.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from types import ModuleType

from ovdoc.errors import OvdocError

INSTALL = "pip install 'ovdoc[cluster]'"
PROBE_TIMEOUT_S = 3.0
# where `ray start --head` records the address of the cluster it started on this machine
CURRENT_CLUSTER = Path(os.environ.get("RAY_TMPDIR", "/tmp")) / "ray" / "ray_current_cluster"


def import_ray() -> ModuleType:
    """The `ray` module, or one line saying how to install it."""
    try:
        import ray
    except ImportError:
        raise OvdocError(f"--ray needs Ray, which is not installed: {INSTALL}") from None
    return ray


def resolve_address(address: str) -> str:
    """`auto` -> $RAY_ADDRESS or the cluster `ray start` recorded on this machine; else as given."""
    text = address.strip()
    if text != "auto":
        return text
    env = os.environ.get("RAY_ADDRESS", "").strip()
    if env and env != "auto":
        return env
    if CURRENT_CLUSTER.is_file():
        recorded = CURRENT_CLUSTER.read_text().strip()
        if recorded:
            return recorded
    raise OvdocError("--ray auto: no Ray cluster found on this machine (no $RAY_ADDRESS, nothing started by "
                     "`ray start --head`): start one, or give its address as --ray HOST:PORT")


def probe(address: str, timeout: float = PROBE_TIMEOUT_S) -> None:
    """Fail in one line unless something accepts TCP connections at the head's HOST:PORT."""
    bare = address.split("://", 1)[-1]
    host, sep, port = bare.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise OvdocError(f"--ray {address}: expected HOST:PORT (e.g. 10.0.0.5:6379) or auto")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout):
            pass
    except OSError as exc:
        raise OvdocError(f"--ray {address}: no Ray cluster reachable there ({exc.strerror or exc}); start "
                         "one with `ray start --head` or check the address") from None


def quiet_driver() -> None:
    """Keep the driver's stdout for ovdoc: Ray prints its nodes' error reports (task retries, with
    tracebacks) there, which would break `--json` and the one-line errors; ovdoc reports a failure itself,
    in one line. OVDOC_DEBUG=1 shows them (on stderr)."""
    import sys

    debug = bool(os.environ.get("OVDOC_DEBUG"))
    try:
        from ray._private import worker as ray_worker
    except ImportError:  # another Ray layout: its messages stay as they are
        return
    original = getattr(ray_worker, "print_to_stdstream", None)
    if original is None or getattr(original, "ovdoc_quiet", False):
        return

    def quiet(data, ignore_prefix: bool):
        if data.get("pid") == "raylet":
            if debug:
                print("\n".join(str(line) for line in data.get("lines", [])), file=sys.stderr)
            return None
        return original(data, ignore_prefix)

    quiet.ovdoc_quiet = True
    ray_worker.print_to_stdstream = quiet


def connect(address: str) -> ModuleType:
    """Join the cluster at `address` (HOST:PORT or auto) once per process and return the `ray` module."""
    ray = import_ray()
    if ray.is_initialized():
        return ray
    resolved = resolve_address(address)
    probe(resolved)
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    quiet_driver()
    try:
        ray.init(address=resolved, log_to_driver=False, logging_level="ERROR", configure_logging=True)
    except Exception as exc:  # a port that answers but is not a Ray head, a version mismatch, ...
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise OvdocError(f"--ray {address}: cannot join the Ray cluster at {resolved}: "
                         f"{first[:200]}") from None
    return ray


def cluster_error(exc: BaseException, what: str) -> OvdocError:
    """A failure inside the cluster as one line; a node without (this) ovdoc says how to fix it."""
    text = str(exc)
    if "No module named 'ovdoc" in text or "No module named \"ovdoc" in text:
        return OvdocError(f"{what}: a node of the cluster cannot import ovdoc's cluster code (not installed "
                          f"there, or an older ovdoc): install this ovdoc with {INSTALL} on every node")
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    first = lines[0] if lines else type(exc).__name__
    cause = next((line for line in reversed(lines) if "Error:" in line), first)
    return OvdocError(f"{what}: {cause[:240]}")
