"""`ovdoc bench`: speed and accuracy of a bundle across devices, precisions, batches, hints and scorers."""

from __future__ import annotations

import json
from pathlib import Path

import click

from ovdoc.errors import OvdocError


def _list(text: str, what: str) -> list[str]:
    items = [t.strip() for t in text.split(",") if t.strip()]
    if not items:
        raise OvdocError(f"--{what} needs at least one value")
    return items


def _ints(text: str, what: str) -> list[int]:
    try:
        return [int(t) for t in _list(text, what)]
    except ValueError as exc:
        raise OvdocError(f"--{what} takes comma-separated integers such as 1,8,32, got {text!r}") from exc


def default_source() -> Path | None:
    """The demo stream shipped in the package (what `ovdoc run` plays with no arguments)."""
    from ovdoc.irmodels import demo_stream

    path = demo_stream()
    return path if path.is_file() else None


@click.command()
@click.argument("bundle", type=click.Path())
@click.option(
    "--devices",
    default="CPU",
    show_default=True,
    help="Comma-separated OpenVINO devices (CPU, GPU, NPU, AUTO). Absent ones are listed as skipped.",
)
@click.option(
    "--precisions",
    default="FP32,FP16,INT8",
    show_default=True,
    help="FP32 = the bundle's IR; FP16 = its weights compressed; INT8 = verified NNCF quantization "
    "(needs --calib). Each precision is re-indexed by the model that scores.",
)
@click.option("--batch", "batches", default="1,8", show_default=True, help="Comma-separated batch sizes.")
@click.option(
    "--hints", default="latency,throughput", show_default=True, help="OpenVINO performance hints to compare."
)
@click.option(
    "--scorers",
    default="knn:flat,knn:hnsw,lof",
    show_default=True,
    help="Scorers in `ovdoc fit`'s terms: knn:flat = exact FAISS kNN, knn:hnsw = FAISS HNSW kNN, knn = "
    "auto (flat up to 1,000 vectors), lof = the original app's sklearn LOF, mean-cosine = 1 - cosine to "
    "the mean normal vector; flat/hnsw are aliases. kNN rows use the bundle's metric and k.",
)
@click.option(
    "--source",
    type=click.Path(),
    default=None,
    help="Video (or image folder) every configuration runs on; default: the demo stream.",
)
@click.option("--res", default="640x480", show_default=True, metavar="WxH|native",
              help="Frame size (width x height) frames are resized to first; native keeps them as read.")
@click.option(
    "--frames",
    type=click.IntRange(1),
    default=300,
    show_default=True,
    help="Frames per pipeline run (the same first N frames for every configuration).",
)
@click.option(
    "--repeats",
    type=click.IntRange(1),
    default=3,
    show_default=True,
    help="Pipeline runs per configuration; the median FPS is reported (shared machines are noisy).",
)
@click.option(
    "--calib",
    multiple=True,
    metavar="PATH",
    help="Normal images: re-index FP16/INT8 and calibrate INT8 (default: the bundle's recorded "
    "normal sources when they exist here). Repeatable.",
)
@click.option(
    "--eval-normal", multiple=True, metavar="PATH", help="Labelled normal images for AUC. Repeatable."
)
@click.option(
    "--eval-anomalous", multiple=True, metavar="PATH",
    help="Labelled anomalies for AUC. Repeatable. With INT8, half of the --eval-* images accept (or "
    "refuse) the INT8 model and every reported AUC is on the other half.",
)
@click.option(
    "--max-auc-drop",
    type=float,
    default=0.005,
    show_default=True,
    help="INT8 is refused (skipped with the measured drop) if its AUC drops more than this.",
)
@click.option(
    "--baselines",
    is_flag=True,
    help="Also time the original app's loop (Keras + LOF, needs TensorFlow) and the 2019 OpenVINO "
    "port's loop (sync per frame + LOF), and print ovdoc's speed-up over each.",
)
@click.option(
    "--keras-model",
    type=click.Path(),
    default=None,
    help="Keras model for the original-app baseline when the bundle records none.",
)
@click.option("--keras-weights", type=click.Path(), default=None, help="weights.h5 for a legacy model.json.")
@click.option(
    "--out",
    "out_dir",
    type=click.Path(),
    default=None,
    help="Folder for bench.json, bench.md and PNG charts (FPS; accuracy vs speed).",
)
@click.option(
    "--density",
    default=None,
    metavar="COUNTS",
    help="Instead of the configuration sweep: stream density. Runs 1..N copies of --source as 640x480 "
    "30 FPS cameras (replayed at that rate, one shared model) for each count, e.g. 1,2,4,8,12,16, and "
    "reports the most it scores keeping up, with p99 latency under 100 ms.",
)
@click.option(
    "--density-seconds",
    type=click.FloatRange(2, 600),
    default=10.0,
    show_default=True,
    help="Measured seconds per camera count.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the full result as JSON on stdout.")
