"""A real webhook receiver on loopback, shared by the output and cluster tests."""

from __future__ import annotations

import http.server
import json
import threading


class Hook(http.server.ThreadingHTTPServer):
    """A local webhook receiver: records each POSTed JSON body; can answer 500 a few times, or hold every
    answer until the test sets `release` (a receiver as slow as the test wants, without a clock)."""

    def __init__(self, *, fail_first: int = 0, hold: bool = False) -> None:
        self.bodies: list[dict] = []
        self.answers: list[int] = []
        self.arrived = 0
        self.fail_first = fail_first
        self.release = threading.Event()
        if not hold:
            self.release.set()
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 (http.server's name)
                body = self.rfile.read(int(self.headers["Content-Length"]))
                outer.arrived += 1
                outer.release.wait(120)
                code = 500 if len(outer.answers) < outer.fail_first else 200
                outer.answers.append(code)
                if code == 200:
                    outer.bodies.append(json.loads(body))
                self.send_response(code)
                self.end_headers()

            def log_message(self, *args):
                pass

        super().__init__(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server_address[1]}/hook"
        threading.Thread(target=self.serve_forever, daemon=True).start()
