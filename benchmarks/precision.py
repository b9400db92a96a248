"""bf16 against f32: does a bundle built and scored in bf16 see what the f32 bundle sees, and how much faster
is it? Validation splits only (the test tiles and the Fashion-MNIST test split are never read).

    python benchmarks/precision.py               # accuracy, seeds 0,1,2: benchmarks/results/precision.*
    python benchmarks/precision.py --part speed  # throughput both ways (quiet machine): precision-speed.*
    python benchmarks/precision.py --quick       # seed 0, small sets, prints only (a smoke run)

Why: OpenVINO runs CPU inference in bf16 by default on CPUs with native bf16 (AVX512-BF16, AMX), which
moves features by a few per cent, so ovdoc pins f32 and records the precision in every bundle. A bundle
built *and* scored in one precision is self-consistent; this measures whether it is as accurate, which is
what `ovdoc fit --precision auto` relies on when it picks bf16 on AMX machines.

Cells (each bundle fitted with `fit_bundle_images` through `LocalExtract(inference_precision=...)`, scored
by `Detector.load`, which compiles in the bundle's recorded precision):
- magnetic tiles, tile-disjoint validation tiles (benchmarks/accuracy.py's mt_split): patch mode with the
  product's defaults (image AUROC, pooled pixel AUROC, TPR/FPR at the calibrated 1 % threshold) and the
  global cosine kNN bundle beside it;
- sneaker-vs-boot (Fashion-MNIST; 2,000 sneakers fitted, 500 + 500 validation images, as the CI gate's
  tasks): the shipped backbone in global mode and in patch mode.
Speed: the compiled model's images per second in each precision (throughput hint, batched async), the
shipped global IR and seed 0's patch IR, alternating, with the machine's load and CPU flags.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import accuracy  # noqa: E402  (the benchmark module beside this file)

REPO = Path(__file__).resolve().parents[1]
PRECISIONS = ("f32", "bf16")
SVB_OPTS = {"experiment": "methods-sneaker-vs-boot", "n_train": 2000, "n_val": 500,
            "reference_per_class": 500, "n_test": 0, "classes": None}


def say(text: str) -> None:
    print(text, flush=True)


def _fit(images: list, out: Path, precision: str, config=None, report=None):
    from ovdoc.irmodels import imagenet_backbone
    from ovdoc.runtime.bundle import FitConfig, fit_bundle_images
    from ovdoc.runtime.detector import Detector
    from ovdoc.runtime.extract import LocalExtract

    fit_bundle_images(imagenet_backbone(), iter(images), out, config or FitConfig(), progress=False,
                      input_report=report, extract=LocalExtract(inference_precision=precision))
    det = Detector.load(out)
    assert det.manifest_["built_with"]["inference_precision"] == precision, det.manifest_["built_with"]
    return det


def _at_threshold(det, normal_scores: np.ndarray, anomalous_scores: np.ndarray) -> dict:
    from ovdoc.runtime.evaluation import auc

    return {"auroc": round(auc(normal_scores, anomalous_scores), 4),
            "tpr": round(float(np.mean(anomalous_scores > det.threshold_)), 4),
            "fpr": round(float(np.mean(normal_scores > det.threshold_)), 4)}


def tiles(seed: int, precision: str, work: Path, quick: bool) -> dict:
    """Patch and global bundles on seed's tile-disjoint training tiles, scored on its validation tiles."""
    from ovdoc.runtime.bundle import FitConfig

    data = accuracy.mt_split(seed, with_test=False)
    if quick:
        data["train"], data["groups"]["train"] = data["train"][:120], data["groups"]["train"][:120]
    report = accuracy.mt_fit_report(data)
    config = accuracy.patch_fit_config({}, seed)
    patch = _fit(data["train"], work / f"tp-{precision}", precision, config, report)
    glob = _fit(data["train"], work / f"tg-{precision}", precision, FitConfig(metric="cosine"), report)
    part = accuracy._patch_part(patch, data, "val", glob)
    return {"patch": {"auroc": part["image_auroc"]["all"], "pixel_auroc": part["pixel_auroc"]["all"],
                      "tpr": part["tpr_at_threshold"], "fpr": part["fpr_at_threshold"]},
            "global": {"auroc": part["global_auroc"]["all"], "tpr": part["global_tpr_at_threshold"],
                       "fpr": part["global_fpr_at_threshold"]},
            "n_val_normal": part["n_normal"], "n_val_defect": part["n_defect"]}