def bench(
    bundle,
    devices,
    precisions,
    batches,
    hints,
    scorers,
    source,
    res,
    frames,
    repeats,
    calib,
    eval_normal,
    eval_anomalous,
    max_auc_drop,
    baselines,
    keras_model,
    keras_weights,
    out_dir,
    density,
    density_seconds,
    as_json,
) -> int:
    """Measure a detector bundle on this machine: model images/s, latency p50/p99, scorer µs per query,
    end-to-end pipeline FPS (decode + resize + infer + score + smoothing, `ovdoc run`'s own loop), memory,
    start-up time with and without OpenVINO's model cache, and AUC per precision with --eval-*.

    \b
    Every combination runs on the same frames of --source; the decode-only ceiling shows how close
    the pipeline gets to what the video decoder alone allows.
      ovdoc bench my.bundle --source clip.avi
      ovdoc bench my.bundle --calib good/ --eval-normal test/good --eval-anomalous test/bad --out results/
      ovdoc bench my.bundle --devices CPU,GPU,NPU --batch 1,8,32 --baselines --json
    """
    from ovdoc.runtime.bench.report import terminal_table, write_outputs
    from ovdoc.runtime.bench.suite import BenchConfig, run_bench
    from ovdoc.runtime.stream.sources import parse_res

    src = Path(source) if source else default_source()
    if src is None:
        raise OvdocError(
            "give --source (a video or image folder): the built-in demo stream "
            "is not in this install"
        )
    if not src.exists():
        raise OvdocError(f"source not found: {src}")
    if density:
        return _density(bundle, src, _ints(density, "density"), density_seconds, out_dir, as_json)
    cfg = BenchConfig(
        bundle=Path(bundle),
        source=src,
        devices=_list(devices, "devices"),
        precisions=[p.upper() for p in _list(precisions, "precisions")],
        batches=_ints(batches, "batch"),
        hints=[h.lower() for h in _list(hints, "hints")],
        scorers=_list(scorers, "scorers"),
        res=parse_res(res) if res.lower() != "native" else None,
        frames=frames,
        repeats=repeats,
        calib=list(calib) or None,
        eval_normal=list(eval_normal) or None,
        eval_anomalous=list(eval_anomalous) or None,
        max_auc_drop=max_auc_drop,
        baselines=baselines,
        keras_model=keras_model,
        keras_weights=keras_weights,
        progress=True,
    )
    result = run_bench(cfg)
    if out_dir:
        written = write_outputs(result, out_dir)
        result["written"] = [str(p) for p in written]
    table = terminal_table(result)
    if as_json:
        click.echo(table, err=True)
        click.echo(json.dumps(result, indent=2, sort_keys=True, default=str))
    else:
        click.echo(table)
        if out_dir:
            click.echo("wrote " + ", ".join(result["written"]))
    return 0


def _density(bundle, source: Path, counts: list[int], seconds: float, out_dir, as_json: bool) -> int:
    """`ovdoc bench --density`: the stream-density measurement alone (see ovdoc.runtime.bench.density)."""
    import tempfile

    from ovdoc.atomic import write_text_atomic
    from ovdoc.runtime.bench.density import stream_density
    from ovdoc.runtime.bench.machine import describe_machine
    from ovdoc.runtime.stream.runtime import load_detector_for_run

    if min(counts) < 1:
        raise OvdocError("--density counts must be at least 1")
    detector = load_detector_for_run(bundle, "CPU")
    with tempfile.TemporaryDirectory(prefix="ovdoc-density-") as tmp:
        result = stream_density(detector, source, counts, seconds=seconds, workdir=Path(tmp))
    result |= {"bundle": str(bundle), "mode": detector.mode_, "machine": describe_machine()}
    lines = [
        f"stream density ({result['mode']} mode): {result['density']} cameras ({result['clip']})",
        "| cameras | passed | min FPS | total FPS | p99 latency ms | p50 ms | late | load | VM steal % |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {r['cameras']} | {'yes' if r['passed'] else 'no'} | {r['min_fps']} | {r['total_fps']} | "
        f"{r['max_latency_ms_p99']} | {r['median_latency_ms_p50']} | {r['late_resets']} | "
        f"{r['load_1m_before']} | {r.get('steal_pct')} |"
        for r in result["rows"]
    ]
    table = "\n".join(lines)
    if out_dir:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        write_text_atomic(out / "density.json", json.dumps(result, indent=2, default=str) + "\n")
        write_text_atomic(out / "density.md", "# Stream density\n\n" + table + "\n")
    if as_json:
        click.echo(table, err=True)
        click.echo(json.dumps(result, indent=2, default=str))
    else:
        click.echo(table)
    return 0
