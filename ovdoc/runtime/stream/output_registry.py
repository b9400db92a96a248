"""Every output of `ovdoc run`, in one list: the command's options, the line config's `outputs:` keys,
the checks made before any model loads and the sinks each camera gets are all read from here.

Adding an output: write its module (a Sink, and an `Output` from output_spec.py at the bottom) and
add it to OUTPUTS. The order is the order of each camera's sinks (the window and the video share one
rendering; the events line of a frame is written before any network message about it).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from ovdoc.errors import OvdocError
from ovdoc.runtime.stream import mqtt, opcua, sinks, web, webhook
from ovdoc.runtime.stream.output_spec import LaneContext, Output, OutputOption, OutputRun, RunContext

OUTPUTS: tuple[Output, ...] = (
    sinks.EVENTS,
    sinks.WINDOW,
    sinks.VIDEO,
    mqtt.OUTPUT,
    webhook.OUTPUT,
    web.OUTPUT,
    opcua.OUTPUT,
)

__all__ = ["OUTPUTS", "LaneContext", "RunContext", "active", "build", "check", "from_config", "options",
           "resolve"]


def options() -> list[OutputOption]:
    """Every output's options, in registry order (`ovdoc run` adds them as click options)."""
    return [option for output in OUTPUTS for option in output.options]


def resolve(*layers: Mapping[str, Any] | None) -> dict[str, Any]:
    """Option values with every default filled in, then each layer's in turn (a line config's, then the
    command line's); a None in a layer means "not given there"."""
    values = {option.dest: option.default for option in options()}
    for layer in layers:
        values.update({key: value for key, value in (layer or {}).items() if value is not None})
    return values


def active(values: Mapping[str, Any]) -> list[Output]:
    return [output for output in OUTPUTS if output.enabled(values)]


def check(values: Mapping[str, Any]) -> None:
    """Refuse bad values with one line (OvdocError) before a model loads."""
    for output in active(values):
        output.check(values)


def build(values: Mapping[str, Any], run: RunContext) -> list[tuple[Output, OutputRun]]:
    """The run's outputs, built (nothing started yet)."""
    on = active(values)
    run.active = [output.name for output in on]
    return [(output, output.build(values, run)) for output in on]


def from_config(mapping: object, where: str) -> dict[str, Any]:
    """A line config's `outputs:` mapping ({"mqtt": "mqtt://...", "mqtt-interval": 2}) as option values.
    Keys are the option names without "--" (dashes or underscores); paths are left as written (the
    line config makes them relative to itself)."""
    if not isinstance(mapping, dict):
        raise OvdocError(f"{where}: 'outputs' must be a mapping of option names to values (mqtt: mqtt://...)")
    by_key = {option.key: option for option in options()}
    by_key.update({option.dest: option for option in options()})
    values: dict[str, Any] = {}
    for key, value in mapping.items():
        option = by_key.get(str(key))
        if option is None:
            known = ", ".join(sorted(o.key for o in options()))
            raise OvdocError(f"{where}: unknown output option {str(key)!r} (known: {known})")
        if value is not None:
            values[option.dest] = _coerce(option, value, f"{where}: outputs.{option.key}")
    return values


def _coerce(option: OutputOption, value: object, where: str) -> Any:
    if option.kind == "float":
        number = None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            number = float(value)
        elif isinstance(value, str):
            try:
                number = float(value)
            except ValueError:
                number = None
        if number is None or not math.isfinite(number):
            raise OvdocError(f"{where} must be a number, got {value!r}")
        too_low = option.low is not None and number < option.low
        if too_low or (option.high is not None and number > option.high):
            raise OvdocError(f"{where} must be in [{option.low}, {option.high}], got {number}")
        return number
    if isinstance(value, (dict, list, bool)):
        raise OvdocError(f"{where} must be a text, got {value!r}")
    return str(value)
