"""`ovdoc eval`: how well a bundle separates normal from anomalous images (no TensorFlow needed)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

EPILOG = """\b
Examples:
  ovdoc eval my.doc/bundle --normal test/good --anomalous test/bad --roc roc.png --grid worst.png
  ovdoc eval sneaker.doc/bundle --normal fashion-mnist-test:sneaker --anomalous fashion-mnist-test:ankle_boot
  ovdoc eval tiles.bundle --normal held-out/ --anomalous MT_Crack/Imgs --masks auto --grid maps.png

\b
--normal/--anomalous: a folder (recursive), an image, a .npz (x[, y]) or a data spec such as
fashion-mnist-test:CLASS[,CLASS] or fashion-mnist-test:-sneaker (every other class).
"""


@click.command("eval", epilog=EPILOG)
@click.argument("bundle", type=click.Path())
@click.option(
    "--normal", required=True, help="Normal test images (must not be the ones the bundle was fitted on)."
)
@click.option("--anomalous", required=True, help="Anomalous test images.")
@click.option("--device", default="CPU", show_default=True, help="OpenVINO device.")
@click.option("--roc", "roc_path", type=click.Path(dir_okay=False), help="Write the ROC curve (PNG).")
@click.option(
    "--grid",
    "grid_path",
    type=click.Path(dir_okay=False),
    help="Write a PNG of the most (top row) and least (bottom row) anomalous anomalies; patch mode: with "
    "heatmaps, mask contours and a third row of the most anomalous normal images.",
)
@click.option(
    "--masks",
    "masks",
    metavar="auto|DIR",
    help="Ground-truth masks for pixel AUROC and PRO (patch-mode bundles): auto = X.png (or X_mask.png) "
    "beside each image X.jpg; DIR = a folder of masks with the images' file stems. A normal image without "
    "a mask counts as all normal; mask files found beside images are not scored as images.",
)
@click.option("--ray", "ray_address", metavar="ADDRESS|auto", default=None,
              help="Compute the features on a Ray cluster (HOST:PORT of its head, or auto); scores, AUC and "
              "rates on this machine as without it. Not with --masks/--grid. Needs `pip install "
              "'ovdoc[cluster]'`.")
@click.option("--groups", "groups", default="none", show_default=True, metavar="subfolder|pattern:REGEX|none",
              help="Which image files show the same part: also report part-level figures (a part is "
              "flagged when any of its shots is; AUC over each part's highest score) and the number of "
              "parts, so several shots of one part do not count as several trials.")
@click.option("--json", "as_json", is_flag=True, help="Print the metrics as JSON on stdout.")
def evaluate(bundle, normal, anomalous, device, roc_path, grid_path, masks, ray_address, groups,
             as_json) -> int:
    """AUC, TPR/FPR at the bundle's threshold and TPR at 1% FPR on labelled images.

    A bundle's threshold was calibrated on its own normal images (`ovdoc fit --calibration`: by default
    held-out groups or blocks, each scored against the rest); this measures what it does on images it
    has never seen. With --masks (patch-mode bundles) also pixel AUROC and PRO
    (per-region overlap, integrated up to 30% pixel FPR; maps and masks at <= 256 px).
    """
    from ovdoc.errors import OvdocError
    from ovdoc.runtime.bundle_format import load_manifest
    from ovdoc.runtime.datasets import load_unlabelled
    from ovdoc.runtime.detector import Detector
    from ovdoc.runtime.evaluation import evaluate_detector

    if ray_address and (masks or grid_path):
        raise OvdocError("--ray computes scores only: --masks and --grid need the images here (drop --ray)")
    if ray_address and groups != "none":
        raise OvdocError("--ray computes scores only: part-level figures (--groups) need the files here "
                         "(drop --ray or --groups)")
    if masks:
        from ovdoc.runtime.heads import head_of

        manifest = load_manifest(bundle)[0]
        if not head_of(manifest, bundle).has_maps:
            mode = manifest.get("mode", "global")
            raise OvdocError(
                f"--masks needs a patch-mode bundle (anomaly maps; `ovdoc fit --mode patch`): {bundle} "
                f"is {mode}"
            )
    from ovdoc.runtime.groups import group_keys, parse_groups

    grouped = parse_groups(groups)[0] != "none"
    normal_masks = anomalous_masks = None
    normal_paths = anomalous_paths = None
    if masks or grouped:
        from ovdoc.runtime.evaluation import image_paths

        normal_paths, anomalous_paths = image_paths(normal), image_paths(anomalous)
        normal_data, anomalous_data = load_unlabelled(normal_paths), load_unlabelled(anomalous_paths)
    if masks:
        from ovdoc.runtime.evaluation import masks_for

        normal_masks = masks_for(normal_paths, list(normal_data.images), masks, anomalous=False)
        anomalous_masks = masks_for(anomalous_paths, list(anomalous_data.images), masks, anomalous=True)
    elif not ray_address and not grouped:
        normal_data = load_unlabelled(normal)
        anomalous_data = load_unlabelled(anomalous)
    if ray_address:
        from ovdoc.cluster.connect import connect
        from ovdoc.cluster.extract import RayExtract

        extract = RayExtract(connect(ray_address))  # before compiling: an unreachable address is one line
    detector = Detector.load(bundle, device=device)
    if ray_address:
        from ovdoc.cluster.evaluate import cluster_scores
        from ovdoc.runtime.evaluation import EvalResult

        click.echo(f"scoring on the Ray cluster ({extract.actors} actors) on {device}", err=True)
        result = EvalResult(cluster_scores(detector, normal, extract, "normal features"),
                            cluster_scores(detector, anomalous, extract, "anomalous features"),
                            float(detector.threshold_))
        return _report(result.metrics(), result, bundle, detector.mode_, normal, anomalous, device, roc_path,
                       None, None, None, None, masks, as_json)
    mode = detector.mode_
    click.echo(
        f"scoring {len(normal_data)} normal and {len(anomalous_data)} anomalous images on {device}", err=True
    )
    pixel_eval = None
    if detector.has_maps_ and (masks or grid_path):
        from ovdoc.runtime.evaluation import evaluate_patch_detector

        pixel_eval = evaluate_patch_detector(
            detector, list(normal_data.images), list(anomalous_data.images), normal_masks, anomalous_masks
        )
        result = pixel_eval.result
        metrics = pixel_eval.metrics()
    else:
        result = evaluate_detector(detector, normal_data.images, anomalous_data.images)
        metrics = result.metrics()
    if grouped:
        from ovdoc.runtime.groups import group_summary

        metrics["groups"] = {"rule": groups} | group_summary(
            result.normal_scores, result.anomalous_scores, group_keys(normal_paths, groups),
            group_keys(anomalous_paths, groups), result.threshold)
    return _report(metrics, result, bundle, mode, normal, anomalous, device, roc_path, grid_path, pixel_eval,
                   (normal_data, anomalous_data), detector, masks, as_json)


def _report(metrics, result, bundle, mode, normal, anomalous, device, roc_path, grid_path, pixel_eval, data,
            detector, masks, as_json) -> int:
    """Write the ROC / grid files and print the metrics (shared by the local and the --ray path)."""
    from ovdoc.atomic import atomic_path
    from ovdoc.runtime.evaluation import image_grid, plot_roc

    metrics |= {
        "bundle": str(bundle),
        "mode": mode,
        "normal": normal,
        "anomalous": anomalous,
        "device": device,
    }
    if masks:
        metrics["masks"] = masks
    if roc_path:
        with atomic_path(roc_path) as tmp:
            plot_roc(result, tmp.with_suffix(".png"), title=Path(bundle).name)
            tmp.with_suffix(".png").replace(tmp)
        metrics["roc"] = roc_path
    if grid_path:
        normal_data, anomalous_data = data
        with atomic_path(grid_path) as tmp:
            if pixel_eval is not None:
                from ovdoc.runtime.evaluation import heat_range, heatmap_grid

                lo, hi = heat_range(pixel_eval, getattr(detector, "map_threshold_", None))
                heatmap_grid(pixel_eval, list(normal_data.images), list(anomalous_data.images),
                             tmp.with_suffix(".png"), lo=lo, hi=hi)
            else:
                image_grid(list(anomalous_data.images), result.anomalous_scores, tmp.with_suffix(".png"))
            tmp.with_suffix(".png").replace(tmp)
        metrics["grid"] = grid_path
    if as_json:
        click.echo(json.dumps(metrics, sort_keys=True))
    out = sys.stderr if as_json else sys.stdout
    print(
        f"AUC {metrics['auc']:.4f}   at threshold {metrics['threshold']:.4g}: "
        f"TPR {metrics['tpr_at_threshold']:.3f}, "
        f"FPR {metrics['fpr_at_threshold']:.3f}   TPR@FPR=1% {metrics['tpr_at_fpr_1pct']:.3f}",
        file=out,
    )
    fmt = lambda v: "n/a" if v is None else f"{v:.4f}"  # noqa: E731
    pixel = metrics.get("pixel")
    if pixel:
        print(
            f"pixel AUROC {fmt(pixel['pixel_auroc'])}   PRO {fmt(pixel['pro'])} "
            f"(FPR <= {pixel['pro_fpr_limit']}, {pixel['n_regions']} defect regions, maps at "
            f"<= {pixel['max_side']} px)   hottest point in the mask: {fmt(pixel['hottest_in_mask'])}",
            file=out,
        )
    part = metrics.get("groups")
    if part:
        print(
            f"parts ({part['rule']}): {part['normal_groups']} normal, {part['anomalous_groups']} anomalous; "
            f"part AUC {fmt(part['group_auc'])}, at threshold: TPR {fmt(part['group_tpr_at_threshold'])}, "
            f"FPR {fmt(part['group_fpr_at_threshold'])}"
            + (f"; {part['groups_on_both_sides']} part(s) on both sides"
               if part["groups_on_both_sides"] else ""),
            file=out,
        )
    return 0
