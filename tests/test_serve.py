"""`ovdoc serve` against the real server: a subprocess on a free loopback port, real OpenVINO + FAISS,
the shipped demo bundle and a small patch bundle fitted here from the demo clip (no data download)."""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import cv2
import numpy as np
import pytest
from _runtime_helpers import error_line, ovdoc_cli
from _serve_helpers import (
    Server,
    call,
    demo_frames,
    metric,
    png,
    score_json,
    score_multipart,
    score_raw,
    scores,
    wait_for,
)
from conftest import need_package

need_package("aiohttp", "ovdoc serve")
ATOL = 1e-3  # batch-1 and batch-8 compiled models may round differently


@pytest.fixture(scope="module")
def patch_bundle(tmp_path_factory) -> Path:
    from ovdoc.irmodels import imagenet_backbone
    from ovdoc.runtime.bundle import FitConfig, fit_bundle_images
    from ovdoc.runtime.patch import PatchConfig

    out = tmp_path_factory.mktemp("serve") / "patch.bundle"
    config = FitConfig(mode="patch", size=(64, 64), patch=PatchConfig(coreset=64))
    fit_bundle_images(imagenet_backbone(), demo_frames(24), out, config, progress=False)
    return out


@pytest.fixture(scope="module")
def server(patch_bundle):
    from ovdoc.irmodels import demo_bundle

    srv = Server(f"demo={demo_bundle()}", f"parts={patch_bundle}", "--max-wait-ms", "20", "--no-watch")
    yield srv
    stderr = srv.stop()
    assert "Traceback" not in stderr, stderr


@pytest.fixture(scope="module")
def detectors(patch_bundle):
    from ovdoc.irmodels import demo_bundle
    from ovdoc.runtime.detector import Detector

    return {"demo": Detector.load(demo_bundle()), "parts": Detector.load(patch_bundle)}


def test_single_multipart_and_batch_agree_with_score_samples(server, detectors):
    frames = demo_frames(6, start=30)
    mixed = [frames[0], cv2.resize(frames[1], (150, 90)), frames[2][::-1].copy()]  # any size, any content
    for name in ("demo", "parts"):
        want = detectors[name].score_samples(mixed)
        query = f"?bundle={name}"
        status, one = score_raw(server.url, mixed[1], query)
        assert status == 200 and abs(one["results"][0]["score"] - want[1]) < ATOL
        status, multi = score_multipart(server.url, mixed, query)
        assert status == 200 and [r["name"] for r in multi["results"]] == ["p0.png", "p1.png", "p2.png"]
        np.testing.assert_allclose(scores(multi), want, atol=ATOL)
        status, batch = score_json(server.url, mixed, query)
        assert status == 200
        np.testing.assert_allclose(scores(batch), want, atol=ATOL)
        threshold = detectors[name].threshold_
        for r, s in zip(batch["results"], want, strict=True):
            assert r["threshold"] == pytest.approx(threshold) and r["anomalous"] == bool(s > threshold)
            assert r["bundle"] == {"name": name, "hash": detectors[name].manifest_["manifest_sha256"]}
    status, default = score_raw(server.url, mixed[0])  # no ?bundle: the first one given
    assert status == 200 and default["results"][0]["bundle"]["name"] == "demo"


def test_patch_bundle_answers_where(server, detectors):
    from ovdoc.runtime.stream.regions import hottest_region

    det = detectors["parts"]
    image = cv2.resize(demo_frames(1, start=40)[0], (160, 120))
    image[30:60, 90:130] = (0, 0, 255)  # a red patch: the hottest region should sit around it
    status, answer = score_json(server.url, [image], "?bundle=parts", map=True)
    assert status == 200
    r = answer["results"][0]
    grid = det.patch_maps([image])[0]
    frame_map = det.map_to_frame(det.smooth_map(grid), image.shape)
    box, peak = hottest_region(frame_map, at=det.peak_point(grid, image.shape))
    assert r["box"] == list(box) and r["map_peak"] == pytest.approx(peak, rel=1e-3, abs=1e-3)
    x0, y0, x1, y1 = r["box"]
    assert 0 <= x0 <= x1 < 160 and 0 <= y0 <= y1 < 120
    levels = cv2.imdecode(np.frombuffer(base64.b64decode(r["map_png"]), np.uint8), cv2.IMREAD_UNCHANGED)
    assert levels.shape == (120, 160) and levels.dtype == np.uint8
    want = np.clip(frame_map / r["map_scale"], 0, 255)
    assert np.abs(levels.astype(float) - want).max() <= 1.01
    status, plain = score_raw(server.url, image, "?bundle=parts")  # no map unless asked for
    assert "map_png" not in plain["results"][0] and plain["results"][0]["box"] == r["box"]
    status, global_answer = score_raw(server.url, image, "?bundle=demo")
    assert "box" not in global_answer["results"][0]


