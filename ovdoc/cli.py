"""The `ovdoc` command line: a click group whose verbs load lazily.

Lazy loading keeps `ovdoc --help` fast and lets a board without TensorFlow run every runtime verb;
host-side verbs (convert from Keras/TF, train) import TensorFlow only when they run.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys

import click

from ovdoc import __version__
from ovdoc.errors import OvdocError, first_line

# verb -> (module, attribute, one-line help shown in `ovdoc --help` without importing the module)
COMMANDS: dict[str, tuple[str, str, str]] = {
    "run": ("ovdoc.commands.run", "run", "Score a camera, video, folder or stream live (default: the demo)."),
    "fit": ("ovdoc.commands.fit", "fit", "Build a detector bundle from an IR and normal images."),
    "convert": ("ovdoc.commands.convert", "convert", "Convert Keras/TF/ONNX/TFLite to verified OpenVINO IR."),
    "train": ("ovdoc.commands.train", "train", "Train a DOC model (host side, needs ovdoc[train])."),
    "export": ("ovdoc.commands.export", "export", "A bundle's model for phones: TFLite, ONNX, CoreML."),
    "serve": ("ovdoc.commands.serve", "serve", "Score pictures over HTTP (one box, or Ray Serve replicas)."),
    "eval": ("ovdoc.commands.evaluate", "evaluate", "AUC, ROC and image grids of a bundle on labelled data."),
    "bench": ("ovdoc.commands.bench", "bench", "Speed and accuracy across devices, precisions, scorers."),
    "devices": ("ovdoc.commands.devices", "devices", "List the OpenVINO devices present on this machine."),
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return [name for name, (module, _, _) in COMMANDS.items() if _module_exists(module)]

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in COMMANDS:
            return None
        module_name, attr, _ = COMMANDS[cmd_name]
        if not _module_exists(module_name):
            return None
        return getattr(importlib.import_module(module_name), attr)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, COMMANDS[name][2]) for name in self.list_commands(ctx)]
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


def _module_exists(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="ovdoc")
def cli() -> None:
    """One-class visual anomaly detection at camera speed, through OpenVINO.

    \b
    Show ovdoc only normal pictures; it flags anything else, live.
      ovdoc run                          # the built-in demo: no camera, no network
      ovdoc convert model.onnx --out ir  # any trained model -> verified IR
      ovdoc fit ir --normal good/ --out my.bundle
      ovdoc run my.bundle --source 0 --device GPU --res 640x480
    """


def main(argv: list[str] | None = None) -> None:
    """Entry point: user errors become one line and a non-zero exit, never a traceback."""
    debug = bool(os.environ.get("OVDOC_DEBUG"))
    from ovdoc.log import native_logs, tolerant_streams

    tolerant_streams()

    args = sys.argv[1:] if argv is None else argv
    native_logs(verbose=debug or "--verbose" in args)  # before any verb imports OpenCV
    try:
        rv = cli.main(args=argv, prog_name="ovdoc", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("Aborted.", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except OvdocError as exc:
        if debug:
            raise
        click.echo(f"Error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        click.echo("Interrupted.", err=True)
        sys.exit(130)
    except Exception as exc:  # last line of defence: still one line, with a way to see more
        if debug:
            raise
        click.echo(
            f"Error: {type(exc).__name__}: {first_line(exc)} (OVDOC_DEBUG=1 shows the traceback)", err=True
        )
        sys.exit(1)
    sys.exit(rv if isinstance(rv, int) else 0)