def sneaker_vs_boot(seed: int, precision: str, work: Path, quick: bool) -> dict:
    """The shipped backbone on 2,000 sneakers, global and patch, scored on the validation sneakers/boots."""
    opts = SVB_OPTS | ({"n_train": 300, "n_val": 100} if quick else {})
    task = accuracy.methods_tasks(opts, seed)[0]
    target = list(task["target"].images)
    normal, anomalous = (list(x) for x in task["val"])
    out = {}
    glob = _fit(target, work / f"sg-{precision}", precision)
    out["global"] = _at_threshold(glob, glob.score_samples(normal), glob.score_samples(anomalous))
    out["global_features"] = glob.features(normal[:200])
    patch = _fit(target, work / f"sp-{precision}", precision, accuracy.patch_fit_config({}, seed))
    out["patch"] = _at_threshold(patch, patch.score_samples(normal), patch.score_samples(anomalous))
    return out


def throughput(xml: Path, images: list, precision: str, repeats: int) -> list[float]:
    """Images per second of the compiled model alone (throughput hint, batched async), `repeats` passes."""
    from ovdoc.runtime.features import FeatureExtractor
    from ovdoc.runtime.ir import read_ir

    model, spec, _ = read_ir(xml)
    ext = FeatureExtractor(model, spec, batch=8, hint="throughput", inference_precision=precision)
    ext.extract(images[:16], progress=False)  # warm-up: the first requests allocate
    rates = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        ext.extract(images, progress=False)
        rates.append(len(images) / (time.perf_counter() - t0))
    return rates


def mean_std(values: list[float]) -> dict:
    return {"mean": round(statistics.fmean(values), 4),
            "std": round(statistics.stdev(values), 4) if len(values) > 1 else 0.0, "runs": values}


def accuracy_part(seeds: list[int], quick: bool) -> dict:
    cells: dict[str, dict[str, dict[str, list[float]]]] = {}
    drift = []
    with tempfile.TemporaryDirectory(prefix="ovdoc-precision-") as tmp:
        work = Path(tmp)
        for seed in seeds:
            feats = {}
            for precision in PRECISIONS:
                say(f"seed {seed}, {precision}: magnetic tiles (validation tiles) ...")
                t = tiles(seed, precision, work / f"s{seed}", quick)
                say(f"  patch {t['patch']}  global {t['global']}")
                say(f"seed {seed}, {precision}: sneaker-vs-boot (validation) ...")
                s = sneaker_vs_boot(seed, precision, work / f"s{seed}", quick)
                feats[precision] = s.pop("global_features")
                say(f"  global {s['global']}  patch {s['patch']}")
                for name, row in (("tiles patch", t["patch"]), ("tiles global", t["global"]),
                                  ("sneaker-vs-boot global", s["global"]),
                                  ("sneaker-vs-boot patch", s["patch"])):
                    for metric, value in row.items():
                        per = cells.setdefault(name, {}).setdefault(precision, {})
                        per.setdefault(metric, []).append(value)
            a, b = feats["f32"], feats["bf16"]
            drift.append(float(np.median(np.linalg.norm(a - b, axis=1) / np.linalg.norm(a, axis=1))))
    return {
        "what": "validation splits only (tile-disjoint magnetic-tile validation tiles; sneaker-vs-boot "
        "validation images); every bundle built and scored in one precision",
        "cells": {name: {p: {m: mean_std(v) for m, v in metrics.items()} for p, metrics in per.items()}
                  for name, per in cells.items()},
        "feature_drift_median": {"what": "median over 200 validation sneakers of |bf16 - f32| / |f32|, "
                                         "shipped global features", "per_seed": [round(d, 4) for d in drift]},
    }


