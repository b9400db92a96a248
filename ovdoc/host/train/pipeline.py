"""`ovdoc train` end to end: data -> DOC or ArcFace training -> .keras -> verified IR -> fitted bundle.

The output folder is built beside its final place and swapped in only when every step succeeded:

    OUT/model.keras       the trained image -> features network
    OUT/loss.png          both losses per step
    OUT/ir/FP32|FP16/     verified OpenVINO IR (ovdoc.host.convert)
    OUT/bundle/           detector bundle fitted on the target images (feeds `ovdoc run`); its manifest
                          names ../model.keras and its sha256 (export_source), which `ovdoc export` reads
    OUT/train.json        settings, losses, conversion and bundle summaries
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

from ovdoc.atomic import atomic_dir
from ovdoc.errors import OvdocError
from ovdoc.host.train.doc import TrainConfig, plot_losses, train_model
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
) -> dict:
    """Run the whole `ovdoc train` pipeline; returns the report also written to OUT/train.json."""
    from ovdoc.host.convert import convert_keras_model
    from ovdoc.runtime.bundle import FitConfig, fit_bundle_images, sha256_file

    if bundle_precision not in ("FP32", "FP16"):
        raise OvdocError(f"bundle precision must be FP32 or FP16, got {bundle_precision}")
    target_data = target_data or load_unlabelled(target)
    reference_data = reference_data or load_labelled(reference)
    log.info(
        f"ovdoc train: {len(target_data)} target images ({target}), {len(reference_data)} reference images "
        f"({reference})"
    )
    result = train_model(target_data, reference_data, config, progress=progress)
    out = Path(out)
    with atomic_dir(out) as tmp:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            result.model.save(tmp / "model.keras")
        plot_losses(result, tmp / "loss.png")
        keras_record = {"format": "keras", "file": "../model.keras", "method": config.method,
                        "sha256": sha256_file(tmp / "model.keras")}
        log.info("converting to OpenVINO IR (verified against Keras)")
        conversion = convert_keras_model(result.model, tmp / "ir", spec=result.spec, name=config.method)
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
        report = {
            "target": target,
            "reference": reference,
            "out": str(out),
            "train": result.summary(),
            "convert": conversion,
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
    report["model"] = result.model
    return report
