"""`ovdoc run`: score a camera, video, folder or network stream live with a bundle (default: the demo)."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import click

from ovdoc.commands.options import given_outputs, output_options
from ovdoc.errors import OvdocError


def demo_paths() -> tuple[Path, Path]:
    """The embedded demo: (bundle, stream), shipped as package data (works from a wheel)."""
    from ovdoc.irmodels import demo_bundle, demo_stream

    return demo_bundle(), demo_stream()


DEFAULT_SMOOTH = 10  # the original app averaged the last 10 scores


def reload_on_sighup(pipeline) -> None:
    """`kill -HUP <pid>`: load the bundle again and swap it in between batches (see stream/reload.py)."""
    import signal

    from ovdoc.runtime.stream.messages import Command, Control

    if hasattr(signal, "SIGHUP"):
        def on_hup(signum, frame) -> None:
            pipeline.post(Command(Control.RELOAD, by="SIGHUP"))

        signal.signal(signal.SIGHUP, on_hup)


def interrupt_on_sigterm() -> None:
    """SIGTERM (systemd, `docker stop`, `kill`) ends the run exactly like Ctrl-C: the summary, open episodes
    closed with `open_at_end`, MQTT `offline`, complete files - not exit 143 with nothing written."""
    import signal

    signal.signal(signal.SIGTERM, signal.default_int_handler)


def demo_smoothing() -> int:
    """Frames the demo clip holds each product for (its demo.json): smoothing over more would average a
    sneaker and the boot after it into one verdict."""
    import json

    from ovdoc.irmodels import demo_dir

    try:
        return int(json.loads((demo_dir() / "demo.json").read_text(encoding="utf-8"))["stream"]["hold"])
    except (OSError, ValueError, KeyError, TypeError):
        return DEFAULT_SMOOTH


def resolve_defaults(bundle: str | None, source: str | None) -> tuple[str, str]:
    """No BUNDLE: the demo bundle (and the demo stream unless --source); a BUNDLE alone: camera 0."""
    bundle, sources = resolve_sources(bundle, [source] if source is not None else [])
    return bundle, sources[0]


def resolve_sources(bundle: str | None, sources: list[str]) -> tuple[str, list[str]]:
    """`resolve_defaults` for any number of --source options."""
    if bundle is None:
        demo_bundle, demo_stream = demo_paths()
        missing = (
            [p for p in (demo_bundle, demo_stream) if not p.exists()]
            if not sources
            else [p for p in (demo_bundle,) if not p.exists()]
        )
        if missing:
            raise OvdocError(
                f"the built-in demo is missing ({missing[0]}): reinstall ovdoc (it ships as package data), "
                "or give a bundle: ovdoc run BUNDLE --source 0"
            )
        return str(demo_bundle), sources or [str(demo_stream)]
    return bundle, sources or ["0"]


@click.command()
@click.argument("bundle", required=False, type=click.Path())
@click.option(
    "--source",
    "sources",
    multiple=True,
    metavar="SRC",
    help="Camera index (0), video file, image folder or stream URL (rtsp://...); repeat it to watch "
    "several at once with one shared model. Default: camera 0, or the demo stream when no BUNDLE is given.",
)
@click.option(
    "--config",
    "config",
    type=click.Path(dir_okay=False),
    default=None,
    metavar="LINE.yaml",
    help="A line config (JSON or YAML): every camera with its own source, name, bundle, threshold, "
    "smoothing and --res (see the README). BUNDLE, --res, --threshold and --smooth become defaults.",
)
@click.option("--device", default="CPU", show_default=True, help="OpenVINO device: CPU, GPU, NPU, AUTO, ...")
@click.option(
    "--res",
    default=None,
    metavar="WxH",
    help="Frame size: asked of a camera; files and folders are resized to it, so 640x480 means "
    "the same work everywhere. Default: the camera's/file's own size.",
)
@click.option("--threshold", type=float, default=None, help="Override the bundle's calibrated threshold.")
@click.option(
    "--smooth",
    type=click.IntRange(1, 10000),
    default=None,
    help="Average the score over the last N frames before comparing with the threshold. Default: 10; "
    "the demo uses the 3 frames its clip holds each product, so one product is judged at a time.",
)
@click.option("--headless", is_flag=True, help="No window (automatic when there is no display).")
@click.option("--max-frames", type=click.IntRange(1), default=None, help="Stop after N processed frames.")
@click.option(
    "--loop",
    "loop_source",
    is_flag=True,
    help="Files and folders: start again at the end (frame numbers and timestamps run on); the run "
    "ends by --max-frames, --duration or Ctrl-C.",
)
@click.option(
    "--realtime",
    is_flag=True,
    help="Video files: replay at the file's own frame rate, as a camera would deliver it.",
)
@click.option(
    "--duration",
    type=click.FloatRange(0.1, 366 * 86400),
    default=None,
    metavar="SECONDS",
    help="Stop after SECONDS of wall time; the capture stops and the frames already prepared are still "
    "scored, so the events file and the video end complete.",
)
@click.option(
    "--batch",
    type=click.IntRange(1, 64),
    default=8,
    show_default=True,
    help="Frames per inference request (live sources send partial batches rather than wait).",
)
@click.option(
    "--retries",
    type=click.IntRange(0, 100),
    default=5,
    show_default=True,
    help="Reconnect attempts (exponential backoff) when a live source stops delivering.",
)
@click.option(
    "--stall-timeout",
    type=click.FloatRange(0.1, 3600),
    default=5.0,
    show_default=True,
    metavar="SECONDS",
    help="A network stream that stays connected but sends nothing for this long counts as lost (and is "
    "reconnected like a dropped one); without it OpenCV waits about 30 s.",
)
@click.option(
    "--episodes-dir",
    type=click.Path(file_okay=False),
    default=None,
    help="Save each anomaly episode's worst frame here as JPEG (with its heatmap in patch mode); the "
    "anomaly_end event names the file.",
)
@output_options()
@click.option(
    "--ray",
    "ray_address",
    default=None,
    metavar="ADDRESS|auto",
    help="With --config: run each camera as an actor on the Ray cluster at ADDRESS (HOST:PORT of its head, "
    "or auto), placed by CPUs and the cameras' `node:` labels; outputs stay here. Needs `pip install "
    "'ovdoc[cluster]'` on every node.",
)
@click.option("--ray-cpus", type=click.FloatRange(0.01, 64), default=1.0, show_default=True,
              help="With --ray: CPUs each camera takes; cameras of one bundle and one node label share an "
              "actor of their sum (its OpenVINO, OpenCV and FAISS threads).")
@click.option("--verbose", is_flag=True, help="Let OpenCV's and FFmpeg's own log lines through to stderr.")
@click.option("--json", "as_json", is_flag=True, help="Print the end summary as JSON on stdout.")
def run(
    bundle: str | None,
    sources: tuple[str, ...],
    config: str | None,
    device: str,
    res: str | None,
    threshold: float | None,
    smooth: int,
    headless: bool,
    max_frames: int | None,
    loop_source: bool,
    realtime: bool,
    duration: float | None,
    batch: int,
    retries: int,
    stall_timeout: float,
    episodes_dir: str | None,
    ray_address: str | None,
    ray_cpus: float,
    verbose: bool,
    as_json: bool,
    **outputs,
) -> int:
    """Score a live source with BUNDLE (made by `ovdoc fit`); with no arguments, run the built-in demo.

    \b
    Window keys: q quit, p save the frame as PNG (and its heatmap, patch bundles), s start/stop scoring.
    The score is green below the threshold and red above it; a patch bundle also overlays its anomaly
    map (red = at the map threshold) and boxes the hottest region, and --events adds box and peak.
    Compiled models are cached in ~/.cache/ovdoc/ov-cache (OVDOC_CACHE_DIR overrides), so the second
    start on a board is fast.
    \b
    Examples:
      ovdoc run                                        # the demo: no camera, no network
      ovdoc run good.bundle --source 0 --res 640x480   # a USB camera
      ovdoc run good.bundle --source line.mp4 --headless --events events.jsonl --json
      ovdoc run good.bundle --source line.mp4 --loop --realtime --duration 600   # a clip as a camera
      ovdoc run good.bundle --source 0 --source rtsp://cam2/stream --headless \\
          --mqtt mqtt://broker:1883/line1 --webhook http://dashboard/hook --episodes-dir episodes/
    """
    from ovdoc.log import native_logs

    native_logs(verbose)
    from ovdoc.runtime.stream import output_registry
    from ovdoc.runtime.stream.display import display_available
    from ovdoc.runtime.stream.pipeline import CameraSettings, Pipeline, RunOptions
    from ovdoc.runtime.stream.runtime import load_detector_for_run
    from ovdoc.runtime.stream.sources import open_source, parse_res

    if threshold is not None and not math.isfinite(threshold):
        raise OvdocError(f"--threshold must be a finite number, got {threshold}")
    size = parse_res(res)
    if config is not None:
        if sources:
            raise OvdocError("give the cameras in --config or with --source, not both")
        from ovdoc.runtime.stream.line_config import load_line_config

        line = load_line_config(config, bundle=bundle, res=size, threshold=threshold, smooth=smooth)
        line.check_bundles(config)
        cameras = line.cameras
    else:
        if smooth is None:
            smooth = demo_smoothing() if bundle is None else DEFAULT_SMOOTH
        bundle, source_texts = resolve_sources(bundle, list(sources))
        from ovdoc.runtime.stream.line_config import CameraSpec, LineConfig

        line = LineConfig([CameraSpec(source=text, bundle=bundle, res=size) for text in source_texts])
        cameras = []  # one bundle, the run's own settings: nothing per camera
    smooth = smooth if smooth is not None else DEFAULT_SMOOTH
    show = not headless and display_available()
    values = output_registry.resolve(line.outputs, given_outputs(outputs))  # the command line wins
    output_registry.check(values)
    if ray_address:  # the cameras run on a Ray cluster; this process keeps the outputs
        from ovdoc.cluster.run import run_on_cluster

        return run_on_cluster(ray_address, config, line, values, cpus=ray_cpus, as_json=as_json, show=show,
                              save_video=values.get("save_video"), episodes_dir=episodes_dir, smooth=smooth,
                              threshold=threshold, max_frames=max_frames, loop=loop_source, realtime=realtime,
                              duration_s=duration, events=values.get("events"), device=device,
                              batch=batch)
    detectors = [load_detector_for_run(path, device, batch=batch) for path in line.bundles]
    settings = [
        CameraSettings(line.model_of(camera), camera.threshold, camera.smooth) for camera in cameras
    ] or None
    opened: list = []
    try:
        for camera in line.cameras:
            src = open_source(camera.source, res=camera.res, stall_timeout_s=stall_timeout)
            if camera.name is not None:
                src.name = camera.name
            opened.append(src)
            if (loop_source or realtime) and src.live:
                raise OvdocError(
                    f"--loop and --realtime replay files and folders; {src.name} is live already (drop them)"
                )
            if realtime and not src.fps:
                raise OvdocError(
                    f"--realtime needs a video file with a frame rate; {src.name} has none (an image folder "
                    "or a file that does not say)"
                )
        options = RunOptions(
            smooth=smooth,
            threshold=threshold,
            max_frames=max_frames,
            retries=retries,
            show=show,
            events=values["events"],
            save_video=values["save_video"],
            loop=loop_source,
            realtime=realtime,
            duration_s=duration,
            episodes_dir=Path(episodes_dir) if episodes_dir else None,
            watch_bundle=True,
        )
        if not headless and not show:  # said once everything else checked out, not before an error
            click.echo("no display found: running headless", err=True)
        pipeline = Pipeline(detectors, opened, options, outputs=values, cameras=settings)
        reload_on_sighup(pipeline)
        interrupt_on_sigterm()
        summary = pipeline.run()
    finally:
        for src in opened:
            src.close()
    if as_json:
        click.echo(json.dumps(summary, indent=2))
    else:
        several = isinstance(summary["source"], list)
        click.echo(
            f"{summary['frames']} frames"
            + (f" from {len(summary['source'])} sources" if several else "")
            + f", {summary['anomalies']} anomalous, {summary['episodes']} episodes, "
            f"{summary['wall_s']:.1f} s, {summary['fps']:.1f} FPS "
            f"({summary['device']}, stopped: {summary['stopped']}"
            + (f", {summary['dropped']} dropped" if summary["dropped"] else "")
            + ")",
            err=False,
        )
    mqtt_stats = summary.get("outputs", {}).get("mqtt")
    if mqtt_stats:
        from ovdoc.runtime.stream.mqtt import nothing_delivered, summary_line

        click.echo(summary_line(mqtt_stats), err=True)
    if "error" in summary:
        raise OvdocError(summary["error"])
    if mqtt_stats and (problem := nothing_delivered(mqtt_stats, values.get("mqtt") or "")):
        raise OvdocError(problem)
    sys.stdout.flush()
    return 0