def speed_part(n_images: int, repeats: int) -> dict:
    """Images per second in each precision, alternating: the shipped global model alone, and the patch
    detector end to end (features, bank search, maps and image scores) fitted on seed 0's training tiles."""
    from ovdoc.irmodels import imagenet_backbone

    data = accuracy.mt_split(0, with_test=False)
    images = (data["train"] * 4)[:n_images]
    speed: dict[str, dict[str, list[float]]] = {}
    loads = []
    with tempfile.TemporaryDirectory(prefix="ovdoc-precision-") as tmp:
        patch = {p: _fit(data["train"], Path(tmp) / f"p-{p}", p, accuracy.patch_fit_config({}, 0),
                         accuracy.mt_fit_report(data)) for p in PRECISIONS}
        for det in patch.values():
            det.patch_maps(images[:16])  # warm-up
        for _ in range(repeats):
            for precision in PRECISIONS:
                loads.append(os.getloadavg()[0])
                speed.setdefault("global 224x224, model alone", {}).setdefault(precision, []).extend(
                    round(r, 1) for r in throughput(imagenet_backbone(), images, precision, 1))
                loads.append(os.getloadavg()[0])
                t0 = time.perf_counter()
                det = patch[precision]
                det.scorer_.image_scores(det.patch_maps(images))
                speed.setdefault("patch detector end to end", {}).setdefault(precision, []).append(
                    round(len(images) / (time.perf_counter() - t0), 1))
    return {"speed_images_per_s": {name: {p: mean_std(v) for p, v in per.items()}
                                   for name, per in speed.items()},
            "load_1m_during_speed": [round(v, 2) for v in loads], "n_images": len(images),
            "repeats": repeats}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--part", choices=("accuracy", "speed"), default="accuracy",
                    help="accuracy (validation AUROC, any machine) or speed (a timing: run it on a quiet "
                    "machine)")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--quick", action="store_true", help="seed 0, small sets, no record (a smoke run)")
    ap.add_argument("--speed-images", type=int, default=400, help="images per throughput pass")
    ap.add_argument("--repeats", type=int, default=3, help="speed: alternating passes")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    args = ap.parse_args()
    from ovdoc.runtime.bench.machine import describe_machine

    seeds = [0] if args.quick else [int(s) for s in args.seeds.split(",")]
    if not args.quick and len(seeds) < 3:
        raise SystemExit("--seeds: at least 3 for a recorded result (use --quick for a smoke run)")
    started = time.perf_counter()
    result = {"benchmark": f"precision-{args.part}", "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
              "command": f"python benchmarks/precision.py --part {args.part}" + (" --quick" if args.quick
                                                                                 else ""),
              "machine": describe_machine()}
    if args.part == "accuracy":
        result |= {"seeds": seeds} | accuracy_part(seeds, args.quick)
    else:
        result |= speed_part(64 if args.quick else args.speed_images, 1 if args.quick else args.repeats)
    result["seconds"] = round(time.perf_counter() - started, 1)
    md = markdown(result)
    say(md)
    if not args.quick:
        name = "precision" if args.part == "accuracy" else "precision-speed"
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / f"{name}.json").write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
        (args.out / f"{name}.md").write_text(md, encoding="utf-8")
        say(f"wrote {args.out / name}.json and .md")
    return 0


def markdown(r: dict) -> str:
    from ovdoc.runtime.bench.machine import summary_line

    head = [f"`{r['command']}`", "", f"{r['date']} · {summary_line(r['machine'])} · {r['seconds']:.0f} s", ""]
    if "cells" in r:
        lines = ["# bf16 against f32: accuracy on validation splits", "", *head,
                 r["what"] + f". Seeds {', '.join(map(str, r['seeds']))}, mean ± std; TPR/FPR at the "
                 "bundle's calibrated threshold (1 % target).", "",
                 "| cell | metric | f32 | bf16 | bf16 - f32 |", "|---|---|---:|---:|---:|"]
        for name, per in r["cells"].items():
            for metric in per["f32"]:
                a, b = per["f32"][metric], per["bf16"][metric]
                lines.append(f"| {name} | {metric} | {a['mean']:.4f} ± {a['std']:.4f} | {b['mean']:.4f} ± "
                             f"{b['std']:.4f} | {b['mean'] - a['mean']:+.4f} |")
        d = r["feature_drift_median"]["per_seed"]
        lines += ["", "Feature drift (shipped global features, median relative L2 over 200 sneakers): "
                      f"{', '.join(f'{v:.3f}' for v in d)} per seed."]
        return "\n".join(lines) + "\n"
    loads = r["load_1m_during_speed"]
    lines = ["# bf16 against f32: throughput", "", *head,
             f"{r['n_images']} magnetic-tile images per pass, {r['repeats']} passes per precision, "
             f"alternating; 1-min load average before the passes {min(loads):.1f}-{max(loads):.1f}. Model "
             "alone: batch 8, throughput hint, async. Patch detector: features + bank search + maps + image "
             "scores, as `Detector.patch_maps`.", "",
             "| what | f32 images/s | bf16 images/s | bf16 / f32 |", "|---|---:|---:|---:|"]
    for name, per in r["speed_images_per_s"].items():
        a, b = per["f32"], per["bf16"]
        lines.append(f"| {name} | {a['mean']:.0f} ± {a['std']:.0f} | {b['mean']:.0f} ± {b['std']:.0f} | "
                     f"{b['mean'] / a['mean']:.2f}x |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
