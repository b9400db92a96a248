"""Running the `ovdoc` command line in tests, one way for every file.

    ovdoc_cli(...)    the real entry point in a subprocess, to the end (exit code, the stderr a user sees)
    start_ovdoc(...)  the same in the background (a live run a test talks to), stop_ovdoc(...) ends it
                      with Ctrl-C and returns the --json summary
    invoke(...)       in-process through click's CliRunner (fast; no real exit, no separate stderr)
    error_line(proc)  the single `Error: ...` line; fails on a traceback or several lines
    wait_for(...)     poll a real condition until it holds, bounded (never a fixed sleep)

No display reaches the subprocess (a window would need one), and Python warnings stay out of stderr
so "one line" checks see what a user sees.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def cli_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ, PYTHONWARNINGS="ignore", **extra)
    env.pop("DISPLAY", None)
    env.pop("WAYLAND_DISPLAY", None)
    return env


def ovdoc_cli(*args: str, timeout: float = 120, env: dict[str, str] | None = None,
              cwd: Path | None = None) -> subprocess.CompletedProcess:
    """The real `ovdoc` entry point in a subprocess: exit code and the exact stderr a user sees."""
    return subprocess.run(
        [sys.executable, "-m", "ovdoc", *args], capture_output=True, text=True, encoding="utf-8",
        errors="replace", timeout=timeout, env=env or cli_env(), cwd=cwd,
    )


def start_ovdoc(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen:
    """`ovdoc ARGS` in the background, stdout and stderr captured (stop it with stop_ovdoc)."""
    return subprocess.Popen(
        [sys.executable, "-m", "ovdoc", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        encoding="utf-8", errors="replace", env=env or cli_env(), cwd=REPO,
    )


def stop_ovdoc(proc: subprocess.Popen, timeout: float = 60) -> tuple[dict, str]:
    """Ctrl-C, as a user would; the run must end cleanly and print its --json summary."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err[-2000:]
    return json.loads(out), err


def invoke(*args: str):
    """`ovdoc ARGS` in-process (click's CliRunner): the result has exit_code, output and exception."""
    from click.testing import CliRunner

    from ovdoc.cli import cli

    return CliRunner().invoke(cli, list(args))


def error_line(proc: subprocess.CompletedProcess) -> str:
    """The single `Error: ...` line; fails on a traceback or several lines."""
    lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
    assert "Traceback" not in proc.stderr, proc.stderr
    errors = [ln for ln in lines if ln.startswith("Error: ")]
    assert len(errors) == 1, proc.stderr
    return errors[0]


def wait_for(predicate, timeout: float = 20.0, what: str = "condition", errors=(OSError,)):
    """Poll `predicate` until it returns something true; exceptions in `errors` count as "not yet"."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = predicate()
            if last:
                return last
        except errors as exc:
            last = exc
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what} (last: {last!r})")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
