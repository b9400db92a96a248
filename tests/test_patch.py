"""Patch mode on real magnetic tiles: the IR built in-graph, the greedy coreset, maps, bundles, the CLI."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from ovdoc.errors import OvdocError

N_BANK = 150  # normal tiles the module's bundle is fitted on (at 48 the per-position statistics are noisy)


def _tiles(folder: Path) -> list[Path]:
    return sorted(folder.glob("Imgs/*.jpg"))


@pytest.fixture(scope="module")
def tiles(magnetic_tile_dir: Path) -> dict:
    free = _tiles(magnetic_tile_dir / "MT_Free")
    order = np.random.default_rng(0).permutation(len(free))
    return {
        "train": [free[i] for i in order[:N_BANK]],
        "held_out": [free[i] for i in order[N_BANK : N_BANK + 12]],
        "defects": {d.name: _tiles(d) for d in sorted(magnetic_tile_dir.glob("MT_*")) if d.name != "MT_Free"},
    }


@pytest.fixture(scope="module")
def backbone() -> Path:
    from ovdoc.irmodels import imagenet_backbone

    try:
        return imagenet_backbone()
    except OvdocError as exc:
        pytest.fail(str(exc))


@pytest.fixture(scope="module")
def patch_bundle(tmp_path_factory, tiles: dict, backbone: Path) -> Path:
    from ovdoc.runtime.bundle import FitConfig, fit_bundle
    from ovdoc.runtime.patch import PatchConfig

    out = tmp_path_factory.mktemp("patch") / "tiles.bundle"
    fit_bundle(
        backbone,
        tiles["train"],
        out,
        FitConfig(mode="patch", patch=PatchConfig(coreset=20000)),  # greedy from 38,400; ivf index
        progress=False,
    )
    return out


@pytest.fixture(scope="module")
def det(patch_bundle: Path):
    from ovdoc.runtime.detector import Detector

    return Detector.load(patch_bundle)


# --- the coreset --------------------------------------------------------------------------------
def _covering_radius(x: np.ndarray, centres: np.ndarray) -> float:
    d = ((x[:, None, :] - centres[None, :, :]) ** 2).sum(-1)
    return float(np.sqrt(d.min(axis=1).max()))


def test_greedy_coreset_is_k_center_and_keeps_the_outlier():
    from ovdoc.runtime.patch import greedy_coreset

    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(0, 1, (2000, 16)), rng.normal(0, 0.1, (1, 16)) + 25.0]).astype(np.float32)
    picks = greedy_coreset(x, 50, projection_dim=0, seed=0)
    assert len(set(picks.tolist())) == 50
    assert 2000 in picks.tolist()[:2]  # the isolated point is the farthest from any start: picked at once
    greedy_r = _covering_radius(x, x[picks])
    random_r = min(_covering_radius(x, x[rng.choice(len(x), 50, replace=False)]) for _ in range(5))
    assert greedy_r < random_r
    # each pick is the point farthest from the picks before it (the definition of greedy k-center)
    for i in (1, 10, 40):
        d = ((x[:, None, :] - x[picks[:i]][None]) ** 2).sum(-1).min(axis=1)
        assert d[picks[i]] == pytest.approx(d.max(), rel=1e-4)
    # the low-dimensional projection used for speed still keeps the outlier and beats random
    projected = greedy_coreset(x, 50, projection_dim=8, seed=0)
    assert 2000 in projected.tolist()
    assert _covering_radius(x, x[projected]) < random_r


def _plain_greedy(z: np.ndarray, n: int, start: int) -> list[int]:
    """The textbook loop: every row's distance to every new pick (norms summed as greedy_coreset does)."""
    sq = np.einsum("ij,ij->i", z, z)
    picks = [start]
    best = np.maximum(sq - 2.0 * (z @ z[start]) + sq[start], 0.0)
    best[start] = -1.0
    for _ in range(n - 1):
        j = int(np.argmax(best))
        picks.append(j)
        best = np.minimum(best, sq - 2.0 * (z @ z[j]) + sq[j])
        best[j] = -1.0
    return picks


