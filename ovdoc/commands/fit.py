"""`ovdoc fit`: IR + normal images -> detector bundle (index + calibrated threshold)."""

from __future__ import annotations

import json
import time

import click

from ovdoc.commands.options import metric_option
from ovdoc.errors import OvdocError
from ovdoc.irmodels.backbones import SHIPPED


@click.command()
@click.argument("model", type=click.Path(), required=False)  # omitted or `imagenet`: the shipped backbone
@click.option(
    "--normal",
    "normal",
    multiple=True,
    required=True,
    metavar="PATH",
    help="Normal images: a folder (recursive), a glob ('good/*.png'), a video file, a .npz (x) or a data "
    "spec such as fashion-mnist:sneaker. Repeatable.",
)
@click.option(
    "--out", "out", type=click.Path(), default=None,
    help="Bundle folder to write (atomically). Required, except with --append (default: the bundle itself).",
)
@click.option(
    "--append",
    "append",
    type=click.Path(),
    default=None,
    metavar="BUNDLE",
    help="Add the --normal images to this existing (global) bundle: same model, features added to its "
    "index, threshold recalibrated at its FPR. No MODEL with --append.",
)
@click.option("--backbone", type=click.Choice(SHIPPED), default=None,
              help="A shipped ImageNet backbone instead of MODEL (default: mobilenetv2 for both modes; "
              "see the backbones page of the docs).")
@click.option("--device", default="CPU", show_default=True, help="OpenVINO device for feature extraction.")
@click.option("--precision", type=click.Choice(["auto", "f32", "bf16"]), default="auto", show_default=True,
              help="CPU inference precision of the features, recorded in the bundle (which is always scored "
              "in it): auto = bf16 for a shipped backbone on a CPU with AMX (faster, as accurate: see the "
              "fit page), f32 for your own IRs, elsewhere and with --ray.")
@click.option(
    "--index",
    "index",
    type=click.Choice(["auto", "flat", "hnsw", "ivf"]),
    default="auto",
    show_default=True,
    help="FAISS index: exact (flat) or HNSW; auto = flat up to 1,000 images, HNSW above. Patch mode: "
    "flat or ivf (inverted file, --nprobe lists searched); auto = ivf from 8,192 bank patches.",
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
    help="False-positive rate the threshold is calibrated for, on normal images held out of the index "
    "(see --calibration).",
)
@click.option(
    "--scorer",
    type=click.Choice(["knn", "lof", "mean-cosine"]),
    default="knn",
    show_default=True,
    help="knn: FAISS distance (fast). lof: the original app's LocalOutlierFactor (baseline). mean-cosine: "
    "1 - cosine to the mean normal feature vector (one vector, no index: what a phone app scores with).",
)
@metric_option(
    None,
    "kNN distance: euclidean on raw features; cosine (features L2-normalised first; `ovdoc train`'s "
    "models default to it); sqrt-cosine (signed square root of each feature, then cosine). Default: "
    "sqrt-cosine on a shipped backbone (chosen on validation, docs/fit.md), euclidean on any other model.",
)
@click.option(
    "--batch", type=click.IntRange(1, 256), default=8, show_default=True, help="Images per inference."
)
@click.option(
    "--mode",
    type=click.Choice(["global", "patch"]),
    default="global",
    show_default=True,
    help="global: one feature vector per image (kNN). patch: a score per image region and an anomaly map "
    "(PatchCore-style memory bank of normal patches); better for small surface defects.",
)
@click.option("--intensity", type=click.Choice(["none", "mean", "meanstd"]), default=None,
              help="Per-image intensity normalisation before the model's scaling, recorded in the bundle "
              "(run, serve and eval apply it): mean = one gain sets each image's grey-level mean (an "
              "exposure change); meanstd = mean and spread. Default: the model's (none).")
@click.option("--size", default=None, metavar="WxH",
              help="Model input size, e.g. 256x192. Default: the model's (global); patch mode: ~20k pixels "
              "(160x128) at the normal images' median aspect ratio, multiples of 32.")
