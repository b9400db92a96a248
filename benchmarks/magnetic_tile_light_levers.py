"""The lighting levers of issue 23 on the tile-disjoint magnetic-tile *validation* split (never the test
tiles): per-image intensity normalisation (`ovdoc fit --intensity`) in both modes, and photometric
variants of the bank images in patch mode.

    python benchmarks/magnetic_tile_light_levers.py                      # seeds 0,1,2, every row, recorded
    python benchmarks/magnetic_tile_light_levers.py --seeds 0 --no-record   # one seed: the time estimate

The tiles were photographed at six exposures (exp1..exp6: grey-level means ~67 to ~154, see the record), so
the bank holds each surface at several brightnesses and a new tile is judged against the nearest of them.
Two ways to make exposure matter less:
- intensity normalisation (PreprocessSpec.intensity, applied in `prepare`): every image's grey-level mean
  (mean: one gain) or mean and spread (meanstd) fixed before the model's scaling; fit, eval, run and serve
  follow it from the bundle;
- photometric variants (patch mode): the bank images (never the held-out images that set the
  normalisation and the threshold) added again at a few gains or gammas, through the fit's own steps
  (`plan_fit` -> more bank images -> `extract_features` -> `fit_features`).
Patch mode runs with the product defaults (frozen-defaults-2026-12-07), global mode with `ovdoc fit`'s
defaults (shipped backbone, its 224x224 centre crop, euclidean kNN k=5). Each row is scored per seed 0-2 on
the seed's validation tiles: image AUROC (defect-free vs defect shots), pooled pixel AUROC and PRO (patch),
and TPR/FPR at the bundle's calibrated threshold (--fpr 0.01). A lever is adopted for a mode only if its
validation image AUROC beats that mode's default by more than 2 std of one seed (the default's std over
seeds), at least 0.01 (the frozen-defaults rule). Writes benchmarks/results/
accuracy-magnetic-tile-light-levers.{json,md}.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import click
import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import accuracy  # noqa: E402  (the benchmark module beside this file)
from lever_rule import against_default  # noqa: E402

COMMAND = "python benchmarks/magnetic_tile_light_levers.py"
# photometric variants of each bank image: one exposure step of the data set is ~1.2x (exp means 67, 84,
# 101, 119, 136, 154), so gains of 0.6-1.6 span about two steps either way; gammas bend the tone curve
GAINS = (0.6, 0.8, 1.25, 1.6)
GAMMAS = (0.67, 1.5)


def gain(g: float) -> Callable[[np.ndarray], np.ndarray]:
    return lambda im: np.clip(np.rint(im.astype(np.float32) * g), 0, 255).astype(np.uint8)


def gamma(y: float) -> Callable[[np.ndarray], np.ndarray]:
    table = np.clip(np.rint(255.0 * (np.arange(256) / 255.0) ** y), 0, 255).astype(np.uint8)
    return lambda im: cv2.LUT(im, table)


# row -> (mode, --intensity, bank variants); the first row of each mode is its default
ROWS: dict[str, tuple[str, str | None, tuple]] = {
    "patch: default (intensity none)": ("patch", None, ()),
    "patch: --intensity mean": ("patch", "mean", ()),
    "patch: --intensity meanstd": ("patch", "meanstd", ()),
    f"patch: bank + gains {'/'.join(map(str, GAINS))}": ("patch", None, tuple(gain(g) for g in GAINS)),
    f"patch: bank + gammas {'/'.join(map(str, GAMMAS))}": ("patch", None, tuple(gamma(y) for y in GAMMAS)),
    "global: default (intensity none)": ("global", None, ()),
    "global: --intensity mean": ("global", "mean", ()),
    "global: --intensity meanstd": ("global", "meanstd", ()),
}
DEFAULT = {"patch": "patch: default (intensity none)", "global": "global: default (intensity none)"}
PROTOCOL = accuracy.MT_VALIDATION_PROTOCOL


def exposure_stats() -> dict:
    """Grey-level mean of the defect-free shots per exposure (every 3rd file): how far lighting varies."""
    import re

    info = accuracy.mt_tiles()
    by: dict[str, list[float]] = {}
    for p, kind in list(zip(info["paths"], info["types"], strict=True))[::3]:
        m = re.match(r"exp(\d)", p.name)
        if kind == "Free" and m and m.group(1) != "0":
            by.setdefault(f"exp{m.group(1)}", []).append(float(cv2.imread(str(p)).mean()))
    return {k: {"n": len(v), "mean": round(float(np.mean(v)), 1),
                "p5_p95": [round(float(x), 1) for x in np.percentile(v, [5, 95])]}
            for k, v in sorted(by.items())}


def fit_patch(data: dict, seed: int, intensity: str | None, variants: tuple, out: Path) -> int:
    """A patch bundle through the fit's steps; with `variants`, each bank image is added again under each
    photometric variant (the held-out images stay as they are). Returns the number of bank images added."""
    import dataclasses

    from ovdoc.irmodels import imagenet_backbone
    from ovdoc.runtime.extract import LocalExtract
    from ovdoc.runtime.features import default_cache_dir
    from ovdoc.runtime.fitting import extract_features, fit_features, plan_fit

    config = accuracy.patch_fit_config({}, seed)
    if intensity is not None:
        config = dataclasses.replace(config, intensity=intensity)
    extract = LocalExtract(cache_dir=default_cache_dir())
    plan = plan_fit(imagenet_backbone(), iter(data["train"]), config, extract=extract,
                    input_report=accuracy.mt_fit_report(data), out_dir=out)
    bank = plan.state["bank_imgs"]
    extra = [f(plan.images[i]) for f in variants for i in bank]
    if extra:
        n = len(plan.images)
        plan.images = list(plan.images) + extra
        plan.total = len(plan.images)
        plan.state["bank_imgs"] = np.concatenate([bank, n + np.arange(len(extra))])
    fit_features(plan, extract_features(plan, config, extract), out, config)
    return len(extra)


def score_patch(bundle: Path, data: dict) -> dict:
    from ovdoc.runtime.detector import Detector

    r = accuracy._patch_part(Detector.load(bundle), data, "val")
    return {"image_auroc": r["image_auroc"]["all"], "pixel_auroc": r["pixel_auroc"]["all"],
            "pro": r["pro"]["all"], "tpr": r["tpr_at_threshold"], "fpr": r["fpr_at_threshold"],
            "image_auroc_per_type": {k: v for k, v in r["image_auroc"].items() if k != "all"}}


def fit_score_global(data: dict, intensity: str | None, out: Path) -> dict:
    from ovdoc.irmodels import imagenet_backbone
    from ovdoc.runtime.bundle import FitConfig, fit_bundle_images
    from ovdoc.runtime.detector import Detector
    from ovdoc.runtime.evaluation import auc

    fit_bundle_images(imagenet_backbone(), iter(data["train"]), out, FitConfig(intensity=intensity),
                      progress=False, input_report=accuracy.mt_fit_report(data))
    det = Detector.load(out)
    normal = det.score_samples(data["val_normal"])
    per_type = {k: det.score_samples(images) for k, (images, _) in data["val"].items()}
    defect = np.concatenate(list(per_type.values()))
    return {"image_auroc": round(auc(normal, defect), 4),
            "tpr": round(float(np.mean(defect > det.threshold_)), 4),
            "fpr": round(float(np.mean(normal > det.threshold_)), 4),
            "image_auroc_per_type": {k: round(auc(normal, s), 4) for k, s in per_type.items()}}


# A global default serves every data set, not only tiles: a lever that wins on the tiles is also run on
# another set's validation split before it becomes one (CI's sneaker-vs-boot gate task, the shipped
# backbone: 2,000 sneakers fitted, 500 held-out sneakers vs 500 training-split ankle boots; no test images)
GUARD_WHAT = ("global mode's intensity rows on sneaker-vs-boot validation (CI's gate task, shipped backbone, "
              "ovdoc fit defaults): 2,000 sneakers fitted, 500 held-out sneakers vs 500 training-split ankle "
              "boots (accuracy.methods_tasks; no test image read)")
GUARD_OPTS = {"experiment": "methods-sneaker-vs-boot", "n_train": 2000, "n_val": 500,
              "reference_per_class": 500, "n_test": 0, "classes": None}


def guard_sneaker_vs_boot(seed: int, intensity: str | None, out: Path) -> dict:
    from ovdoc.irmodels import imagenet_backbone
    from ovdoc.runtime.bundle import FitConfig, fit_bundle_images
    from ovdoc.runtime.detector import Detector
    from ovdoc.runtime.evaluation import auc

    task = accuracy.methods_tasks(GUARD_OPTS, seed)[0]
    normal, anomalous = (list(x) for x in task["val"])
    fit_bundle_images(imagenet_backbone(), iter(list(task["target"].images)), out,
                      FitConfig(intensity=intensity), progress=False)
    det = Detector.load(out)
    n, a = det.score_samples(normal), det.score_samples(anomalous)
    return {"seed": seed, "image_auroc": round(auc(n, a), 4),
            "tpr": round(float(np.mean(a > det.threshold_)), 4),
            "fpr": round(float(np.mean(n > det.threshold_)), 4)}


def mean_std(values: list[float]) -> list[float]:
    return [round(float(np.mean(values)), 4), round(float(np.std(values)), 4)]


def decide(rows: dict) -> dict:
    """Per mode: each candidate against its mode's default by the frozen-defaults rule."""
    out = {}
    for mode, default in DEFAULT.items():
        if default not in rows:
            continue
        for name, row in rows.items():
            if name != default and ROWS[name][0] == mode:
                out[name] = against_default(name, row, rows[default], wins="adopt", loses="keep the default")
    return out


