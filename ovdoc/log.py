"""Progress and warnings for people: plain lines on stderr through `logging`, tqdm bars on terminals.

Every module logs to a child of the `ovdoc` logger (`get_logger(__name__)`); the first call installs one
handler that writes the bare message to stderr (stdout stays clean for `--json`). Scripts and tests can
silence it with `quiet()` or the usual `logging` configuration.

When stderr is not a terminal (CI, systemd, `> log`) a progress bar becomes a plain line every
PROGRESS_EVERY_S seconds at most: tqdm's `\r` redraws would fill a log with tens of kilobytes.
OpenCV's and FFmpeg's own log lines (`[ERROR:0@0.7] ...`, `[tcp @ 0x...] Connection refused`) are
silenced by `native_logs()` unless the user asks for them (`--verbose`), so ovdoc's one-line errors stand
alone.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
from collections.abc import Iterator

ROOT = "ovdoc"


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever `sys.stderr` is at the time (pytest and click swap it), not the one at import."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self):  # type: ignore[override]
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:  # the base class assigns it; the live sys.stderr always wins
        pass


def tolerant_streams() -> None:
    """On a terminal or pipe that cannot encode every character (an ASCII `LANG=C` box), replace what it
    cannot show rather than crash: a `±` or `µ` in a report must never cost the user the result."""
    for stream in (sys.stdout, sys.stderr):
        encoding = (getattr(stream, "encoding", None) or "").lower().replace("-", "")
        if encoding not in ("utf8", "utf_8") and hasattr(stream, "reconfigure"):
            with contextlib.suppress(Exception):
                stream.reconfigure(errors="replace")


def get_logger(name: str = ROOT) -> logging.Logger:
    """A logger under `ovdoc` whose INFO lines reach stderr as plain text."""
    root = logging.getLogger(ROOT)
    if not any(isinstance(h, _StderrHandler) for h in root.handlers):
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        root.addHandler(handler)
        root.setLevel(logging.INFO)
        root.propagate = False
    return logging.getLogger(name if name.startswith(ROOT) else f"{ROOT}.{name}")


@contextlib.contextmanager
def quiet(enabled: bool = True) -> Iterator[None]:
    """Only warnings from ovdoc's loggers while the block runs (for `progress=False` callers)."""
    root = get_logger()
    level = root.level
    if enabled:
        root.setLevel(logging.WARNING)
    try:
        yield
    finally:
        root.setLevel(level)


PROGRESS_EVERY_S = 5.0


def _is_terminal(stream) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def progress_bar(iterable=None, *, total: int | None = None, desc: str = "", unit: str = "img",
                 enabled: bool = True, leave: bool = False):
    """A tqdm bar when `enabled` and stderr is a terminal; plain lines at most every PROGRESS_EVERY_S
    seconds when stderr is a file or pipe; a silent pass-through when not `enabled`."""
    if enabled and not _is_terminal(sys.stderr):
        return LineProgress(iterable, total=total, desc=desc, unit=unit)
    from tqdm import tqdm

    return tqdm(iterable, total=total, desc=desc, unit=unit, file=sys.stderr, leave=leave,
                disable=not enabled)


class LineProgress:
    """The part of tqdm's interface ovdoc uses (iterate, update, set_postfix, close), as log lines.

    Nothing for work that ends within `every` seconds; then one line per `every` seconds and a last one.
    """

    def __init__(self, iterable=None, *, total: int | None = None, desc: str = "", unit: str = "img",
                 every: float = PROGRESS_EVERY_S, clock=time.monotonic) -> None:
        self.iterable = iterable
        self.total = total if total is not None else _len_or_none(iterable)
        self.desc = desc or "progress"
        self.unit = unit
        self.every = every
        self.clock = clock
        self.n = 0
        self.postfix = ""
        self.start = self.last = clock()
        self.lines = 0
        self.closed = False

    def __iter__(self):
        for item in self.iterable:
            yield item
            self.update(1)
        self.close()

    def __enter__(self) -> LineProgress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _line(self, final: bool = False) -> str:
        done = f"{self.n}/{self.total}" if self.total else f"{self.n}"
        elapsed = self.clock() - self.start
        rate = f", {self.n / elapsed:.1f} {self.unit}/s" if elapsed > 0 else ""
        post = f" ({self.postfix})" if self.postfix else ""
        return f"{self.desc}: {done} {self.unit}{' done' if final else ''} in {elapsed:.0f} s{rate}{post}"

    def update(self, n: int = 1) -> None:
        self.n += n
        now = self.clock()
        if now - self.last >= self.every:
            self.last = now
            self.lines += 1
            get_logger().info(self._line())

    def set_postfix(self, **values) -> None:
        self.postfix = ", ".join(f"{k}={v}" for k, v in values.items())

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self.lines:  # say where it ended only if it said anything on the way
            get_logger().info(self._line(final=True))


