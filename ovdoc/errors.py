"""User-facing errors.

Every bad input (missing model, unknown device, unreadable video, ...) is raised as `OvdocError` with
one line that says what is wrong and what to do; the CLI prints it and exits non-zero, never a traceback.
"""

from __future__ import annotations


class OvdocError(Exception):
    """An error the user can act on; `str(err)` is the one line the CLI prints."""

    exit_code = 2


def first_line(exc: BaseException, limit: int = 300) -> str:
    """The first telling line of an exception's message, for one-line errors.

    OpenVINO's messages run to many lines and open with "Check ..." / "FrontEnd API failed" boilerplate;
    the line after it is the one that says what went wrong.
    """
    text = str(exc).strip()
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith(("Check ", "FrontEnd API failed")):
            return line[:limit]
    return (text.splitlines()[0] if text else type(exc).__name__)[:limit]


class VerificationError(OvdocError):
    """A converted or quantized model does not compute what its source computes."""

    exit_code = 3
