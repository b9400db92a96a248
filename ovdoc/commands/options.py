"""Click options that several verbs (and the benchmark scripts) share, defined once."""

from __future__ import annotations

import click

# ovdoc.runtime.scoring.METRICS, without importing numpy for --help
METRICS = ("euclidean", "cosine", "sqrt-cosine")


def metric_option(default: str | None, help: str):
    """`--metric`: the kNN distance of a bundle (ovdoc.runtime.scoring.METRICS); None = the model's."""
    return click.option(
        "--metric", type=click.Choice(list(METRICS)), default=default, show_default=default is not None,
        help=help
    )


def output_options():
    """Every output's options (--events, --mqtt, --serve, --opcua-server, ...) from the output registry,
    so adding an output never edits a verb. `given_outputs` keeps the ones the user gave: a line
    config's `outputs:` fills in the others before the defaults do."""
    from ovdoc.runtime.stream.output_registry import options

    types = {
        "str": None,
        "file": click.Path(dir_okay=False),
        "dir": click.Path(file_okay=False),
    }

    def apply(command):
        for option in reversed(options()):
            kind = click.FloatRange(option.low, option.high) if option.kind == "float" else types[option.kind]
            command = click.option(
                option.flag,
                option.dest,
                type=kind,
                default=option.default,
                metavar=option.metavar,
                envvar=option.envvar,
                show_default=option.default is not None,
                help=option.help,
            )(command)
        return command

    return apply


def given_outputs(values: dict) -> dict:
    """The output options given on the command line (or by their environment variable), not defaulted."""
    from click.core import ParameterSource

    ctx = click.get_current_context()
    return {key: value for key, value in values.items() if ctx.get_parameter_source(key) not in
            (ParameterSource.DEFAULT, None)}