@pytest.mark.parametrize("data", ["isotropic", "clustered", "duplicates"])
def test_greedy_coreset_picks_what_the_plain_loop_picks(data):
    """greedy_coreset is exact greedy k-center: the textbook loop's picks, in its order, on clustered data
    (like real patches), isotropic noise and exact ties (a faster variant must keep this)."""
    from ovdoc.runtime.patch import greedy_coreset, projection_matrix

    rng = np.random.default_rng(3)
    if data == "isotropic":
        x = rng.normal(0, 1, (3000, 48))
    elif data == "clustered":
        centres = rng.normal(0, 10, (40, 48))
        x = centres[rng.integers(40, size=4000)] + rng.normal(0, 0.5, (4000, 48))
    else:
        x = np.repeat(rng.normal(0, 1, (300, 48)), 5, axis=0)
    x = x.astype(np.float32)
    z = np.ascontiguousarray(x @ projection_matrix(48, 16, 1), np.float32)  # seed + 1, as greedy_coreset
    start = int(np.random.default_rng(0).integers(len(z)))
    n = 250
    assert greedy_coreset(x, n, projection_dim=16, seed=0).tolist() == _plain_greedy(z, n, start)


def test_coreset_size_and_parse():
    from ovdoc.runtime.patch import PatchConfig, coreset_size, parse_coreset

    assert parse_coreset("4096") == 4096 and parse_coreset("0.1") == 0.1 and parse_coreset("10%") == 0.1
    assert coreset_size(PatchConfig(coreset=0.1), 5000) == 500
    assert coreset_size(PatchConfig(coreset=9000), 5000) == 5000
    with pytest.raises(OvdocError):
        parse_coreset("lots")
    with pytest.raises(OvdocError):
        PatchConfig(coreset=1.5)


@pytest.mark.slow
def test_inverted_file_bank_finds_the_same_nearest_patches_as_exact_search(tmp_path: Path):
    from ovdoc.runtime.patch import IVF_MIN_BANK, PatchScorer

    rng = np.random.default_rng(0)
    centres = rng.normal(0, 4, (64, 16))
    bank = (centres[rng.integers(0, 64, 20000)] + rng.normal(0, 1, (20000, 16))).astype(np.float32)
    queries = (centres[rng.integers(0, 64, 2 * 4 * 5)] + rng.normal(0, 1, (40, 16))).astype(np.float32)
    exact = PatchScorer((4, 5), 16, index="flat").fit(bank)
    auto = PatchScorer((4, 5), 16, index="auto", nprobe=8).fit(bank)
    assert len(bank) >= IVF_MIN_BANK and auto.index == "ivf" and exact.index == "flat"
    assert auto.describe()["nlist"] == 128 and auto.describe()["nprobe"] == 8
    a, b = exact.raw_maps(queries), auto.raw_maps(queries)
    assert (b >= a - 1e-4).all()  # an approximate search never finds a nearer patch than exact search
    assert np.mean(np.isclose(a, b, rtol=1e-4)) >= 0.9  # and finds the same nearest patch for most
    small = PatchScorer((4, 5), 16, index="ivf").fit(bank[:1000])  # ~128 per list, >= 39 to train each
    assert small.index_.nlist == 8 and np.isfinite(small.raw_maps(queries)).all()
    assert PatchScorer((4, 5), 16, index="ivf").fit(bank[:20]).index_.nlist == 1
    assert PatchScorer((4, 5), 16).fit(bank[: IVF_MIN_BANK - 1]).index == "flat"


# --- the patch IR ------------------------------------------------------------------------------
@pytest.mark.slow
def test_patch_ir_is_built_in_graph_from_layer_names(backbone: Path):
    import openvino as ov

    from ovdoc.runtime.ir import compile_ir, read_ir
    from ovdoc.runtime.patch import PatchConfig, build_patch_model

    model, spec, _ = read_ir(backbone)
    patch, record = build_patch_model(model, 256, 192, PatchConfig(dim=64, reduce="project"))
    assert record["grid"] == [32, 24] and record["dim"] == 64 and record["layer_channels"] == [192, 384]
    types = {op.get_type_name() for op in patch.get_ops()}
    assert {"AvgPool", "Interpolate", "Concat", "MatMul"} <= types
    assert "ReduceMean" not in types  # the global pooling head is not part of the patch IR
    import dataclasses

    sized = dataclasses.replace(spec, height=256, width=192, resize="stretch")
    out = compile_ir(patch, sized, batch=2)(np.zeros((2, 256, 192, 3), np.uint8))[0]
    assert out.shape == (2, 32, 24, 64) and np.isfinite(out).all()
    with pytest.raises(OvdocError, match="no layer named"):
        build_patch_model(model, 256, 192, PatchConfig(layers=("block_99_nothing",)))
    assert isinstance(patch, ov.Model)
    # reduce="pca" without a fitted matrix: every channel (what the PCA is fitted on)
    full, full_record = build_patch_model(model, 256, 192, PatchConfig())
    assert full_record["dim"] == 576 and full_record["reduce"] == "none"
    assert "MatMul" not in {op.get_type_name() for op in full.get_ops()}