def test_concurrent_requests_are_batched_and_counted(server, detectors):
    frames = demo_frames(16, start=60)
    want = detectors["demo"].score_samples(frames)
    got: dict[int, float] = {}
    errors: list = []

    def one(i: int) -> None:
        status, answer = score_raw(server.url, frames[i], "?bundle=demo")
        (got.__setitem__(i, answer["results"][0]["score"]) if status == 200 else errors.append(answer))

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(frames))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors and len(got) == len(frames)
    np.testing.assert_allclose([got[i] for i in range(len(frames))], want, atol=ATOL)
    status, text = call(f"{server.url}/metrics")
    assert status == 200
    batches = metric(text, "ovdoc_serve_batch_images_count", bundle="demo")
    images = metric(text, "ovdoc_serve_batch_images_sum", bundle="demo")
    assert images >= len(frames) and batches < images  # some batch held several requests
    assert metric(text, "ovdoc_serve_requests_total", bundle="demo", code="200") >= len(frames)
    assert metric(text, "ovdoc_serve_request_seconds_count", bundle="demo") >= len(frames)
    assert 'ovdoc_serve_request_seconds_bucket{bundle="demo",le="+Inf"}' in text


def test_bad_inputs_are_one_line_4xx(server):
    url = f"{server.url}/v1/score"
    image = png(demo_frames(1)[0])
    cases = [
        (b"not a picture at all", "image/png", 415, "not an image"),
        (b"", "image/png", 400, "empty"),
        (b"{", "application/json", 400, "not valid JSON"),
        (json.dumps({"images": ["***"]}).encode(), "application/json", 400, "base64"),
        (json.dumps({"pictures": []}).encode(), "application/json", 400, '"images"'),
        (json.dumps({"images": [base64.b64encode(image).decode()] * 65}).encode(), "application/json", 413,
         "at most 64"),
        (image, "text/csv", 415, "Content-Type"),
        (b"x" * (33 * 1024 * 1024), "image/png", 413, "over the limit"),
    ]
    for body, ctype, code, words in cases:
        status, answer = call(url, body, ctype)
        assert status == code and words in answer["error"] and "\n" not in answer["error"], (words, answer)
    status, answer = call(url + "?bundle=nope", image, "image/png")
    assert status == 404 and "unknown bundle 'nope'" in answer["error"]
    status, answer = call(url)  # GET
    assert status == 405 and answer["error"]
    status, _ = call(f"{server.url}/v1/nothing")
    assert status == 404
    status, text = call(f"{server.url}/metrics")
    assert metric(text, "ovdoc_serve_errors_total", bundle="demo", reason="not_an_image") >= 2
    assert metric(text, "ovdoc_serve_errors_total", bundle="(unknown)", reason="unknown_bundle") >= 1


def test_bundles_health_and_openapi(server, detectors):
    status, listing = call(f"{server.url}/v1/bundles")
    assert status == 200 and listing["default"] == "demo"
    by_name = {b["name"]: b for b in listing["bundles"]}
    assert by_name["parts"]["mode"] == "patch" and by_name["demo"]["mode"] == "global"
    assert by_name["demo"]["hash"] == detectors["demo"].manifest_["manifest_sha256"]
    assert call(f"{server.url}/healthz") == (200, {"status": "ok"})
    assert call(f"{server.url}/readyz")[0] == 200
    status, document = call(f"{server.url}/openapi.json")
    assert status == 200
    validator = need_package("openapi_spec_validator", "OpenAPI validation (the dev extra)")
    validator.validate(document)  # raises on an invalid OpenAPI 3 document
    for path, ops in document["paths"].items():  # every described route exists, and answers as described
        for op in ops:
            status, _ = call(f"{server.url}{path}", b"" if op == "post" else None, "image/png")
            assert str(status) in ops[op]["responses"], (path, op, status)
    from ovdoc.runtime.serve.app import ServeApp, ServeOptions

    router = ServeApp({"x": None}, ServeOptions()).application().router
    routes = {r.resource.canonical for r in router.routes()}
    assert routes == set(document["paths"])  # and every route is described


def test_listen_beyond_loopback_needs_a_token(tmp_path):
    from ovdoc.irmodels import demo_bundle

    env_free = {k: v for k, v in os.environ.items() if k != "OVDOC_SERVE_TOKEN"}
    refused = subprocess.run([sys.executable, "-m", "ovdoc", "serve", str(demo_bundle()), "--listen",
                              "0.0.0.0:0"], capture_output=True, text=True, timeout=120, env=env_free)
    assert refused.returncode != 0 and "token" in error_line(refused)
    srv = Server(str(demo_bundle()), "--no-watch", host="0.0.0.0",
                 env=dict(env_free, OVDOC_SERVE_TOKEN="s3cret"))
    try:
        url = srv.url.replace("0.0.0.0", "127.0.0.1")
        image = demo_frames(1)[0]
        status, answer = score_raw(url, image)
        assert status == 401 and "token" in answer["error"]
        assert call(f"{url}/v1/score", png(image), "image/png", {"Authorization": "Bearer wrong"})[0] == 401
        assert call(f"{url}/v1/score", png(image), "image/png", {"Authorization": "Bearer s3cret"})[0] == 200
        assert score_raw(url, image, "?token=s3cret")[0] == 200
        assert call(f"{url}/metrics")[0] == 401
        assert call(f"{url}/healthz")[0] == 200 and call(f"{url}/readyz")[0] == 200  # probes need none
    finally:
        assert "Traceback" not in srv.stop()


