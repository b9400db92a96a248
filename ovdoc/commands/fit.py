"""`ovdoc fit`: IR + normal images -> detector bundle (index + calibrated threshold)."""

from __future__ import annotations

import json
import time

import click


@click.command()
@click.argument("model", type=click.Path())
@click.option(
    "--normal",
    "normal",
    multiple=True,
    required=True,
    metavar="PATH",
    help="Normal images: a folder (recursive), a glob ('good/*.png') or a video file. Repeatable.",
)
@click.option("--out", "out", required=True, type=click.Path(), help="Bundle folder to write (atomically).")
@click.option("--device", default="CPU", show_default=True, help="OpenVINO device for feature extraction.")
@click.option(
    "--index",
    "index",
    type=click.Choice(["auto", "flat", "hnsw"]),
    default="auto",
    show_default=True,
    help="FAISS index: exact (flat) or HNSW; auto = flat up to 1,000 images, HNSW above.",
)
@click.option(
    "--k",
    "k",
    type=click.IntRange(1, 1000),
    default=5,
    show_default=True,
    help="Neighbours averaged into the score (kNN) or LOF's n_neighbors.",
)
@click.option(
    "--fpr",
    type=click.FloatRange(0, 1, min_open=True, max_open=True),
    default=0.01,
    show_default=True,
    help="False-positive rate the threshold is calibrated for (leave-one-out on the normal images).",
)
@click.option(
    "--scorer",
    type=click.Choice(["knn", "lof"]),
    default="knn",
    show_default=True,
    help="knn: FAISS distance (fast). lof: the original app's LocalOutlierFactor (baseline).",
)
@click.option(
    "--metric",
    type=click.Choice(["euclidean", "cosine"]),
    default="euclidean",
    show_default=True,
    help="kNN distance: euclidean on raw features, or cosine (features L2-normalised first; use it for "
    "models trained with `ovdoc train`, which default to it).",
)
@click.option(
    "--batch", type=click.IntRange(1, 256), default=8, show_default=True, help="Images per inference."
)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON on stdout.")
def fit(
    model: str,
    normal: tuple[str, ...],
    out: str,
    device: str,
    index: str,
    k: int,
    fpr: float,
    scorer: str,
    metric: str,
    batch: int,
    as_json: bool,
) -> None:
    """Build a detector bundle from MODEL (an IR .xml or an `ovdoc convert` folder) and normal images.

    \b
    The bundle folder holds the IR, the FAISS index of the normal images' features and manifest.json
    (threshold, preprocessing, hashes); copy it to the board and run it with `ovdoc run BUNDLE`.
    The threshold is set so that about --fpr of normal images would be flagged, measured
    leave-one-out: each normal image scored against all the others.
    \b
    Example:
      ovdoc fit ir/FP32 --normal data/good --out good.bundle --fpr 0.01
    """
    from ovdoc.runtime.bundle import fit_bundle

    t0 = time.perf_counter()
    manifest = fit_bundle(
        model,
        list(normal),
        out,
        device=device,
        index=index,
        k=k,
        fpr=fpr,
        scorer=scorer,
        metric=metric,
        batch=batch,
        progress=True,
    )
    wall = time.perf_counter() - t0
    s, t, b = manifest["scorer"], manifest["threshold"], manifest["built_with"]
    result = {
        "bundle": out,
        "n_images": manifest["n_images"],
        "feature_dim": manifest["feature_dim"],
        "scorer": s["kind"],
        "index": s.get("index"),
        "k": s["k"],
        "metric": s.get("metric"),
        "threshold": t["value"],
        "calibration": {
            key: t[key] for key in ("method", "fpr", "n", "score_median", "score_max") if key in t
        },
        "device": b["device"],
        "inference_precision": b["inference_precision"],
        "weight_precision": manifest["model"]["weight_precision"],
        "wall_s": round(wall, 2),
    }
    if as_json:
        click.echo(json.dumps(result, indent=2))
        return
    where = f" ({s['index']} index, {s['metric']})" if s["kind"] == "knn" else ""
    click.echo(f"bundle {out}: {result['n_images']} normal images, {s['kind']}{where}, k={s['k']}")
    click.echo(
        f"threshold {t['value']:.4g} at FPR {t['fpr']} ({t['method']}; median normal score "
        f"{t['score_median']:.4g}); built on {b['device']} {b['inference_precision']} in {wall:.1f} s"
    )
