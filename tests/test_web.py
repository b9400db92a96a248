"""`ovdoc run --serve`: the live web view in a real headless Chromium (Debian's chromium + chromium-driver,
driven by Selenium), its JSON API, server-sent events and Prometheus metrics, against a real run."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from _cli import free_port, start_ovdoc, stop_ovdoc, wait_for
from conftest import REPO, missing, need_package

pytestmark = pytest.mark.slow  # a live run in a real headless Chromium

CHROMEDRIVER = shutil.which("chromedriver")


def artifacts_dir() -> Path:
    """Where a test leaves files for people (screenshots): $OVDOC_ARTIFACTS, else tests/artifacts
    (gitignored); CI keeps the folder."""
    folder = Path(os.environ.get("OVDOC_ARTIFACTS") or REPO / "tests" / "artifacts")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def save_screenshot(browser, name: str) -> Path:
    path = artifacts_dir() / name
    assert browser.save_screenshot(str(path)), path
    assert path.stat().st_size > 10_000  # a real page, not an empty canvas
    return path


def get_json(url: str, token: str | None = None) -> dict:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    with urllib.request.urlopen(request, timeout=5) as answer:
        return json.loads(answer.read())


def start_run(bundle: Path, source: Path, port: int, events: Path, *extra: str) -> subprocess.Popen:
    proc = start_ovdoc("run", str(bundle), "--source", str(source), "--loop", "--realtime", "--duration",
                       "90", "--headless", "--json", "--events", str(events), "--serve", f"127.0.0.1:{port}",
                       *extra)
    wait_for(lambda: get_json(f"http://127.0.0.1:{port}/api/status")["cameras"][0]["frames"] > 5,
             what="the web view to serve scored frames")
    return proc


def stop_run(proc: subprocess.Popen) -> tuple[dict, str]:
    return stop_ovdoc(proc)


@pytest.fixture()
def browser():
    need_package("selenium", "the web view test (pip install selenium)")
    need_package("aiohttp", "the web view")
    if CHROMEDRIVER is None or shutil.which("chromium") is None:
        missing("the web view test needs Debian's chromium and chromium-driver")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1200,900"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    yield driver
    driver.quit()


def test_web_view_in_a_real_browser(bundle, streams, browser, tmp_path):
    own = tmp_path / "own.bundle"  # "save to bundle" rewrites the manifest: not the shared fixture's
    shutil.copytree(bundle, own)
    port, events = free_port(), tmp_path / "events.jsonl"
    proc = start_run(own, streams["normal"], port, events)
    base = f"http://127.0.0.1:{port}"
    try:
        browser.get(base + "/")
        # the MJPEG stream shows: the image has pixels, and they change as the clip plays
        # the page builds its cameras once /api/status answers: until then there is no img0
        image_width = "const i=document.getElementById('img0'); return i ? i.naturalWidth : 0"
        wait_for(lambda: browser.execute_script(image_width) > 0, what="the camera image")
        grab = ("const i=document.getElementById('img0'), c=document.createElement('canvas');"
                "c.width=i.naturalWidth; c.height=i.naturalHeight; c.getContext('2d').drawImage(i,0,0);"
                "return c.toDataURL();")
        first = browser.execute_script(grab)
        wait_for(lambda: browser.execute_script(grab) != first, what="a new frame in the page")
        # the chart and the frame counter follow the server-sent events
        chart = "return document.getElementById('chart0').toDataURL()"
        frame = "return document.getElementById('frame0').textContent"
        wait_for(lambda: browser.execute_script(frame) not in ("-", ""), what="the first score event")
        c0, f0 = browser.execute_script(chart), int(browser.execute_script(frame))
        wait_for(lambda: int(browser.execute_script(frame)) > f0, what="the frame counter to move")
        assert browser.execute_script(chart) != c0
        # the camera is called by its file name, not its full path; the chart has a time scale
        name = browser.execute_script("return document.querySelector('#cam0 b').textContent")
        assert name == "0: normal.avi"
        # normal tiles: normal; move the slider below their scores and the API reports anomalies
        status = get_json(base + "/api/status")["cameras"][0]
        assert status["last"]["anomalous"] is False and status["anomalies"] == 0
        low = round(status["last"]["smoothed"] * 0.25, 6)
        browser.execute_script(
            "const s=document.getElementById('slider0'); s.value=arguments[0];"
            "s.dispatchEvent(new Event('input')); s.dispatchEvent(new Event('change'));", low)
        camera = lambda: get_json(base + "/api/status")["cameras"][0]  # noqa: E731
        changed = wait_for(lambda: (c := camera())["last"]["anomalous"] and c,
                           what="the decision to change after the slider moved")
        slider = float(browser.execute_script("return document.getElementById('slider0').value"))
        assert changed["threshold"] == pytest.approx(slider, rel=1e-6)
        verdict = "return document.getElementById('verdict0').textContent"
        wait_for(lambda: "ANOMALY" in browser.execute_script(verdict), what="the page to show the anomaly")
        save_screenshot(browser, "web-view.png")  # for people: the chart with its axes, the annotated frame
        # "save to bundle": the manifest holds it, still verified (re-hashed), the calibrated one on record
        browser.find_element("id", "save0").click()
        from ovdoc.runtime.bundle import load_manifest

        manifest = wait_for(lambda: (m := load_manifest(own)[0])["threshold"].get("history") and m,
                            what="the bundle's manifest to change")
        assert manifest["threshold"]["value"] == pytest.approx(changed["threshold"], rel=1e-6)
        assert manifest["threshold"]["history"][-1]["by"] == "web"
        # pause / resume from the page; metrics say so
        browser.find_element("id", "pause").click()
        wait_for(lambda: get_json(base + "/api/status")["scoring"] is False, what="scoring to pause")
        with urllib.request.urlopen(base + "/metrics", timeout=5) as answer:
            metrics = answer.read().decode()
            assert answer.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        assert "ovdoc_scoring 0" in metrics and 'ovdoc_frames_total{camera="0"' in metrics
        assert "ovdoc_latency_p99_ms" in metrics
        browser.find_element("id", "pause").click()
        wait_for(lambda: get_json(base + "/api/status")["scoring"] is True, what="scoring to resume")
    finally:
        summary, err = stop_run(proc)
    assert summary["stopped"] == "interrupted" and "Traceback" not in err
    records = [json.loads(line) for line in events.read_text(encoding="utf-8").splitlines()]
    changes = [r for r in records if r.get("event") == "threshold_changed"]
    assert [c["by"] for c in changes] == ["web", "web"] and changes[1]["saved_to"].endswith("manifest.json")


def test_api_validation_and_sse(bundle, streams, tmp_path):
    need_package("aiohttp", "the web view")
    port, events = free_port(), tmp_path / "events.jsonl"
    proc = start_run(bundle, streams["normal"], port, events)
    base = f"http://127.0.0.1:{port}"
    try:
        for body, code in (({"camera": 0, "value": "nan"}, 400), ({"camera": 5, "value": 1.0}, 404),
                           ({"camera": 0}, 400)):
            request = urllib.request.Request(base + "/api/threshold", data=json.dumps(body).encode(),
                                             method="POST", headers={"Content-Type": "application/json"})
            with pytest.raises(urllib.error.HTTPError) as info:
                urllib.request.urlopen(request, timeout=5)
            assert info.value.code == code, body
        with urllib.request.urlopen(base + "/api/events", timeout=10) as stream:
            assert stream.headers["Content-Type"].startswith("text/event-stream")
            line = b""
            while not line.startswith(b"data: "):
                line = stream.readline()
            message = json.loads(line[6:])
        assert message["type"] == "score" and message["camera"] == 0
        status = get_json(base + "/api/status")["cameras"][0]
        assert status["latency_ms_p99"] is not None and status["fps"] > 0
    finally:
        stop_run(proc)


def test_non_loopback_bind_needs_a_token(bundle, streams, tmp_path):
    need_package("aiohttp", "the web view")
    cmd = [sys.executable, "-m", "ovdoc", "run", str(bundle), "--source", str(streams["normal"]),
           "--headless", "--serve", f"0.0.0.0:{free_port()}"]
    env = {k: v for k, v in os.environ.items() if k != "OVDOC_SERVE_TOKEN"}
    proc = subprocess.run(cmd, capture_output=True, text=True,
            encoding="utf-8", errors="replace", timeout=120, cwd=REPO, env=env)
    assert proc.returncode != 0 and proc.stderr.count("\n") == 1 and "token" in proc.stderr
    port = free_port()
    proc = start_ovdoc("run", str(bundle), "--source", str(streams["normal"]), "--loop", "--realtime",
                       "--duration", "60", "--headless", "--json", "--serve", f"0.0.0.0:{port}",
                       "--serve-token", "s3cret")
    try:
        wait_for(lambda: get_json(f"http://127.0.0.1:{port}/api/status", "s3cret"), what="the server")
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/api/status", timeout=5)
        assert info.value.code == 401
        assert get_json(f"http://127.0.0.1:{port}/api/status?token=s3cret")["cameras"]
    finally:
        stop_run(proc)
