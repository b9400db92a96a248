"""`--mqtt` pointing at a closed loopback port: a warning while the run is still going, the dropped count in
the summary, and a non-zero exit because nothing was ever delivered (a wrong host:port must not pass)."""

from __future__ import annotations

import json
import socket
import subprocess
import sys

from conftest import REPO, need_package


def closed_port() -> int:
    """A loopback port nobody listens on: bound by the OS for us, then released."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_broker_warns_at_start_counts_drops_and_fails(bundle, streams):
    need_package("paho.mqtt", "the MQTT output")
    url = f"mqtt://127.0.0.1:{closed_port()}/x"
    proc = subprocess.Popen(
        [sys.executable, "-m", "ovdoc", "run", str(bundle), "--source", str(streams["normal"]), "--realtime",
         "--headless", "--json", "--mqtt", url],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, encoding="utf-8", errors="replace",
        cwd=REPO,
    )
    try:
        first = []
        for line in proc.stderr:  # blocks on the real stream; the clip lasts 6 s in real time
            first.append(line)
            if "not reachable" in line:
                still_running = proc.poll() is None
                break
        else:
            raise AssertionError("no warning about the broker: " + "".join(first)[-2000:])
        rest = proc.stderr.read()
        out = proc.stdout.read()
        proc.wait(60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert still_running, "the warning came only after the run had ended"
    assert first[-1].startswith("warning: MQTT broker 127.0.0.1:") and "Traceback" not in rest
    summary = json.loads(out)
    stats = summary["outputs"]["mqtt"]
    assert summary["frames"] == 60 and stats["connects"] == 0 and stats["delivered"] == 0
    assert stats["attempted"] >= 1 and stats["dropped"] == stats["attempted"], stats
    lines = rest.strip().splitlines()
    assert f"mqtt: 0 of {stats['attempted']} messages delivered, {stats['dropped']} dropped" in rest
    assert proc.returncode != 0 and lines[-1].startswith("Error: --mqtt ") and "never reached" in lines[-1]
