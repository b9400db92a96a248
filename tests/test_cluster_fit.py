"""`ovdoc fit --ray` / `eval --ray` against a real 3-node Ray cluster started here: the same bundle as a
local fit (same features within float tolerance; with --index flat the same index and threshold), the
same AUC, unreadable files skipped the same way; one clear line when Ray is missing or unreachable."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def cluster():
    from _cluster import local_cluster

    with local_cluster(workers=2) as (c, _):
        yield c


@pytest.fixture(scope="module")
def tiles(magnetic_tile_dir, tmp_path_factory) -> dict[str, Path]:
    """good/a, good/b: 16 normal tiles in two groups (held out by folder) + one corrupt file; test sets."""
    from _runtime_helpers import tile_files

    root = tmp_path_factory.mktemp("cluster-tiles")
    files = tile_files(magnetic_tile_dir)
    for i, f in enumerate(files[:16]):
        folder = root / "good" / ("a" if i < 8 else "b")
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copy(f, folder / f.name)
    (root / "good" / "b" / "broken.png").write_bytes(b"not an image")
    (root / "normal").mkdir()
    for f in files[16:26]:
        shutil.copy(f, root / "normal" / f.name)
    (root / "bad").mkdir()
    for f in sorted((magnetic_tile_dir / "MT_Crack").rglob("*.jpg"))[:10]:
        shutil.copy(f, root / "bad" / f.name)
    return root


def _cli(args: list[str], capsys) -> dict:
    from ovdoc.cli import main

    with pytest.raises(SystemExit) as info:
        main(args)
    captured = capsys.readouterr()
    out = captured.out
    assert info.value.code == 0, out + captured.err[-2000:]
    return json.loads(out)  # stdout is the JSON alone (--json), with Ray in the process


def test_fit_and_eval_on_cluster_match_local(cluster, tiles, tmp_path, capsys):
    from ovdoc.runtime.bundle import bundle_vectors, load_manifest

    fits = {}
    for name, extra in (("local", []), ("ray", ["--ray", cluster.address])):
        out = tmp_path / f"{name}.bundle"
        fits[name] = _cli(["fit", "--normal", str(tiles / "good"), "--out", str(out), "--index", "flat",
                           "--json", *extra], capsys)
    local, remote = fits["local"], fits["ray"]
    assert local["n_images"] == remote["n_images"] == 16
    assert local["unreadable_images"] == remote["unreadable_images"] == 1
    (ml, fl), (mr, fr) = load_manifest(tmp_path / "local.bundle"), load_manifest(tmp_path / "ray.bundle")
    vl, vr = bundle_vectors(fl, ml), bundle_vectors(fr, mr)
    assert vl.shape == vr.shape == (16, 1280)
    np.testing.assert_allclose(vr, vl, rtol=1e-5, atol=1e-5)
    assert mr["threshold"]["value"] == pytest.approx(ml["threshold"]["value"], rel=1e-5)
    assert mr["threshold"]["method"] == ml["threshold"]["method"]  # held out by folder, both
    assert mr["built_with"]["inference_precision"] == ml["built_with"]["inference_precision"]
    assert mr["normal_input"] == ml["normal_input"]

    evals = {}
    for name, extra in (("local", []), ("ray", ["--ray", cluster.address])):
        evals[name] = _cli(["eval", str(tmp_path / "local.bundle"), "--normal", str(tiles / "normal"),
                            "--anomalous", str(tiles / "bad"), "--json", *extra], capsys)
    assert evals["ray"]["n_normal"] == evals["local"]["n_normal"] == 10
    assert evals["ray"]["auc"] == pytest.approx(evals["local"]["auc"], abs=1e-9)
    assert evals["ray"]["tpr_at_threshold"] == evals["local"]["tpr_at_threshold"]


def test_patch_fit_on_cluster_matches_local(cluster, tiles, tmp_path):
    """Patch mode goes through the same seam (PCA fitting and patch features both extracted there)."""
    from ovdoc.cluster.connect import connect
    from ovdoc.cluster.extract import RayExtract
    from ovdoc.irmodels import resolve_model
    from ovdoc.runtime.bundle import fit_bundle

    kwargs = dict(mode="patch", size=(96, 64), progress=False)
    local = fit_bundle(resolve_model(None), tiles / "good", tmp_path / "local", **kwargs)
    remote = fit_bundle(resolve_model(None), tiles / "good", tmp_path / "ray",
                        extract=RayExtract(connect(cluster.address)), **kwargs)
    assert remote["patch"]["coreset"]["size"] == local["patch"]["coreset"]["size"]
    assert remote["threshold"]["value"] == pytest.approx(local["threshold"]["value"], rel=1e-4)


def _one_line(args: list[str], env: dict | None = None, prelude: str = "") -> str:
    code = f"{prelude}\nfrom ovdoc.cli import main\nmain({args!r})"
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=REPO,
                         env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})})
    assert run.returncode != 0
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), run.stderr
    return lines[0]


def test_unreachable_missing_and_auto_are_one_line(tmp_path, magnetic_tile_dir):
    normal = str(magnetic_tile_dir / "MT_Free")
    fit = ["fit", "--normal", normal, "--out", str(tmp_path / "b")]
    line = _one_line(fit + ["--ray", "127.0.0.1:9"])
    assert "no Ray cluster reachable" in line
    line = _one_line(["eval", str(tmp_path), "--normal", normal, "--anomalous", normal, "--ray", "nohost"])
    assert "HOST:PORT" in line
    line = _one_line(fit + ["--ray", "auto"], env={"RAY_ADDRESS": "", "RAY_TMPDIR": str(tmp_path)})
    assert "no Ray cluster found" in line
    line = _one_line(fit + ["--ray", "auto"], prelude="import sys; sys.modules['ray'] = None")
    assert "pip install 'ovdoc[cluster]'" in line
    assert not (tmp_path / "b").exists()
    from ovdoc.irmodels import demo_bundle, demo_stream

    config = tmp_path / "line.json"
    config.write_text(json.dumps({"bundle": str(demo_bundle()), "cameras": [{"source": str(demo_stream())}]}))
    run = ["run", "--config", str(config), "--ray", "127.0.0.1:9", "--headless"]
    assert "no frames come back" in _one_line(run + ["--save-video", str(tmp_path / "v.avi")])
    assert "no Ray cluster reachable" in _one_line(run)
