"""Calibration on new groups: near-duplicate shots found and held out together, the bound on new groups
and the "finer than the data supports" line, the record in the manifest and `fit --json`, and the live
flag-rate watch (`flag_rate_high`) on a stream whose normal look changes.

Real data: magnetic tiles (several exposures of each tile, in photograph order `num_`), the shipped
backbone and the seed IR; the stream test runs the real loop on a real bundle.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from _runtime_helpers import ovdoc_cli, read_all, write_video

from ovdoc.runtime.calibration import group_calibration, upper_bound
from ovdoc.runtime.near_duplicates import near_duplicate_groups, thumbnail


def _tiles_in_order(magnetic_tile_dir: Path) -> tuple[list[Path], np.ndarray]:
    """MT_Free in photograph order, and the tile of each (a gap of over 200 in `num_` = the next tile)."""
    files = sorted((magnetic_tile_dir / "MT_Free").rglob("*.jpg"),
                   key=lambda p: int(re.search(r"num_(\d+)", p.name).group(1)))
    nums = np.array([int(re.search(r"num_(\d+)", p.name).group(1)) for p in files])
    return files, np.concatenate([[0], np.cumsum(np.diff(nums) > 200)])


def test_near_duplicate_shots_of_one_tile_are_grouped(magnetic_tile_dir):
    files, tile = _tiles_in_order(magnetic_tile_dir)
    files, tile = files[:240], tile[:240]  # about 40 tiles, 6 exposures each
    labels = near_duplicate_groups(np.stack([thumbnail(cv2.imread(str(p))) for p in files]))
    # most images share their group with a sibling exposure, and groups rarely span many tiles
    same = [np.any((labels == labels[i]) & (tile == tile[i]) & (np.arange(len(tile)) != i))
            for i in range(len(tile))]
    assert np.mean(same) > 0.6, np.mean(same)
    assert len(np.unique(labels)) < 0.6 * len(files)
    purity = np.mean([np.bincount(tile[labels == g]).max() / np.sum(labels == g) for g in np.unique(labels)])
    assert purity > 0.8, purity


def test_distinct_images_stay_apart(cifar10_npz):
    x = np.load(cifar10_npz)["x"][:300]
    labels = near_duplicate_groups(np.stack([thumbnail(np.ascontiguousarray(im[..., ::-1])) for im in x]))
    assert len(np.unique(labels)) > 0.8 * len(x)


def test_the_bound_shrinks_as_groups_are_added():
    rng = np.random.default_rng(0)
    bounds = []
    for n_groups in (20, 80, 320):
        offsets = rng.normal(0, 0.7, n_groups)  # groups differ: images of one group alike
        scores = np.concatenate([rng.normal(o, 0.5, 6) for o in offsets])
        record = group_calibration(scores, np.repeat(np.arange(n_groups), 6), 0.05)
        assert record["groups"] == n_groups and n_groups <= record["n_effective"] <= 6 * n_groups
        bounds.append(record["fpr_upper_95"])
    assert bounds[0] > bounds[1] > bounds[2] > 0.05, bounds
    few = group_calibration(rng.normal(0, 1, 180), np.repeat(np.arange(30), 6), 0.01)
    assert "finer than the data supports" in few["message"] and few["groups_more_needed"] > 30
    assert upper_bound(0.01, 100) > upper_bound(0.01, 1000) > 0.01


def test_groups_that_are_alike_count_as_more_than_their_number():
    rng = np.random.default_rng(1)
    alike = group_calibration(rng.normal(0, 1, 600), np.repeat(np.arange(60), 10), 0.05)
    offsets = rng.normal(0, 2.0, 60)
    differ = group_calibration(np.concatenate([rng.normal(o, 0.2, 10) for o in offsets]),
                               np.repeat(np.arange(60), 10), 0.05)
    assert alike["n_effective"] > 2 * differ["n_effective"]
    assert alike["fpr_upper_95"] < differ["fpr_upper_95"]


def test_rare_flags_in_few_groups_do_not_pass_for_many_independent_images():
    """Two of nine video blocks with one flagged frame each: their spread is no measure of the spread of
    new blocks, so the bound counts the nine blocks (Kish alone said 320 frames and a 1.9 % bound, which
    the next stretch of the video exceeded 4x)."""
    from ovdoc.runtime.calibration import effective_groups

    rates = np.array([1 / 40, 1 / 40, 0, 0, 0, 0, 0, 0, 0])
    sizes = np.full(9, 40)
    assert effective_groups(rates, sizes) == 9
    assert upper_bound(rates.mean(), effective_groups(rates, sizes)) > 0.25
    # many flagged groups that are alike: the spread is well seen, and they count as more than the groups
    rng = np.random.default_rng(2)
    many = rng.binomial(40, 0.05, 400) / 40
    n_eff = effective_groups(many, np.full(400, 40))
    assert 2 * 400 < n_eff <= 400 * 40


def test_few_groups_never_go_below_the_pooled_quantile():
    """With fewer than FEW_GROUPS groups a group quantile cannot see the tail: the threshold is at least
    the pooled (1 - fpr) quantile of the held-out images (global and patch bundles both come here)."""
    from ovdoc.runtime.calibration import FEW_GROUPS

    rng = np.random.default_rng(3)
    # one large group that scores high and four small ones: weighing groups equally puts the group
    # (conformal) quantile below the pooled one
    scores = np.concatenate([rng.normal(3, 0.3, 400)] + [rng.normal(0, 1, 10) for _ in range(4)])
    groups = np.repeat(np.arange(5), [400, 10, 10, 10, 10])
    record = group_calibration(scores, groups, 0.3, estimator="conformal")
    assert record["alternative"]["value"] >= float(np.quantile(scores, 0.7))  # the bootstrap too
    pooled = float(np.quantile(scores, 0.7))
    assert record["groups"] < FEW_GROUPS and record["value"] >= pooled
    assert record["value"] == pooled and "pooled quantile" in record["floor"]
    many = group_calibration(rng.normal(0, 1, 600), np.repeat(np.arange(60), 10), 0.05)
    assert "floor" not in many


# --- the product path: an optimistic calibration is caught --------------------------------------------
@pytest.fixture(scope="module")
def tiles_folder(magnetic_tile_dir, tmp_path_factory) -> tuple[Path, list[Path]]:
    """The earlier 300 tiles' images of MT_Free (about 50 tiles) in one folder, and later tiles' images."""
    files, _ = _tiles_in_order(magnetic_tile_dir)
    root = tmp_path_factory.mktemp("tiles") / "good"
    root.mkdir()
    for p in files[:300]:
        shutil.copyfile(p, root / p.name)
    return root, files[-200:]


def test_near_duplicates_in_one_folder_are_caught(tiles_folder, tmp_path):
    """One folder of tiles, 5-6 exposures each: leave-one-out (each exposure scored with its siblings in
    the index) is optimistic. The fit finds the near-duplicate groups, sets the threshold on whole groups
    (higher than leave-one-out's) and says how optimistic leave-one-out would have been."""
    good, _ = tiles_folder
    results = {}
    for calibration in ("auto", "loo"):
        out = tmp_path / f"{calibration}.bundle"
        proc = ovdoc_cli("fit", "--normal", str(good), "--out", str(out), "--fpr", "0.05",
                         "--calibration", calibration, "--json", timeout=400)
        assert proc.returncode == 0, proc.stderr
        results[calibration] = json.loads(proc.stdout)
    auto, loo = results["auto"]["calibration"], results["loo"]["calibration"]
    assert auto["grouping"] == "near-duplicates" and auto["estimator"] == "group-bootstrap"
    assert 30 <= auto["groups"] < 150  # 300 images of about 50 tiles
    assert auto["loo_fpr_on_heldout"] > 0.15 and "near-duplicates" in auto["optimism"]
    assert results["auto"]["threshold"] > results["loo"]["threshold"]
    assert loo["estimator"] == "leave-one-out" and "optimistic" in loo["bound_note"]
    # the record is in the manifest too
    manifest = json.loads((tmp_path / "auto.bundle" / "manifest.json").read_text(encoding="utf-8"))
    for key in ("method", "groups", "target_fpr", "heldout_fpr", "fpr_upper_95"):
        assert manifest["calibration"][key] == auto[key]


def test_fit_prints_the_bound(tiles_folder, tmp_path):
    good, _ = tiles_folder
    proc = ovdoc_cli("fit", "--normal", str(good), "--out", str(tmp_path / "b"), "--fpr", "0.01", timeout=400)
    assert proc.returncode == 0, proc.stderr
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("calibration:")]
    assert len(line) == 1 and "95 % bound" in line[0] and "independent groups" in line[0]
    lines = proc.stdout.splitlines()
    assert any("finer than the data supports" in ln and "more good parts" in ln for ln in lines)


