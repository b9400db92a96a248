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

\b
--normal/--anomalous: a folder (recursive), an image, a .npz (x[, y]) or a data spec such as
fashion-mnist-test:CLASS[,CLASS] or fashion-mnist-test:-sneaker (every other class).
"""


@click.command(epilog=EPILOG)
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
    help="Write a PNG of the most (top row) and least (bottom row) anomalous anomalies.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the metrics as JSON on stdout.")
def evaluate(bundle, normal, anomalous, device, roc_path, grid_path, as_json) -> int:
    """AUC, TPR/FPR at the bundle's threshold and TPR at 1% FPR on labelled images.

    A bundle's threshold was calibrated on its training images (leave-one-out); this measures what it
    does on images it has never seen.
    """
    from ovdoc.atomic import atomic_path
    from ovdoc.runtime.datasets import load_unlabelled
    from ovdoc.runtime.detector import Detector
    from ovdoc.runtime.evaluation import evaluate_detector, image_grid, plot_roc

    normal_data = load_unlabelled(normal)
    anomalous_data = load_unlabelled(anomalous)
    detector = Detector.load(bundle, device=device)
    click.echo(
        f"scoring {len(normal_data)} normal and {len(anomalous_data)} anomalous images on {device}", err=True
    )
    result = evaluate_detector(detector, normal_data.images, anomalous_data.images)
    metrics = result.metrics() | {
        "bundle": str(bundle),
        "normal": normal,
        "anomalous": anomalous,
        "device": device,
    }
    if roc_path:
        with atomic_path(roc_path) as tmp:
            plot_roc(result, tmp.with_suffix(".png"), title=Path(bundle).name)
            tmp.with_suffix(".png").replace(tmp)
        metrics["roc"] = roc_path
    if grid_path:
        with atomic_path(grid_path) as tmp:
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
    return 0
