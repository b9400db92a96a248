"""Drive tests/_rtsp_server.py (a real GStreamer RTSP server on loopback) from the tests: start it on a
port, wait for its lines instead of sleeping, stall/resume its video, kill it and start it again."""

from __future__ import annotations

import queue
import subprocess
import threading
import time
from pathlib import Path

from conftest import missing

SYSTEM_PYTHON = Path("/usr/bin/python3")  # Debian's, which has python3-gi; the venv has no GObject bindings
SERVER = Path(__file__).with_name("_rtsp_server.py")
PROBE = (
    "import gi; gi.require_version('Gst', '1.0'); gi.require_version('GstRtspServer', '1.0'); "
    "from gi.repository import Gst; Gst.init(None); "
    "assert all(Gst.ElementFactory.find(e) for e in ('multifilesrc', 'jpegdec', 'x264enc', 'rtph264pay'))"
)


def require_rtsp_server() -> None:
    """Skip (users) or fail (CI) unless Debian's GStreamer RTSP server and its plugins are installed."""
    ok = SYSTEM_PYTHON.exists() and subprocess.run(
        [str(SYSTEM_PYTHON), "-c", PROBE], capture_output=True, timeout=60
    ).returncode == 0
    if not ok:
        missing(
            "RTSP tests need Debian's GStreamer RTSP server (apt-get install python3-gi "
            "gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-base gstreamer1.0-plugins-good "
            "gstreamer1.0-plugins-ugly)"
        )


class RTSPServer:
    """rtsp://127.0.0.1:port/cam serving JPEG files `pattern` (looped, H.264, `fps`) from a subprocess."""

    def __init__(self, pattern: str, port: int, fps: int = 10) -> None:
        self.pattern, self.port, self.fps = pattern, port, fps
        self.url = f"rtsp://127.0.0.1:{port}/cam"
        self.proc: subprocess.Popen | None = None
        self.lines: queue.Queue[str] = queue.Queue()
        self.clients = 0

    def start(self) -> RTSPServer:
        self.proc = subprocess.Popen(
            [str(SYSTEM_PYTHON), str(SERVER), self.pattern, str(self.port), str(self.fps)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        )
        self.lines = queue.Queue()
        threading.Thread(target=self._pump, args=(self.proc, self.lines), daemon=True).start()
        self.expect("READY")
        return self

    @staticmethod
    def _pump(proc: subprocess.Popen, lines: queue.Queue) -> None:
        for line in proc.stdout:
            lines.put(line.strip())
        lines.put("EXIT")

    def expect(self, word: str, timeout_s: float = 60) -> None:
        """Wait (bounded) for the server to print `word`; counts CLIENT lines seen on the way."""
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"the RTSP server did not say {word} within {timeout_s} s") from None
            if line == "CLIENT":
                self.clients += 1
            if line == word:
                return
            if line == "EXIT" or line.startswith("ERROR"):
                raise AssertionError(f"the RTSP server stopped: {line}")

    def _send(self, command: str, answer: str) -> None:
        assert self.proc is not None and self.proc.stdin is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        self.expect(answer)

    def stall(self) -> None:
        """The RTSP session stays up; no more video goes out (frames are dropped before the encoder)."""
        self._send("stall", "STALLED")

    def resume(self) -> None:
        self._send("resume", "RESUMED")

    def kill(self) -> None:
        """The server vanishes (a camera rebooting): its sockets close at once."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def __enter__(self) -> RTSPServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.kill()