def test_pca_matrix_keeps_the_directions_normal_patches_vary_in():
    from ovdoc.runtime.patch import pca_matrix, projection_matrix

    rng = np.random.default_rng(0)
    basis = np.linalg.qr(rng.normal(size=(40, 40)))[0]
    scales = np.array([10.0, 5.0, 2.0] + [0.1] * 37)
    x = (rng.normal(size=(5000, 40)) * scales) @ basis.T + 3.0  # a shared offset does not matter
    m = pca_matrix(x, 3)
    assert m.shape == (40, 3) and m.dtype == np.float32
    np.testing.assert_allclose(m.T @ m, np.eye(3), atol=1e-5)  # orthonormal axes
    for i in range(3):  # the three strong directions, in order (up to sign)
        assert abs(float(m[:, i] @ basis[:, i])) > 0.99
    np.testing.assert_array_equal(m, pca_matrix(x, 3))  # deterministic, signs included
    # it keeps the pairwise distances far better than a random matrix of the same size
    a, b = x[:200] - 3.0, x[200:400] - 3.0
    true = np.linalg.norm(a - b, axis=1)
    pca_err = np.abs(np.linalg.norm((a - b) @ m, axis=1) - true).mean()
    rnd_err = np.abs(np.linalg.norm((a - b) @ projection_matrix(40, 3, 0), axis=1) - true).mean()
    assert pca_err < 0.5 * rnd_err
    with pytest.raises(OvdocError):
        pca_matrix(x[:1], 3)


def test_default_size_follows_the_aspect_ratio():
    from ovdoc.runtime.bundle import default_patch_size, parse_size

    assert default_patch_size([0.86, 0.85, 0.9]) == (128, 160)  # tall tiles: W x H
    assert default_patch_size([640 / 480]) == (160, 128)  # a 4:3 camera
    assert default_patch_size([0.86], area=224 * 192) == (192, 224)  # the area is a parameter
    assert parse_size("320x240") == (320, 240) and parse_size("224") == (224, 224)
    with pytest.raises(OvdocError):
        parse_size("big")


# --- maps on real tiles ------------------------------------------------------------------------
@pytest.mark.slow
def test_defect_hottest_region_lies_inside_the_mask(det, tiles: dict):
    """Each defect tile's hottest point (Detector.hottest_points) lies on its mask (one patch of
    tolerance), far above chance.

    8 tiles of each of the 5 defect types; measured 30/40 with the defaults (the area map's own maximum,
    smoothed for pixel AUROC: 22/40). Chance = the share of the tile the tolerated mask covers (a random
    hottest point would hit that often): 0.20 measured.
    """
    hits, cover = [], []
    for kind in ("MT_Blowhole", "MT_Break", "MT_Crack", "MT_Fray", "MT_Uneven"):
        for path in tiles["defects"][kind][:8]:
            image = cv2.imread(str(path))
            mask = cv2.imread(str(path.with_suffix(".png")), cv2.IMREAD_GRAYSCALE) > 127
            amap = det.anomaly_map([image])[0]
            assert amap.shape == image.shape[:2] and amap.dtype == np.float32
            x, y = det.hottest_points([image])[0]
            # one patch of tolerance: the grid has stride 8 at model scale
            scale = max(image.shape[0] / det.preprocess.height, image.shape[1] / det.preprocess.width)
            tol = int(np.ceil(8 * scale))
            near = cv2.dilate(mask.astype(np.uint8), np.ones((2 * tol + 1,) * 2, np.uint8)) > 0
            hits.append(bool(near[y, x]))
            cover.append(float(near.mean()))
    rate, chance = float(np.mean(hits)), float(np.mean(cover))
    assert rate >= 0.6 and rate > 3 * chance, f"hottest point on the defect for {sum(hits)}/{len(hits)} tiles"


