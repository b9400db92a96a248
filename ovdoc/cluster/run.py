"""`ovdoc run --config line.yaml --ray ADDRESS`: the command's cluster branch (checks, run, summary)."""

from __future__ import annotations

import json

import click

from ovdoc.errors import OvdocError


def run_on_cluster(address: str, config: str | None, line, outputs, *, cpus: float, as_json: bool, show: bool,
                   save_video: str | None, episodes_dir: str | None, **options) -> int:
    """Refuse what needs frames on the driver (one line), run the line on the cluster, print the summary."""
    from ovdoc.cluster.line import run_line

    if config is None:
        raise OvdocError("--ray spreads a line's cameras over a cluster: give them in --config line.yaml")
    if show or save_video or episodes_dir:
        raise OvdocError("with --ray no frames come back to this machine: use --headless and drop "
                         "--save-video and --episodes-dir (events, MQTT, webhook and --serve work)")
    summary = run_line(address, line, options, outputs, cpus=cpus)
    if as_json:
        click.echo(json.dumps(summary, indent=2))
    else:
        for cam in summary["cameras"]:
            click.echo(f"{cam['name']}: {cam['frames']} frames, {cam['anomalies']} anomalous, "
                       f"{cam['episodes']} "
                       f"episodes on {cam['host']} (node {str(cam['node_id'])[:8]})"
                       + (f", moved {cam['moves']}x" if cam["moves"] else ""))
        click.echo(f"{summary['frames']} frames from {len(summary['cameras'])} cameras in "
                   f"{summary['actors']} actors on {len(summary['nodes'])} nodes, {summary['episodes']} "
                   f"episodes, start-up "
                   f"{summary['startup_s']:.1f} s, {summary['wall_s']:.1f} s")
    return 0