@click.option("--resize", type=click.Choice(["stretch", "center_crop"]), default=None,
              help="stretch scores the whole frame; center_crop the largest centred crop. Default: "
              "stretch (patch mode, and global mode on a shipped backbone), else the model's.")
@click.option("--coreset", default=None, metavar="N|FRACTION",
              help="patch: memory-bank size in patches (greedy k-center), or a fraction of the candidates "
              "(default 32768).")
@click.option("--layers", default=None, metavar="A,B",
              help="patch: backbone layers to tap, by node name (default: the stride-8 and stride-16 "
              "taps the IR records; MobileNetV2 and IRs without a record: block_6_expand_relu,"
              "block_10_expand_relu).")
@click.option("--dim", type=click.IntRange(1, 4096), default=None,
              help="patch: reduced feature size (default 64).")
@click.option("--reduce", type=click.Choice(["pca", "project", "none"]), default=None,
              help="patch: channel reduction inside the IR: pca (default; fitted on the normal patches), "
              "project (a seeded random matrix) or none.")
@click.option("--nprobe", type=click.IntRange(1, 4096), default=None,
              help="patch, ivf index: inverted lists searched per patch (default 8).")
@click.option("--neighbourhood", type=click.IntRange(1, 15), default=None,
              help="patch: AvgPool kernel around each patch (odd).")
@click.option("--aggregate", type=click.Choice(["max", "topk", "smooth_max"]), default=None,
              help="patch: image score from the map: smooth_max = maximum of the Gaussian-smoothed "
              "map; topk (default, 10) = mean of the --topk hottest patches; max = hottest patch.")
@click.option("--topk", type=click.IntRange(1, 100000), default=None, help="patch: patches averaged by topk.")
@click.option("--seed", type=int, default=None,
              help="patch: projection, coreset start and calibration split (default 0).")
@click.option("--calibration", type=click.Choice(["auto", "loo", "held-out", "cross-fit"]), default="auto",
              show_default=True,
              help="global: auto holds out whole subfolders, or blocks of consecutive video frames (with "
              "their neighbours), so the threshold holds on new normal data; loo = leave-one-out. patch: "
              "auto = cross-fit, except for frames of videos or arrays (held-out); held-out sets the "
              "threshold on the images kept out of the bank only; cross-fit also scores every bank image "
              "against the bank less the patches of its fold of parts (docs/calibration.md).")
@click.option("--ray", "ray_address", metavar="ADDRESS|auto", default=None,
              help="Extract the features on a Ray cluster (HOST:PORT of its head, or auto): Ray Data over "
              "a pool of actors, one per cluster CPU; index, threshold and bundle are built here as "
              "without it. Image files are read by the workers (same paths on every node). Needs `pip "
              "install 'ovdoc[cluster]'`.")
@click.option("--near-duplicates", "near_duplicates", type=click.Choice(["auto", "off"]), default="auto",
              show_default=True,
              help="Image files in one folder: auto groups near-duplicate shots of one part (look-alike "
              "thumbnails) and holds each group out whole, so the threshold holds on new parts.")
@click.option("--groups", "groups", default="subfolder", show_default=True,
              metavar="subfolder|pattern:REGEX|none",
              help="Which image files show the same part (shots of one part, one person): calibration "
              "holds whole groups out of the index (patch mode: out of the bank), so the threshold holds on "
              "new parts. subfolder = each folder; pattern:REGEX = the first capture group (or the whole "
              "match) of REGEX in the file name, e.g. 'pattern:^(part\\d+)_'; none = no groups.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON on stdout.")