def guard_lines(rows: dict) -> str:
    """Each guard row against the guard's default, paired per seed."""
    default = next(n for n in rows if "default" in n)
    out = []
    for name, row in ordered(rows).items():
        if name == default:
            continue
        paired = [r["image_auroc"] - d["image_auroc"]
                  for r, d in zip(row["per_seed"], rows[default]["per_seed"], strict=True)]
        out.append(f"- {name}: {float(np.mean(paired)):+.4f} image AUROC against the default (per seed "
                   f"{' / '.join(f'{v:+.4f}' for v in paired)})")
    return "\n".join(out)


def ordered(rows: dict) -> dict:
    """Rows in ROWS' order, each mode's default first (a JSON record comes back sorted by name)."""
    key = lambda n: (list(ROWS).index(n) if n in ROWS else len(ROWS), "default" not in n, n)  # noqa: E731
    return {n: rows[n] for n in sorted(rows, key=key)}


def markdown(result: dict) -> str:
    head = ["| row | image AUROC | pixel AUROC | PRO | TPR at threshold | FPR at threshold | seeds (image) |",
            "|---|---|---|---|---|---|---|"]
    fmt = lambda ms: f"{ms[0]:.4f} ± {ms[1]:.4f}" if ms else "—"  # noqa: E731
    table = lambda rows: [  # noqa: E731
        f"| {name} | {fmt(r['mean_std']['image_auroc'])} | {fmt(r['mean_std'].get('pixel_auroc'))} | "
        f"{fmt(r['mean_std'].get('pro'))} | {fmt(r['mean_std']['tpr'])} | {fmt(r['mean_std']['fpr'])} | "
        f"{' / '.join(format(s['image_auroc'], '.4f') for s in r['per_seed'])} |"
        for name, r in ordered(rows).items()
    ]
    lines = table(result["rows"])
    exposures = ", ".join(f"{k} {v['mean']}" for k, v in result["exposures"].items())
    decisions = "\n".join(f"- {d['line']}" for d in ordered(result["decisions"]).values())
    return (
        "# Lighting levers on new magnetic tiles (validation only)\n\n"
        f"`{result['command']}` ({result['date']}, seeds {result['seeds']}, {result['wall_s']:.0f} s)\n\n"
        f"Protocol: {result['protocol']}.\n\n"
        f"Exposure: grey-level mean of the defect-free shots per exposure: {exposures}.\n\n"
        f"Levers: {result['levers']}\n\n"
        "Validation, mean ± std over seeds (TPR/FPR at each bundle's calibrated threshold, target FPR "
        "0.01):\n\n"
        + "\n".join(head + lines)
        + "\n\nDecisions (frozen-defaults rule: adopt only above the default by more than 2 std of one seed, "
        "at least 0.01):\n\n" + decisions + "\n"
        + ("\n## Guard: the global rows on another data set\n\n"
           f"`{g['command']}` ({g['date']})\n\n{g['what']}; validation, mean ± std over seeds:\n\n"
           + "\n".join(head + table(g["rows"])) + "\n\n" + guard_lines(g["rows"]) + "\n"
           if (g := result.get("guard")) else "")
    )


