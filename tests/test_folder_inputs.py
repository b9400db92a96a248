"""Folder inputs on the real magnetic-tile layout (X.jpg beside its mask X.png): masks are never fitted on
or scored as pictures, and the user is told how many files were left out."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ovdoc.runtime.images import expand_sources, split_masks


def ovdoc_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ovdoc", *args], capture_output=True, text=True,
                          encoding="utf-8", errors="replace", timeout=300)


@pytest.fixture(scope="module")
def seed_ir(seed_dir, tmp_path_factory) -> Path:
    from _runtime_helpers import build_seed_ir

    return build_seed_ir(seed_dir, tmp_path_factory.mktemp("seed") / "ir")


def test_split_masks_by_partner_and_by_name(tmp_path):
    names = ["a.jpg", "a.png", "b.png", "c_mask.png", "d.png", "d.tif", "e.mp4", "e.png", "f.jpg",
             "f_mask.bmp"]
    paths = [tmp_path / n for n in names]
    images, masks = split_masks(paths)
    assert [p.name for p in masks] == ["a.png", "c_mask.png", "d.tif", "f_mask.bmp"]
    assert [p.name for p in images] == ["a.jpg", "b.png", "d.png", "e.mp4", "e.png", "f.jpg"]


def test_glob_of_only_masks_keeps_what_was_asked_for(tmp_path):
    for name in ("x.jpg", "x.png", "y.jpg", "y.png"):
        (tmp_path / name).write_bytes(b"")
    assert [p.name for p in expand_sources(str(tmp_path))] == ["x.jpg", "y.jpg"]
    assert [p.name for p in expand_sources(str(tmp_path / "*"))] == ["x.jpg", "y.jpg"]
    # `*.png` names the masks on purpose: nothing beside them in the match, so nothing is left out
    assert [p.name for p in expand_sources(str(tmp_path / "*.png"))] == ["x.png", "y.png"]


def test_fit_on_the_real_magnetic_tile_folder_counts_tiles_not_masks(seed_ir, magnetic_tile_dir, tmp_path):
    free = magnetic_tile_dir / "MT_Free" / "Imgs"
    jpgs = sorted(free.glob("*.jpg"))
    assert len(jpgs) == 952 and len(sorted(free.glob("*.png"))) == 952  # the layout this test is about
    out = tmp_path / "mt.bundle"
    proc = ovdoc_cli("fit", str(seed_ir), "--normal", str(free), "--out", str(out))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "952 normal images" in proc.stdout + proc.stderr
    assert "left out 952 mask files" in proc.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["n_images"] == 952


def test_eval_on_real_defect_folders_scores_no_masks(seed_ir, magnetic_tile_dir, tmp_path):
    """Without --masks too: a defect folder scores its tiles only (the black masks would be 'anomalies')."""
    free = sorted((magnetic_tile_dir / "MT_Free" / "Imgs").glob("*.jpg"))
    train, normal = tmp_path / "train", tmp_path / "normal"
    train.mkdir()
    normal.mkdir()
    for jpg in free[:200]:
        shutil.copy(jpg, train)
    for jpg in free[200:230]:
        shutil.copy(jpg, normal)
        shutil.copy(jpg.with_suffix(".png"), normal)
    bundle = tmp_path / "b.bundle"
    assert ovdoc_cli("fit", str(seed_ir), "--normal", str(train), "--out", str(bundle)).returncode == 0
    blowhole = magnetic_tile_dir / "MT_Blowhole" / "Imgs"
    n_defects = len(sorted(blowhole.glob("*.jpg")))
    proc = ovdoc_cli("eval", str(bundle), "--normal", str(normal), "--anomalous", str(blowhole), "--json")
    assert proc.returncode == 0, proc.stderr[-2000:]
    m = json.loads(proc.stdout)
    assert m["n_normal"] == 30 and m["n_anomalous"] == n_defects
    assert "left out 30 mask files" in proc.stderr and f"left out {n_defects} mask files" in proc.stderr
