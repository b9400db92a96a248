"""Progress on a non-terminal stderr is plain lines, at most one every few seconds (no tqdm `\\r` redraws)."""

from __future__ import annotations

import io
import logging

from ovdoc.log import PROGRESS_EVERY_S, LineProgress, get_logger, progress_bar


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


class Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def test_line_progress_logs_at_most_every_few_seconds():
    clock = Clock()
    logger = get_logger()
    collect = Collect()  # our own handler: independent of pytest's capture and of other tests' handlers
    logger.addHandler(collect)
    try:
        bar = LineProgress(total=1000, desc="normal features", clock=clock)
        for _ in range(1000):  # 1,000 updates over 12 s: two timed lines and a last one
            clock.t += 0.012
            bar.update(1)
        bar.close()
        quick = LineProgress(total=10, desc="quick", clock=clock)
        quick.update(10)  # done within the interval: says nothing at all
        quick.close()
    finally:
        logger.removeHandler(collect)
    lines = collect.lines
    assert len(lines) == 3 and PROGRESS_EVERY_S == 5.0, lines
    assert lines[0].startswith("normal features: 417/1000 img in 5 s")
    assert lines[-1].startswith("normal features: 1000/1000 img done in 12 s")
    assert not any("quick" in line or "\r" in line for line in lines)


def test_progress_bar_is_lines_off_a_terminal_and_silent_when_disabled(monkeypatch):
    monkeypatch.setattr("sys.stderr", io.StringIO())
    assert isinstance(progress_bar(total=3), LineProgress)
    bar = progress_bar(total=3, enabled=False)
    assert not isinstance(bar, LineProgress) and bar.disable


_FD2_PROBE = """
import os, sys
from ovdoc.log import native_logs, native_stderr_dropped, native_stderr_silenced
os.write(2, b"before-verbose\\n")
with native_stderr_dropped():  # native_logs(False) not called yet: nothing is redirected
    os.write(2, b"native-while-verbose\\n")
native_logs(False)
for name, block in (("dropped", native_stderr_dropped), ("silenced", native_stderr_silenced)):
    with block():
        os.write(2, f"native-{name}\\n".encode())
        print(f"python-{name}", file=sys.stderr, flush=True)
    os.write(2, f"after-{name}\\n".encode())
print("stderr-is-restored", file=sys.stderr, flush=True)
"""


def test_native_stderr_redirects_drop_fd2_and_put_it_back():
    """Both redirects, on a real fd 2 (a child process): native writes vanish inside the block, fd 2 is
    whole again after it; `dropped` keeps Python's own stderr lines, `silenced` drops them too."""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", _FD2_PROBE], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stderr.splitlines() == ["before-verbose", "native-while-verbose", "python-dropped",
                                        "after-dropped", "after-silenced", "stderr-is-restored"]
