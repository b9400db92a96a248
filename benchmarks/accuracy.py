"""Accuracy benchmarks through the real product path: train -> verified IR -> bundle -> score.

    python benchmarks/accuracy.py --gate              # CI's gate (GATES): exits 1 when a bound is missed
    python benchmarks/accuracy.py --experiment sneaker-vs-boot [--json]      # one DOC run: exits 1 below 0.93
    python benchmarks/accuracy.py --experiment magnetic-tile [--json]        # needs ../shared data
    python benchmarks/accuracy.py --experiment methods-sneaker-vs-boot --seeds 0,1,2   # DOC vs ArcFace,
        # kNN vs mean-cosine, validation split from the training data (also methods-fmnist-one-class,
        # methods-cifar10-one-class); --methods none,patch: no training, global vs patch mode

Results go to benchmarks/results/accuracy-<experiment>.{json,md} (and a ROC PNG for sneaker-vs-boot).
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import click
import numpy as np

from ovdoc.commands.options import metric_option
from ovdoc.irmodels.backbones import get_backbone
from ovdoc.log import get_logger

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
SHARED = Path(os.environ.get("OVDOC_SHARED", REPO.parent / "shared"))
# The legacy `fmnist-one-class` experiment (DOC with the other 9 Fashion-MNIST classes as the reference set,
# tested on those same 9 classes as anomalies) was removed: its anomalies were in training, which the
# protocol forbids; methods-fmnist-one-class measures the task with a disjoint reference set (CIFAR-10).
# Its old results stay, marked, in results/accuracy-fmnist-one-class.* as the leaking baseline.
# `--experiment sneaker-vs-boot` is one DOC run, one seed: its bound is the recorded 0.9509 (2026-11-23,
# accuracy-sneaker-vs-boot.json) minus two single-seed standard deviations of DOC on sneaker-vs-boot
# (0.0093 at 96 px, accuracy-methods-sneaker-vs-boot.json: its only multi-seed record), so one seed's luck
# does not fail it; the 0.95 it had was the record itself, 0.0009 of headroom. CI's gate (GATES, 3 seeds)
# is the tight check.
REQUIRED_AUC = {"sneaker-vs-boot": 0.93}
# CI's accuracy gate (`--gate`): methods-sneaker-vs-boot at the recorded settings (GATE_COMMAND), test AUC
# mean over seeds 0,1,2 per method + scorer. Each bound = the recorded 3-seed mean minus two standard
# deviations *of that mean* (one seed's std / sqrt(3)), rounded down to 0.001: the gate reruns the same
# seeds, so even if another CPU's float noise moved each seed as far as a fresh seed does, the mean stays
# above its bound ~97 % of the time; a real regression of 0.01 (ArcFace, shipped), 0.005 (patch) or 0.02
# (DOC) trips it (the previous bounds, mean minus two single-seed stds, let a DOC drop of 0.02 pass).
# Recorded (3 seeds): accuracy-methods-sneaker-vs-boot.json (2026-12-06) arcface-own-class + knn
# 0.9595 +- 0.0044 -> 0.954, doc + knn 0.9052 +- 0.0093 -> 0.894; accuracy-methods-sneaker-vs-boot-patch.json
# patch + topk-10 0.9764 +- 0.0025 -> 0.973 (the earlier 0.9791 +- 0.0010 was measured with the previous
# patch defaults); accuracy-methods-sneaker-vs-boot-shipped.json (2026-12-07) shipped + knn, the shipped IR
# file as `ovdoc fit` uses it with no MODEL (since global-defaults.md: sqrt-cosine, whole frame), 0.9124 +-
# 0.0048 -> 0.906 (with cosine, before that choice: 0.8972 +- 0.0046 -> 0.891).
GATES = {"arcface-own-class + knn": 0.954, "doc + knn": 0.894, "patch + topk-10": 0.973,
         "shipped + knn": 0.906}
GATE_COMMAND = ("--experiment methods-sneaker-vs-boot --methods doc,arcface-own-class,patch,shipped "
                "--scorers knn --size 96 --epochs 2 --n-train 2000 --n-val 500 --reference-per-class 500 "
                "--seeds 0,1,2 --no-normal-only")
# Magnetic-tile new-parts gate (`magnetic_tile_gate`, also run by `--gate`): patch mode with the product's
# defaults fitted on the first 30 defect-free tiles and scored on the next 30 tiles in photograph order,
# tile-disjoint. Measured 2026-12-08 with the cross-fit threshold (frozen-defaults-2026-12-08.md): image AUROC
# 0.872, FPR 0.00 at the calibrated threshold (1 % target), TPR 0.16 (fit seed 1: 0.904, FPR 0.028; with the
# held-out threshold of before, FPR 0.00 / 0.415). Bounds: AUROC 0.78 (0.09 down: at 10 fitted tiles the fit's
# seed alone moves it by ~0.04), FPR 0.10 (about 3 of the 30 new tiles; without whole tiles held out of the
# bank, the calibration leak this protocol fixes, the same kind of window flags 0.88-1.00 of the new good
# tiles).
MT_GATE_WINDOWS = (0,)  # index of the first fitted defect-free tile (photograph order), one fit per window
MT_GATE_TILES = (30, 30)  # fitted tiles, scored tiles per window
MT_GATE_MIN_AUROC = 0.78
MT_GATE_MAX_FPR = 0.10


def gate_failures(result: dict, gates: dict[str, float] = GATES) -> list[str]:
    """One line per gated method + scorer whose test mean is below its bound (or missing from the run)."""
    means = result.get("test_auc_mean_std", {})
    return [f"{key} {means[key][0]:.4f} < {bound}" if key in means else f"{key} missing from the run"
            for key, bound in gates.items() if key not in means or means[key][0] < bound]


say = get_logger("ovdoc.benchmarks.accuracy").info  # plain lines on stderr; stdout keeps --json


def bundle_auc(
    model_xml: Path, normal_train, normal_test, anomalous_test: dict, out: Path, metric: str = "cosine"
) -> dict:
    """Fit a bundle on the `normal_train` images with `model_xml`, score the test sets: {name: auc}."""
    from ovdoc.runtime.bundle import fit_bundle_images
    from ovdoc.runtime.detector import Detector
    from ovdoc.runtime.evaluation import EvalResult

    n = len(normal_train)
    fit_bundle_images(model_xml, iter(normal_train), out, metric=metric, progress=False, total=n)
    det = Detector.load(out)
    normal_scores = det.score_samples(list(normal_test))
    results = {}
    for name, images in anomalous_test.items():
        res = EvalResult(normal_scores, det.score_samples(list(images)), det.threshold_)
        results[name] = res
    return {"detector": det, "results": results}


def untrained_ir(size: int, work: Path) -> Path:
    """The ImageNet backbone as is (GAP features): the no-training baseline, through the same converter."""
    import keras

    from ovdoc.host.convert import convert_keras_model
    from ovdoc.host.train.backbone import make_backbone

    bb = make_backbone("offline", size=size)
    model = keras.Model(
        bb.model.inputs, keras.layers.GlobalAveragePooling2D(name="features")(bb.model.outputs[0])
    )
    convert_keras_model(model, work, spec=bb.spec, precisions=("FP32",), name="untrained")
    return work / "FP32" / "model.xml"


def latency_ms(model_xml: Path, runs: int = 200) -> dict:
    """Batch-1 latency and batch-8 throughput of an IR on CPU (f32), the figure a camera loop sees."""
    from ovdoc.runtime.ir import compile_ir, read_ir

    model, spec, _ = read_ir(model_xml)
    out = {}
    for batch, key in ((1, "latency_ms_b1"), (8, "ms_per_image_b8")):
        compiled = compile_ir(model, spec, batch=batch)
        request = compiled.create_infer_request()
        x = np.random.default_rng(0).integers(0, 255, (batch, spec.height, spec.width, 3), dtype=np.uint8)
        for _ in range(10):
            request.infer([x])
        start = time.perf_counter()
        for _ in range(runs // batch):
            request.infer([x])
        out[key] = round((time.perf_counter() - start) / (runs // batch) / batch * 1000, 3)
    return out


def doc_config(opts: dict, *, augment: int | None):
    """The training settings every experiment shares, from the command line (augment: None = automatic)."""
    from ovdoc.host.train.doc import TrainConfig

    return TrainConfig(
        weights="offline",
        size=opts["size"],
        epochs=opts["epochs"],
        lam=opts["lam"],
        lr=opts["lr"],
        freeze_until=opts["freeze_until"],
        augment=augment,
        reference_per_class=opts["reference_per_class"],
        seed=opts["seed"],
        ema=opts["ema"],
    )


def sneaker_vs_boot(opts: dict) -> dict:
    from ovdoc.host.train.pipeline import train_to_bundle
    from ovdoc.runtime.datasets import load_labelled, load_unlabelled
    from ovdoc.runtime.evaluation import plot_roc

    started = time.perf_counter()
    target = load_unlabelled("fashion-mnist:sneaker")
    reference = load_labelled("fashion-mnist:-sneaker,-ankle_boot")
    test_normal = load_unlabelled("fashion-mnist-test:sneaker").images
    test_anomalous = load_unlabelled("fashion-mnist-test:ankle_boot").images
    config = doc_config(opts, augment=0)
    with tempfile.TemporaryDirectory(prefix="ovdoc-acc-") as work:
        work = Path(work)
        normal_train = target.images
        timings = {}
        t0 = time.perf_counter()
        base = bundle_auc(
            untrained_ir(config.size, work / "untrained"),
            normal_train,
            test_normal,
            {"ankle_boot": test_anomalous},
            work / "untrained.bundle",
            metric=opts["metric"],
        )
        timings["untrained_knn_s"] = round(time.perf_counter() - t0, 1)
        base_auc = base["results"]["ankle_boot"].metrics()["auc"]
        say(f"untrained ImageNet backbone + kNN at {config.size}px: AUC {base_auc:.4f}")

        t0 = time.perf_counter()
        report = train_to_bundle(
            "fashion-mnist:sneaker",
            "fashion-mnist:-sneaker,-ankle_boot",
            work / "doc",
            config,
            target_data=target,
            reference_data=reference,
            metric=opts["metric"],
            progress=opts["progress"],
            # this experiment measures DOC training itself: `ovdoc train`'s default --select auto keeps the
            # untrained backbone here (its normal-only probe prefers it), which scored 0.8807 against 0.95
            select="trained",
        )
        timings["train_convert_fit_s"] = round(time.perf_counter() - t0, 1)
        t0 = time.perf_counter()
        doc, fp16 = (
            bundle_auc(
                work / "doc" / "ir" / precision / "model.xml",
                normal_train,
                test_normal,
                {"ankle_boot": test_anomalous},
                work / f"doc-{precision.lower()}.bundle",
                metric=opts["metric"],
            )
            for precision in ("FP32", "FP16")
        )
        timings["score_s"] = round(time.perf_counter() - t0, 1)
        result = doc["results"]["ankle_boot"]
        metrics = result.metrics()
        plot_roc(
            result,
            opts["roc_path"],
            title=f"sneaker vs ankle boot, DOC {config.size}px",
        )
        speed = {"doc": latency_ms(work / "doc" / "ir" / "FP32" / "model.xml")}
        if config.size != 96:
            speed["untrained_96px"] = latency_ms(untrained_ir(96, work / "u96"))
    train = report["train"]
    return {
        "experiment": "sneaker-vs-boot",
        "auc": round(metrics["auc"], 4),
        "required_auc": REQUIRED_AUC["sneaker-vs-boot"],
        "auc_fp16_ir": round(fp16["results"]["ankle_boot"].metrics()["auc"], 4),
        "auc_untrained_knn": round(base_auc, 4),
        "tpr_at_threshold": round(metrics["tpr_at_threshold"], 4),
        "fpr_at_threshold": round(metrics["fpr_at_threshold"], 4),
        "tpr_at_fpr_1pct": round(metrics["tpr_at_fpr_1pct"], 4),
        "n_train": len(target),
        "n_reference": train["n_reference"],
        "n_test_normal": len(test_normal),
        "n_test_anomalous": len(test_anomalous),
        "settings": {k: v for k, v in train["config"].items()} | {"metric": opts["metric"]},
        "losses": {
            k: train[k] for k in ("loss_d_first", "loss_d_last", "loss_c_first", "loss_c_last", "steps")
        },
        "timings_s": timings
        | {"train_only": train["seconds"], "total": round(time.perf_counter() - started, 1)},
        "speed_cpu_f32": speed,
    }


def magnetic_tile(opts: dict) -> dict:
    """Normal = a fixed 70% of MT_Free (seeded), test = the other 30% vs every defect image, per type."""
    from ovdoc.host.train.pipeline import train_to_bundle
    from ovdoc.runtime.datasets import Images
    from ovdoc.runtime.images import expand_sources, read_image

    root = SHARED / "data" / "magnetic-tile"
    if not root.is_dir():
        raise SystemExit(f"magnetic-tile data not found at {root}")
    started = time.perf_counter()

    def images_of(folder: Path) -> list:
        return [read_image(p) for p in expand_sources(folder) if p.suffix.lower() == ".jpg"]

    free = images_of(root / "MT_Free")
    order = np.random.default_rng(0).permutation(len(free))
    cut = int(0.7 * len(free))
    train_imgs = [free[i] for i in order[:cut]]
    test_normal = [free[i] for i in order[cut:]]
    defects = {
        d.name.removeprefix("MT_"): images_of(d) for d in sorted(root.glob("MT_*")) if d.name != "MT_Free"
    }
    reference = opts["reference"]
    config = doc_config(opts, augment=None)
    with tempfile.TemporaryDirectory(prefix="ovdoc-mt-") as work:
        work = Path(work)
        base = bundle_auc(
            untrained_ir(config.size, work / "untrained"),
            train_imgs,
            test_normal,
            defects,
            work / "u.bundle",
            metric=opts["metric"],
        )
        train_to_bundle(
            "MT_Free (70% split)",
            reference,
            work / "doc",
            config,
            target_data=Images(train_imgs, None),
            metric=opts["metric"],
            progress=opts["progress"],
        )
        doc = bundle_auc(
            work / "doc" / "ir" / "FP32" / "model.xml",
            train_imgs,
            test_normal,
            defects,
            work / "d.bundle",
            metric=opts["metric"],
        )
    per_type = {name: round(r.metrics()["auc"], 4) for name, r in doc["results"].items()}
    base_type = {name: round(r.metrics()["auc"], 4) for name, r in base["results"].items()}
    from ovdoc.runtime.evaluation import auc

    normal_scores = next(iter(doc["results"].values())).normal_scores
    all_anom = np.concatenate([r.anomalous_scores for r in doc["results"].values()])
    b_normal = next(iter(base["results"].values())).normal_scores
    b_anom = np.concatenate([r.anomalous_scores for r in base["results"].values()])
    return {
        "experiment": "magnetic-tile",
        "auc": round(auc(normal_scores, all_anom), 4),
        "auc_per_type": per_type,
        "auc_untrained_knn": round(auc(b_normal, b_anom), 4),
        "auc_untrained_knn_per_type": base_type,
        "n_train": len(train_imgs),
        "n_test_normal": len(test_normal),
        "n_test_anomalous": {k: len(v) for k, v in defects.items()},
        "reference": reference,
        "metric": opts["metric"],
        "settings": vars(config)
        if not hasattr(config, "__dataclass_fields__")
        else {k: getattr(config, k) for k in config.__dataclass_fields__},
        "timings_s": {"total": round(time.perf_counter() - started, 1)},
    }


# --- magnetic tiles, patch mode -------------------------------------------------------------------
MT_TYPES = ("Blowhole", "Break", "Crack", "Fray", "Uneven")
DEFAULT_SEARCH_GRID = [
    {"layers": ["block_6_expand_relu", "block_10_expand_relu"], "size": [224, 256]},
    {"layers": ["block_6_expand_relu", "block_10_expand_relu"], "size": [192, 224]},
    {"layers": ["block_6_expand_relu", "block_13_expand_relu"], "size": [224, 256]},
    {"layers": ["block_6_expand_relu", "block_8_expand_relu"], "size": [224, 256]},
    {"layers": ["block_3_depthwise_relu", "block_6_expand_relu", "block_13_expand_relu"], "size": [224, 256]},
    {"layers": ["block_6_expand_relu", "block_10_expand_relu"], "size": [224, 256], "dim": 64,
     "coreset": [2048, 4096]},
    {"layers": ["block_6_expand_relu", "block_10_expand_relu"], "size": [192, 224], "dim": 64,
     "coreset": [2048, 4096]},
]


# Group protocol (benchmarks/README.md): every shot of one physical tile on one side of every split. The
# data set photographs each tile 5-6 times under exposures exp1..exp6, and one tile's shots can sit in
# MT_Free and in a defect folder at once; ovdoc.runtime.groups.tile_groups finds the tiles. The test tiles
# are fixed once for every seed (MT_TEST_SEED, never varied, chosen before any setting was tuned on this
# split): per stratum (defect-free tiles; tiles by their main defect type) a fixed share goes to test.
# Seeds only re-carve the remaining tiles into train and validation, so no seed's test tile is another
# seed's validation tile, and the sweep (magnetic_tile_patch_sweep.py) asks for train/val only.
MT_TEST_SEED = 20261207
MT_TEST_SHARE = {"free": 0.2, "defect": 0.5}  # of each stratum's tiles
MT_VAL_SHARE_FREE = 0.25  # of the non-test defect-free tiles, per seed (about 60/20/20 of them overall)
# how a lever study's validation rows were made (both lever studies print it in their records)
MT_VALIDATION_PROTOCOL = (
    "tile-disjoint (group protocol, benchmarks/README.md): images grouped into physical tiles by "
    "ovdoc.runtime.groups.tile_groups; the fixed test tiles (accuracy.mt_test_tiles, MT_TEST_SEED "
    f"{MT_TEST_SEED}) are never read; each seed carves the other defect-free tiles "
    f"{1 - MT_VAL_SHARE_FREE:.0%} train / {MT_VAL_SHARE_FREE:.0%} validation, the other "
    "defect tiles are validation (accuracy.mt_split(seed, with_test=False)); the fit holds whole tiles out "
    "of the bank / index for its threshold (accuracy.mt_fit_report); scored on the validation tiles only"
)
_MT_TILES: dict | None = None


def mt_tiles() -> dict:
    """{'paths', 'types' ('Free' or a defect type per image), 'tiles' (tile key per image),
    'strata' (tile -> 'free' or its main defect type)} over every magnetic-tile image (cached)."""
    global _MT_TILES
    if _MT_TILES is None:
        from collections import Counter

        from ovdoc.runtime.groups import tile_groups

        root = SHARED / "data" / "magnetic-tile"
        if not root.is_dir():
            raise SystemExit(f"magnetic-tile data not found at {root}")
        paths = sorted(root.glob("MT_*/Imgs/*.jpg"))
        types = [p.parent.parent.name.removeprefix("MT_") for p in paths]
        tiles = tile_groups(paths)
        strata = {}
        for tile in sorted(set(tiles)):
            kinds = Counter(t for t, g in zip(types, tiles, strict=True) if g == tile and t != "Free")
            strata[tile] = kinds.most_common(1)[0][0] if kinds else "free"
        _MT_TILES = {"paths": paths, "types": types, "tiles": tiles, "strata": strata}
    return _MT_TILES


def mt_test_tiles() -> set[str]:
    """The fixed test tiles (the same for every seed)."""
    strata = mt_tiles()["strata"]
    rng = np.random.default_rng(MT_TEST_SEED)
    test: set[str] = set()
    for stratum in ("free", *MT_TYPES):
        names = sorted(t for t, s in strata.items() if s == stratum)
        share = MT_TEST_SHARE["free" if stratum == "free" else "defect"]
        test |= {names[i] for i in rng.permutation(len(names))[: int(round(share * len(names)))]}
    return test


def mt_tile_parts(seed: int) -> dict[str, set[str]]:
    """{'train', 'val', 'test'} tile sets for `seed`: test fixed, the rest carved per seed. Tiles with a
    defect outside test are validation tiles (their defect-free shots are validation normals)."""
    strata = mt_tiles()["strata"]
    test = mt_test_tiles()
    free = sorted(t for t, s in strata.items() if s == "free" and t not in test)
    order = np.random.default_rng(seed).permutation(len(free))
    n_val = int(round(MT_VAL_SHARE_FREE * len(free)))
    val = {free[i] for i in order[:n_val]} | {t for t, s in strata.items() if s != "free" and t not in test}
    return {"train": {free[i] for i in order[n_val:]}, "val": val, "test": test}


def mt_split(seed: int, *, with_test: bool = True) -> dict:
    """Tile-disjoint split for `seed`: train = defect-free shots of the train tiles; val/test = the shots
    of their tiles (MT_Free shots as normals, defect shots per type, with masks). `with_test=False` (the
    sweep) leaves the test tiles out entirely. `groups` holds each image's tile, per part."""
    import cv2

    info = mt_tiles()
    parts = mt_tile_parts(seed)
    read = lambda paths: [cv2.imread(str(p)) for p in paths]  # noqa: E731
    names = ("train", "val", "test") if with_test else ("train", "val")
    out: dict = {"val": {}, "groups": {}, "tiles": {n: parts[n] for n in names}, "seed": seed}
    for part in names:
        chosen = [i for i, g in enumerate(info["tiles"]) if g in parts[part]]
        normal = [i for i in chosen if info["types"][i] == "Free"]
        key = "train" if part == "train" else f"{part}_normal"
        out[key] = read(info["paths"][i] for i in normal)
        out["groups"][key] = [info["tiles"][i] for i in normal]
        if part == "train":
            continue
        out[part] = {}
        for kind in MT_TYPES:
            idx = [i for i in chosen if info["types"][i] == kind]
            if not idx:
                continue
            masks = [cv2.imread(str(info["paths"][i].with_suffix(".png")), cv2.IMREAD_GRAYSCALE) > 127
                     for i in idx]
            out[part][kind] = (read(info["paths"][i] for i in idx), masks)
            out["groups"][f"{part}:{kind}"] = [info["tiles"][i] for i in idx]
    return out