# --- live: the flagged-frame rate against the bundle's bound --------------------------------------------
def _run(bundle: Path, video: Path, events: Path) -> tuple[dict, list[dict]]:
    from ovdoc.runtime.detector import Detector
    from ovdoc.runtime.stream.pipeline import Pipeline, RunOptions
    from ovdoc.runtime.stream.sources import open_source

    summary = Pipeline(Detector.load(bundle), open_source(str(video)),
                       RunOptions(smooth=1, events=events, flag_window=30, queue_size=64)).run()
    records = [json.loads(ln) for ln in events.read_text(encoding="utf-8").splitlines()]
    return summary, records


def test_flag_rate_event_fires_when_the_normal_look_changes(bundle, streams, tmp_path):
    normal = read_all(streams["normal"])  # 60 held-out tiles
    steady = write_video(normal * 2, tmp_path / "steady.avi")
    # the look changes: a smeared lens and less light
    darker = [cv2.convertScaleAbs(cv2.GaussianBlur(im, (0, 0), 6), alpha=0.5, beta=0) for im in normal]
    changed = write_video(normal[:30] + darker + darker[:30], tmp_path / "changed.avi")
    summary, records = _run(bundle, steady, tmp_path / "steady.jsonl")
    assert summary["frames"] == 120 and not [r for r in records if r.get("event", "").startswith("flag_rate")]
    summary, records = _run(bundle, changed, tmp_path / "changed.jsonl")
    frames = [r for r in records if "frame" in r and "event" not in r]
    high = [r for r in records if r.get("event") == "flag_rate_high"]
    assert len(high) == 1 and high[0]["flag_rate"] > high[0]["flag_rate_upper"], summary["anomalies"]
    assert sum(r["anomalous"] for r in frames) == summary["anomalies"] > 30  # decisions as they were


