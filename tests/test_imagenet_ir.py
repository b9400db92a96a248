"""The ImageNet MobileNetV2 backbone shipped inside the package (ovdoc/irmodels/imagenet/).

It must load and run with the runtime alone (reshaped to any input size), keep its Keras layer names for
patch mode, compute what the Keras port of torchvision's weights computes, and make
`ovdoc fit --normal good/` work on a board without TensorFlow.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import openvino as ov
import pytest
from conftest import need_package

from ovdoc.errors import OvdocError
from ovdoc.irmodels import imagenet_backbone, imagenet_dir, resolve_model
from ovdoc.runtime.ir import compile_ir, read_ir

TAPS = {  # layer -> (channels, stride)
    "block_3_expand_relu": (144, 4),
    "block_6_expand_relu": (192, 8),
    "block_12_add": (96, 16),
    "block_13_expand_relu": (576, 16),
    "out_relu": (1280, 32),
}


def test_shipped_ir_loads_and_records_its_preprocessing():
    xml = imagenet_backbone()
    model, spec, _ = read_ir(xml)
    assert (spec.height, spec.width, spec.color, spec.resize) == (224, 224, "RGB", "center_crop")
    assert spec.mean == pytest.approx((123.675, 116.28, 103.53))
    assert spec.std == pytest.approx((58.395, 57.12, 57.375))
    assert model.output(0).get_partial_shape()[1].get_length() == 1280
    # FP16 weights keep the wheel small
    assert xml.with_suffix(".bin").stat().st_size < 8_000_000
    assert any(op.get_type_name() == "Convert" for op in model.get_ops())
    info = json.loads((imagenet_dir() / "imagenet.json").read_text(encoding="utf-8"))
    assert "BSD-3-Clause" in info["license"]
    assert info["verification"]["convert"]["FP32"]["cosine_min"] >= 0.9999
    assert all(c["cosine_min"] >= 0.999 for c in info["verification"]["shipped_ir_vs_keras"])


@pytest.mark.slow
@pytest.mark.parametrize("height,width", [(224, 224), (160, 320), (320, 160)])
def test_shipped_ir_reshapes_and_taps_layers_by_keras_name(height, width):
    """Non-square inputs work (model.reshape), and the tapped maps have the strides patch mode expects."""
    model, spec, _ = read_ir(imagenet_backbone())
    sized = dataclasses.replace(spec, height=height, width=width)
    coarse = np.random.default_rng(0).integers(0, 256, (6, 8, 3)).astype(np.float32)
    image = cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC).clip(0, 255).astype(np.uint8)
    got = compile_ir(model, sized, batch=1)(image[None])[0]
    assert got.shape == (1, 1280) and np.isfinite(got).all()
    tapped = ov.Core().read_model(imagenet_backbone())
    names = {op.get_friendly_name() for op in tapped.get_ops()}
    assert set(TAPS) <= names
    tapped.add_outputs(list(TAPS))  # by tensor name
    tapped.reshape({tapped.inputs[0]: [1, height, width, 3]})
    compiled = ov.Core().compile_model(tapped, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    outputs = compiled(sized.to_float(image[None]))
    for name, (channels, stride) in TAPS.items():
        assert outputs[compiled.output(name)].shape == (1, channels, height // stride, width // stride), name


def test_resolve_model(tmp_path, monkeypatch):
    assert resolve_model(None) == imagenet_backbone()
    assert resolve_model("imagenet") == imagenet_backbone()
    assert resolve_model("ir/FP32") == Path("ir/FP32")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "imagenet").mkdir()  # a real folder of that name wins
    assert resolve_model("imagenet") == Path("imagenet")
    monkeypatch.setattr("ovdoc.irmodels.backbones.ROOT", tmp_path / "nowhere")
    with pytest.raises(OvdocError, match="reinstall"):
        imagenet_backbone()


def _need_tensorflow() -> None:
    need_package("tensorflow", "TensorFlow (host side): cannot compare the shipped IR with Keras")


@pytest.mark.slow
def test_shipped_ir_matches_the_keras_port(mobilenet_pth, foolbox_data_dir):
    """The shipped FP16 IR against the Keras port of torchvision's weights, on real ImageNet photos,
    at a non-square size (160x320) the IR was not converted at."""
    _need_tensorflow()
    import keras

    from ovdoc.host.convert.verify import compare
    from ovdoc.host.train.backbone import offline_mobilenet_v2

    height, width = 160, 320
    base = offline_mobilenet_v2(96)
    net = keras.models.clone_model(base, input_tensors=keras.Input((height, width, 3)))
    net.set_weights(base.get_weights())
    files = sorted(foolbox_data_dir.glob("imagenet_*.jpg"))[:8]
    model, spec, _ = read_ir(imagenet_backbone())
    sized = dataclasses.replace(spec, height=height, width=width)
    batch = sized.prepare_batch([cv2.imread(str(f)) for f in files])
    want = np.asarray(net(sized.to_float(batch), training=False)).mean(axis=(1, 2))
    got = compile_ir(model, sized, batch=len(batch))(batch)[0]
    assert compare(want, got)["cosine_min"] >= 0.999


BLOCK = (
    "import sys\n"
    "for name in ('tensorflow', 'keras', 'tf_keras', 'nncf'):\n"
    "    sys.modules[name] = None  # any import of it now raises ImportError, as on a runtime-only board\n"
    "sys.argv = ['ovdoc', *sys.argv[1:]]\n"
    "from ovdoc.cli import main\n"
    "try:\n"
    "    main()\n"
    "finally:\n"
    "    loaded = [m for m, v in sys.modules.items() if v is not None and m.split('.')[0] in\n"
    "              ('tensorflow', 'keras', 'tf_keras', 'nncf')]\n"
    "    assert not loaded, loaded\n"
)


def _copy(files: list[Path], folder: Path) -> Path:
    folder.mkdir(parents=True)
    for f in files:
        shutil.copy(f, folder / f.name)
    return folder


@pytest.mark.slow
def test_fit_without_model_and_without_tensorflow(magnetic_tile_dir, tmp_path):
    """`ovdoc fit --normal good/` with MODEL omitted on a board without TensorFlow, then `ovdoc eval`.

    Global mode, cosine kNN (ImageNet features separate these tiles better by angle than by length).
    """
    free = sorted((magnetic_tile_dir / "MT_Free" / "Imgs").glob("*.jpg"))
    rng = np.random.default_rng(0)
    order = rng.permutation(len(free))
    train = _copy([free[i] for i in order[:150]], tmp_path / "train")
    normal = _copy([free[i] for i in order[150:190]], tmp_path / "normal")
    # Fray (worn edges): visible to global features; global ImageNet features miss most small defects
    # (validation AUC per type at 224 px: Fray 0.90, Blowhole 0.77, Break 0.74, Uneven 0.63, Crack 0.56)
    defects = sorted((magnetic_tile_dir / "MT_Fray" / "Imgs").glob("*.jpg"))[:20]
    anomalous = _copy(defects, tmp_path / "anomalous")
    bundle = tmp_path / "tiles.bundle"

    def ovdoc(*args: str) -> subprocess.CompletedProcess:
        cmd = [sys.executable, "-c", BLOCK, *args]
        return subprocess.run(cmd, capture_output=True, text=True,
                encoding="utf-8", errors="replace", timeout=600)

    fit = ovdoc("fit", "--normal", str(train), "--out", str(bundle), "--metric", "cosine", "--json")
    assert fit.returncode == 0, fit.stderr[-2000:]
    assert json.loads(fit.stdout)["feature_dim"] == 1280
    manifest = json.loads((bundle / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["preprocess"]["height"] == 224
    ev = ovdoc("eval", str(bundle), "--normal", str(normal), "--anomalous", str(anomalous), "--json")
    assert ev.returncode == 0, ev.stderr[-2000:]
    metrics = json.loads(ev.stdout)
    assert metrics["n_normal"] == 40 and metrics["n_anomalous"] == 20
    print(f"shipped backbone, global cosine kNN: AUC {metrics['auc']:.4f} (40 normal vs 20 Fray)")
    assert metrics["auc"] > 0.8, metrics
    named = ovdoc("fit", "imagenet", "--normal", str(train), "--out", str(tmp_path / "b2"), "--json")
    assert named.returncode == 0, named.stderr[-2000:]


@pytest.mark.slow
def test_converted_keras_models_keep_layer_names(tmp_path):
    """Any MobileNetV2-layout Keras model (e.g. a DOC-trained one) converts to an IR whose ReLU/Add nodes
    carry the Keras layer names, and each named node computes that layer's output (NCHW)."""
    _need_tensorflow()
    import keras

    from ovdoc.host.convert import convert_keras_model
    from ovdoc.host.train.backbone import build_mobilenet_v2, torchvision_spec

    base = build_mobilenet_v2(64, 0.35)
    rng = np.random.default_rng(0)
    for layer in base.layers:  # random BatchNorm statistics, so no layer is an identity
        if isinstance(layer, keras.layers.BatchNormalization):
            g, b, m, v = (w.shape for w in layer.get_weights())
            layer.set_weights([rng.uniform(0.5, 1.5, g), rng.normal(0, 0.2, b), rng.normal(0, 0.2, m),
                               rng.uniform(0.5, 1.5, v)])
    model = keras.Model(base.input, keras.layers.GlobalAveragePooling2D()(base.output))
    convert_keras_model(model, tmp_path / "ir", spec=torchvision_spec(64), precisions=("FP32",))
    ir = ov.Core().read_model(tmp_path / "ir" / "FP32" / "model.xml")
    taps = ["block_2_add", "block_6_expand_relu", "block_13_expand_relu", "out_relu"]
    ir.add_outputs(taps)
    compiled = ov.Core().compile_model(ir, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    x = rng.normal(0, 1, (2, 64, 64, 3)).astype(np.float32)
    got = compiled(x)
    want = keras.Model(base.input, [base.get_layer(n).output for n in taps])(x, training=False)
    for name, w in zip(taps, want, strict=True):
        np.testing.assert_allclose(got[compiled.output(name)].transpose(0, 2, 3, 1), np.asarray(w),
                                   rtol=1e-3, atol=1e-3, err_msg=name)