def patch_row(data: dict, seed: int, intensity: str | None, variants: tuple, out: Path) -> dict:
    added = fit_patch(data, seed, intensity, variants, out)
    return score_patch(out, data) | {"variant_images": added}


def global_row(data: dict, seed: int, intensity: str | None, variants: tuple, out: Path) -> dict:
    assert not variants, "bank variants are a patch-mode lever here"
    return fit_score_global(data, intensity, out)


RUNNERS = {"patch": patch_row, "global": global_row}  # a row's mode -> how it is fitted and scored


def tiles_part(seed_list: list[int], names: list[str]) -> dict:
    """Every row on each seed's validation tiles -> {row: {per_seed, mean_std}}."""
    per_seed: dict[str, list[dict]] = {n: [] for n in names}
    for seed in seed_list:
        data = accuracy.mt_split(seed, with_test=False)
        assert "test" not in data and not (data["tiles"]["train"] | data["tiles"]["val"]) \
            & accuracy.mt_test_tiles()
        for name in names:
            mode, intensity, variants = ROWS[name]
            t0 = time.perf_counter()
            with tempfile.TemporaryDirectory(prefix="ovdoc-light-") as tmp:
                row = RUNNERS[mode](data, seed, intensity, variants, Path(tmp) / "b")
            row |= {"seed": seed, "seconds": round(time.perf_counter() - t0, 1)}
            per_seed[name].append(row)
            print(f"seed {seed} | {name}: image {row['image_auroc']}, pixel {row.get('pixel_auroc', '-')}, "
                  f"TPR {row['tpr']}, FPR {row['fpr']} ({row['seconds']} s)", flush=True)
    return summarise(per_seed)