def test_flag_rate_is_in_the_metrics_and_fires_once_per_excursion():
    """The tracker's window against the bound, as /metrics and /api/status show it (the real WebState)."""
    from ovdoc.runtime.stream.flag_rate import FlagRateTracker
    from ovdoc.runtime.stream.web import WebState

    tracker = FlagRateTracker("cam", 0.01, 0.03, window=100)
    rng = np.random.default_rng(0)
    events = [tracker.update(rng.random() < 0.01, t / 10.0) for t in range(1000)]  # steady, 10 fps
    assert not [e for e in events if e] and not tracker.high
    events = [tracker.update(rng.random() < 0.2, 100 + t / 10.0) for t in range(300)]  # drifted
    fired = [e for e in events if e]
    assert [e["event"] for e in fired] == ["flag_rate_high"] and fired[0]["flag_rate"] > 0.03
    events = [tracker.update(False, 130 + t / 10.0) for t in range(300)]  # back to normal
    assert [e["event"] for e in events if e] == ["flag_rate_normal"]
    state = WebState(["cam"], 1.0, post=lambda command: None, counters=lambda i: tracker.status(),
                     scoring=lambda: True)
    metrics = state.metrics()
    for name in ("ovdoc_flag_rate", "ovdoc_flag_rate_target", "ovdoc_flag_rate_upper",
                 "ovdoc_flagged_frames_per_hour", "ovdoc_episodes_per_hour", "ovdoc_flag_rate_high"):
        assert f'{name}{{camera="0",source="cam"}}' in metrics, name
    assert 'ovdoc_flag_rate_upper{camera="0",source="cam"} 0.03' in metrics
    assert state.status()["cameras"][0]["flagged_frames_per_hour"] == 0.0
