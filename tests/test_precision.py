"""`ovdoc fit --precision`: the choice, the record in the bundle, and scoring in the recorded precision."""

from __future__ import annotations

import json

import numpy as np
import openvino as ov
import pytest
from _cli import ovdoc_cli

from ovdoc.errors import OvdocError
from ovdoc.runtime.precision import resolve_precision

AMX = {"flags": ["avx512f", "avx512_bf16", "amx_tile", "amx_bf16"]}
NO_AMX = {"flags": ["avx2", "avx512f", "avx512_bf16"]}


def test_auto_is_bf16_only_for_a_shipped_backbone_on_a_cpu_with_amx(tmp_path):
    from ovdoc.irmodels import imagenet_backbone

    shipped = imagenet_backbone()
    assert resolve_precision("auto", "CPU", model_xml=shipped, cpuinfo=AMX) == "bf16"
    assert resolve_precision("auto", "CPU", model_xml=shipped, cpuinfo=NO_AMX) == "f32"
    assert resolve_precision("auto", "CPU", model_xml=shipped, cpuinfo={}) == "f32"  # no cpuinfo: never guess
    assert resolve_precision("auto", "GPU", model_xml=shipped, cpuinfo=AMX) == "f32"
    assert resolve_precision("auto", "CPU", model_xml=tmp_path / "own.xml", cpuinfo=AMX) == "f32"  # your IR
    assert resolve_precision("auto", "CPU", cpuinfo=AMX) == "f32"
    assert resolve_precision("f32", "CPU", model_xml=shipped, cpuinfo=AMX) == "f32"
    assert resolve_precision("BF16", "CPU", cpuinfo=NO_AMX) == "bf16"
    with pytest.raises(OvdocError, match="choose one of auto, f32, bf16"):
        resolve_precision("fp8", "CPU")


def _native_bf16() -> bool:
    return "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


def test_a_bf16_bundle_records_and_scores_in_bf16_and_append_keeps_it(streams, tmp_path):
    """The bundle says what its features were computed in; Detector.load compiles in it; --append adds
    features in it too (a bf16 index with f32 features added would hold two kinds of vector)."""
    from ovdoc.runtime.bundle import bundle_vectors, load_manifest
    from ovdoc.runtime.detector import Detector
    from ovdoc.runtime.images import iter_video_frames

    expected = "bf16" if _native_bf16() else "f32"  # a CPU without native bf16 computes in f32 and says so
    out = tmp_path / "b16"
    proc = ovdoc_cli("fit", str(streams["ir"]), "--normal", str(streams["train"]), "--out", str(out),
                     "--index", "flat", "--precision", "bf16", "--json", timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["inference_precision"] == expected
    det = Detector.load(out)
    assert det.extractor_.inference_precision == expected
    frames = list(iter_video_frames(streams["normal"]))[:8]
    f16 = det.features(frames)
    if expected == "bf16":  # the features really were computed in bf16: the f32 ones differ
        from ovdoc.runtime.features import FeatureExtractor
        from ovdoc.runtime.ir import read_ir

        model, spec, _ = read_ir(out / det.manifest_["model"]["file"])
        f32 = FeatureExtractor(model, det.preprocess, inference_precision="f32").extract(frames,
                                                                                         progress=False)
        drift = np.linalg.norm(f16 - f32, axis=1) / np.linalg.norm(f32, axis=1)
        assert float(np.median(drift)) > 1e-3, drift  # (the seed model's move ~0.4: why f32 is pinned)
    proc = ovdoc_cli("fit", "--append", str(out), "--normal", str(streams["normal"]), "--out",
                     str(tmp_path / "appended"), timeout=300)
    assert proc.returncode == 0, proc.stderr
    manifest, folder = load_manifest(tmp_path / "appended")
    assert manifest["built_with"]["inference_precision"] == expected
    added = bundle_vectors(folder, manifest)[-60:][:8]  # the appended clip's first frames, in the index
    np.testing.assert_allclose(added, f16, rtol=1e-5, atol=1e-5)


def test_precision_with_append_is_one_line(bundle, tmp_path):
    proc = ovdoc_cli("fit", "--append", str(bundle), "--normal", str(tmp_path), "--precision", "bf16")
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].endswith("bundle's own precision: no --precision")
