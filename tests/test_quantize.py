"""INT8 quantization with NNCF: kept only when it keeps the detector's accuracy, refused otherwise.

Seed IR (real OpenVINO + NNCF), magnetic tiles as normal images, CIFAR-10 photos as anomalies.
"""

from __future__ import annotations

import pytest
from _runtime_helpers import build_seed_ir, cifar_images, tile_files

from ovdoc.errors import OvdocError, VerificationError

pytestmark = pytest.mark.slow  # INT8 quantization with NNCF


def cpu_has_vnni() -> bool:
    """OpenVINO's CPU INT8 kernels are exact only with VNNI (AVX512-VNNI, AVX-VNNI or AMX); on plain AVX2
    (older Celeron/Pentium boards) u8 x s8 products saturate and features move far more. The quantizer
    must then refuse where it cannot verify, so what the tests expect follows this, not one machine."""
    from ovdoc.runtime.bench.machine import read_cpuinfo

    return bool({"avx512_vnni", "avx_vnni", "amx_int8"} & set(read_cpuinfo().get("flags", [])))


@pytest.fixture(scope="module")
def qdata(tmp_path_factory, seed_dir, magnetic_tile_dir, cifar10_npz):
    root = tmp_path_factory.mktemp("quant")
    files = tile_files(magnetic_tile_dir)
    return {
        "root": root,
        "ir": build_seed_ir(seed_dir, root / "fp32"),
        "calib": files[:60],
        "eval_normal": files[60:90],
        "eval_anomalous": cifar_images(cifar10_npz, 30),  # photos: anomalies for a tile inspector
    }


@pytest.fixture(scope="module")
def verified(qdata):
    """The success path: INT8 measured on labelled data and within the (test-sized) bound."""
    from ovdoc.host.quantize import quantize_int8

    out = qdata["root"] / "int8" / "model.xml"
    report = quantize_int8(
        qdata["ir"],
        out,
        calib_sources=qdata["calib"],
        eval_normal=qdata["eval_normal"],
        eval_anomalous=qdata["eval_anomalous"],
        max_auc_drop=0.05,
        accuracy_control=False,
        progress=False,
    )
    return report, out


def test_verified_int8_keeps_auc_and_conventions(verified, qdata):
    import openvino as ov

    from ovdoc.runtime.ir import INPUT_NAME, OUTPUT_NAME, read_ir

    report, out = verified
    assert report["accuracy_verified"] is True
    assert report["auc_fp32"] - report["auc_int8"] == pytest.approx(report["auc_drop"])
    assert report["auc_drop"] <= 0.05
    assert 0.5 < report["auc_fp32"] <= 1.0
    # cosine over normal AND anomalous eval images: photos lie outside the tiles' calibration ranges
    assert 0.5 < report["cosine_to_fp32_min"] <= report["cosine_to_fp32_median"] <= 1.0 + 1e-6
    if cpu_has_vnni():
        assert report["cosine_to_fp32_median"] > 0.95
    assert report["n_eval_normal"] == 30 and report["n_eval_anomalous"] == 30
    model, spec, _ = read_ir(out)
    _, spec32, _ = read_ir(qdata["ir"])
    assert spec == spec32  # preprocessing survives quantization
    assert model.inputs[0].get_any_name() == INPUT_NAME and model.outputs[0].get_any_name() == OUTPUT_NAME
    ops = [op.get_type_name() for op in model.get_ops()]
    assert ops.count("FakeQuantize") == report["fake_quantize_ops"] > 0
    # weights stay int8-ready (not compressed to FP16 by save_model's default)
    assert not any(
        op.get_type_name() == "Constant" and op.get_output_element_type(0) == ov.Type.f16
        for op in model.get_ops()
    )


def test_int8_scores_through_the_runtime(verified, qdata, tmp_path):
    """The INT8 IR is a normal ovdoc IR: fit a bundle with it and score."""
    from ovdoc.runtime.bundle import fit_bundle
    from ovdoc.runtime.detector import Detector

    _, out = verified
    fit_bundle(out, qdata["calib"][:20], tmp_path / "b", progress=False)
    det = Detector.load(tmp_path / "b")
    assert det.manifest_["model"]["weight_precision"] == "INT8"
    scores = det.score_samples(qdata["eval_anomalous"][:4])
    assert scores.shape == (4,) and (scores > 0).all()


def test_refuses_when_drop_exceeds_bound_and_writes_nothing(qdata):
    from ovdoc.host.quantize import quantize_int8

    out = qdata["root"] / "refused" / "model.xml"
    with pytest.raises(VerificationError) as err:
        quantize_int8(
            qdata["ir"],
            out,
            calib_sources=qdata["calib"][:20],
            eval_normal=qdata["eval_normal"],
            eval_anomalous=qdata["eval_anomalous"],
            max_auc_drop=-1.0,
            accuracy_control=False,
            progress=False,
        )
    message = str(err.value)
    assert "AUC" in message and "--max-auc-drop -1.0" in message and "nothing written" in message
    assert not out.exists() and not out.with_suffix(".bin").exists()
    assert not list(out.parent.glob("*")) if out.parent.exists() else True


def test_without_eval_sets_reports_cosine_and_warns(qdata, tmp_path, capsys):
    from ovdoc.host.quantize import quantize_int8

    out = tmp_path / "int8.xml"
    if not cpu_has_vnni():  # features move too much to ship without labelled data: refused, nothing written
        with pytest.raises(VerificationError, match="moves the features too much.*nothing written"):
            quantize_int8(qdata["ir"], out, calib_sources=qdata["calib"], progress=True)
        assert not out.exists() and not out.with_suffix(".bin").exists()
        return
    report = quantize_int8(qdata["ir"], out, calib_sources=qdata["calib"], progress=True)
    assert report["accuracy_verified"] is False and "unverified" in report["warning"]
    assert "auc_int8" not in report
    assert report["cosine_to_fp32_median"] >= 0.98 and report["cosine_to_fp32_min"] >= 0.90
    assert "unverified" in capsys.readouterr().err
    assert out.is_file() and out.with_suffix(".bin").is_file()


def test_bad_inputs_are_one_line(qdata, tmp_path):
    from ovdoc.host.quantize import quantize_int8

    with pytest.raises(OvdocError, match="both --eval-normal and --eval-anomalous"):
        quantize_int8(
            qdata["ir"], tmp_path / "a.xml", calib_sources=qdata["calib"], eval_normal=qdata["eval_normal"]
        )
    with pytest.raises(OvdocError, match="at least 10"):
        quantize_int8(qdata["ir"], tmp_path / "a.xml", calib_sources=qdata["calib"][:3])
    with pytest.raises(OvdocError, match="model not found"):
        quantize_int8(tmp_path / "none.xml", tmp_path / "a.xml", calib_sources=qdata["calib"])
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(OvdocError, match="no images"):
        quantize_int8(qdata["ir"], tmp_path / "a.xml", calib_sources=empty)


def test_already_quantized_is_refused(verified, tmp_path, qdata):
    from ovdoc.host.quantize import quantize_int8

    _, out = verified
    with pytest.raises(OvdocError, match="already quantized"):
        quantize_int8(out, tmp_path / "b.xml", calib_sources=qdata["calib"])