def mt_photo_order(n_train_tiles: int, n_test_tiles: int, *, start: int = 0) -> dict:
    """'New parts' split in photograph order: train = the defect-free shots of `n_train_tiles` defect-free
    tiles from the `start`-th (by num_), test = the shots of the next `n_test_tiles` tiles of any kind that
    start more than TILE_LINK_WINDOW numbers after the last train tile (so no similarity link crosses).
    Paths, and the tiles of each side."""
    from ovdoc.runtime.groups import TILE_LINK_WINDOW, tile_number

    info = mt_tiles()
    first: dict[str, int] = {}
    for p, g in zip(info["paths"], info["tiles"], strict=True):
        first[g] = min(first.get(g, 1 << 60), tile_number(p)[1])
    ordered = sorted(first, key=first.get)
    train = [t for t in ordered if info["strata"][t] == "free"][start : start + n_train_tiles]
    last = max(first[t] for t in train)
    later = [t for t in ordered if first[t] > last + TILE_LINK_WINDOW][:n_test_tiles]
    pick = lambda tiles, kinds: [p for p, g, t in zip(info["paths"], info["tiles"], info["types"],  # noqa: E731
                                                      strict=True) if g in tiles and t in kinds]
    return {"train": pick(set(train), {"Free"}), "test_normal": pick(set(later), {"Free"}),
            "test_defect": pick(set(later), set(MT_TYPES)), "train_tiles": set(train),
            "test_tiles": set(later)}


