"""`--events FILE`: one JSON line per processed frame (and per source incident), flushed as it happens.

Streamed, not buffered, so another process can `tail -f` it and a crash loses at most the current line.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import TextIO

from ovdoc.errors import OvdocError


class EventWriter:
    def __init__(self, path: str | Path | None) -> None:
        self.path = Path(path) if path else None
        self.lines = 0
        self._fh: TextIO | None = None
        if self.path is not None:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._fh = open(self.path, "w", buffering=1, encoding="utf-8")  # noqa: SIM115 (kept open)
            except OSError as exc:
                raise OvdocError(f"cannot write events to {self.path}: {exc.strerror}") from exc

    def write(self, record: dict) -> None:
        if self._fh is None:
            return
        clean = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in record.items()}
        self._fh.write(json.dumps(clean, separators=(",", ":")) + "\n")
        self._fh.flush()
        self.lines += 1

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None
