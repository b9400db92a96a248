"""Start a real `ovdoc serve` on a free loopback port and talk to it with the standard library only."""

from __future__ import annotations

import base64
import json
import os
import selectors
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]


class Server:
    """`python -m ovdoc serve ... --listen HOST:0 --json`; `url` once it prints where it listens."""

    def __init__(self, *args: str, host: str = "127.0.0.1", env: dict | None = None, timeout: float = 120):
        listen = [] if "--listen" in args else ["--listen", f"{host}:0"]
        cmd = [sys.executable, "-m", "ovdoc", "serve", *args, *listen, "--json"]
        self._err = tempfile.TemporaryFile()  # noqa: SIM115 - a file, not a pipe: never blocks the server
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=self._err, cwd=REPO,
                                     env=env or dict(os.environ))
        sel = selectors.DefaultSelector()
        sel.register(self.proc.stdout, selectors.EVENT_READ)
        line = b""
        deadline = time.monotonic() + timeout
        while not line.endswith(b"\n") and time.monotonic() < deadline:
            if sel.select(timeout=1.0):
                chunk = self.proc.stdout.readline()
                if not chunk:
                    break
                line += chunk
        sel.close()
        if not line.endswith(b"\n"):
            raise AssertionError(f"the server did not start: {self.stop()[-2000:]}")
        self.info = json.loads(line)
        self.url = self.info["url"]

    def stop(self) -> str:
        """SIGTERM, bounded wait; the server's stderr."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._err.seek(0)
        self.stderr = self._err.read().decode("utf-8", "replace")
        self._err.close()
        return self.stderr

    @property
    def stderr(self) -> str:
        return getattr(self, "_stderr", "")

    @stderr.setter
    def stderr(self, value: str) -> None:
        self._stderr = value


def pids_under(root: int) -> list[int]:
    """`root` and every process under it now (Linux /proc): a private Ray's proxy, ingress and replicas
    run under the `ovdoc serve --ray local` process."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            parents[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except OSError:
            continue

    def under(pid: int) -> bool:
        while pid > 1:
            if pid == root:
                return True
            pid = parents.get(pid, 1)
        return False

    return [pid for pid in parents if under(pid)]


def png(image: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", image)
    assert ok
    return buf.tobytes()


def call(url: str, data: bytes | None = None, content_type: str | None = None, headers: dict | None = None,
         timeout: float = 60) -> tuple[int, dict | str]:
    """(status, JSON body or text) for any answer, 4xx/5xx included."""
    h = dict(headers or {})
    if content_type:
        h["Content-Type"] = content_type
    request = urllib.request.Request(url, data=data, headers=h, method="POST" if data is not None else "GET")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as r:
            status, body, ctype = r.status, r.read(), r.headers.get("Content-Type", "")
    except urllib.error.HTTPError as e:
        status, body, ctype = e.code, e.read(), e.headers.get("Content-Type", "")
    return status, json.loads(body) if "json" in ctype else body.decode("utf-8", "replace")


def score_raw(url: str, image: np.ndarray, query: str = "") -> tuple[int, dict]:
    return call(f"{url}/v1/score{query}", png(image), "image/png")


def score_json(url: str, images: list[np.ndarray], query: str = "", **extra) -> tuple[int, dict]:
    body = {"images": [base64.b64encode(png(im)).decode() for im in images], **extra}
    return call(f"{url}/v1/score{query}", json.dumps(body).encode(), "application/json")


def score_multipart(url: str, images: list[np.ndarray], query: str = "") -> tuple[int, dict]:
    boundary = uuid.uuid4().hex
    parts = []
    for i, im in enumerate(images):
        head = (f'--{boundary}\r\nContent-Disposition: form-data; name="file{i}"; filename="p{i}.png"'
                "\r\nContent-Type: image/png\r\n\r\n")
        parts.append(head.encode() + png(im) + b"\r\n")
    parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="note"\r\n\r\nhello\r\n'.encode())
    body = b"".join(parts) + f"--{boundary}--\r\n".encode()
    return call(f"{url}/v1/score{query}", body, f"multipart/form-data; boundary={boundary}")


def scores(answer: dict) -> np.ndarray:
    return np.array([r["score"] for r in answer["results"]], dtype=np.float64)


def metric(text: str, name: str, **labels: str) -> float:
    """The value of one Prometheus sample (0 if absent)."""
    want = ",".join(f'{k}="{v}"' for k, v in labels.items())
    for line in text.splitlines():
        if line.startswith(f"{name}{{{want}}}" if want else f"{name} "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def demo_frames(n: int, start: int = 0) -> list[np.ndarray]:
    from ovdoc.irmodels import demo_stream

    cap = cv2.VideoCapture(str(demo_stream()))
    frames = []
    while len(frames) < start + n:
        ok, frame = cap.read()
        assert ok, "the demo clip is shorter than asked"
        frames.append(frame)
    cap.release()
    return frames[start:]


def wait_for(predicate, what: str, timeout: float = 60.0):
    """The suite's one polling wait (_cli.wait_for), `what` first; an exception in `predicate` fails."""
    from _cli import wait_for as poll

    return poll(predicate, timeout=timeout, what=what, errors=())