def fit(
    model: str | None,
    normal: tuple[str, ...],
    out: str | None,
    append: str | None,
    backbone: str | None,
    device: str,
    precision: str,
    index: str,
    k: int,
    fpr: float,
    scorer: str,
    metric: str,
    batch: int,
    mode: str,
    intensity: str | None,
    size: str | None,
    resize: str | None,
    coreset: str | None,
    layers: str | None,
    dim: int | None,
    reduce: str | None,
    nprobe: int | None,
    neighbourhood: int | None,
    aggregate: str | None,
    topk: int | None,
    seed: int | None,
    calibration: str,
    ray_address: str | None,
    near_duplicates: str,
    groups: str,
    as_json: bool,
) -> None:
    """Build a detector bundle from MODEL (an IR .xml or an `ovdoc convert` folder) and normal images.

    \b
    MODEL omitted (or `imagenet`): the ImageNet MobileNetV2 backbone shipped inside ovdoc (224x224,
    1280-d features) — no TensorFlow and no training needed to start; --backbone efficientnet-lite0
    picks another shipped one (docs/backbones.md).

    \b
    The bundle folder holds the IR, the FAISS index of the normal images' features and manifest.json
    (threshold, preprocessing, hashes); copy it to the board and run it with `ovdoc run BUNDLE`.
    The threshold is set so that about --fpr of new normal images would be flagged: whole subfolders,
    or blocks of consecutive video frames (each against only the frames before it), are held out of the
    index and scored; the fit reports the target FPR and the one measured on the held-out groups, and
    warns when they disagree (too few images to hold out: leave-one-out). Unreadable image
    files are skipped with a warning (more than 10 % unreadable, or none readable, is an error).
    \b
    Examples:
      ovdoc fit ir/FP32 --normal data/good --out good.bundle --fpr 0.01
      ovdoc fit --normal tiles/good --out tiles.bundle --mode patch       # where is the defect?
      ovdoc fit --normal line.mp4 --out line.bundle --mode patch --coreset 4096 --dim 32   # faster
    \b
    Patch mode keeps 20% of the normal images out of the memory bank: half of them set a per-position
    normalisation of the patch scores, the other half the threshold (no image is scored against its
    own patches).
    """
    from ovdoc.irmodels import resolve_model
    from ovdoc.runtime.fitting import FitConfig, append_bundle, fit_bundle, parse_size

    if backbone is not None and (model is not None or append is not None):
        raise OvdocError("--backbone names the model: give no MODEL (and no --append) with it")
    if append is not None:
        if model is not None:
            raise OvdocError("--append keeps the bundle's own model: give no MODEL")
        if groups != "subfolder":
            raise OvdocError("--append holds out the bundle's previous images and each new folder as "
                             "groups: no --groups")
        out = out or append
    elif out is None:
        raise OvdocError("--out is required: the bundle folder to write")

    from ovdoc.runtime.heads import head_class, modes

    values = {"index": index, "k": k, "scorer": scorer, "metric": metric, "coreset": coreset, "seed": seed,
              "layers": layers, "dim": dim, "reduce": reduce, "nprobe": nprobe,
              "neighbourhood": neighbourhood,
              "aggregate": aggregate, "topk": topk}
    for other in (head_class(m) for m in modes() if m != mode):  # options only another mode reads
        names = [f"--{name}" for name in other.cli_options if values.get(name) is not None]
        if names:
            listed = f"{', '.join(names[:-1])} and {names[-1]}" if len(names) > 1 else names[0]
            raise OvdocError(f"{listed} {'need' if len(names) > 1 else 'needs'} --mode {other.mode}")
    config = FitConfig(
        mode=mode, fpr=fpr, batch=batch, device=device, size=parse_size(size) if size else None,
        resize=resize, intensity=intensity,
        calibration=calibration, groups=groups, near_duplicates=near_duplicates,
        **head_class(mode).options_from_cli(values),
    )
    if append is not None and precision != "auto":
        raise OvdocError("--append computes the new features in the bundle's own precision: no --precision")
    from ovdoc.runtime.precision import resolve_precision

    model_path = None if append is not None else resolve_model(model, backbone=backbone, mode=mode)
    # a cluster's nodes may differ: `auto` is f32 there, so one bundle never mixes precisions
    precision = resolve_precision("f32" if ray_address and precision == "auto" else precision, device,
                                  model_xml=model_path)
    if ray_address:
        if append is not None:
            raise OvdocError("--ray builds new bundles; --append extracts the new images here (drop --ray)")
        from ovdoc.cluster.connect import connect
        from ovdoc.cluster.extract import RayExtract

        extract = RayExtract(connect(ray_address), inference_precision=precision)
    else:
        from ovdoc.runtime.extract import LocalExtract
        from ovdoc.runtime.features import default_cache_dir

        extract = LocalExtract(cache_dir=default_cache_dir(), inference_precision=precision)
    t0 = time.perf_counter()
    if append is not None:
        manifest = append_bundle(append, list(normal), out, progress=True)
    else:
        manifest = fit_bundle(model_path, list(normal), out, config, progress=True, extract=extract)
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
            key: t[key] for key in ("method", "fpr", "n", "score_median", "score_max", "target_fpr",
                                    "heldout_fpr", "n_heldout", "loo_fpr_on_heldout", "warning") if key in t
        } | manifest.get("calibration", {}),
        "groups": groups,
        "intensity": manifest["preprocess"].get("intensity", "none"),
        "unreadable_images": manifest.get("normal_input", {}).get("unreadable", 0),
        "device": b["device"],
        "inference_precision": b["inference_precision"],
        "weight_precision": manifest["model"]["weight_precision"],
        "wall_s": round(wall, 2),
    }
    if append is not None:
        result["appended"] = manifest["added"]
        result["previous_threshold"] = manifest["appended"][-1]["previous_threshold"]
    from ovdoc.runtime.heads import head_of

    extra, lines = head_of(manifest).fit_summary(manifest)
    result |= extra
    if as_json:
        click.echo(json.dumps(result, indent=2))
        return
    for line in lines:
        click.echo(line)
    if result["intensity"] != "none":
        from ovdoc.runtime.preprocess import INTENSITY_MEAN, INTENSITY_STD

        what = {"mean": f"grey-level mean set to {INTENSITY_MEAN:g} by one gain",
                "meanstd": f"grey-level mean and spread set to {INTENSITY_MEAN:g} / {INTENSITY_STD:g}"}
        click.echo(f"intensity {result['intensity']}: each image's {what[result['intensity']]} before the "
                   "model's scaling (recorded in the bundle: run, serve and eval do the same)")
    where = f" ({s['index']} index, {s['metric']})" if s["kind"] == "knn" else ""
    added = f" ({result['appended']} added)" if append is not None else ""
    neighbours = f", k={s['k']}" if s["kind"] != "mean-cosine" else " (one mean vector)"
    click.echo(f"bundle {out}: {result['n_images']} normal images{added}, {s['kind']}{where}{neighbours}")
    click.echo(
        f"threshold {t['value']:.4g} at FPR {t['fpr']} ({t['method']}; median normal score "
        f"{t['score_median']:.4g}); built on {b['device']} {b['inference_precision']} in {wall:.1f} s"
    )
    if "heldout_fpr" in t and "loo_fpr_on_heldout" in t:
        click.echo(f"held out by group: target FPR {t['target_fpr']}, measured {t['heldout_fpr']:.4f} on "
                   f"{t['n_heldout']} held-out images (the leave-one-out threshold would flag "
                   f"{t['loo_fpr_on_heldout']:.4f})")
    c = result["calibration"]
    if "fpr_upper_95" in c:
        measured = f"measured {c['heldout_fpr']:.2%} on groups left out, " if "heldout_fpr" in c else ""
        click.echo(f"calibration: {c.get('estimator', '')} over {c['groups']} independent groups "
                   f"(effective {c['n_effective']:g}); target FPR {c['target_fpr']:.2%}, {measured}"
                   f"at most {c['fpr_upper_95']:.2%} on new groups (95 % bound)")
    for key in ("optimism", "message"):
        if key in c:
            click.echo(c[key])
    if result["unreadable_images"]:
        click.echo(f"skipped {result['unreadable_images']} unreadable image file(s)")
