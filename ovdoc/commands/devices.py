"""`ovdoc devices`: what OpenVINO can run on here."""

from __future__ import annotations

import json

import click
import openvino as ov


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print the device list as JSON.")
def devices(as_json: bool) -> None:
    """List the OpenVINO devices present: name, full name, capabilities, optimal precisions.

    GPU and NPU appear only when their system drivers are installed (see the README's board section);
    pass any listed name to `--device` of `fit`, `run` or `bench`.
    """
    from ovdoc.runtime.devices import describe_devices

    rows = describe_devices()
    if as_json:
        click.echo(json.dumps({"openvino": ov.__version__, "devices": rows}, indent=2))
        return
    click.echo(f"OpenVINO {ov.__version__}")
    for row in rows:
        caps = ", ".join(row.get("capabilities", []))
        click.echo(f"{row['name']:<8} {row.get('full_name', '?')}")
        click.echo(f"{'':<8} capabilities: {caps or '?'}; default inference precision: "
                   f"{row.get('default_inference_precision', '?')}")