@pytest.mark.slow
def test_normal_held_out_map_stays_below_threshold(det, tiles: dict):
    images = [cv2.imread(str(p)) for p in tiles["held_out"]]
    maps = det.anomaly_map(images)
    below = [float(m.max()) < det.map_threshold_ for m in maps]
    assert np.mean(below) >= 0.9, f"{sum(below)}/{len(below)} normal maps below the map threshold"
    # and the defects the test above localises score above the image threshold more often than normals
    scores = det.score_samples(images)
    breaks = det.score_samples([cv2.imread(str(p)) for p in tiles["defects"]["MT_Break"][:12]])
    assert np.median(breaks) > np.median(scores)


@pytest.mark.slow
def test_live_loop_api_gives_maps(det, tiles: dict):
    """submit -> callback(outputs) -> score_outputs: the same scores as score_samples, plus the maps."""
    images = [cv2.imread(str(p)) for p in tiles["held_out"][:3]]
    got = []
    det.set_callback(lambda outputs, userdata: got.append(det.score_outputs(outputs)))
    det.submit(np.stack([det.prepare(im) for im in images]))
    det.wait()
    scored = got[0]
    h, w = det.manifest_["patch"]["grid"]
    assert scored.maps.shape == (3, h, w)
    np.testing.assert_allclose(scored.scores, det.score_samples(images), rtol=1e-5)
    frame = det.map_to_frame(scored.maps[0], (480, 640))
    assert frame.shape == (480, 640)


