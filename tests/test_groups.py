"""Group keys (ovdoc.runtime.groups), group-respecting splits, and the magnetic-tile split's protocol:
no physical tile on two sides, one fixed test set for every seed, never given to the sweep."""

from __future__ import annotations

import sys

import numpy as np
import pytest
from _runtime_helpers import error_line, ovdoc_cli
from conftest import REPO

from ovdoc.errors import OvdocError
from ovdoc.runtime.groups import group_keys, group_summary, parse_groups, regroup, tile_groups, tile_number
from ovdoc.runtime.patch import PatchConfig, bank_split

sys.path.insert(0, str(REPO / "benchmarks"))


def test_pattern_groups_take_the_first_capture_group_or_the_whole_match():
    paths = ["a/part17_left.jpg", "b/part17_right.jpg", "a/part3_top.jpg"]
    assert group_keys(paths, r"pattern:^(part\d+)_") == ["part17", "part17", "part3"]
    assert group_keys(paths, r"pattern:part\d+") == ["part17", "part17", "part3"]
    assert group_keys(paths, "subfolder") == ["a", "b", "a"]
    assert group_keys(paths, "none") is None


@pytest.mark.parametrize("spec", ["pattern:(", "pattern:", "folders", ""])
def test_bad_group_specs_are_one_clear_error(spec):
    with pytest.raises(OvdocError, match="--groups"):
        parse_groups(spec)


def test_a_file_the_pattern_does_not_match_is_an_error_not_a_group_of_its_own():
    with pytest.raises(OvdocError, match="does not match"):
        group_keys(["part1_a.jpg", "oops.jpg"], r"pattern:^(part\d+)_")


def test_regroup_replaces_file_groups_and_keeps_video_sequences():
    keys = [("file", "d"), ("file", "d"), ("frame", "v.mp4")]
    paths = ["d/p1_a.jpg", "d/p2_a.jpg", None]
    assert regroup(keys, paths, r"pattern:^(p\d)_") == [("file", "p1"), ("file", "p2"), ("frame", "v.mp4")]
    assert regroup(keys, paths, "subfolder") == keys
    assert regroup(keys, paths, "none") is None


def test_patch_bank_split_holds_out_whole_groups():
    groups = [f"part{i // 6}" for i in range(120)]  # 20 parts, 6 shots each
    for seed in range(5):
        _, cal, bank = bank_split(120, PatchConfig(seed=seed), groups)
        assert len(set(cal) | set(bank)) == 120 and not set(cal) & set(bank)
        assert not {groups[i] for i in cal} & {groups[i] for i in bank}
        assert 18 <= len(cal) <= 30  # about calib_fraction of the images
    # without groups (or too few of them) single images, as before
    _, cal, _ = bank_split(120, PatchConfig(seed=0), None)
    _, cal2, _ = bank_split(120, PatchConfig(seed=0), ["a", "b"] * 60)
    assert list(cal) == list(cal2) and len(cal) == 24


def test_group_summary_counts_a_part_once():
    normal = np.array([0.1, 0.9, 0.2, 0.3])  # part n1 has one hot shot
    anomalous = np.array([0.8, 0.1, 0.05])
    s = group_summary(normal, anomalous, ["n1", "n1", "n2", "n2"], ["a1", "a1", "a2"], threshold=0.5)
    assert s["normal_groups"] == 2 and s["anomalous_groups"] == 2
    assert s["group_fpr_at_threshold"] == 0.5 and s["group_tpr_at_threshold"] == 0.5
    assert s["groups_on_both_sides"] == 0


def test_tile_number_reads_magnetic_tile_names_and_rejects_others():
    assert tile_number("MT_Free/Imgs/exp3_num_10448.jpg") == (3, 10448)
    with pytest.raises(OvdocError, match="magnetic-tile"):
        tile_number("image.jpg")


def test_fit_rejects_a_bad_group_pattern_in_one_line(tmp_path):
    proc = ovdoc_cli("fit", "--normal", str(tmp_path), "--out", str(tmp_path / "b"), "--groups", "pattern:(")
    assert proc.returncode != 0
    assert "--groups" in error_line(proc)


# --- the magnetic tiles ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def mt(magnetic_tile_dir):
    import accuracy

    return accuracy


