"""`ovdoc train --method doc|arcface`: picks the training method. It sits above both methods so neither
imports the other (arcface.py builds on doc.py's data preparation and head fitting)."""

from __future__ import annotations

from ovdoc.errors import OvdocError
from ovdoc.host.train.doc import METHODS, TrainConfig, TrainResult, train_doc
from ovdoc.runtime.datasets import Images


def train_model(
    target: Images, reference: Images, config: TrainConfig, *, progress: bool = True
) -> TrainResult:
    """`ovdoc train --method doc|arcface`."""
    if config.method == "arcface":
        from ovdoc.host.train.arcface import train_arcface

        return train_arcface(target, reference, config, progress=progress)
    if config.method != "doc":
        raise OvdocError(f"unknown training method {config.method!r}: use {', '.join(METHODS)}")
    return train_doc(target, reference, config, progress=progress)