def test_bad_bundle_and_arguments_are_one_line(tmp_path):
    from ovdoc.irmodels import demo_bundle

    assert "not an ovdoc bundle" in error_line(ovdoc_cli("serve", str(tmp_path)))
    assert "given twice" in error_line(ovdoc_cli("serve", f"a={demo_bundle()}", f"a={demo_bundle()}"))
    assert "--listen must look like" in error_line(ovdoc_cli("serve", "--listen", "nowhere"))
    broken = tmp_path / "broken.bundle"
    shutil.copytree(demo_bundle(), broken)
    (broken / "index.faiss").write_bytes(b"garbage")
    line = error_line(ovdoc_cli("serve", str(broken), "--listen", "127.0.0.1:0"))
    assert "index.faiss does not match" in line


def test_ray_without_its_extra_says_what_to_install():
    """No ray installed: `--ray` says in one line which extra to install."""
    from test_boundary import run_blocked

    from ovdoc.irmodels import demo_bundle

    proc = run_blocked("serve", str(demo_bundle()), "--ray", "auto", blocked=("ray",), timeout=120)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "ovdoc[serve]" in lines[0], proc.stderr


def test_bundle_replaced_on_disk_is_reloaded_under_load(tmp_path):
    from ovdoc.atomic import atomic_dir
    from ovdoc.irmodels import demo_bundle
    from ovdoc.runtime.bundle import load_manifest, save_threshold

    own = tmp_path / "own.bundle"
    shutil.copytree(demo_bundle(), own)
    old_hash = load_manifest(own)[0]["manifest_sha256"]
    srv = Server(f"own={own}")
    frames = demo_frames(4)
    answers: list[tuple[int, dict]] = []
    per_client: list[list[str]] = [[], [], []]
    stop = threading.Event()

    def client(mine: list[str]) -> None:
        while not stop.is_set():
            status, answer = score_raw(srv.url, frames[len(answers) % 4])
            answers.append((status, answer))
            mine.append(answer["results"][0]["bundle"]["hash"] if status == 200 else "")

    workers = [threading.Thread(target=client, args=(mine,)) for mine in per_client]
    try:
        for w in workers:
            w.start()
        wait_for(lambda: len(answers) >= 6, "requests before the reload")
        with atomic_dir(own) as tmp:  # a new bundle (new threshold, new hash) replaces the folder at once
            shutil.copytree(demo_bundle(), tmp, dirs_exist_ok=True)
            save_threshold(tmp, 1.5)
        new_hash = load_manifest(own)[0]["manifest_sha256"]
        assert new_hash != old_hash
        wait_for(lambda: bundle_info(srv)["hash"] == new_hash, "the reload")
        seen = len(answers)
        wait_for(lambda: len(answers) >= seen + 6, "requests after the reload")
        with atomic_dir(own) as tmp:  # a corrupt replacement: refused, the verified one keeps serving
            shutil.copytree(demo_bundle(), tmp, dirs_exist_ok=True)
            (tmp / "index.faiss").write_bytes(b"garbage")
        wait_for(lambda: bundle_info(srv)["last_reload_error"], "the refused reload")
        seen = len(answers)
        wait_for(lambda: len(answers) >= seen + 6, "requests after the refused reload")
    finally:
        stop.set()
        for w in workers:
            w.join(60)
        stderr = srv.stop()
    assert "Traceback" not in stderr
    assert all(status == 200 for status, _ in answers), [a for a in answers if a[0] != 200][:3]
    for hashes in per_client:  # each client saw the old bundle, then the new one, never back
        first_new = hashes.index(new_hash)
        assert set(hashes[:first_new]) == {old_hash} and set(hashes[first_new:]) == {new_hash}
    for _, a in answers:
        r = a["results"][0]
        assert r["threshold"] == (1.5 if r["bundle"]["hash"] == new_hash else pytest.approx(6.7147, abs=1e-3))
    assert "index.faiss" in bundle_info_cache["last_reload_error"]


bundle_info_cache: dict = {}


def bundle_info(srv: Server) -> dict:
    status, listing = call(f"{srv.url}/v1/bundles")
    assert status == 200
    bundle_info_cache.clear()
    bundle_info_cache.update(listing["bundles"][0])
    return listing["bundles"][0]
