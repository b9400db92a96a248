"""Progress and warnings for people: plain lines on stderr through `logging`, tqdm bars on terminals.

Every module logs to a child of the `ovdoc` logger (`get_logger(__name__)`); the first call installs one
handler that writes the bare message to stderr (stdout stays clean for `--json`). Scripts and tests can
silence it with `quiet()` or the usual `logging` configuration.
"""

from __future__ import annotations

import contextlib
import logging
import sys
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


def progress_bar(iterable=None, *, total: int | None = None, desc: str = "", unit: str = "img",
                 enabled: bool = True, leave: bool = False):
    """A tqdm bar on stderr when `enabled` and stderr is a terminal; a silent pass-through otherwise."""
    from tqdm import tqdm

    return tqdm(iterable, total=total, desc=desc, unit=unit, file=sys.stderr, leave=leave,
                disable=None if enabled else True)
