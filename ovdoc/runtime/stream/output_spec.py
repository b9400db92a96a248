"""What an output declares about itself, so `ovdoc run`, the line config and the pipeline need no edit
when one is added (the registry, output_registry.py, lists them).

An output module defines one `Output`: its command-line options (plain data here, turned into click
options by the command, so the runtime never needs click), a `check` that refuses bad values with one
line before any model loads, and a `build` factory returning an `OutputRun` for one run: a sink per
camera, and optionally something that lives for the whole run (a server) with `start`/`stop`.

This module is a leaf (standard library only): output modules import it, never the registry.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

Values = Mapping[str, Any]  # option dest -> value, defaults filled in (see output_registry.resolve)


@dataclass(frozen=True)
class OutputOption:
    """One command-line option of an output (`--mqtt-interval`), also a key of a line config's `outputs:`."""

    flag: str  # "--mqtt-interval"; in a line config: "mqtt-interval" (or mqtt_interval)
    help: str
    kind: str = "str"  # "str", "float", "file" or "dir" (paths: a line config reads them relative to itself)
    default: Any = None
    low: float | None = None  # inclusive bounds of a float
    high: float | None = None
    metavar: str | None = None
    envvar: str | None = None

    @property
    def dest(self) -> str:
        return self.flag.lstrip("-").replace("-", "_")

    @property
    def key(self) -> str:
        """The name in a line config's `outputs:` mapping."""
        return self.flag.lstrip("-")


@dataclass
class RunContext:
    """What an output may know of the run it is built for. The callables reach the live loop, which is
    built after the outputs: call them only once the run has started."""

    names: list[str]  # source names, by camera id
    options: Any  # the loop's RunOptions (snapshot folder, ...)
    threshold: Callable[[int], float] = lambda camera: 0.0  # camera id -> its starting threshold
    post: Callable[[Any], None] = lambda command: None  # a messages.Command for the loop
    counters: Callable[[int], dict] = lambda camera: {}  # camera id -> {"dropped": ..., ...}
    scoring: Callable[[], bool] = lambda: True
    active: list[str] = field(default_factory=list)  # names of every output on in this run

    @property
    def several(self) -> bool:
        return len(self.names) > 1


@dataclass
class LaneContext:
    """Per camera, shared by that camera's sinks: the window and the saved video draw each frame once."""

    source_id: int
    renderer: Any = None  # a sinks.Renderer, made by the pipeline


class OutputRun:
    """One output during one run. `sink` gives the camera's sink (None: this camera has none)."""

    def sink(self, lane: LaneContext):
        return None

    def start(self) -> None:
        """Before the first frame (a server binds here)."""

    def stop(self) -> None:
        """After the last frame, also when the run failed."""

    def summary(self) -> dict | None:
        """What the run's summary says under outputs.<name> beyond the sinks' own counters."""
        return None


@dataclass(frozen=True)
class Output:
    """An output: where results go, declared once."""

    name: str
    options: tuple[OutputOption, ...]
    enabled: Callable[[Values], bool]
    build: Callable[[Values, RunContext], OutputRun]
    check: Callable[[Values], None] = lambda values: None
    help: str = ""


class SinksRun(OutputRun):
    """An output that is nothing but one sink per camera, made by `make(lane)`."""

    def __init__(self, make: Callable[[LaneContext], Any]) -> None:
        self.make = make

    def sink(self, lane: LaneContext):
        return self.make(lane)
