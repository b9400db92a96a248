"""Changes without downtime: a running `ovdoc run` takes a changed bundle (written over it on disk by
`ovdoc fit --append`, or on SIGHUP) between batches, drops no frame, and refuses a broken one."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import pytest
from _runtime_helpers import ovdoc_cli, tile_files, write_pngs
from conftest import REPO

pytestmark = pytest.mark.slow  # reloads a bundle under a live ovdoc run


def records(path: Path) -> list[dict]:
    """The events written so far (the line being written may be incomplete: left for the next look)."""
    out = []
    for line in path.read_text(encoding="utf-8").splitlines() if path.exists() else []:
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            break
    return out


def wait_event(path: Path, predicate, timeout: float = 60.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for r in records(path):
            if predicate(r):
                return r
        time.sleep(0.1)
    raise AssertionError(f"no such event in {path}: {[r for r in records(path) if 'event' in r]}")


def test_bundle_reloads_while_running(bundle, streams, magnetic_tile_dir, tmp_path):
    own = tmp_path / "line.bundle"
    shutil.copytree(bundle, own)
    new = write_pngs([cv2.imread(str(p)) for p in tile_files(magnetic_tile_dir)[300:340]], tmp_path / "new")
    events = tmp_path / "events.jsonl"
    proc = subprocess.Popen(
        [sys.executable, "-m", "ovdoc", "run", str(own), "--source", str(streams["normal"]), "--loop",
         "--realtime", "--duration", "120", "--headless", "--json", "--events", str(events)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                encoding="utf-8", errors="replace", cwd=REPO,
    )
    try:
        wait_event(events, lambda r: r.get("frame", -1) >= 5 and "event" not in r)
        # 1. a new bundle written over the running one (atomically, in place): picked up from disk
        fit = ovdoc_cli("fit", "--append", str(own), "--normal", str(new), "--json", timeout=300)
        assert fit.returncode == 0, fit.stderr[-2000:]
        appended = json.loads(fit.stdout)
        first = wait_event(events, lambda r: r.get("event") == "bundle_reloaded")
        assert first["by"] == "bundle changed on disk" and first["n_images"] == appended["n_images"]
        assert first["threshold"] == appended["threshold"]
        # 2. SIGHUP reloads too
        proc.send_signal(signal.SIGHUP)
        wait_event(events, lambda r: r.get("event") == "bundle_reloaded" and r["by"] == "SIGHUP")
        # 3. a hand-edited manifest fails verification: refused, the running bundle keeps scoring
        manifest = own / "manifest.json"
        data = json.loads(manifest.read_text(encoding="utf-8"))
        data["threshold"]["value"] *= 10
        manifest.write_text(json.dumps(data))
        failed = wait_event(events, lambda r: r.get("event") == "bundle_reload_failed")
        assert "modified" in failed["reason"] and failed["by"] == "bundle changed on disk"
        seen = max(r["frame"] for r in records(events) if "event" not in r)
        wait_event(events, lambda r: "event" not in r and r["frame"] > seen + 10)  # still scoring
    finally:
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err[-2000:]
    summary = json.loads(out)
    assert summary["stopped"] == "interrupted" and "Traceback" not in err
    frames = [r["frame"] for r in records(events) if "event" not in r]
    assert frames == list(range(len(frames))) == list(range(summary["frames"]))  # none dropped, in order