def magnetic_tile_gate() -> dict:
    """CI's magnetic-tile check: new tiles in photograph order (MT_GATE_WINDOWS), product defaults."""
    import cv2

    from ovdoc.irmodels import imagenet_backbone
    from ovdoc.runtime.bundle import FitConfig, fit_bundle_images
    from ovdoc.runtime.detector import Detector
    from ovdoc.runtime.evaluation import auc

    info = mt_tiles()
    tile_of = dict(zip(map(str, info["paths"]), info["tiles"], strict=True))
    windows = []
    for start in MT_GATE_WINDOWS:
        split = mt_photo_order(*MT_GATE_TILES, start=start)
        with tempfile.TemporaryDirectory(prefix="ovdoc-mt-gate-") as work:
            fit_bundle_images(imagenet_backbone(), (cv2.imread(str(p)) for p in split["train"]),
                              Path(work) / "b", FitConfig(mode="patch"), progress=False,
                              input_report={"keys": [("file", tile_of[str(p)]) for p in split["train"]]})
            det = Detector.load(Path(work) / "b")
            normal = det.score_samples([cv2.imread(str(p)) for p in split["test_normal"]])
            defect = det.score_samples([cv2.imread(str(p)) for p in split["test_defect"]])
        windows.append({"start": start, "n_train": len(split["train"]), "n_normal": len(normal),
                        "n_defect": len(defect), "image_auroc": round(auc(normal, defect), 4),
                        "fpr_at_threshold": round(float(np.mean(normal > det.threshold_)), 4),
                        "tpr_at_threshold": round(float(np.mean(defect > det.threshold_)), 4)})
        say(f"magnetic-tile gate window {start}: {windows[-1]}")
    return {"windows": windows,
            "image_auroc": round(float(np.mean([w["image_auroc"] for w in windows])), 4),
            "fpr_at_threshold": round(float(np.mean([w["fpr_at_threshold"] for w in windows])), 4)}


def pixel_auroc(maps: list, masks: list) -> float:
    """Pixel AUROC over frame-sized maps and their masks (every 2nd pixel in each direction)."""
    from sklearn.metrics import roc_auc_score

    y = np.concatenate([m[::2, ::2].ravel() for m in masks])
    s = np.concatenate([a[::2, ::2].ravel() for a in maps])
    return float(roc_auc_score(y, s))


def patch_fit_config(opts: dict, seed: int):
    from ovdoc.runtime.bundle import FitConfig, parse_size
    from ovdoc.runtime.patch import PatchConfig, parse_coreset

    patch = {"seed": seed}
    if opts.get("coreset"):
        patch["coreset"] = parse_coreset(opts["coreset"])
    if opts.get("layers"):
        patch["layers"] = tuple(opts["layers"].split(","))
    for key in ("dim", "reduce", "neighbourhood", "aggregate", "topk", "normalise"):
        if opts.get(key) is not None:
            patch[key] = opts[key]
    size = parse_size(opts["patch_size"]) if opts.get("patch_size") else None
    return FitConfig(mode="patch", size=size, patch=PatchConfig(**patch),
                     calibration=opts.get("patch_calibration") or "auto")


def _standard(det, scores):
    """Each bundle's own calibration: (s - median) / (threshold - median)."""
    t = det.manifest_["threshold"]
    return (scores - t["score_median"]) / max(t["value"] - t["score_median"], 1e-9)


# Aggregations compared on validation before the defaults were frozen (cheap: the same patch maps)
MT_AGGREGATE_CANDIDATES = {"topk-10": ("topk", 10), "topk-3": ("topk", 3), "topk-30": ("topk", 30),
                           "max": ("max", 1), "smooth_max": ("smooth_max", 1)}


def _patch_scored(det, images: list) -> tuple[np.ndarray, np.ndarray, list]:
    """(patch grids, image scores, frame-sized maps) from one feature extraction."""
    grids = det.patch_maps(images)
    frames = [det.map_to_frame(det.smooth_map(m), im.shape) for m, im in zip(grids, images, strict=True)]
    return grids, det.scorer_.image_scores(grids), frames


