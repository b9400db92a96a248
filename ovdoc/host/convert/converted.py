"""What every conversion route hands to the common finishing and verification steps."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import numpy as np
import openvino as ov

from ovdoc.errors import OvdocError, first_line

# NHWC float32 batch (already preprocessed) -> [N, ...] features, computed by the source framework
Reference = Callable[[np.ndarray], np.ndarray]


@dataclasses.dataclass
class Converted:
    """An OpenVINO model straight from its source, plus the source framework as verification reference."""

    model: ov.Model
    reference: Reference
    reference_name: str  # e.g. "Keras", "tf.lite.Interpreter": named in reports and failure messages
    layout: str = "NHWC"  # the source's input layout; NCHW sources get a layout conversion in-graph
    frozen_pb: Path | None = None
    notes: list[str] = dataclasses.field(default_factory=list)
    checks: dict = dataclasses.field(default_factory=dict)  # extra verification figures for the report
    scratch: list[Path] = dataclasses.field(default_factory=list)  # temporary files to drop at the end


def ov_convert(what: Path | object, label: str, **kwargs) -> ov.Model:
    """openvino.convert_model with its multi-line failures turned into one line."""
    try:
        return ov.convert_model(str(what) if isinstance(what, Path) else what, **kwargs)
    except Exception as exc:
        raise OvdocError(f"OpenVINO cannot convert {label}: {first_line(exc)}") from exc


def per_sample(run_one: Callable[[np.ndarray], np.ndarray]) -> Reference:
    """Run a reference one image at a time: many exported graphs have a fixed batch of 1."""

    def run(batch: np.ndarray) -> np.ndarray:
        outs = [np.asarray(run_one(batch[i : i + 1]), np.float32).reshape(1, -1) for i in range(len(batch))]
        return np.concatenate(outs)

    return run
