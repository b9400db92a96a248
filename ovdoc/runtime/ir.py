"""Reading, writing and compiling ovdoc IRs.

An ovdoc IR has one NHWC image input named `image` (batch dimension dynamic), one output named
`features`, and its preprocessing recorded in rt_info under ``ovdoc/preprocess`` (JSON), so the runtime
never has to guess input size, colour order or scale.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import openvino as ov

from ovdoc.errors import OvdocError, first_line
from ovdoc.runtime.devices import check_device
from ovdoc.runtime.preprocess import PreprocessSpec

INPUT_NAME = "image"
OUTPUT_NAME = "features"
RT_PREPROCESS = ["ovdoc", "preprocess"]
RT_SOURCE = ["ovdoc", "source"]
RT_BACKBONE = ["ovdoc", "backbone"]  # shipped backbones: name and tap node names by role
MIN_IR_VERSION = 10
# `<net name="..." version="11">`: the IR format version, read from the header alone
_IR_VERSION = re.compile(rb"<net\b[^>]*\bversion\s*=\s*\"(\d+)\"")


def ir_version_in(head: bytes) -> int | None:
    """The IR format version in the first bytes of an .xml file, or None when it is no IR header."""
    match = _IR_VERSION.search(head)
    return int(match.group(1)) if match else None


def resolve_ir_path(path: str | Path) -> Path:
    """Accept `model.xml`, or a `ovdoc convert` output folder (prefers FP32, then FP16, then INT8)."""
    path = Path(path)
    if not path.exists():
        raise OvdocError(f"model not found: {path}")
    if path.is_dir():
        for candidate in (path / "model.xml", path / "FP32" / "model.xml", path / "FP16" / "model.xml",
                          path / "INT8" / "model.xml"):
            if candidate.is_file():
                return candidate
        xmls = sorted(path.glob("*.xml"))
        if len(xmls) == 1:
            return xmls[0]
        raise OvdocError(f"no OpenVINO IR (model.xml) in {path}")
    if path.suffix.lower() != ".xml":
        raise OvdocError(f"{path} is not an OpenVINO IR (.xml); convert it first with `ovdoc convert`")
    return path


def ir_version(xml_path: Path) -> int | None:
    """The IR format version from the `<net ... version="N">` header, without parsing the whole file."""
    try:
        with open(xml_path, "rb") as fh:
            head = fh.read(4096)
    except OSError as exc:
        raise OvdocError(f"cannot read {xml_path}: {exc.strerror}") from exc
    return ir_version_in(head)


def read_ir(path: str | Path, core: ov.Core | None = None) -> tuple[ov.Model, PreprocessSpec, Path]:
    """Read an IR and its preprocessing; every failure is one clear line."""
    xml = resolve_ir_path(path)
    version = ir_version(xml)
    if version is None:
        raise OvdocError(f"{xml} is not an OpenVINO IR (no <net version=...> header)")
    if version < MIN_IR_VERSION:
        raise OvdocError(
            f"{xml} is IR v{version} (OpenVINO 2018-2020); today's OpenVINO reads IR "
            f"v{MIN_IR_VERSION}+ only: convert the source model (Keras, TF, ONNX) again with `ovdoc convert`"
        )
    bin_path = xml.with_suffix(".bin")
    if not bin_path.is_file():
        raise OvdocError(f"{xml} has no weights file beside it ({bin_path.name} missing)")
    core = core or ov.Core()
    try:
        model = core.read_model(str(xml))
    except Exception as exc:
        raise OvdocError(f"cannot read IR {xml}: corrupt or truncated ({first_line(exc, 200)})") from exc
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise OvdocError(
            f"{xml} has {len(model.inputs)} inputs and {len(model.outputs)} outputs; ovdoc needs one image "
            "input and one feature output"
        )
    return model, preprocess_of(model), xml


def preprocess_of(model: ov.Model) -> PreprocessSpec:
    """The recorded preprocessing, or a guess from the input shape (RGB, x/255) for foreign IRs."""
    if model.has_rt_info(RT_PREPROCESS):
        return PreprocessSpec.from_json(model.get_rt_info(RT_PREPROCESS).astype(str))
    shape = model.inputs[0].get_partial_shape()
    if shape.rank.is_static and shape.rank.get_length() == 4:
        dims = [d.get_length() if d.is_static else -1 for d in shape]
        if dims[3] == 3 and dims[1] > 0 and dims[2] > 0:
            return PreprocessSpec(height=dims[1], width=dims[2])
    raise OvdocError(
        "the IR records no preprocessing and its input is not NHWC with 3 channels; convert it with "
        "`ovdoc convert` so input size, colour order and scale are recorded"
    )


def backbone_info(model: ov.Model) -> dict | None:
    """The backbone record a shipped IR carries (name, taps by role), or None for any other IR."""
    if not model.has_rt_info(RT_BACKBONE):
        return None
    try:
        info = json.loads(model.get_rt_info(RT_BACKBONE).astype(str))
    except (ValueError, TypeError):
        return None
    return info if isinstance(info, dict) and isinstance(info.get("taps"), dict) else None


def name_ports(model: ov.Model) -> ov.Model:
    """Give the single input/output the stable names `image`/`features`, whatever the source used."""
    model.inputs[0].get_tensor().set_names({INPUT_NAME})
    model.outputs[0].get_tensor().set_names({OUTPUT_NAME})
    model.set_friendly_name("ovdoc")
    return model


def annotate(model: ov.Model, spec: PreprocessSpec, source: dict | None = None) -> ov.Model:
    model.set_rt_info(spec.to_json(), RT_PREPROCESS)
    if source:
        model.set_rt_info(json.dumps(source, sort_keys=True), RT_SOURCE)
    return model


def export_source_of(model: ov.Model, xml: str | Path, bundle_dir: str | Path) -> dict | None:
    """The Keras model `ovdoc train` recorded in this IR's rt_info (`ovdoc/source` -> `export`, its path
    relative to the IR's folder), re-pointed relative to `bundle_dir`: what a bundle fitted from the IR
    alone writes as its manifest's `export_source`, so `ovdoc export` finds the model (and checks its
    sha256) wherever the bundle was fitted. None when the IR records none, or the file is not there."""
    import os

    if not model.has_rt_info(RT_SOURCE):
        return None
    try:
        record = json.loads(model.get_rt_info(RT_SOURCE).astype(str)).get("export")
    except (ValueError, AttributeError):
        return None
    if not isinstance(record, dict) or record.get("format") != "keras" or not record.get("file"):
        return None
    path = (Path(xml).resolve().parent / record["file"]).resolve()
    if not path.is_file():
        return None
    return record | {"file": os.path.relpath(path, Path(bundle_dir).resolve())}


def save_ir(model: ov.Model, xml_path: str | Path, *, compress_to_fp16: bool) -> Path:
    """Save with the weight precision asked for (`save_model` compresses to FP16 unless told not to).

    Atomic: the .bin and then the .xml are renamed into place only once both are complete, so a crash
    never leaves an .xml that points at missing or half-written weights.
    """
    import tempfile

    from ovdoc.atomic import atomic_path

    xml_path = Path(xml_path)
    bin_path = xml_path.with_suffix(".bin")
    xml_path.parent.mkdir(parents=True, exist_ok=True)
    with (
        atomic_path(xml_path) as xml_tmp,
        atomic_path(bin_path) as bin_tmp,  # exits first: the .bin lands before the .xml
        tempfile.TemporaryDirectory(prefix=".save-", dir=xml_path.parent) as scratch,
    ):
        saved = Path(scratch) / "model.xml"
        ov.save_model(model, str(saved), compress_to_fp16=compress_to_fp16)
        saved.with_suffix(".bin").replace(bin_tmp)
        saved.replace(xml_tmp)
    return xml_path


def with_uint8_bgr_input(model: ov.Model, spec: PreprocessSpec, batch: int | None) -> ov.Model:
    """Compile-ready copy: NHWC uint8 BGR input, colour order and scaling done in-graph.

    This is the fast path (no float conversion in Python) and it is the same arithmetic as
    `PreprocessSpec.to_float`, so fit and run cannot drift apart.
    """
    model = model.clone()
    if batch is not None:
        model.reshape({model.inputs[0]: ov.PartialShape([batch, spec.height, spec.width, 3])})
    else:
        model.reshape({model.inputs[0]: ov.PartialShape([-1, spec.height, spec.width, 3])})
    ppp = ov.preprocess.PrePostProcessor(model)
    inp = ppp.input()
    inp.tensor().set_element_type(ov.Type.u8).set_layout(ov.Layout("NHWC")).set_color_format(
        ov.preprocess.ColorFormat.BGR
    )
    inp.model().set_layout(ov.Layout("NHWC"))
    steps = inp.preprocess().convert_element_type(ov.Type.f32)
    if spec.color == "RGB":
        steps.convert_color(ov.preprocess.ColorFormat.RGB)
    if any(m != 0.0 for m in spec.mean):
        steps.mean(list(spec.mean))
    if any(s != 1.0 for s in spec.std):
        steps.scale(list(spec.std))
    ppp.output().tensor().set_element_type(ov.Type.f32)
    return ppp.build()


def compile_ir(
    model: ov.Model,
    spec: PreprocessSpec,
    *,
    device: str = "CPU",
    batch: int | None = 1,
    hint: str = "latency",
    inference_precision: str | None = "f32",
    cache_dir: str | Path | None = None,
    core: ov.Core | None = None,
    uint8_input: bool = True,
) -> ov.CompiledModel:
    """Compile for `device` with a static batch (fastest on CPU) and the in-graph preprocessing.

    `inference_precision="f32"` by default: on CPUs with AVX512-BF16/AMX, OpenVINO otherwise runs in
    bf16 and the features move; a precision is something ovdoc verifies, never assumes.
    """
    core = core or ov.Core()
    device = check_device(device, core)
    prepared = with_uint8_bgr_input(model, spec, batch) if uint8_input else model
    config: dict = {"PERFORMANCE_HINT": {"latency": "LATENCY", "throughput": "THROUGHPUT"}[hint]}
    if inference_precision and _is_cpu_like(device):
        config["INFERENCE_PRECISION_HINT"] = inference_precision
    elif inference_precision and device.split(":")[0] in ("AUTO", "MULTI", "HETERO"):
        # AUTO may pick the CPU: pin its precision too, or it silently runs bf16 on AVX512-BF16/AMX CPUs
        config["DEVICE_PROPERTIES"] = {"CPU": {"INFERENCE_PRECISION_HINT": inference_precision}}
    if cache_dir:
        Path(cache_dir).mkdir(parents=True, exist_ok=True)
        config["CACHE_DIR"] = str(cache_dir)
    try:
        return core.compile_model(prepared, device, config)
    except Exception as exc:
        raise OvdocError(f"cannot compile the model for {device}: {first_line(exc)}") from exc


def _is_cpu_like(device: str) -> bool:
    return device.upper().startswith("CPU")