def _patch_part(det, data: dict, part: str, glob_det=None) -> dict:
    """Image AUROC, pooled + per-type pixel AUROC and PRO, TPR/FPR at the bundle's threshold of a patch
    detector on one split (val or test); with `glob_det` also the global kNN and the standardised sum of
    both; on val also the aggregation candidates' image AUROC (MT_AGGREGATE_CANDIDATES)."""
    from ovdoc.runtime.evaluation import auc
    from ovdoc.runtime.patch import aggregate
    from ovdoc.runtime.pixel_metrics import pixel_metrics

    normals = data[f"{part}_normal"]
    t0 = time.perf_counter()
    n_grids, n_patch, n_maps = _patch_scored(det, normals)
    score_s = time.perf_counter() - t0
    keys = ["image_auroc", "pixel_auroc", "pro"] + (["global_auroc", "combined_auroc"] if glob_det else [])
    res: dict = {k: {} for k in keys}
    n_glob = glob_det.score_samples(normals) if glob_det else None
    zeros = [np.zeros(m.shape, bool) for m in n_maps]
    all_p, all_g, all_maps, all_masks, all_grids = [], [], [], [], []
    for kind, (images, masks) in data[part].items():
        grids, p, maps = _patch_scored(det, images)
        res["image_auroc"][kind] = round(auc(n_patch, p), 4)
        pm = pixel_metrics(n_maps + maps, zeros + masks)
        res["pixel_auroc"][kind] = round(pm["pixel_auroc"], 4)
        res["pro"][kind] = round(pm["pro"], 4)
        if glob_det:
            g = glob_det.score_samples(images)
            res["global_auroc"][kind] = round(auc(n_glob, g), 4)
            res["combined_auroc"][kind] = round(auc(_standard(det, n_patch) + _standard(glob_det, n_glob),
                                                    _standard(det, p) + _standard(glob_det, g)), 4)
            all_g.append(g)
        all_p.append(p)
        all_maps += maps
        all_masks += masks
        all_grids.append(grids)
    p = np.concatenate(all_p)
    res["image_auroc"]["all"] = round(auc(n_patch, p), 4)
    pm = pixel_metrics(n_maps + all_maps, zeros + all_masks)
    res["pixel_auroc"]["all"] = round(pm["pixel_auroc"], 4)
    res["pro"]["all"] = round(pm["pro"], 4)
    if glob_det:
        g = np.concatenate(all_g)
        res["global_auroc"]["all"] = round(auc(n_glob, g), 4)
        res["combined_auroc"]["all"] = round(auc(_standard(det, n_patch) + _standard(glob_det, n_glob),
                                                 _standard(det, p) + _standard(glob_det, g)), 4)
        res["global_tpr_at_threshold"] = round(float(np.mean(g > glob_det.threshold_)), 4)
        res["global_fpr_at_threshold"] = round(float(np.mean(n_glob > glob_det.threshold_)), 4)
    res["tpr_at_threshold"] = round(float(np.mean(p > det.threshold_)), 4)
    res["fpr_at_threshold"] = round(float(np.mean(n_patch > det.threshold_)), 4)
    res["n_normal"], res["n_defect"] = len(normals), int(len(p))
    res["n_tiles"] = len(data["tiles"][part])
    if part == "val":
        d_grids = np.concatenate(all_grids)
        res["aggregate_candidates"] = {
            name: round(auc(aggregate(n_grids, m, k), aggregate(d_grids, m, k)), 4)
            for name, (m, k) in MT_AGGREGATE_CANDIDATES.items()
        }
    res["normal_score_ms_per_image"] = round(score_s / len(normals) * 1000, 2)
    return res


def mt_fit_report(data: dict) -> dict:
    """The training images' tiles as calibration keys, so `fit` holds whole tiles out of the bank."""
    return {"keys": [("file", g) for g in data["groups"]["train"]]}


PATCH_BACKBONES = {
    "shipped": "the shipped ImageNet MobileNetV2 (torchvision weights, ovdoc.irmodels.imagenet_backbone)",
    "keras": "Keras' ImageNet MobileNetV2 as is (the offline weights DOC training starts from)",
    "doc": "DOC-trained from Keras' MobileNetV2 on the seed's MT_Free training split (--reference, "
    "--size, --epochs, --freeze-until as given; kept whatever the normal-only check says)",
}


def _patch_backbone(name: str, opts: dict, data: dict, seed: int, work: Path) -> Path:
    if name == "shipped":
        from ovdoc.irmodels import imagenet_backbone

        return imagenet_backbone()
    if name == "keras":
        return untrained_ir(opts["size"], work / "keras")
    import dataclasses

    from ovdoc.host.train.pipeline import train_to_bundle
    from ovdoc.runtime.datasets import Images

    config = dataclasses.replace(doc_config(opts, augment=None), seed=seed)
    train_to_bundle("MT_Free (seed's training split)", opts["reference"], work / "doc", config,
                    target_data=Images(data["train"], None), progress=opts["progress"], select="trained")
    return work / "doc" / "ir" / "FP32" / "model.xml"


def magnetic_tile_patch(opts: dict) -> dict:
    """Patch mode through fit_bundle -> Detector, >= 3 seeds; the shipped untrained backbone, and with
    --patch-backbones also Keras' untrained MobileNetV2 and a DOC-trained one (what training adds)."""
    from ovdoc.irmodels import imagenet_backbone
    from ovdoc.runtime.bundle import FitConfig, fit_bundle_images
    from ovdoc.runtime.detector import Detector

    started = time.perf_counter()
    seeds = [int(v) for v in str(opts["seeds"]).split(",")]
    backbones = [b for b in str(opts.get("patch_backbones") or "shipped").split(",") if b]
    if backbones[0] != "shipped" or set(backbones) - set(PATCH_BACKBONES):
        raise SystemExit(f"--patch-backbones: 'shipped' first, then any of {', '.join(PATCH_BACKBONES)}")
    parts = ("val", "test") if opts.get("mt_parts", "val+test") == "val+test" else ("val",)
    runs = []
    for seed in seeds:
        data = mt_split(seed, with_test="test" in parts)
        config = patch_fit_config(opts, seed)
        with tempfile.TemporaryDirectory(prefix="ovdoc-mtp-") as tmp:
            # --keep-bundles: the validation run's bundles are scored on test later (same fit, no refit)
            work = Path(opts["keep_bundles"]) / f"seed-{seed}" if opts.get("keep_bundles") else Path(tmp)
            fit_key = {"train_tiles": sorted(data["tiles"]["train"]), "n_train": len(data["train"]),
                       "patch": config.patch.to_dict(), "size": config.size}
            key_file = work / "fit-key.json"
            reuse = key_file.is_file() and json.loads(key_file.read_text()) == json.loads(json.dumps(fit_key))
            if not reuse:
                fit_bundle_images(imagenet_backbone(), iter(data["train"]), work / "p", config,
                                  progress=False, input_report=mt_fit_report(data))
            det = Detector.load(work / "p")
            manifest = det.manifest_
            if not reuse:
                fit_bundle_images(imagenet_backbone(), iter(data["train"]), work / "g",
                                  FitConfig(metric="cosine"), progress=False,
                                  input_report=mt_fit_report(data))
                key_file.write_text(json.dumps(fit_key))
            else:
                say(f"seed {seed}: reusing the bundles in {work} (same training tiles and settings)")
            glob_det = Detector.load(work / "g")
            run = {
                "seed": seed,
                "bundles_reused": reuse,
                "size": [det.preprocess.width, det.preprocess.height],
                "grid": manifest["patch"]["grid"],
                "bank": manifest["patch"]["coreset"]["size"],
                "bank_mb": round(manifest["patch"]["bank_bytes"] / 1e6, 2),
                "index": manifest["scorer"]["index"],
                "threshold_method": manifest["threshold"]["method"],
                "n_train": len(data["train"]),
                "n_train_tiles": len(data["tiles"]["train"]),
            }
            for part in parts:
                run[part] = _patch_part(det, data, part, glob_det)
            for name in backbones[1:]:
                ir = _patch_backbone(name, opts, data, seed, work)
                fit_bundle_images(ir, iter(data["train"]), work / f"p-{name}", config, progress=False,
                                  input_report=mt_fit_report(data))
                other = Detector.load(work / f"p-{name}")
                run.setdefault("backbones", {})[name] = {p: _patch_part(other, data, p) for p in parts}
        last = parts[-1]  # test when it was scored, else validation
        extra = "".join(
            f"; {n}: image {r[last]['image_auroc']['all']}, pixel {r[last]['pixel_auroc']['all']}"
            for n, r in run.get("backbones", {}).items()
        )
        say(
            f"seed {seed}: {last} image AUROC {run[last]['image_auroc']['all']}, pixel "
            f"{run[last]['pixel_auroc']['all']}, FPR {run[last]['fpr_at_threshold']} (val "
            f"{run['val']['image_auroc']['all']}, candidates {run['val']['aggregate_candidates']}){extra}"
        )
        runs.append(run)

    def mean_std(part: str, key: str, pick=lambda r: r) -> dict:
        names = list(pick(runs[0])[part][key])
        return {
            n: [
                round(float(np.mean([pick(r)[part][key][n] for r in runs])), 4),
                round(float(np.std([pick(r)[part][key][n] for r in runs])), 4),
            ]
            for n in names
        }

    def rates(part: str) -> dict:
        keys = ("tpr_at_threshold", "fpr_at_threshold", "global_tpr_at_threshold", "global_fpr_at_threshold")
        return {k: [round(float(np.mean([r[part][k] for r in runs])), 4),
                    round(float(np.std([r[part][k] for r in runs])), 4)] for k in keys}

    metrics = ("image_auroc", "pixel_auroc", "pro", "global_auroc", "combined_auroc")
    config = patch_fit_config(opts, seeds[0])
    info = mt_tiles()
    out = {
        "experiment": "magnetic-tile-patch" + (f"-{opts['tag']}" if opts.get("tag") else ""),
        "date": time.strftime("%Y-%m-%d"),
        "auc": mean_std(parts[-1], "image_auroc")["all"][0],
        "scored": list(parts),
        **{f"{part}_mean_std": {k: mean_std(part, k) for k in metrics} for part in parts},
        **{f"{part}_at_threshold": rates(part) for part in parts},
        "val_aggregate_candidates": mean_std("val", "aggregate_candidates"),
        "targets": {"image_auroc": 0.95, "fpr_at_threshold": 0.02, "pixel_auroc_every_type": 0.93},
        "protocol": (
            "tile-disjoint (group protocol, benchmarks/README.md): images grouped into physical tiles by "
            f"ovdoc.runtime.groups.tile_groups ({len(set(info['tiles']))} tiles over all folders); test "
            f"tiles fixed for every seed (MT_TEST_SEED {MT_TEST_SEED}: {MT_TEST_SHARE['free']:.0%} of the "
            f"defect-free tiles, {MT_TEST_SHARE['defect']:.0%} of each defect type's tiles); each seed "
            f"carves the other defect-free tiles {1 - MT_VAL_SHARE_FREE:.0%} train / "
            f"{MT_VAL_SHARE_FREE:.0%} validation, the other defect tiles are validation; the fit holds "
            "whole tiles out of the bank for its threshold; defaults frozen on validation "
            "(frozen-defaults-2026-12-07.md; the threshold's calibration, frozen-defaults-2026-12-08.md) "
            "before the test tiles were scored once per frozen record; pixel AUROC and PRO "
            "per type over that type's defects + all normals of the part, 'all' pooled; TPR/FPR at the "
            "calibrated threshold (--fpr 0.01) on the part's defect shots / defect-free shots"
        ),
        "backbone": "ovdoc.irmodels.imagenet_backbone() (untrained ImageNet MobileNetV2, FP16 weights)",
        "global": "ovdoc fit defaults except --metric cosine (shipped backbone: the whole tile stretched to "
        "224x224, its fit default since global-defaults.md of 2026-12-07; kNN k=5)",
        "settings": {"size": config.size, "patch": config.patch.to_dict() | {"seed": "per run"},
                     "calibration": config.calibration},
        "seeds": seeds,
        "runs": runs,
        "timings_s": {"total": round(time.perf_counter() - started, 1)},
    }
    if len(backbones) > 1:
        out["backbones"] = {
            name: {"what": PATCH_BACKBONES[name]}
            | {f"{part}_mean_std": {k: mean_std(part, k, lambda r, n=name: r["backbones"][n])
                                    for k in ("image_auroc", "pixel_auroc")} for part in parts}
            for name in backbones[1:]
        }
        out["training"] = {k: opts[k] for k in ("size", "epochs", "freeze_until", "lam", "reference")}
    return out


