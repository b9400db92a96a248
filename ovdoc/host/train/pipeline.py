"""`ovdoc train` end to end: data -> DOC or ArcFace training -> .keras -> verified IR -> fitted bundle.

The output folder is built beside its final place and swapped in only when every step succeeded:

    OUT/model.keras       the trained image -> features network
    OUT/loss.png          both losses per step
    OUT/ir/FP32|FP16/     verified OpenVINO IR (ovdoc.host.convert)
    OUT/bundle/           detector bundle fitted on the target images (feeds `ovdoc run`); its manifest
                          names ../model.keras and its sha256 (export_source), which `ovdoc export` reads
    OUT/train.json        settings, losses, conversion, selection and bundle summaries
    OUT/trained-model.keras  only when the untrained backbone was kept (see select.py): training's result

With `select="auto"` (the default) a probe network is trained without the held-out target images and
reference classes, and compared with the untrained ImageNet backbone on them (select.py). If training wins,
it is run again on every image (choose on held-out data, then refit on all, as scikit-learn's search does),
so the shipped model never lost reference classes to the decision; otherwise OUT holds the backbone.
"""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

from ovdoc.atomic import atomic_dir
from ovdoc.errors import OvdocError
from ovdoc.host.train.doc import TrainConfig, plot_losses
from ovdoc.host.train.methods import train_model
from ovdoc.log import get_logger
from ovdoc.runtime.datasets import Images, load_labelled, load_unlabelled

log = get_logger(__name__)


def train_to_bundle(
    target: str,
    reference: str,
    out: str | Path,
    config: TrainConfig,
    *,
    bundle_precision: str = "FP32",
    k: int = 5,
    fpr: float = 0.01,
    metric: str = "cosine",
    scorer: str = "knn",
    progress: bool = True,
    target_data: Images | None = None,
    reference_data: Images | None = None,
    select: str = "auto",
    holdout: float = 0.1,
) -> dict:
    """Run the whole `ovdoc train` pipeline; returns the report also written to OUT/train.json."""
    from ovdoc.host.convert import convert_keras_model
    from ovdoc.host.train import select as selection_lib
    from ovdoc.host.train.backbone import backbone_record
    from ovdoc.runtime.bundle import FitConfig, fit_bundle_images, sha256_file

    if bundle_precision not in ("FP32", "FP16"):
        raise OvdocError(f"bundle precision must be FP32 or FP16, got {bundle_precision}")
    target_data = target_data or load_unlabelled(target)
    reference_data = reference_data or load_labelled(reference)
    log.info(
        f"ovdoc train: {len(target_data)} target images ({target}), {len(reference_data)} reference images "
        f"({reference})"
    )
    if select not in selection_lib.SELECT_CHOICES:
        raise OvdocError(f"--select must be one of {', '.join(selection_lib.SELECT_CHOICES)}, got {select!r}")
    held = None
    if select == "auto":
        held = selection_lib.split_holdout(target_data, reference_data, holdout, config.seed)
    out = Path(out)
    with atomic_dir(out) as tmp:
        aucs, probe = {}, None
        if held:
            log.info(f"deciding on held-out data: {len(held.val_target)} target images vs "
                     f"{held.summary()['pseudo_anomalies']}")
            probe = train_model(held.target, held.reference, config, progress=progress)
            candidates = {"trained": (probe.model, probe.spec),
                          "untrained": selection_lib.untrained_model(config)}
            for name, (model, spec) in candidates.items():
                conv_dir = tmp / "decide" / name
                convert_keras_model(model, conv_dir, spec=spec, precisions=(bundle_precision,), name=name)
                aucs[name] = round(selection_lib.normal_only_auc(
                    conv_dir / bundle_precision / "model.xml", held.target.images, held, scorer, k=k,
                    metric=metric), 4)
            shutil.rmtree(tmp / "decide")
            log.info(f"held-out target vs pseudo-anomalies, AUC: trained {aucs['trained']:.4f}, "
                     f"untrained backbone {aucs['untrained']:.4f}")
        kept, why = selection_lib.choose(select, aucs)
        log.info(f"keeping the {kept} model: {why}")
        if kept == "trained" and held:
            log.info("training again on every target and reference image")
        result = probe if (probe is not None and kept == "untrained") else train_model(
            target_data, reference_data, config, progress=progress)
        if kept == "untrained":
            model, spec = selection_lib.untrained_model(config)
        else:
            model, spec = result.model, result.spec
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model.save(tmp / "model.keras")
            if kept == "untrained":  # training's result is kept beside, never thrown away
                result.model.save(tmp / "trained-model.keras")
        plot_losses(result, tmp / "loss.png")
        keras_record = {"format": "keras", "file": "../model.keras",
                        "method": config.method if kept == "trained" else "untrained",
                        "sha256": sha256_file(tmp / "model.keras")}
        log.info("converting to OpenVINO IR (verified against Keras)")
        # the IR names its Keras source (relative to the IR's folder, OUT/ir/<precision>/) in its rt_info:
        # `ovdoc fit OUT/ir/FP32/model.xml` anywhere else then records it, and that bundle exports too
        # and its backbone's taps by role (the registry's description), where patch mode reads them
        how = config.method if kept == "trained" else "untrained"
        record = backbone_record(model, weights=f"ovdoc train ({how}, --weights {config.weights})")
        conversion = convert_keras_model(model, tmp / "ir", spec=spec, name=how, backbone=record,
                                         source={"export": keras_record | {"file": "../../model.keras"}})
        log.info(f"fitting the detector bundle on the target images ({bundle_precision} IR)")
        # the images already in memory: no PNG round trip through a scratch folder
        manifest = fit_bundle_images(
            tmp / "ir" / bundle_precision / "model.xml",
            iter(target_data.images),
            tmp / "bundle",
            FitConfig(k=k, fpr=fpr, metric=metric, scorer=scorer),
            progress=progress,
            total=len(target_data),
            sources=[target],
            export_source=keras_record,
        )
        selection = {"select": select, "kept": kept, "why": why, "normal_only_auc": aucs,
                     "refit_on_every_image": bool(held) and kept == "trained",
                     **(held.summary() if held else {})}
        report = {
            "target": target,
            "reference": reference,
            "out": str(out),
            "train": result.summary(),
            "convert": conversion,
            "selection": selection,
            "bundle": {
                "path": str(out / "bundle"),
                "threshold": manifest["threshold"],
                "n_images": manifest["n_images"],
                "feature_dim": manifest["feature_dim"],
                "precision": bundle_precision,
                "metric": manifest["scorer"].get("metric", "euclidean"),
                "scorer": manifest["scorer"]["kind"],
            },
        }
        (tmp / "train.json").write_text(json.dumps(report, indent=2, sort_keys=True, default=str) + "\n")
    report["model"] = model
    return report