def guard_part(seed_list: list[int]) -> dict:
    """Global mode's intensity rows on sneaker-vs-boot validation (GUARD_OPTS)."""
    per_seed: dict[str, list[dict]] = {}
    for seed in seed_list:
        for intensity in (None, "mean", "meanstd"):
            what = "default (intensity none)" if intensity is None else f"--intensity {intensity}"
            name = f"global sneaker-vs-boot: {what}"
            with tempfile.TemporaryDirectory(prefix="ovdoc-light-") as tmp:
                row = guard_sneaker_vs_boot(seed, intensity, Path(tmp) / "b")
            per_seed.setdefault(name, []).append(row)
            print(f"seed {seed} | {name}: image {row['image_auroc']}, TPR {row['tpr']}, FPR {row['fpr']}",
                  flush=True)
    return summarise(per_seed)


def summarise(per_seed: dict[str, list[dict]]) -> dict:
    return {
        name: {"per_seed": runs,
               "mean_std": {k: mean_std([r[k] for r in runs])
                            for k in ("image_auroc", "pixel_auroc", "pro", "tpr", "fpr") if k in runs[0]}}
        for name, runs in per_seed.items()
    }


@click.command()
@click.option("--seeds", default="0,1,2", show_default=True)
@click.option("--rows", "only", default=None, help="Row numbers (1-based, comma-separated); default all.")
@click.option("--part", type=click.Choice(["all", "tiles", "guard", "render"]), default="all",
              show_default=True,
              help="guard: only the sneaker-vs-boot check of the global rows, added to the existing record; "
              "render: rewrite the record's decisions and Markdown from its JSON.")
@click.option("--no-record", is_flag=True, help="Print only; write no record.")
def main(seeds: str, only: str | None, part: str, no_record: bool) -> None:
    """Lighting levers on tile-disjoint magnetic-tile validation."""
    started = time.perf_counter()
    seed_list = [int(s) for s in seeds.split(",")]
    names = list(ROWS)
    if only:
        names = [names[int(i) - 1] for i in only.split(",")]
    out = accuracy.RESULTS / "accuracy-magnetic-tile-light-levers"
    suffix = (f" --seeds {seeds}" if seeds != "0,1,2" else "") + (f" --rows {only}" if only else "")
    if part in ("guard", "render"):
        result = json.loads(out.with_suffix(".json").read_text())
        result["decisions"] = decide(result["rows"])
    else:
        rows = tiles_part(seed_list, names)
        result = {
            "experiment": "magnetic-tile-light-levers",
            "date": time.strftime("%Y-%m-%d"),
            "command": COMMAND + suffix + (" --part tiles" if part == "tiles" else ""),
            "seeds": seed_list,
            "protocol": PROTOCOL,
            "levers": ("intensity = ovdoc fit --intensity (PreprocessSpec.intensity: mean -> each image's "
                       "grey-level mean set to 128 by one gain; meanstd -> mean 128, spread 40); bank + "
                       "gains/gammas = every bank image added again at each gain (pixel x g, clipped) or "
                       "gamma (255 (x/255)^y), patch mode, held-out images unchanged. Patch: product "
                       "defaults (frozen-defaults-2026-12-07); global: ovdoc fit defaults (shipped backbone, "
                       "224x224 centre crop, euclidean kNN k=5)."),
            "exposures": exposure_stats(),
            "rows": rows,
            "decisions": decide(rows),
            "wall_s": round(time.perf_counter() - started, 1),
        }
        for d in result["decisions"].values():
            print(d["line"])
    if part in ("all", "guard"):
        t0 = time.perf_counter()
        command = COMMAND + suffix + (" --part guard" if part == "guard" else "")
        result["guard"] = {"what": GUARD_WHAT, "command": command,
                           "date": time.strftime("%Y-%m-%d"), "rows": guard_part(seed_list),
                           "wall_s": round(time.perf_counter() - t0, 1)}
    if not no_record:
        out.with_suffix(".json").write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
        out.with_suffix(".md").write_text(markdown(result), encoding="utf-8")


if __name__ == "__main__":
    main()