def magnetic_tile_patch_search(opts: dict) -> dict:
    """Validation grid (never the test defects): layers, size, neighbourhood, normalisation, aggregation.

    Bank = 80% of the training normals (greedy coreset), per-position statistics = the other 20%,
    AUROC = validation normals vs validation defects. Features cached in /tmp between runs.
    """
    import dataclasses

    from ovdoc.irmodels import imagenet_backbone
    from ovdoc.runtime.evaluation import auc
    from ovdoc.runtime.features import FeatureExtractor
    from ovdoc.runtime.ir import read_ir
    from ovdoc.runtime.patch import PatchConfig, PatchScorer, build_patch_model, greedy_coreset

    started = time.perf_counter()
    data = mt_split(0)
    backbone, spec, _ = read_ir(imagenet_backbone())
    grid = json.loads(opts["search_grid"])
    rows = []
    for g in grid:
        cfg = PatchConfig(layers=tuple(g["layers"]), neighbourhood=g.get("nb", 3), dim=g.get("dim", 128),
                          reduce="project")
        w, h = g["size"]
        key = (
            Path(tempfile.gettempdir())
            / f"ovdoc-mtp-{'-'.join(cfg.layers)}-{w}x{h}-{cfg.neighbourhood}-{cfg.dim}.npz"
        )
        if key.is_file():
            z = np.load(key)
            feats = {k: z[k] for k in z.files}
        else:
            model, rec = build_patch_model(backbone, h, w, cfg)
            ext = FeatureExtractor(model, dataclasses.replace(spec, height=h, width=w, resize="stretch"))
            feats = {
                "train": ext.extract(data["train"], progress=False),
                "val": ext.extract(data["val_normal"], progress=False),
            }
            for kind, (images, _) in data["val"].items():
                feats[kind] = ext.extract(images, progress=False)
            gh, gw = rec["grid"]
            feats = {k: v.reshape(len(v), gh, gw, rec["dim"]) for k, v in feats.items()}
            np.savez(key, **feats)
        tr = feats["train"]
        n, gh, gw, d = tr.shape
        o = np.random.default_rng(0).permutation(n)
        stats, bank = tr[o[: n // 5]], tr[o[n // 5 :]].reshape(-1, d)
        if len(bank) > cfg.max_candidates:
            bank = bank[np.random.default_rng(0).choice(len(bank), cfg.max_candidates, replace=False)]
        for m in g.get("coreset", [4096]):
            t0 = time.perf_counter()
            picks = greedy_coreset(bank, m, projection_dim=cfg.projection_dim, seed=0)
            core_s = time.perf_counter() - t0
            for norm in g.get("normalise", ["none", "z", "ratio"]):
                scorer = PatchScorer((gh, gw), d, normalise=norm).fit(bank[picks])
                scorer.fit_position(scorer.raw_maps(stats))
                vmaps = scorer.patch_maps(feats["val"])
                dmaps = {k: scorer.patch_maps(feats[k]) for k in MT_TYPES}
                for agg, topk in [
                    ("max", 1),
                    ("smooth_max", 1),
                    ("topk", 3),
                    ("topk", 10),
                    ("topk", 30),
                    ("topk", 100),
                ]:
                    scorer.aggregate, scorer.topk = agg, topk
                    nscore = scorer.image_scores(vmaps)
                    per = {k: round(auc(nscore, scorer.image_scores(v)), 4) for k, v in dmaps.items()}
                    alls = np.concatenate([scorer.image_scores(v) for v in dmaps.values()])
                    rows.append(
                        {
                            "layers": list(cfg.layers),
                            "size": [w, h],
                            "neighbourhood": cfg.neighbourhood,
                            "dim": d,
                            "coreset": m,
                            "coreset_s": round(core_s, 1),
                            "normalise": norm,
                            "aggregate": agg,
                            "topk": topk,
                            "val_auroc": round(auc(nscore, alls), 4),
                            "val_auroc_per_type": per,
                        }
                    )
        best = max(
            (r for r in rows if r["layers"] == list(cfg.layers) and r["size"] == [w, h]),
            key=lambda r: r["val_auroc"],
        )
        say(
            f"{g}: best val AUROC {best['val_auroc']} ({best['normalise']}, {best['aggregate']} "
            f"{best['topk']}, coreset {best['coreset']})"
        )
    rows.sort(key=lambda r: -r["val_auroc"])
    return {
        "experiment": "magnetic-tile-patch-search",
        "auc": rows[0]["val_auroc"],
        "best": rows[0],
        "top10": rows[:10],
        "rows": len(rows),
        "all_rows": rows,  # JSON only (the Markdown shows the top 10)
        "grid": grid,
        "timings_s": {"total": round(time.perf_counter() - started, 1)},
    }


# --- training methods x scorers, under the validation protocol ------------------------------------------
METHOD_VARIANTS = {
    "none": {},  # the untrained ImageNet backbone (what the shipped one computes), no training
    "doc": {"method": "doc"},
    "arcface-own-class": {"method": "arcface", "arcface_target": "own-class"},
    "arcface-vs-reference": {"method": "arcface", "arcface_target": "vs-reference"},
    # the patch-level detector (`ovdoc fit --mode patch`) on the untrained shipped backbone: its own scorer
    "patch": {},
    # the shipped IR file itself (ovdoc/irmodels/imagenet, its own 224x224 input), global features: what
    # `ovdoc fit --normal good/` builds with no MODEL, so the gate covers the artefact users get
    "shipped": {},
}
UNTRAINED = ("none", "patch", "shipped")


CIFAR10_NPZ = SHARED / "data" / "cifar10" / "cifar10-test.npz"
CIFAR10_TEST_PER_CLASS = 300  # methods-cifar10-one-class: per class, carved off once per seed


def _cifar10() -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """The CIFAR-10 test set from ../shared (the only copy CI has, no download), BGR."""
    from ovdoc.runtime.datasets import load_npz

    data = load_npz(CIFAR10_NPZ)
    return np.asarray(data.images), data.labels, data.class_names


def shipped_fit_defaults() -> tuple[str, str]:
    """(metric, resize) `ovdoc fit` uses in global mode on the shipped backbone with no options."""
    from ovdoc.irmodels import imagenet_backbone
    from ovdoc.runtime.heads.global_head import defaults_for
    from ovdoc.runtime.ir import read_ir

    metric, resize = defaults_for(imagenet_backbone())
    return metric or "euclidean", resize or read_ir(imagenet_backbone())[1].resize


def cifar10_test_mask(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """methods-cifar10-one-class's test carve: CIFAR10_TEST_PER_CLASS images per class, drawn first from the
    seed's generator (`methods_tasks`: np.random.default_rng(seed))."""
    test = np.zeros(len(labels), bool)
    for c in range(int(labels.max()) + 1):
        test[rng.permutation(np.flatnonzero(labels == c))[:CIFAR10_TEST_PER_CLASS]] = True
    return test


def cifar10_never_test(labels: np.ndarray, seeds: tuple[int, ...] = (0, 1, 2)) -> np.ndarray:
    """CIFAR-10 images in no seed's methods test carve: what a validation study may draw from, so the
    methods record's test images stay unseen by it (../shared holds only CIFAR-10's test set)."""
    seen = np.zeros(len(labels), bool)
    for seed in seeds:
        seen |= cifar10_test_mask(labels, np.random.default_rng(seed))
    return ~seen


def methods_data(opts: dict, rng: np.random.Generator) -> dict:
    """The normal/anomalous data set (train and test split) and the reference set of one experiment.

    The reference set never holds an anomaly class: sneaker-vs-boot keeps the original DOC set-up (the
    other eight Fashion-MNIST classes; ankle boots are the anomalies), Fashion-MNIST one-class uses
    CIFAR-10 and CIFAR-10 one-class uses Fashion-MNIST (disjoint data sets, as DOC used ImageNet).
    """
    from ovdoc.runtime.datasets import FASHION_MNIST_CLASSES, load_fashion_mnist

    experiment = opts["experiment"]
    if experiment == "methods-cifar10-one-class":
        x, y, names = _cifar10()
        test = cifar10_test_mask(y, rng)
        xr, yr = load_fashion_mnist("train")
        return {"train": (x[~test], y[~test]), "test": (x[test], y[test]), "names": names,
                "reference": (xr, yr, FASHION_MNIST_CLASSES), "reference_name": "fashion-mnist (train)"}
    xtr, ytr = load_fashion_mnist("train")
    data = {"train": (xtr, ytr), "test": load_fashion_mnist("test"), "names": FASHION_MNIST_CLASSES}
    if experiment == "methods-fmnist-one-class":
        return data | {"reference": _cifar10(), "reference_name": "cifar10 (../shared test set)"}
    return data | {"reference": (xtr, ytr, FASHION_MNIST_CLASSES),
                   "reference_name": "fashion-mnist (train), the 8 classes but sneaker and ankle boot"}


def methods_tasks(opts: dict, seed: int) -> list[dict]:
    """One-class tasks carved per seed.

    Labelled validation = training-split images only (held-out normals of the target class vs
    training-split anomalies, none of them in the target or reference set). Normal-only validation (what a
    user without anomalies has, and what `ovdoc train --select auto` uses) = the same held-out normals vs
    images of reference classes held out whole (select.PROXY_CLASS_SHARE of them), scored by a probe
    trained on the rest of the reference (`reference_probe`); the reported model trains on all of it.
    Test = the test split, scored once per setting and never used to choose one.
    """
    from ovdoc.host.train.select import PROXY_CLASS_SHARE
    from ovdoc.runtime.datasets import Images

    rng = np.random.default_rng(seed)
    data = methods_data(opts, rng)
    (xtr, ytr), (xte, yte), names = data["train"], data["test"], data["names"]
    xr, yr, ref_names = data["reference"]
    n_train, n_val, per_class = opts["n_train"], opts["n_val"], opts["reference_per_class"]
    if opts["experiment"] == "methods-sneaker-vs-boot":
        pairs = [(7, [9], [c for c in range(10) if c not in (7, 9)])]  # sneaker; ankle boot; the other 8
    else:
        wanted = ([names.index(c) for c in opts["classes"].split(",")] if opts["classes"]
                  else range(len(names)))
        pairs = [(c, [o for o in range(len(names)) if o != c], list(range(len(ref_names)))) for c in wanted]
    tasks = []
    for normal, anomalous, reference in pairs:
        own = rng.permutation(np.flatnonzero(ytr == normal))
        if len(own) < n_train + n_val:
            raise SystemExit(f"{names[normal]}: {len(own)} training images, fewer than n_train + n_val")
        val_anom = rng.permutation(np.flatnonzero(np.isin(ytr, anomalous)))[:n_val]
        pool = rng.permutation(np.flatnonzero(np.isin(yr, reference)))
        ref = np.sort(np.concatenate([pool[yr[pool] == c][:per_class] for c in reference]))
        # the normal-only criterion's probe trains without the pseudo-anomaly classes (held out whole)
        proxies = rng.permutation(reference)[: max(1, round(PROXY_CLASS_SHARE * len(reference)))]
        in_proxy = np.isin(yr, proxies)
        ref_val = rng.permutation(np.setdiff1d(np.flatnonzero(in_proxy), ref))[:n_val]
        ref_probe = ref[~in_proxy[ref]]
        te_n = np.flatnonzero(yte == normal)
        te_a = np.flatnonzero(np.isin(yte, anomalous))
        if opts["n_test"]:
            te_n, te_a = rng.permutation(te_n)[: opts["n_test"]], rng.permutation(te_a)[: opts["n_test"]]
        tasks.append({
            "name": names[normal],
            "target": Images(xtr[own[:n_train]], None),
            "reference": Images(xr[ref], yr[ref], ref_names),
            "val": (xtr[own[n_train:n_train + n_val]], xtr[val_anom]),
            "reference_probe": Images(xr[ref_probe], yr[ref_probe], ref_names),
            "val_ref": xr[ref_val],
            "proxy_classes": [ref_names[c] for c in sorted(proxies)],
            "test": (xte[te_n], xte[te_a]),
        })
    return tasks


def _trained_ir(variant: str, target, reference, opts: dict, seed: int, out: Path) -> tuple[Path, dict]:
    from ovdoc.host.convert import convert_keras_model
    from ovdoc.host.train.methods import train_model

    config = dataclasses.replace(doc_config(opts | {"seed": seed}, augment=0), **METHOD_VARIANTS[variant],
                                 arcface_s=opts["arcface_s"], arcface_m=opts["arcface_m"])
    result = train_model(target, reference, config, progress=False)
    convert_keras_model(result.model, out, spec=result.spec, precisions=("FP32",), name=variant)
    return out / "FP32" / "model.xml", {"train_s": round(result.seconds, 1), "steps": len(result.loss_d)}


def methods_features(variant: str, task: dict, opts: dict, seed: int, work: Path) -> tuple[dict, Path, dict]:
    """Train (or not), convert to a verified FP32 IR, extract every split's features with OpenVINO.

    With the normal-only criterion on, a trained variant is trained twice: on the whole reference (the
    reported model: validation and test) and as the probe without the pseudo-anomaly classes (val_ref).
    """
    from ovdoc.runtime.features import FeatureExtractor
    from ovdoc.runtime.ir import read_ir

    def extractor(xml: Path, resize: str | None = None) -> FeatureExtractor:
        model, spec, _ = read_ir(xml)
        return FeatureExtractor(model, dataclasses.replace(spec, resize=resize or spec.resize), batch=8)

    info = {}
    if variant == "none":
        xml = untrained_ir(opts["size"], work / "ir")
    elif variant == "shipped":
        from ovdoc.irmodels import imagenet_backbone

        xml = imagenet_backbone()
        metric, resize = shipped_fit_defaults()
        info = {"metric": metric, "resize": resize}
    else:
        xml, info = _trained_ir(variant, task["target"], task["reference"], opts, seed, work / "ir")
    ext = extractor(xml, info.get("resize"))
    feats = {"train": ext.extract(list(task["target"].images), progress=False)}
    for part in ("val", "test"):
        feats[part] = tuple(ext.extract(list(x), progress=False) for x in task[part])
    if opts["normal_only"]:
        probe = ext
        if variant not in UNTRAINED:
            probe_xml, _ = _trained_ir(variant, task["target"], task["reference_probe"], opts, seed,
                                       work / "probe")
            probe = extractor(probe_xml)
        feats["probe"] = tuple(probe.extract(list(x), progress=False)
                               for x in (task["target"].images, task["val"][0], task["val_ref"]))
    return feats, xml, info


def patch_row(task: dict, opts: dict, seed: int, *, timed: bool) -> tuple[dict, dict | None, dict | None]:
    """The patch-level detector as a user fits it (`ovdoc fit --mode patch`, shipped backbone, product
    defaults unless --patch-size/--topk/... say otherwise): one result row and, when `timed`, its search
    speed per image (all patches of one image: the figure comparable to a global scorer's query) and its
    model speed (measured once per run, as for the global variants)."""
    from ovdoc.irmodels import imagenet_backbone
    from ovdoc.runtime.bundle import fit_bundle_images
    from ovdoc.runtime.detector import Detector
    from ovdoc.runtime.evaluation import auc

    config = patch_fit_config(opts, seed)
    with tempfile.TemporaryDirectory(prefix="ovdoc-methods-patch-") as work:
        bundle = Path(work) / "patch"
        t0 = time.perf_counter()
        fit_bundle_images(imagenet_backbone(), iter(list(task["target"].images)), bundle, config,
                          progress=False)
        fit_s = time.perf_counter() - t0
        det = Detector.load(bundle)
        row = {"seed": seed, "task": task["name"], "method": "patch",
               "scorer": f"{det.manifest_['patch']['aggregate']}-{det.manifest_['patch']['topk']}",
               "input_wh": [det.preprocess.width, det.preprocess.height], "fit_s": round(fit_s, 1),
               "pseudo_anomaly_classes": task["proxy_classes"]}
        normal_scores = {}
        for part in ("val", "test"):
            normal, anomalous = task[part]
            normal_scores[part] = det.score_samples(list(normal))
            row[f"{part}_auc"] = round(auc(normal_scores[part], det.score_samples(list(anomalous))), 4)
        if opts["normal_only"]:  # untrained: no probe needed, the fitted bundle never saw the reference
            row["val_ref_auc"] = round(auc(normal_scores["val"], det.score_samples(list(task["val_ref"]))), 4)
        if not timed:
            return row, None, None
        feats = det.features(list(task["test"][0][:200]))
        t0 = time.perf_counter()
        det.score_features(feats)
        search_us = (time.perf_counter() - t0) / len(feats) * 1e6
        model_ms = latency_ms(bundle / det.manifest_["model"]["file"])
    return row, {"scorer_us_per_query": round(search_us, 1)}, model_ms


def _say_row(row: dict, seconds: float) -> None:
    say(f"seed {row['seed']} {row['task']:<10} {row['method']:<21} {row['scorer']:<11} "
        f"val {row['val_auc']:.4f} test {row['test_auc']:.4f} ({seconds:.0f} s)")


def methods_compare(opts: dict) -> dict:
    """DOC vs ArcFace (two class set-ups) vs no training, each scored by kNN (cosine, k=5) and mean-cosine,
    and the patch-level detector (`patch`: no training, its own scorer).

    Every setting is scored on validation and test; the recommendation is made on validation only.
    """
    from ovdoc.runtime.bench.measure import scorer_speed
    from ovdoc.runtime.evaluation import auc
    from ovdoc.runtime.scoring import ScorerSpec

    started = time.perf_counter()
    seeds = [int(v) for v in str(opts["seeds"]).split(",")]
    variants = opts["methods"].split(",")
    scorers = opts["scorers"].split(",")
    for v in variants:
        if v not in METHOD_VARIANTS:
            raise SystemExit(f"unknown method variant {v!r}: use {', '.join(METHOD_VARIANTS)}")
    runs, speed, latency = [], {}, {}
    for seed in seeds:
        for task in methods_tasks(opts, seed):
            for variant in variants:
                t0 = time.perf_counter()
                if variant == "patch":
                    row, timing, model_ms = patch_row(task, opts, seed, timed=variant not in latency)
                    if timing is not None:
                        latency[variant], speed[(variant, row["scorer"])] = model_ms, timing
                    runs.append(row)
                    _say_row(row, time.perf_counter() - t0)
                    continue
                with tempfile.TemporaryDirectory(prefix="ovdoc-methods-") as work:
                    feats, xml, info = methods_features(variant, task, opts, seed, Path(work))
                    if variant not in latency:
                        latency[variant] = latency_ms(xml)
                for name in scorers:
                    # the shipped IR is scored as `ovdoc fit` scores it with no MODEL; the others cosine
                    spec = ScorerSpec.parse(name, k=opts["k"], metric=info.get("metric", "cosine"))
                    scorer = spec.build().fit(feats["train"])
                    row = {"seed": seed, "task": task["name"], "method": variant, "scorer": spec.label,
                           "dim": int(feats["train"].shape[1]),
                           "pseudo_anomaly_classes": task["proxy_classes"], **info}
                    for part in ("val", "test"):
                        normal, anomalous = feats[part]
                        scores = scorer.score_samples(normal), scorer.score_samples(anomalous)
                        row[f"{part}_auc"] = round(auc(*scores), 4)
                    if "probe" in feats:  # normal-only criterion: held-out normals vs pseudo-anomalies
                        fit, normal, pseudo = feats["probe"]
                        probe = spec.build().fit(fit)
                        row["val_ref_auc"] = round(auc(probe.score_samples(normal),
                                                       probe.score_samples(pseudo)), 4)
                    if (variant, spec.label) not in speed:
                        speed[(variant, spec.label)] = scorer_speed(scorer, feats["test"][0][:200])
                    runs.append(row)
                    _say_row(row, time.perf_counter() - t0)

    settings = list(dict.fromkeys((r["method"], r["scorer"]) for r in runs))

    def summary(part: str) -> dict:
        out = {}
        for variant, label in settings:
            # per seed: the mean over tasks (one task for sneaker-vs-boot); then mean +- std over seeds
            per_seed = [np.mean([r[f"{part}_auc"] for r in runs if (r["seed"], r["method"], r["scorer"])
                                 == (s, variant, label)]) for s in seeds]
            out[f"{variant} + {label}"] = [round(float(np.mean(per_seed)), 4),
                                           round(float(np.std(per_seed)), 4)]
        return out

    val, test = summary("val"), summary("test")
    val_ref = summary("val_ref") if opts["normal_only"] else {}
    decisions = train_or_not(runs, seeds) if opts["normal_only"] and "none" in variants else None
    arc = [k for k in val if k.startswith("arcface")]
    trained = [k for k in val if not k.startswith(UNTRAINED)]
    best = max(trained, key=lambda k: val[k][0]) if trained else None  # the best *trained* variant
    labelled = max(val, key=lambda k: val[k][0])  # the setting labelled validation chose
    return {
        "experiment": opts["experiment"] + (f"-{opts['tag']}" if opts.get("tag") else ""),
        "auc": test[labelled][0],
        "reference_set": methods_data(opts, np.random.default_rng(0))["reference_name"],
        "normal_only_criterion": "held-out normals vs reference classes held out whole (never trained on; "
        "per row: pseudo_anomaly_classes), as ovdoc train --select auto",
        "chosen_on_validation": {
            "best_overall": best,
            "best_arcface": max(arc, key=lambda k: val[k][0]) if arc else None,
            "best_by_normal_only": max(val_ref, key=lambda k: val_ref[k][0]) if val_ref else None,
            "best_by_labelled": labelled,
        },
        "val_auc_mean_std": val,
        "val_ref_auc_mean_std": val_ref,
        "train_or_not": decisions,
        "test_auc_mean_std": test,
        "scorer_us_per_query": {f"{v} + {s}": t["scorer_us_per_query"] for (v, s), t in speed.items()},
        "model_speed_cpu_f32": latency,
        "protocol": "per seed: target = n_train training images of the normal class; validation = n_val "
        "other training images of it vs n_val training-split anomalies (kept out of the reference set); "
        "reference = reference_per_class training images of each reference class; test = the test split "
        "(n_test each, 0 = "
        "all), scored for every setting but never used to choose one; mean +- std over seeds (per seed the "
        "mean over tasks); kNN = cosine (the shipped IR: the metric and resize `ovdoc fit` uses on it, "
        "named in each row), k = 5, flat index over the target's features; mean-cosine = 1 - cos "
        "to "
        "the mean unit feature; features from the verified FP32 IR through OpenVINO",
        "subsampled": {k: opts[k] for k in ("n_train", "n_val", "n_test", "reference_per_class", "classes")},
        "settings": {k: opts[k] for k in ("size", "epochs", "lam", "lr", "freeze_until", "ema", "arcface_s",
                                          "arcface_m", "k")} | {"embedding_dim": 128, "batch": 64},
        "seeds": seeds,
        "runs": runs,
        "timings_s": {"total": round(time.perf_counter() - started, 1)},
    }


def write_results(result: dict, command: str) -> None:
    name = result["experiment"]
    result = result | {
        "command": command,
        "machine": {
            "cpu_count": os.cpu_count(),
            "platform": platform.platform(),
            "processor": platform.processor(),
        },
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    (RESULTS / f"accuracy-{name}.json").write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
    write_markdown(result)


def write_markdown(result: dict) -> None:
    """The short table a person reads; long per-case records stay in the JSON beside it."""
    name, command = result["experiment"], result["command"]
    rows = [("metric", "value")]
    for key, value in result.items():
        if key in ("all_rows", "runs"):  # long per-row/per-seed records: JSON only
            continue
        if isinstance(value, dict):
            rows += [
                (f"{key}.{k}", json.dumps(v) if isinstance(v, dict) else str(v))
                for k, v in value.items() if k != "per_case"
            ]
        else:
            rows.append((key, str(value)))
    table = "\n".join(f"| {a} | {b} |" for a, b in rows[:1] + [("---", "---")] + rows[1:])
    (RESULTS / f"accuracy-{name}.md").write_text(
        f"# Accuracy: {name}\n\n`{command}`\n\n{methods_table(result)}{patch_tables(result)}{table}\n",
        encoding="utf-8",
    )


def train_or_not(runs: list[dict], seeds: list[int]) -> dict:
    """The decision `ovdoc train --select auto` makes, replayed per seed, task, trained variant and scorer:
    does the normal-only criterion keep training exactly when the labelled validation split, and the
    test split, say training beats the untrained backbone? (Ties keep the backbone, as select.choose.)"""
    base = {(r["seed"], r["task"], r["scorer"]): r for r in runs if r["method"] == "none"}
    cases = []
    for r in runs:
        b = base.get((r["seed"], r["task"], r["scorer"]))
        if r["method"] in UNTRAINED or b is None or "val_ref_auc" not in r:
            continue
        keep = r["val_ref_auc"] > b["val_ref_auc"]
        cases.append({"seed": r["seed"], "task": r["task"], "setting": f"{r['method']} + {r['scorer']}",
                      "normal_only_keeps_training": keep, "labelled_says": r["val_auc"] > b["val_auc"],
                      "test_says": r["test_auc"] > b["test_auc"],
                      "test_auc_of_kept": r["test_auc"] if keep else b["test_auc"],
                      "test_auc_trained": r["test_auc"], "test_auc_untrained": b["test_auc"]})
    n = len(cases)
    if not n:
        return {}

    def mean(key: str) -> float:
        return round(float(np.mean([c[key] for c in cases])), 4)

    return {
        "cases": n,
        "agrees_with_labelled": sum(c["normal_only_keeps_training"] == c["labelled_says"] for c in cases),
        "agrees_with_test": sum(c["normal_only_keeps_training"] == c["test_says"] for c in cases),
        "kept_training": sum(c["normal_only_keeps_training"] for c in cases),
        "mean_test_auc": {"always_trained": mean("test_auc_trained"), "always_untrained":
                          mean("test_auc_untrained"), "select_auto": mean("test_auc_of_kept")},
        "per_case": cases,
    }


def methods_table(result: dict) -> str:
    """methods-* results: one row per method + scorer, validation and test AUC (mean ± std over seeds)."""
    val, test = result.get("val_auc_mean_std"), result.get("test_auc_mean_std")
    if not val:
        return ""
    val_ref = result.get("val_ref_auc_mean_std", {})
    speed = result.get("scorer_us_per_query", {})

    def cell(table: dict, key: str) -> str:
        return f"{table[key][0]:.4f} ± {table[key][1]:.4f}" if key in table else ""

    rows = "".join(
        f"| {key} | {cell(val, key)} | {cell(val_ref, key)} | {cell(test, key)} | {speed.get(key, '')} |\n"
        for key in val
    )
    chosen = result["chosen_on_validation"]
    # runs recorded before the class hold-out name none: theirs was held-out images of the reference classes
    criterion = result.get("normal_only_criterion", "held-out normals vs held-out reference images")
    return (f"Reference set: {result.get('reference_set', 'see protocol')}. AUC, mean ± std over seeds "
            f"{result['seeds']}. Best on labelled validation: **{chosen['best_by_labelled']}**"
            + (f" (of the trained variants: {chosen['best_overall']})" if chosen.get("best_overall") else "")
            + "; best by the normal-only criterion "
            f"({criterion}): {chosen.get('best_by_normal_only') or 'not measured'}.\n\n"
            + train_or_not_line(result.get("train_or_not"))
            + "| method + scorer | validation AUC (labelled) | validation AUC (normal-only) | test AUC "
            f"| scorer µs/query |\n|---|---|---|---|---|\n{rows}\n")


def train_or_not_line(decisions: dict | None) -> str:
    if not decisions:
        return ""
    m = decisions["mean_test_auc"]
    return (f"Trained or untrained backbone, decided by the normal-only criterion as `ovdoc train --select "
            f"auto` does ({decisions['cases']} seed x task x setting cases): it kept training in "
            f"{decisions['kept_training']}, agreed with the labelled validation split in "
            f"{decisions['agrees_with_labelled']} and with the test split in "
            f"{decisions['agrees_with_test']}; "
            f"mean test AUC always trained {m['always_trained']:.4f}, always untrained "
            f"{m['always_untrained']:.4f}, as decided {m['select_auto']:.4f}.\n\n")


def patch_tables(result: dict) -> str:
    """Per-type mean ± std tables for the patch-mode magnetic-tile results (empty for other results)."""
    text = ""
    blocks = [(part, result.get(part), "") for part in ("test_mean_std", "val_mean_std")]
    for name, b in (result.get("backbones") or {}).items():
        blocks += [(part, b.get(part), f", backbone: {name} ({b['what']})") for part in ("test_mean_std",
                                                                                         "val_mean_std")]
    for part, block, what in blocks:
        if not block:
            continue
        types = list(block["image_auroc"])
        head = "| " + " | ".join(["", *types]) + " |\n|" + "---|" * (len(types) + 1) + "\n"
        body = "".join(
            f"| {metric} | "
            + " | ".join(f"{block[metric][t][0]:.4f} ± {block[metric][t][1]:.4f}" for t in types)
            + " |\n"
            for metric in block
        )
        title = part.replace("_mean_std", "")
        text += f"**{title}**{what} (mean ± std over seeds {result.get('seeds')}):\n\n{head}{body}\n"
    if "top10" in result:
        text += "| val AUROC | layers | size | nb | dim | normalise | aggregate | topk | coreset |\n"
        text += "|---|---|---|---|---|---|---|---|---|\n"
        text += (
            "".join(
                f"| {r['val_auroc']} | {','.join(r['layers'])} | {r['size'][0]}x{r['size'][1]} | "
                f"{r['neighbourhood']} | {r['dim']} | {r['normalise']} | {r['aggregate']} | {r['topk']} | "
                f"{r['coreset']} |\n"
                for r in result["top10"]
            )
            + "\n"
        )
    return text


@click.command()
@click.option(
    "--experiment",
    type=click.Choice(["sneaker-vs-boot", "magnetic-tile", "methods-sneaker-vs-boot",
                       "methods-fmnist-one-class", "methods-cifar10-one-class"]),
    default="sneaker-vs-boot",
    show_default=True,
)
@click.option("--size", default=160, show_default=True, type=int)
@click.option("--epochs", default=2, show_default=True, type=int)
@click.option("--freeze-until", default=get_backbone("mobilenetv2").finetune_from, show_default=True)
@click.option("--reference-per-class", default=2000, show_default=True, type=int)
@click.option("--lambda", "lam", default=1.0, show_default=True, type=float)
@click.option("--lr", default=1e-4, show_default=True, type=float)
@metric_option("cosine", "kNN distance of every bundle (cosine = L2-normalised features).")
@click.option(
    "--reference", default="fashion-mnist:*", show_default=True, help="magnetic-tile only: the reference set."
)
@click.option(
    "--ema", default=0.99, show_default=True, type=float, help="Weight averaging decay (0 = last weights)."
)
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--mode", type=click.Choice(["global", "patch"]), default="global", show_default=True,
              help="magnetic-tile: global kNN + DOC (as before) or patch mode (untrained backbone).")
@click.option("--seeds", default="0,1,2", show_default=True, help="patch: seeds (split, projection...)")
@click.option("--coreset", default=None, help="patch: memory-bank size or fraction (default: the product's).")
@click.option("--patch-size", default=None, help="patch: WxH (default: from the images' aspect ratio).")
@click.option("--layers", default=None, help="patch: comma-separated layer names.")
@click.option("--dim", default=None, type=int, help="patch: reduced feature size.")
@click.option("--reduce", default=None, type=click.Choice(["pca", "project", "none"]),
              help="patch: channel reduction (default: the product's, pca).")
@click.option("--neighbourhood", default=None, type=int, help="patch: AvgPool kernel.")
@click.option("--aggregate", default=None, type=click.Choice(["max", "topk", "smooth_max"]))
@click.option("--topk", default=None, type=int)
@click.option("--normalise", default=None, type=click.Choice(["none", "z", "ratio"]))
@click.option("--patch-calibration", default="auto", show_default=True,
              type=click.Choice(["auto", "held-out", "cross-fit"]), help="patch: `ovdoc fit --calibration`.")
@click.option("--patch-backbones", default="shipped", show_default=True,
              help="magnetic-tile --mode patch: shipped[,keras][,doc] (what DOC training adds or costs).")
@click.option("--search", is_flag=True, help="patch: the validation grid search, not the test run.")
@click.option("--mt-parts", type=click.Choice(["val", "val+test"]), default="val+test", show_default=True,
              help="magnetic-tile --mode patch: score validation only (choosing settings: the test tiles are "
              "not read) or validation and the fixed test tiles (once, after the defaults are frozen).")
@click.option("--keep-bundles", default=None, type=click.Path(file_okay=False),
              help="magnetic-tile --mode patch: keep each seed's bundles here and reuse them when the "
              "training tiles and settings match (the frozen validation run's bundles scored on test, not "
              "refitted).")
@click.option("--search-grid", default=None,
              help="patch --search: JSON list of {layers, size:[W,H], nb, dim, coreset:[..], normalise}.")
@click.option("--methods", default="none,doc,arcface-own-class,arcface-vs-reference", show_default=True,
              help="methods-*: training variants to compare (none = the untrained backbone).")
@click.option("--scorers", default="knn,mean-cosine", show_default=True, help="methods-*: scorers.")
@click.option("--normal-only/--no-normal-only", default=True, show_default=True,
              help="methods-*: also measure the normal-only criterion (a second, probe training per "
              "trained variant, without the pseudo-anomaly classes).")
@click.option("--arcface-s", default=30.0, show_default=True, type=float)
@click.option("--arcface-m", default=0.5, show_default=True, type=float)
@click.option("--k", default=5, show_default=True, type=int, help="methods-*: kNN neighbours.")
@click.option("--n-train", default=2000, show_default=True, type=int, help="methods-*: target images.")
@click.option("--n-val", default=500, show_default=True, type=int, help="methods-*: validation images each.")
@click.option("--n-test", default=0, show_default=True, type=int,
              help="methods-*: test images each (0 = all).")
@click.option("--classes", default=None,
              help="methods-fmnist-one-class: comma-separated classes (default all).")
@click.option("--tag", default=None, help="methods-*: suffix of the results file (e.g. a sweep's setting).")
@click.option("--no-record", is_flag=True, help="Do not write benchmarks/results/.")
@click.option("--json", "as_json", is_flag=True)
@click.option("--gate", is_flag=True,
              help="CI's accuracy gate: methods-sneaker-vs-boot at the recorded settings (GATE_COMMAND "
              "fills in every option); exits 1 when a method's test mean falls below its bound in GATES.")
def main(experiment, no_record, as_json, gate, **opts) -> None:
    if gate:
        with main.make_context("accuracy.py", GATE_COMMAND.split() + ["--no-record", "--json"]) as ctx:
            experiment, no_record, as_json = (
                ctx.params.pop(k) for k in ("experiment", "no_record", "as_json"))
            ctx.params.pop("gate")
            opts = ctx.params
    opts["progress"] = not as_json
    # --no-record writes nothing tracked: CI (.ci/run) must not rewrite the recorded ROC chart
    roc_dir = Path(tempfile.mkdtemp(prefix="ovdoc-accuracy-")) if no_record else RESULTS
    opts["roc_path"] = Path(os.environ.get("OVDOC_ROC", roc_dir / f"accuracy-{experiment}-roc.png"))
    run = {
        "sneaker-vs-boot": sneaker_vs_boot,
        "magnetic-tile": magnetic_tile,
        "methods-sneaker-vs-boot": methods_compare,
        "methods-fmnist-one-class": methods_compare,
        "methods-cifar10-one-class": methods_compare,
    }[experiment]
    opts["experiment"] = experiment
    if experiment == "magnetic-tile" and opts["mode"] == "patch":
        run = magnetic_tile_patch_search if opts["search"] else magnetic_tile_patch
        opts["search_grid"] = opts["search_grid"] or json.dumps(DEFAULT_SEARCH_GRID)
    result = run(opts)
    if not no_record:
        write_results(result, "python benchmarks/accuracy.py " + " ".join(sys.argv[1:]))
    if as_json:
        print(json.dumps(result, sort_keys=True))
    else:
        print(json.dumps(result, indent=2, sort_keys=True))
    if gate:
        mt = magnetic_tile_gate()
        result["magnetic_tile_gate"] = mt
        failed = gate_failures(result)
        if mt["image_auroc"] < MT_GATE_MIN_AUROC:
            failed.append(f"magnetic-tile new tiles: patch image AUROC {mt['image_auroc']:.4f} "
                          f"< {MT_GATE_MIN_AUROC}")
        if mt["fpr_at_threshold"] > MT_GATE_MAX_FPR:
            failed.append(f"magnetic-tile new tiles: FPR {mt['fpr_at_threshold']:.4f} > {MT_GATE_MAX_FPR}")
        if failed:
            say("FAIL: " + "; ".join(failed))
            sys.exit(1)
        say("gate passed: " + ", ".join(f"{k} {result['test_auc_mean_std'][k][0]:.4f} >= {b}"
                                        for k, b in GATES.items()))
        return
    required = REQUIRED_AUC.get(experiment)
    if required is not None and result["auc"] < required:
        say(f"FAIL: AUC {result['auc']:.4f} < required {required}")
        sys.exit(1)


if __name__ == "__main__":
    from ovdoc.log import tolerant_streams

    tolerant_streams()
    main()
