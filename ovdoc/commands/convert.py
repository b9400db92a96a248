"""`ovdoc convert`: any trained model -> OpenVINO IR that is proven to compute what the source computes."""

from __future__ import annotations

import json

import click

SCALE_PRESETS: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "unit": ((0.0, 0.0, 0.0), (255.0, 255.0, 255.0)),  # x/255 -> [0, 1] (the seed model)
    "tf": ((127.5, 127.5, 127.5), (127.5, 127.5, 127.5)),  # x/127.5 - 1 -> [-1, 1] (Keras MobileNetV2)
    "imagenet": ((123.675, 116.28, 103.53), (58.395, 57.12, 57.375)),  # torchvision mean/std, RGB
    "raw": ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0)),  # 0..255 as is
}


def _triple(text: str | None, option: str) -> tuple[float, float, float] | None:
    if text is None:
        return None
    try:
        values = [float(v) for v in text.replace(" ", "").split(",") if v]
    except ValueError as exc:
        raise click.BadParameter(f"{text!r} is not a number or a list of 3", param_hint=option) from exc
    if len(values) == 1:
        values *= 3
    if len(values) != 3:
        raise click.BadParameter("give one value or three (one per channel)", param_hint=option)
    return (values[0], values[1], values[2])


def _size(text: str | None) -> tuple[int, int] | None:
    """`--size WxH` (width x height, as for fit and run) or one number (square) -> (height, width).

    Before, convert alone read HEIGHTxWIDTH; a non-square size is therefore echoed back as width and
    height, so an old command line shows what it now means."""
    if text is None:
        return None
    parts = text.lower().replace(" ", "").split("x")
    if len(parts) == 1:
        parts = parts * 2
    if len(parts) != 2 or not all(p.isdigit() and int(p) > 0 for p in parts):
        raise click.BadParameter(f"{text!r}: use WxH (width x height, e.g. 128x96) or one number",
                                 param_hint="--size")
    width, height = int(parts[0]), int(parts[1])
    if width != height:
        click.echo(f"--size {text}: width {width}, height {height} (WxH, like fit --size and run --res)",
                   err=True)
    return height, width


@click.command(context_settings={"show_default": True})
@click.argument("src", type=click.Path(path_type=str))
@click.option("--weights", type=click.Path(path_type=str), help="Weights .h5 for a legacy Keras model.json.")
@click.option("--out", "out_dir", required=True, type=click.Path(path_type=str),
              help="Output folder; gets FP32/, FP16/ (INT8/) model.xml+.bin and convert.json.")
@click.option("--precision", "precisions", multiple=True, default=("FP32", "FP16"),
              type=click.Choice(["FP32", "FP16", "INT8"], case_sensitive=False),
              help="Precisions to write (repeat the option). FP32 is always written and verified.")
@click.option("--name", help="Model name recorded in the IR (default: from the source file).")
@click.option("--probe", type=click.Path(path_type=str),
              help="Folder of real images to verify with (default: 16 deterministic synthetic images).")
@click.option("--keep-frozen", is_flag=True, help="Keep the frozen TF graph (Keras route) as OUT/frozen.pb.")
@click.option("--color", type=click.Choice(["RGB", "BGR"]), default="RGB",
              help="Channel order the model was trained on.")
@click.option("--scale", type=click.Choice(sorted(SCALE_PRESETS)), default="unit",
              help="Input scaling preset: unit = x/255, tf = x/127.5-1, imagenet = torchvision mean/std, "
                   "raw = 0..255.")
@click.option("--mean", help="Mean in pixel units: 'v' or 'a,b,c' in the model's channel order "
              "(overrides --scale).")
@click.option("--std", help="Std in pixel units: 'v' or 'a,b,c' in the model's channel order "
              "(overrides --scale).")
@click.option("--resize", type=click.Choice(["center_crop", "stretch"]), default="center_crop",
              help="How frames of another aspect ratio reach the model's input size.")
@click.option("--size", "size_text", metavar="WxH",
              help="Input width x height (or one number), only for models that leave their input size open.")
@click.option("--calib", type=click.Path(path_type=str), help="INT8: normal images to calibrate on.")
@click.option("--max-auc-drop", type=float, default=0.005, help="INT8: largest AUC loss accepted vs FP32.")
@click.option("--eval-normal", type=click.Path(path_type=str), help="INT8: normal images to measure AUC on.")
@click.option("--eval-anomalous", type=click.Path(path_type=str), help="INT8: anomalous images for the AUC.")
@click.option("--no-tflite-fix", is_flag=True,
              help="Convert weight-quantized TFLite as is (OpenVINO misreads it; verification then fails).")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON on stdout.")
def convert(
    src: str, weights: str | None, out_dir: str, precisions: tuple[str, ...], name: str | None,
    probe: str | None, keep_frozen: bool, color: str, scale: str, mean: str | None, std: str | None,
    resize: str, size_text: str | None, calib: str | None, max_auc_drop: float, eval_normal: str | None,
    eval_anomalous: str | None, no_tflite_fix: bool, as_json: bool,
) -> None:
    """Convert SRC to OpenVINO IR and prove it: FP32 must match the source (cosine >= 0.9999).

    \b
    SRC, detected from content and extension:
      model.keras            Keras 3
      model.h5               full Keras model (architecture + weights)
      model.json --weights weights.h5   legacy Keras 2.x pair (the original project)
      saved_model/           TensorFlow SavedModel folder
      graph.pb               frozen TensorFlow graph
      model.onnx             ONNX (needs the onnx package, not TensorFlow)
      model.tflite           TFLite (checked against tf.lite.Interpreter; weight-quantized
                             files get their weights rewritten as float32 first)

    \b
    The IR gets one NHWC input "image" (dynamic batch) and one output "features", with the
    preprocessing (colour order, scale, size) recorded inside, so `ovdoc fit`/`run` never guess.
    Each IR is reloaded from disk and run on probe images against the source framework; the
    output folder is replaced only when verification passes.

    \b
    Examples:
      ovdoc convert model.json --weights weights.h5 --out irmodels/doc
      ovdoc convert weights.onnx --out ir --probe faces/ --json
      ovdoc convert mobilenet.keras --out ir --scale tf
      ovdoc convert model.keras --out ir --precision INT8 --calib normal/
    """
    from ovdoc.host.convert import Int8Options, convert_source

    spec: dict = {"color": color, "resize": resize}
    preset_mean, preset_std = SCALE_PRESETS[scale]  # listed in RGB order
    if color == "BGR":
        preset_mean, preset_std = preset_mean[::-1], preset_std[::-1]
    spec["mean"] = _triple(mean, "--mean") or preset_mean
    spec["std"] = _triple(std, "--std") or preset_std
    if any(s == 0 for s in spec["std"]):
        raise click.BadParameter("std must not be 0", param_hint="--std")
    size = _size(size_text)
    if size:
        spec["height"], spec["width"] = size
    int8 = Int8Options(calib, eval_normal, eval_anomalous, max_auc_drop) if calib else None
    report = convert_source(
        src, out_dir, weights=weights, precisions=precisions, name=name, probe=probe,
        keep_frozen=keep_frozen, spec=spec, int8=int8, tflite_fix=not no_tflite_fix,
    )
    if as_json:
        click.echo(json.dumps(report, indent=2))
        return
    click.echo(f"{report['source']} ({report['format']}) -> {out_dir}")
    for precision, row in report["precisions"].items():
        click.echo(f"  {precision:<5} {row['path']}  cosine min {row['cosine_min']:.6f} "
                   f"median {row['cosine_median']:.6f}  max |diff| {row['max_abs_diff']:.3g}")