def test_tile_groups_keep_every_exposure_of_a_tile_together(magnetic_tile_dir):
    # a tile shot under exp1..exp6 whose shots sit in three folders (Free, Blowhole, Fray), photographed
    # alternately with another tile (nums 824..1012)
    names = ["MT_Fray/Imgs/exp0_num_797.jpg", "MT_Free/Imgs/exp1_num_824.jpg",
             "MT_Free/Imgs/exp2_num_834.jpg",
             "MT_Blowhole/Imgs/exp3_num_853.jpg", "MT_Free/Imgs/exp4_num_889.jpg",
             "MT_Free/Imgs/exp5_num_937.jpg", "MT_Fray/Imgs/exp6_num_972.jpg",
             *(f"MT_Free/Imgs/exp{e}_num_{n}.jpg" for e, n in
               ((1, 1810), (2, 1836), (3, 1855), (4, 1877), (5, 1903), (6, 1965)))]
    keys = tile_groups([magnetic_tile_dir / n for n in names])
    assert len(set(keys[:7])) == 1  # one tile across three folders
    assert len(set(keys[7:])) == 1 and keys[7] != keys[0]  # the next tile, 800 numbers later


def test_no_tile_crosses_train_val_test_and_test_is_fixed(mt):
    info = mt.mt_tiles()
    tests = []
    for seed in range(3):
        parts = mt.mt_tile_parts(seed)
        assert not parts["train"] & parts["val"] and not parts["train"] & parts["test"]
        assert not parts["val"] & parts["test"]
        assert parts["train"] | parts["val"] | parts["test"] == set(info["tiles"])
        tests.append(parts["test"])
        data = mt.mt_split(seed)
        by_part = {"train": set(data["groups"]["train"]), "val": set(), "test": set()}
        for key, tiles in data["groups"].items():
            for part in ("val", "test"):
                if key.startswith(part):
                    by_part[part] |= set(tiles)
        assert not by_part["train"] & by_part["val"] and not by_part["train"] & by_part["test"]
        assert not by_part["val"] & by_part["test"]
        assert set(data["test"]) == set(mt.MT_TYPES) and set(data["val"]) == set(mt.MT_TYPES)
        assert len(data["train"]) > 400 and len(data["test_normal"]) > 100
    assert tests[0] == tests[1] == tests[2]  # one test set, fixed before any tuning
    # no seed's validation tile is another seed's test tile
    assert not set().union(*(mt.mt_tile_parts(s)["val"] for s in range(3))) & tests[0]


def test_the_sweep_never_sees_a_test_tile(mt):
    import magnetic_tile_patch_sweep as sweep

    data = sweep.split_images(1)
    assert "test" not in data and "test_normal" not in data
    bad = mt.mt_split(1)  # a split with the test part must be refused
    with pytest.raises(AssertionError, match="test tiles"):
        sweep.assert_no_test_tiles(bad)


def test_fit_and_eval_take_a_filename_pattern(fashion_mnist_dir, tmp_path):
    """Real CLI: 40 sneakers as 10 'parts' of 4 shots (part<N>_<shot>.png); fit holds whole parts out,
    eval reports the parts it saw."""
    import json

    import cv2
    from _runtime_helpers import sample_images

    def write(images, folder):
        folder.mkdir()
        for i, im in enumerate(images):
            cv2.imwrite(str(folder / f"part{i // 4}_{i % 4}.png"), im)
        return folder

    good = write(list(sample_images("fashion-mnist:sneaker", 40).images), tmp_path / "good")
    new_good = write(list(sample_images("fashion-mnist-test:sneaker", 12).images), tmp_path / "new-good")
    bad = write(list(sample_images("fashion-mnist-test:ankle_boot", 12).images), tmp_path / "bad")
    pattern = r"pattern:^(part\d+)_"
    fit = ovdoc_cli("fit", "--normal", str(good), "--out", str(tmp_path / "b"), "--groups", pattern, "--json")
    assert fit.returncode == 0, fit.stderr
    result = json.loads(fit.stdout)
    assert result["groups"] == pattern
    # ten parts held out whole (calibration.make_grouping), not leave-one-out
    method = result["calibration"]["method"]
    assert method.startswith("held-out groups: 10 named groups"), result["calibration"]
    ev = ovdoc_cli("eval", str(tmp_path / "b"), "--normal", str(new_good), "--anomalous", str(bad),
                   "--groups", pattern, "--json")
    assert ev.returncode == 0, ev.stderr
    parts = json.loads(ev.stdout.strip().splitlines()[-1])["groups"]
    assert parts["normal_groups"] == 3 and parts["anomalous_groups"] == 3
    assert parts["groups_on_both_sides"] == 3  # same names on both sides: said, not hidden
    assert "parts (pattern:" in ev.stderr
