"""`ovdoc serve --ray local`: the same API as a Ray Serve application, on a private two-replica Ray.

One server for the module (Ray takes ~30 s to start on 2 cores): answers agree with score_samples, a
bundle replaced on disk is pushed in place, and a scoring replica killed mid-load costs retries or clear
503s, never a hung request.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from _runtime_helpers import error_line, ovdoc_cli
from _serve_helpers import (
    Server,
    call,
    demo_frames,
    pids_under,
    score_json,
    score_multipart,
    score_raw,
    scores,
    wait_for,
)
from conftest import need_package

need_package("ray", "ovdoc serve --ray (the serve extra)")
ATOL = 1e-3


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def own_bundle(tmp_path_factory) -> Path:
    from ovdoc.irmodels import demo_bundle

    own = tmp_path_factory.mktemp("ray") / "own.bundle"
    shutil.copytree(demo_bundle(), own)
    return own


@pytest.fixture(scope="module", params=["proxy", "haproxy"])
def ray_server(request, own_bundle):
    """Both HTTP paths in front of the replicas (Ray's proxy actor; HAProxy with direct ingress) must
    keep the same API, in-place update and killed-replica behaviour."""
    from ovdoc.irmodels import demo_bundle

    port = free_port()
    srv = Server(f"demo={demo_bundle()}", f"own={own_bundle}", "--ray", "local", "--replicas", "2",
                 "--ray-ingress", request.param, "--max-wait-ms", "10", "--listen", f"127.0.0.1:{port}",
                 timeout=240)
    temps = private_temps(srv.proc.pid)
    yield srv
    srv.stop()
    assert temps and not any(Path(t).exists() for t in temps), temps  # the private Ray left nothing


def test_ray_answers_agree_with_score_samples(ray_server):
    from ovdoc.irmodels import demo_bundle
    from ovdoc.runtime.detector import Detector

    frames = demo_frames(3, start=10)
    want = Detector.load(demo_bundle()).score_samples(frames)
    status, one = score_raw(ray_server.url, frames[0])
    assert status == 200 and abs(one["results"][0]["score"] - want[0]) < ATOL
    assert one["results"][0]["bundle"]["name"] == "demo"
    status, multi = score_multipart(ray_server.url, frames)
    assert status == 200 and [r["name"] for r in multi["results"]] == ["p0.png", "p1.png", "p2.png"]
    np.testing.assert_allclose(scores(multi), want, atol=ATOL)
    status, batch = score_json(ray_server.url, frames, "?bundle=own")
    assert status == 200 and {r["bundle"]["name"] for r in batch["results"]} == {"own"}
    np.testing.assert_allclose(scores(batch), want, atol=ATOL)
    assert call(f"{ray_server.url}/v1/score?bundle=nope", b"x", "image/png")[0] == 404
    status, answer = call(f"{ray_server.url}/v1/score", b"not an image", "image/png")
    assert status == 415 and "not an image" in answer["error"]
    assert call(f"{ray_server.url}/readyz")[0] == 200
    assert "/v1/score" in call(f"{ray_server.url}/openapi.json")[1]["paths"]


def test_ray_pushes_a_replaced_bundle_in_place_and_survives_a_killed_replica(ray_server, own_bundle):
    from ovdoc.atomic import atomic_dir
    from ovdoc.irmodels import demo_bundle
    from ovdoc.runtime.bundle import load_manifest, save_threshold

    frames = demo_frames(4)
    answers: list[tuple[int, dict, float]] = []
    stop = threading.Event()

    def client() -> None:
        while not stop.is_set():
            t0 = time.monotonic()
            status, answer = call(f"{ray_server.url}/v1/score?bundle=own", _png(frames[len(answers) % 4]),
                                  "image/png", timeout=90)
            answers.append((status, answer, time.monotonic() - t0))

    workers = [threading.Thread(target=client) for _ in range(3)]
    try:
        for w in workers:
            w.start()
        wait_for(lambda: len(answers) >= 6, "requests before the update")
        replicas = replica_pids(ray_server.proc.pid)
        assert len(replicas) == 2
        with atomic_dir(own_bundle) as tmp:
            shutil.copytree(demo_bundle(), tmp, dirs_exist_ok=True)
            save_threshold(tmp, 2.5)
        new_hash = load_manifest(own_bundle)[0]["manifest_sha256"]
        wait_for(lambda: any(a[0] == 200 and a[1]["results"][0]["bundle"]["hash"] == new_hash
                             for a in answers[-3:]), "the in-place update", timeout=120)
        before_kill = len(answers)
        assert replica_pids(ray_server.proc.pid) == replicas  # in place: the same replica processes
        victim = replicas[0]
        os.kill(victim, signal.SIGKILL)
        killed_at = len(answers)
        wait_for(lambda: len(answers) >= killed_at + 20, "requests after the kill", timeout=120)
        wait_for(lambda: all(a[0] == 200 for a in answers[-5:]), "full service again", timeout=120)
    finally:
        stop.set()
        for w in workers:
            w.join(120)
    assert not any(w.is_alive() for w in workers), "a request hung"
    assert all(a[2] < 90 for a in answers)
    early = answers[:before_kill]
    assert all(a[0] == 200 for a in early), [a[:2] for a in early if a[0] != 200]
    for status, answer, _ in answers[before_kill:]:  # after the kill: answered, or a clear 503
        assert status == 200 or (status == 503 and "retry" in answer["error"]), (status, answer)
    hashes = [a[1]["results"][0]["bundle"]["hash"] for a in answers if a[0] == 200]
    assert hashes[-1] == new_hash
    assert all(a[1]["results"][0]["threshold"] == 2.5 for a in answers[-5:])


def test_ray_refusals_are_one_line(tmp_path):
    from ovdoc.irmodels import demo_bundle

    line = error_line(ovdoc_cli("serve", str(demo_bundle()), "--ray", f"127.0.0.1:{free_port()}"))
    assert "no Ray cluster answers there" in line
    line = error_line(ovdoc_cli("serve", str(demo_bundle()), "--ray", "auto", "--replicas", "2",
                                "--max-replicas", "3"))
    assert "--replicas is a fixed count" in line
    line = error_line(ovdoc_cli("serve", str(demo_bundle()), "--ray", "auto", "--ray-ingress", "haproxy"))
    assert "--ray-ingress haproxy needs --ray local" in line


def private_temps(root: int) -> set[str]:
    """The private Ray's temp dirs named by `root`'s descendants (its raylet, HAProxy)."""
    import re

    titles = descendants(root)
    return {m for t in titles.values() for m in re.findall(r"/[^ =:]*/ovdoc-ray-[A-Za-z0-9_]+", t)}


def replica_pids(root: int) -> list[int]:
    """Pids of the OvdocScorer replicas among `root`'s descendants (the private Ray runs under it)."""
    titles = descendants(root)
    found = [p for p, t in titles.items() if "OvdocScorer" in t]
    assert found, "no scoring replica found under the server"
    return sorted(found)


def descendants(root: int) -> dict[int, str]:
    """{pid: command line} of every process under `root`."""
    titles = {}
    for pid in pids_under(root):
        try:
            title = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
        except OSError:  # ended since the walk
            continue
        titles[pid] = title.decode(errors="replace")
    return titles


def _png(image):
    from _serve_helpers import png

    return png(image)
