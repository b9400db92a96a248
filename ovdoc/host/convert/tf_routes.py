"""TensorFlow sources that go straight to openvino.convert_model: SavedModel, frozen .pb, .tflite.

Each keeps its own framework as the verification reference (a TF session, the SavedModel signature,
tf.lite.Interpreter): the IR is checked against what the file computes in the tool that wrote it.
"""

from __future__ import annotations

import contextlib
import io
import warnings
from pathlib import Path

import numpy as np

from ovdoc.errors import OvdocError, VerificationError, first_line
from ovdoc.host import require_tensorflow
from ovdoc.host.convert.converted import Converted, ov_convert, per_sample
from ovdoc.runtime.arrays import cosine_rows

_NOT_OUTPUTS = {"Const", "NoOp", "Assert", "Placeholder", "VarHandleOp", "SaveV2", "RestoreV2"}


def convert_saved_model(path: Path) -> Converted:
    tf = require_tensorflow("converting a TensorFlow SavedModel")
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            loaded = tf.saved_model.load(str(path))
    except Exception as exc:
        raise OvdocError(f"cannot load SavedModel {path}: corrupt or incomplete ({first_line(exc)})") from exc
    signatures = dict(loaded.signatures)
    if not signatures:
        raise OvdocError(f"SavedModel {path} has no serving signature; export it with one (model.export)")
    key = "serving_default" if "serving_default" in signatures else sorted(signatures)[0]
    signature = signatures[key]
    inputs = signature.structured_input_signature[1]
    if len(inputs) != 1:
        raise OvdocError(f"SavedModel signature {key!r} has {len(inputs)} inputs; ovdoc needs one image")
    (input_name,) = inputs

    def run_one(x: np.ndarray) -> np.ndarray:
        outputs = signature(**{input_name: tf.constant(x)})
        if len(outputs) != 1:
            raise OvdocError(f"SavedModel signature {key!r} has {len(outputs)} outputs; ovdoc needs one")
        return next(iter(outputs.values())).numpy()

    model = ov_convert(path, f"SavedModel {path}")
    return Converted(model=model, reference=per_sample(run_one), reference_name="TensorFlow SavedModel")


def convert_frozen_pb(path: Path) -> Converted:
    tf = require_tensorflow("converting a frozen TensorFlow graph")
    graph_def = tf.compat.v1.GraphDef()
    try:
        graph_def.ParseFromString(path.read_bytes())
    except Exception as exc:
        raise OvdocError(f"{path} is not a valid frozen TensorFlow graph (corrupt or truncated?)") from exc
    if not graph_def.node:
        raise OvdocError(f"{path} is not a frozen TensorFlow graph (no nodes)")
    input_name, output_name = _graph_io(graph_def, path)
    graph = tf.Graph()
    try:
        with graph.as_default():
            tf.compat.v1.import_graph_def(graph_def, name="")
    except Exception as exc:
        raise OvdocError(f"TensorFlow cannot load the graph in {path}: {first_line(exc)}") from exc
    session = tf.compat.v1.Session(graph=graph)

    def run_one(x: np.ndarray) -> np.ndarray:
        return session.run(f"{output_name}:0", {f"{input_name}:0": x})

    model = ov_convert(path, f"frozen graph {path}")
    converted = Converted(
        model=model, reference=per_sample(run_one), reference_name="TensorFlow (frozen graph)"
    )
    converted.notes.append(f"graph input {input_name}, output {output_name}")
    return converted


def _graph_io(graph_def, path: Path) -> tuple[str, str]:
    """The single Placeholder and the single unconsumed compute node of a frozen graph."""
    placeholders = [n.name for n in graph_def.node if n.op == "Placeholder"]
    consumed = {inp.lstrip("^").split(":")[0] for n in graph_def.node for inp in n.input}
    outputs = [n.name for n in graph_def.node if n.name not in consumed and n.op not in _NOT_OUTPUTS]
    if len(placeholders) != 1 or len(outputs) != 1:
        raise OvdocError(
            f"{path} has inputs {placeholders[:5]} and outputs {outputs[:5]}; ovdoc needs one image input "
            "and one feature output"
        )
    return placeholders[0], outputs[0]


