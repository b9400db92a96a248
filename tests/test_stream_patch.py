"""`ovdoc run` with a patch-mode bundle: real OpenVINO + FAISS, real magnetic-tile defects, the heatmap
drawn into the saved video and the hottest region's box in the events."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from _cli import invoke
from _runtime_helpers import FRAME, read_all, write_video

pytestmark = pytest.mark.slow  # fits a patch bundle and runs it live

N_NORMAL, N_DEFECT = 8, 8


@pytest.fixture(scope="module")
def patch_run(magnetic_tile_dir: Path, tmp_path_factory) -> dict:
    from ovdoc.errors import OvdocError
    from ovdoc.irmodels import imagenet_backbone
    from ovdoc.runtime.bundle import FitConfig, fit_bundle
    from ovdoc.runtime.patch import PatchConfig

    try:
        backbone = imagenet_backbone()
    except OvdocError as exc:
        pytest.fail(str(exc))
    free = sorted((magnetic_tile_dir / "MT_Free").glob("Imgs/*.jpg"))
    order = np.random.default_rng(0).permutation(len(free))
    train = [free[i] for i in order[:48]]
    normal = [free[i] for i in order[48 : 48 + N_NORMAL]]
    defects = sorted((magnetic_tile_dir / "MT_Break").glob("Imgs/*.jpg"))[:N_DEFECT]
    root = tmp_path_factory.mktemp("patch-run")
    bundle = root / "tiles.bundle"
    fit_bundle(
        backbone, train, bundle, FitConfig(mode="patch", patch=PatchConfig(coreset=2000)), progress=False
    )
    frames = [cv2.imread(str(p)) for p in normal + defects]
    video = write_video(frames, root / "tiles.avi")
    events, saved = root / "events.jsonl", root / "annotated.avi"
    result = invoke("run", str(bundle), "--source", str(video), "--smooth", "1", "--events", str(events),
                    "--save-video", str(saved), "--headless", "--json")
    assert result.exit_code == 0, (result.output, result.exception)
    return {
        "summary": json.loads(result.stdout),
        "events": [r for r in map(json.loads, events.read_text(encoding="utf-8").splitlines())
                   if "event" not in r],
        "raw": read_all(video),
        "saved": read_all(saved),
        "bundle": bundle,
    }


def test_patch_events_carry_box_and_peak(patch_run):
    """The loop's map, box and peak are the detector's own anomaly map of the same frame (geometry
    undone, smoothed), whatever the model's quality."""
    from ovdoc.runtime.detector import Detector
    from ovdoc.runtime.stream.regions import hottest_region

    events, summary = patch_run["events"], patch_run["summary"]
    assert summary["frames"] == len(events) == N_NORMAL + N_DEFECT and summary["stopped"] == "end"
    det = Detector.load(patch_run["bundle"])
    maps = det.anomaly_map(patch_run["raw"])
    for e, frame_map in zip(events, maps, strict=True):
        x0, y0, x1, y1 = e["box"]
        assert 0 <= x0 <= x1 < FRAME and 0 <= y0 <= y1 < FRAME and np.isfinite(e["peak"])
        box, peak = hottest_region(frame_map)
        assert e["peak"] == pytest.approx(peak, rel=1e-3) and e["box"] == list(box)
    assert len({tuple(e["box"]) for e in events}) > 1  # boxes follow the frames


def test_patch_heatmap_is_drawn_into_the_saved_video(patch_run):
    """Where the map reaches HEAT_FLOOR x the map threshold (at most the hottest HEAT_MAX_COVER of the
    frame) the saved frame is recoloured; elsewhere it is the frame as decoded, away from the text and
    the box's outline (measured here: 19-28 grey levels of change where hot, 1.0-1.4 of MJPEG noise
    where cold)."""
    from ovdoc.runtime.detector import Detector
    from ovdoc.runtime.stream.display import painted

    det = Detector.load(patch_run["bundle"])
    saved, raw, events = patch_run["saved"], patch_run["raw"], patch_run["events"]
    assert len(saved) == len(raw) == len(events)
    maps = det.anomaly_map(raw)
    kernel = np.ones((5, 5), np.uint8)
    checked = cold_checked = 0
    for i, (frame_map, e) in enumerate(zip(maps, events, strict=True)):
        hot = painted(frame_map, det.map_threshold_)[0].astype(np.uint8)  # capped on a frame hot all over
        valid = np.zeros(hot.shape, np.uint8)
        valid[40:-4, 4:-4] = 1  # below the score/FPS text, inside the anomaly border
        cv2.rectangle(valid, tuple(e["box"][:2]), tuple(e["box"][2:]), 0, 9)  # not the box outline
        diff = np.abs(saved[i].astype(int) - raw[i].astype(int)).mean(axis=2)
        core_hot = (hot & valid).astype(bool)
        core_cold = (cv2.erode(1 - hot, kernel) & valid).astype(bool)
        if core_hot.sum() >= 10:
            assert diff[core_hot].mean() > 10, f"frame {i}: no heatmap where the map is hot"
            checked += 1
        if core_cold.sum() >= 10:  # a defect can heat a whole small tile: then there is nothing cold
            assert diff[core_cold].mean() < 4, f"frame {i}: the frame changed where the map is cold"
            cold_checked += 1
    assert checked, "no frame's map reached the overlay's floor: nothing was checked"
    assert cold_checked, "no frame had a cold region: the overlay's floor was never checked from below"
