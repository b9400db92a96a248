"""`ovdoc export`: a bundle's feature model for phones (TFLite, ONNX, CoreML) plus scoring.json."""

from __future__ import annotations

import json

import click

FORMATS = ("tflite", "onnx", "coreml")  # ovdoc.host.export.FORMATS, without importing it for --help


@click.command()
@click.argument("bundle", type=click.Path())
@click.option("--to", "to", required=True, metavar="|".join(FORMATS),
              help="tflite (Android; FP32 + FP16 + dynamic-range INT8 files), onnx, or coreml (iOS).")
@click.option("--out", "out", required=True, type=click.Path(file_okay=False), help="Folder to write.")
@click.option("--json", "as_json", is_flag=True, help="Print the report (scoring.json) on stdout.")
def export(bundle: str, to: str, out: str, as_json: bool) -> None:
    """Export BUNDLE's feature model and what an app needs to score with it.

    \b
    DIR gets the model file(s) and scoring.json: preprocessing, the scorer (the mean vector inline for
    mean-cosine, or normal_vectors.f32 for kNN), the threshold, and how each file was checked. TFLite and
    ONNX files are run on probe images and compared with the bundle's IR (FP32: cosine >= 0.9999 or
    nothing is written). CoreML cannot run on Linux: its package is parsed and its names, shapes,
    preprocessing and operations checked, and the report says numeric_verified: false.
    The model is rebuilt from its Keras source: the model.keras `ovdoc train` keeps beside its bundle, or
    the shipped ImageNet backbone. Patch-mode and LOF bundles do not export.
    """
    import logging
    import os

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TF's C++ info lines would bury the report
    logging.getLogger("coremltools").setLevel(logging.ERROR)  # "Failed to load ...": no macOS runtime here
    import warnings

    # the check runs TensorFlow's own interpreter on purpose (the reference the phone's LiteRT matches)
    warnings.filterwarnings("ignore", message=r"(?s).*tf\.lite\.Interpreter is deprecated")
    from ovdoc.log import native_stderr_dropped

    with native_stderr_dropped():  # TensorFlow's and CUDA's own start-up lines bypass every log level
        from ovdoc.host.export import export_bundle
        from ovdoc.host.export.api import check_format

        check_format(to.lower())
        report = export_bundle(bundle, to.lower(), out)
    if as_json:
        click.echo(json.dumps(report, indent=2, sort_keys=True))
    for name, check in report["verification"].items():
        if check.get("numeric_verified") is False:
            click.echo(f"{name}: spec parsed; input {check['input']['name']} {check['input']['shape']}, "
                       f"output {check['output']['shape']}, {len(check['ops'])} op types all in "
                       f"{check['ops_supported_by']}; numeric_verified: false (CoreML runs only on macOS: "
                       "compare its features with the IR there)", err=True)
        else:
            state = "verified" if check["numeric_verified"] else "reported"
            against = ", ".join(f"{k} {v['cosine_min']:.6f}" for k, v in check["against"].items())
            click.echo(f"{name}: cosine min to the {against} ({check['run_by']}): {state}", err=True)
    verified = str(report["numeric_verified"]).lower()
    click.echo(f"export {out}: {report['scorer']['kind']} scorer, threshold "
               f"{report['threshold']['value']:.4g}; numeric_verified: {verified}", err=True)