REWRITE_MIN_COSINE = 0.995  # hybrid int8 activations vs float math; a misread weight gives ~0.3


def convert_tflite(path: Path, workdir: Path, *, fix: bool = True) -> Converted:
    """TFLite -> OpenVINO; weight-quantized (hybrid) files are first rewritten with float32 weights.

    With the rewrite, the IR is verified against tf.lite.Interpreter running the rewritten file (same
    float arithmetic, gate 0.9999), and the rewritten file against the original in the interpreter
    (which quantizes activations on the fly in hybrid ops, so only near-equal: REWRITE_MIN_COSINE).
    """
    tf = require_tensorflow("checking a TFLite model against its interpreter")
    ov_convert(path, f"TFLite model {path}")  # verifies the flatbuffer before the interpreter sees it
    original = _interpreter(tf, path)
    inp = original.get_input_details()[0]
    if inp["dtype"] != np.float32:
        raise OvdocError(
            f"{path.name} is a fully integer-quantized TFLite model ({np.dtype(inp['dtype']).name} input); "
            "convert the float original (Keras/TF/ONNX) instead, and use --precision INT8 for integer speed"
        )
    run_original = per_sample(_runner(original))
    if fix:
        from ovdoc.host.convert.tflite_fix import dequantize_weights

        rewritten = workdir / "dequantized.tflite"
        count = dequantize_weights(path, rewritten)
        if count:
            model = ov_convert(rewritten, f"TFLite model {path} (float32 weights)")
            run_rewritten = per_sample(_runner(_interpreter(tf, rewritten)))
            converted = Converted(
                model=model, reference=run_rewritten, reference_name="tf.lite.Interpreter (float32 weights)"
            )
            converted.scratch.append(rewritten)
            converted.notes.append(
                f"weight-quantized TFLite: {count} quantized weight tensors rewritten as float32 "
                "(OpenVINO's TFLite frontend misreads them)"
            )

            def reference(batch: np.ndarray) -> np.ndarray:
                want, got = run_original(batch), run_rewritten(batch)
                cosine = cosine_rows(want, got)
                converted.checks["tflite_rewrite_vs_original"] = {
                    "cosine_min": float(cosine.min()), "cosine_median": float(np.median(cosine))
                }
                if cosine.min() < REWRITE_MIN_COSINE:
                    raise VerificationError(
                        f"rewriting the quantized weights of {path.name} as float32 changed its output "
                        f"(cosine_min {cosine.min():.4f} < {REWRITE_MIN_COSINE} in tf.lite.Interpreter); "
                        "convert the Keras, TensorFlow or ONNX original instead"
                    )
                return got

            converted.reference = reference
            return converted
        rewritten.unlink(missing_ok=True)
    model = ov_convert(path, f"TFLite model {path}")
    converted = Converted(model=model, reference=run_original, reference_name="tf.lite.Interpreter")
    ops = {d["op_name"] for d in original._get_ops_details()}
    quantized = any(d["dtype"] in (np.int8, np.uint8) for d in original.get_tensor_details())
    if "DEQUANTIZE" in ops or quantized:
        converted.notes.append("weight-quantized TFLite converted as is (no weight rewrite)")
    return converted


def _interpreter(tf, path: Path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            interpreter = tf.lite.Interpreter(model_path=str(path))
            interpreter.allocate_tensors()
        except Exception as exc:
            raise OvdocError(f"TFLite cannot load {path}: {first_line(exc)}") from exc
    return interpreter


def _runner(interpreter):
    inp = interpreter.get_input_details()[0]
    out = interpreter.get_output_details()[0]

    def run_one(x: np.ndarray) -> np.ndarray:
        interpreter.set_tensor(inp["index"], x)
        interpreter.invoke()
        return interpreter.get_tensor(out["index"]).copy()

    return run_one