def _len_or_none(iterable) -> int | None:
    try:
        return len(iterable)
    except TypeError:
        return None


# OpenCV's own logging (cv2.utils.logging) and FFmpeg's (read by OpenCV at its first FFmpeg capture)
_NATIVE_QUIET = {"OPENCV_LOG_LEVEL": "OFF", "OPENCV_FFMPEG_LOGLEVEL": "-8"}  # -8 = AV_LOG_QUIET


_native_quiet = False


def native_logs(verbose: bool = False) -> None:
    """Silence OpenCV's and FFmpeg's own stderr lines, or (verbose) leave them at OpenCV's defaults.

    The env vars must be set before OpenCV opens its first FFmpeg capture (FFmpeg's level is read then);
    a user's own setting wins. OpenCV's runtime level is set too when cv2 is already imported.
    """
    global _native_quiet
    _native_quiet = not verbose
    if verbose:
        for key, value in _NATIVE_QUIET.items():
            if os.environ.get(key) == value:  # ours, from an earlier call in this process
                del os.environ[key]
    else:
        for key, value in _NATIVE_QUIET.items():
            os.environ.setdefault(key, value)
    cv2 = sys.modules.get("cv2")
    if cv2 is not None:
        levels = cv2.utils.logging
        levels.setLogLevel(levels.LOG_LEVEL_WARNING if verbose else levels.LOG_LEVEL_SILENT)


@contextlib.contextmanager
def native_stderr_silenced() -> Iterator[None]:
    """Point file descriptor 2 at /dev/null for the block, after `native_logs(False)` only.

    For the few native messages no log level reaches: OpenCV's own AVI reader `fprintf`s ("Unexpected
    list type. Expected: hdrl ...") while probing a corrupt file. Process-wide, so keep the block to one
    open call made before any other thread writes to stderr.
    """
    with _fd2_to_devnull(keep_python_stderr=False):
        yield


@contextlib.contextmanager
def native_stderr_dropped() -> Iterator[None]:
    """File descriptor 2 -> /dev/null for the block, while Python's own stderr (ovdoc's lines, click) keeps
    the terminal; after `native_logs(False)` only (OVDOC_DEBUG=1 keeps everything).

    TensorFlow, absl and the CUDA stub write their start-up lines ("oneDNN custom operations are on",
    "Could not find cuda drivers", "failed call to cuInit") straight to fd 2 before any log level is
    read; host-side work a user did not ask to debug (`ovdoc export`) should print ovdoc's lines only.
    """
    with _fd2_to_devnull(keep_python_stderr=True):
        yield


@contextlib.contextmanager
def _fd2_to_devnull(*, keep_python_stderr: bool) -> Iterator[None]:
    """The redirect both of the above make: fd 2 -> /dev/null and back, nothing before `native_logs(False)`
    or without an fd 2. `keep_python_stderr`: `sys.stderr`, when it is fd 2 itself, moves to a copy of the
    real fd 2 for the block (a captured stream, pytest's or click's, is left where it is)."""
    if not _native_quiet:
        yield
        return
    python_err = sys.stderr
    try:
        python_err.flush()
        saved = os.dup(2)
        null = os.open(os.devnull, os.O_WRONLY)
    except OSError:  # no fd 2 to redirect (embedded interpreters)
        yield
        return
    keep = None
    if keep_python_stderr:
        try:
            swap = python_err.fileno() == 2
        except (AttributeError, ValueError, OSError):  # a captured stream (pytest, click): not fd 2
            swap = False
        if swap:
            keep = os.fdopen(os.dup(saved), "w", buffering=1, encoding="utf-8", errors="replace")
    try:
        if keep is not None:
            sys.stderr = keep
        os.dup2(null, 2)
        yield
    finally:
        if keep is not None:
            keep.flush()
        os.dup2(saved, 2)
        if keep is not None:
            sys.stderr = python_err
            keep.close()
        os.close(saved)
        os.close(null)
