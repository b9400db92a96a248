"""A real MJPEG-over-HTTP stream server on 127.0.0.1 (multipart/x-mixed-replace, like IP cameras send),
for live-source tests: it loops over its frames until closed, and can stall (stay connected, send nothing)
and recover on request. Loopback only; every test closes it.
"""

from __future__ import annotations

import http.server
import socketserver
import threading
import time

import cv2
import numpy as np


class MJPEGServer:
    def __init__(self, frames: list[np.ndarray], fps: float = 30.0) -> None:
        self.jpegs = [cv2.imencode(".jpg", f)[1].tobytes() for f in frames]
        self.fps = fps
        self.stall = threading.Event()  # set: connections stay open but no bytes are sent
        self.closing = threading.Event()
        self.sent = 0
        self.connections = 0
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # keep test output clean
                pass

            def do_GET(self) -> None:
                server.connections += 1
                self.send_response(200)
                self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
                self.end_headers()
                i = 0
                try:
                    while not server.closing.is_set():
                        if server.stall.is_set():
                            time.sleep(0.02)
                            continue
                        jpeg = server.jpegs[i % len(server.jpegs)]
                        i += 1
                        head = b"--frame\r\nContent-Type: image/jpeg\r\n"
                        head += b"Content-Length: %d\r\n\r\n" % len(jpeg)
                        self.wfile.write(head + jpeg + b"\r\n")
                        server.sent += 1
                        time.sleep(1.0 / server.fps)
                except (BrokenPipeError, ConnectionResetError):
                    pass

        class Threading(socketserver.ThreadingMixIn, http.server.HTTPServer):
            daemon_threads = True

        self.httpd = Threading(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/stream.mjpg"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def __enter__(self) -> MJPEGServer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self.closing.set()
        self.httpd.shutdown()
        self.httpd.server_close()