# --- bundles -----------------------------------------------------------------------------------
@pytest.mark.slow
def test_patch_bundle_round_trips(patch_bundle: Path, det, tiles: dict):
    from ovdoc.runtime.detector import Detector

    manifest = json.loads((patch_bundle / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["mode"] == "patch" and manifest["format_version"] == 2
    p = manifest["patch"]
    assert p["layers"] == ["block_6_expand_relu", "block_10_expand_relu"] and p["coreset"]["size"] == 20000
    assert p["coreset"]["method"] == "greedy k-center" and p["bank_bytes"] <= 50e6
    assert p["reduce"] == "pca" and p["dim"] == 64 and p["pca_images"] == 64
    assert manifest["scorer"]["index"] == "ivf" and manifest["scorer"]["nprobe"] == 8
    assert p["bank_bytes"] == (patch_bundle / "index.faiss").stat().st_size
    assert "held-out" in manifest["threshold"]["method"]
    assert not any(f.suffix in (".pkl", ".pickle") for f in patch_bundle.iterdir())
    images = [cv2.imread(str(p)) for p in tiles["held_out"][:4]]
    again = Detector.load(patch_bundle)
    assert again.mode_ == "patch" and again.threshold_ == det.threshold_
    np.testing.assert_array_equal(again.score_samples(images), det.score_samples(images))


def _rehash(folder: Path, manifest: dict) -> None:
    from ovdoc.runtime.bundle import SELF_HASH_KEY, _canonical, sha256_file

    manifest["files"] = {n: sha256_file(folder / n) for n in manifest["files"]}
    manifest[SELF_HASH_KEY] = hashlib.sha256(_canonical(manifest)).hexdigest()
    (folder / "manifest.json").write_text(json.dumps(manifest))


def _one_line_refusal(folder: Path, match: str) -> None:
    from ovdoc.runtime.detector import Detector

    with pytest.raises(OvdocError, match=match) as info:
        Detector.load(folder)
    assert "\n" not in str(info.value)


@pytest.mark.slow
def test_corrupt_or_mismatched_patch_bundles_are_refused(patch_bundle: Path, tmp_path: Path):
    import faiss

    corrupt = tmp_path / "corrupt"
    shutil.copytree(patch_bundle, corrupt)
    data = bytearray((corrupt / "index.faiss").read_bytes())
    data[-10] ^= 0xFF
    (corrupt / "index.faiss").write_bytes(bytes(data))
    _one_line_refusal(corrupt, "index.faiss does not match")

    grid = tmp_path / "grid"  # a manifest that disagrees with its IR, hashes made consistent by hand
    shutil.copytree(patch_bundle, grid)
    manifest = json.loads((grid / "manifest.json").read_text(encoding="utf-8"))
    manifest["patch"]["grid"] = [manifest["patch"]["grid"][0] + 1, manifest["patch"]["grid"][1]]
    _rehash(grid, manifest)
    _one_line_refusal(grid, "patch grid")

    dim = tmp_path / "dim"  # an index of other-sized patches
    shutil.copytree(patch_bundle, dim)
    index = faiss.IndexFlatL2(32)
    index.add(np.zeros((10, 32), np.float32))
    faiss.write_index(index, str(dim / "index.faiss"))
    _rehash(dim, json.loads((dim / "manifest.json").read_text(encoding="utf-8")))
    _one_line_refusal(dim, "32-d patches")

    kind = tmp_path / "kind"  # the manifest says exact search, the file is an inverted-file index
    shutil.copytree(patch_bundle, kind)
    manifest = json.loads((kind / "manifest.json").read_text(encoding="utf-8"))
    manifest["scorer"]["index"] = "flat"
    _rehash(kind, manifest)
    _one_line_refusal(kind, "inverted-file")

    nopatch = tmp_path / "nopatch"
    shutil.copytree(patch_bundle, nopatch)
    manifest = json.loads((nopatch / "manifest.json").read_text(encoding="utf-8"))
    del manifest["patch"]
    _rehash(nopatch, manifest)
    _one_line_refusal(nopatch, "patch section")

    future = tmp_path / "future"
    shutil.copytree(patch_bundle, future)
    manifest = json.loads((future / "manifest.json").read_text(encoding="utf-8"))
    manifest["format_version"] = 99
    _rehash(future, manifest)
    _one_line_refusal(future, "format version 99")


def test_version_1_global_bundle_still_loads():
    from ovdoc.irmodels import demo_bundle
    from ovdoc.runtime.detector import Detector

    manifest = json.loads((demo_bundle() / "manifest.json").read_text(encoding="utf-8"))
    det = Detector.load(demo_bundle())
    assert det.mode_ == manifest.get("mode", "global") == "global"
    with pytest.raises(OvdocError, match="patch-mode bundle"):
        det.anomaly_map([np.zeros((96, 96, 3), np.uint8)])


@pytest.mark.slow
def test_fit_cli_patch_mode(tmp_path: Path, tiles: dict):
    from click.testing import CliRunner

    from ovdoc.cli import cli

    normal = tmp_path / "normal"
    normal.mkdir()
    for p in tiles["train"][:12]:
        shutil.copy(p, normal / p.name)
    out = tmp_path / "cli.bundle"
    result = CliRunner().invoke(
        cli,
        [
            "fit",
            "--normal",
            str(normal),
            "--out",
            str(out),
            "--mode",
            "patch",
            "--size",
            "192x224",
            "--coreset",
            "0.05",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    info = json.loads(result.output[result.output.index("{") :])
    assert (
        info["mode"] == "patch" and info["patch"]["size"] == [192, 224] and info["patch"]["grid"] == [28, 24]
    )
    bad = CliRunner().invoke(
        cli, ["fit", "--normal", str(normal), "--out", str(tmp_path / "x"), "--dim", "64"]
    )
    assert isinstance(bad.exception, OvdocError) and str(bad.exception) == "--dim needs --mode patch"
    for args, message in (
        (["--mode", "patch", "--index", "hnsw"], "flat or ivf"),
        (["--index", "ivf"], "for patch bundles"),
        (["--reduce", "pca"], "--reduce needs --mode patch"),
        # a global fit ignored these before: they only steer the patch bank
        (["--coreset", "4096"], "--coreset needs --mode patch"),
        (["--seed", "3", "--topk", "5"], "--seed and --topk need --mode patch"),
    ):
        bad = CliRunner().invoke(cli, ["fit", "--normal", str(normal), "--out", str(tmp_path / "x"), *args])
        assert isinstance(bad.exception, OvdocError) and message in str(bad.exception), args


@pytest.mark.slow
def test_cross_fit_calibration_scores_every_bank_image_out_of_fold(tmp_path: Path, tiles: dict,
                                                                    backbone: Path):
    """Cross-fit (the default for parts): the same bank, a threshold from the held-out images plus every bank
    image scored against the bank less its fold's patches; those scores are held-out-like (well above an
    image's score against a bank holding its own patches). `held-out` keeps the held-out images only. A
    global fit refuses both in one line."""
    from ovdoc.runtime.bundle import FitConfig, fit_bundle
    from ovdoc.runtime.detector import Detector
    from ovdoc.runtime.patch import PatchConfig

    normal = tmp_path / "normal"
    for i, p in enumerate(tiles["train"][:40]):  # 10 parts of 4 shots, one subfolder each
        (normal / f"part{i // 4:02d}").mkdir(parents=True, exist_ok=True)
        shutil.copy(p, normal / f"part{i // 4:02d}" / p.name)
    bundles = {}
    for calibration in ("held-out", "cross-fit", "auto"):
        out = tmp_path / f"{calibration}.bundle"
        fit_bundle(backbone, normal, out, FitConfig(mode="patch", calibration=calibration,
                                                    patch=PatchConfig(coreset=4096)), progress=False)
        bundles[calibration] = out
    held_out, cross, auto = (json.loads((bundles[c] / "manifest.json").read_text(encoding="utf-8"))
                             for c in ("held-out", "cross-fit", "auto"))
    index = held_out["scorer"]["index_file"]
    assert (bundles["held-out"] / index).read_bytes() == (bundles["cross-fit"] / index).read_bytes()
    assert auto["threshold"]["value"] == cross["threshold"]["value"]  # parts: auto is cross-fit
    scores_from = [m["threshold"]["scores_from"] for m in (held_out, cross, auto)]
    assert scores_from == ["held-out", "cross-fit", "cross-fit"]
    assert auto["calibration"]["scores_from"] == "cross-fit"
    n_bank = cross["patch"]["coreset"]["bank_images"]
    assert "cross-fit" in cross["threshold"]["method"] and "5 folds of whole" in cross["threshold"]["method"]
    assert "cross-fit" not in held_out["threshold"]["method"]
    assert cross["threshold"]["n"] == held_out["threshold"]["n"] + n_bank
    assert cross["threshold"]["groups"] > held_out["threshold"]["groups"]
    det = Detector.load(bundles["held-out"])
    bank_files = sorted(normal.rglob("*.jpg"))
    in_bank = np.median(det.score_samples([cv2.imread(str(p)) for p in bank_files]))
    held = held_out["threshold"]["score_median"]
    assert in_bank < cross["threshold"]["score_median"] and 0.7 * held < cross["threshold"]["score_median"]
    with pytest.raises(OvdocError, match="loo is for global mode"):
        fit_bundle(backbone, normal, tmp_path / "p.bundle", FitConfig(mode="patch", calibration="loo"),
                   progress=False)
    for calibration in ("cross-fit", "held-out"):
        with pytest.raises(OvdocError, match=f"{calibration} is for --mode patch"):
            fit_bundle(backbone, normal, tmp_path / "g.bundle", FitConfig(calibration=calibration),
                       progress=False)


@pytest.mark.slow
def test_video_patch_fit_sets_its_threshold_on_held_out_stretches(tmp_path: Path, tiles: dict,
                                                                  backbone: Path):
    """`auto` on a video: the groups are stretches of it, and a stretch's neighbours in time would stay in a
    cross-fit fold's bank (scores that read low), so the threshold comes from the held-out stretches."""
    from _runtime_helpers import write_video

    from ovdoc.runtime.bundle import FitConfig, fit_bundle
    from ovdoc.runtime.patch import PatchConfig

    video = write_video([cv2.imread(str(p)) for p in tiles["train"][:40]], tmp_path / "line.avi")
    out = tmp_path / "video.bundle"
    fit_bundle(backbone, video, out, FitConfig(mode="patch", patch=PatchConfig(coreset=2000)), progress=False)
    threshold = json.loads((out / "manifest.json").read_text(encoding="utf-8"))["threshold"]
    assert threshold["scores_from"] == "held-out", threshold["method"]
    assert "cross-fit" not in threshold["method"]
