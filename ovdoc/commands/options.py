"""Click options that several verbs (and the benchmark scripts) share, defined once."""

from __future__ import annotations

import click

METRICS = ("euclidean", "cosine")  # ovdoc.runtime.scoring.METRICS, without importing numpy for --help


def metric_option(default: str, help: str):
    """`--metric euclidean|cosine`: the kNN distance of a bundle (cosine = L2-normalised features)."""
    return click.option(
        "--metric", type=click.Choice(list(METRICS)), default=default, show_default=True, help=help
    )
