"""The OS-level name of the calling thread (Linux), so `top -H`, /proc and profilers tell stages apart.

Python 3.11 names threads only inside Python: every thread of `ovdoc run` reads as "python" to the OS, and
a per-thread profile (benchmarks/speed.py) could not tell the decoder from the preparer. Elsewhere, or if
the call fails, it does nothing: a name is a label, never a reason to fail.
"""

from __future__ import annotations

import sys

_PR_SET_NAME = 15
_libc = None


def set_native_name(name: str) -> None:
    """Name the calling thread for the OS (Linux keeps the first 15 bytes); a no-op elsewhere."""
    global _libc
    if not sys.platform.startswith("linux"):
        return
    try:
        if _libc is None:
            import ctypes

            _libc = ctypes.CDLL(None, use_errno=True)
        _libc.prctl(_PR_SET_NAME, name.encode("utf-8", "replace")[:15], 0, 0, 0)
    except (OSError, AttributeError):
        pass
