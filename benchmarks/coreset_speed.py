"""Patch fit speed: the greedy k-center memory bank against faster variants, with the bank's validation
AUROC beside each, measured back to back in one process (a shared VM's load moves timings 2x).

    python benchmarks/coreset_speed.py [--train 700] [--good 200] [--defects 40] [--seeds 0,1,2]
        [--variants default,plain-loop,proj16,proj8,cand100k,proj8-cand100k] [--coreset 32768] [--record]

`default` is the product's k-center (one dense matrix-vector product per pick: a triangle-inequality-pruned
variant with the same picks measured 3-4x slower on a quiet machine, 2026-12-07, and was reverted);
`plain-loop` is this script's own copy of the dense loop (same picks, a check that nothing drifted); the
others trade selection for speed and need their AUROC checked.

Validation is group-disjoint on magnetic-tile: MT_Free tiles sorted by the `num_` in their names (shots
of one part are neighbours), the earliest `--train` fit the bundle and the latest `--good` are the
held-out good tiles; `--defects` tiles per defect type (earliest by num_) are the anomalies. No test split
is touched. Each variant is a real `ovdoc fit --mode patch` (`fit_bundle`, the product path) differing
only in the bank's coreset settings; the manifest records the coreset's own seconds. Order per seed:
default, each variant, default again, so a change in load shows as a difference between the two default
runs; `os.getloadavg()` is recorded before every fit. "Speed vs default" is the mean of that seed's two
default runs' seconds divided by the variant's (coreset alone, and the whole fit): above 1 the variant is
faster, below 1 slower. AUROC is mean ± std over seeds.

`--record` writes benchmarks/results/patch-coreset-speed.{json,md}. Do not record a run from a busy
shared machine as a speed result: the JSON holds the load averages to judge by.
"""

from __future__ import annotations

import json
import os
import re
import sys
import tempfile
import time
from pathlib import Path

import click
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from ovdoc.irmodels import resolve_model  # noqa: E402
from ovdoc.runtime.bundle import FitConfig, fit_bundle  # noqa: E402
from ovdoc.runtime.detector import Detector  # noqa: E402
from ovdoc.runtime.evaluation import auc  # noqa: E402
from ovdoc.runtime.patch import PatchConfig  # noqa: E402

DEFECT_TYPES = ("Blowhole", "Break", "Crack", "Fray", "Uneven")
# coreset settings each variant changes (everything else is `ovdoc fit --mode patch`'s default)
VARIANTS: dict[str, dict] = {
    "default": {},
    "plain-loop": {},  # the unpruned k-center loop (`plain_greedy_coreset`): same picks, the old cost
    "proj16": {"projection_dim": 16},
    "proj8": {"projection_dim": 8},
    "cand100k": {"max_candidates": 100_000},
    "proj8-cand100k": {"projection_dim": 8, "max_candidates": 100_000},
}


def plain_greedy_coreset(x: np.ndarray, n: int, *, projection_dim: int = 32, seed: int = 0,
                         progress: bool = False) -> np.ndarray:
    """greedy_coreset before pruning: every row's distance to every new pick (one matrix-vector product
    over all candidates per pick)."""
    from ovdoc.runtime.patch import projection_matrix

    x = np.asarray(x, np.float32)
    m = len(x)
    if n >= m:
        return np.arange(m)
    z = x @ projection_matrix(x.shape[1], projection_dim, seed + 1) if 0 < projection_dim < x.shape[1] else x
    z = np.ascontiguousarray(z, np.float32)
    sq = np.einsum("ij,ij->i", z, z)
    picks = np.empty(n, np.int64)
    picks[0] = int(np.random.default_rng(seed).integers(m))
    best = np.maximum(sq - 2.0 * (z @ z[picks[0]]) + sq[picks[0]], 0.0)
    best[picks[0]] = -1.0
    d = np.empty(m, np.float32)
    for i in range(1, n):
        j = int(np.argmax(best))
        picks[i] = j
        np.dot(z, z[j], out=d)
        d *= -2.0
        d += sq
        d += sq[j]
        np.minimum(best, d, out=best)
        best[j] = -1.0
    return picks


def by_num(paths: list[Path]) -> list[Path]:
    """Sorted by the number after `num_` (exp3_num_1234.jpg -> 1234): neighbouring shots, one part."""
    def key(p: Path) -> tuple[int, str]:
        found = re.search(r"num_(\d+)", p.stem)
        return (int(found.group(1)) if found else -1, p.name)

    return sorted(paths, key=key)


def split(data: Path, n_train: int, n_good: int, n_defects: int) -> dict[str, list[Path]]:
    free = by_num(list((data / "MT_Free" / "Imgs").glob("*.jpg")))
    if n_train + n_good > len(free):
        raise SystemExit(f"--train {n_train} + --good {n_good} exceeds the {len(free)} MT_Free tiles")
    defects = [p for kind in DEFECT_TYPES
               for p in by_num(list((data / f"MT_{kind}" / "Imgs").glob("*.jpg")))[:n_defects]]
    return {"train": free[:n_train], "good": free[len(free) - n_good:], "defects": defects}


def run_variant(name: str, seed: int, parts: dict, coreset: int, work: Path) -> dict:
    patch = PatchConfig(seed=seed, coreset=coreset, **VARIANTS[name])
    out = work / f"{name}-{seed}-{time.monotonic_ns()}.bundle"
    import ovdoc.runtime.patch as patch_module

    pruned = patch_module.greedy_coreset
    if name == "plain-loop":  # the fit imports it from the module at call time
        patch_module.greedy_coreset = plain_greedy_coreset
    load = os.getloadavg()
    t0 = time.perf_counter()
    try:
        manifest = fit_bundle(resolve_model(None), [str(p) for p in parts["train"]], out,
                              FitConfig(mode="patch", patch=patch), progress=False)
    finally:
        patch_module.greedy_coreset = pruned
    fit_s = time.perf_counter() - t0
    det = Detector.load(out)
    from ovdoc.runtime.images import read_image

    good = det.score_samples([read_image(p) for p in parts["good"]])
    bad = det.score_samples([read_image(p) for p in parts["defects"]])
    bank = manifest["patch"]["coreset"]
    return {"variant": name, "seed": seed, "loadavg_before": [round(v, 2) for v in load],
            "fit_s": round(fit_s, 2), "coreset_s": bank["seconds"], "bank": bank["size"],
            "candidates": bank["candidates"], "auroc": round(float(auc(good, bad)), 4)}


def summarise(runs: list[dict]) -> dict:
    rows = {}
    seeds = sorted({r["seed"] for r in runs})
    for name in dict.fromkeys(r["variant"] for r in runs):
        mine = [r for r in runs if r["variant"] == name]
        coreset_ratio, fit_ratio = [], []
        for seed in seeds:
            base = [r for r in runs if r["variant"] == "default" and r["seed"] == seed]
            own = [r for r in mine if r["seed"] == seed]
            if base and own:
                mean = lambda rs, key: float(np.mean([r[key] for r in rs]))  # noqa: E731
                coreset_ratio.append(mean(base, "coreset_s") / max(mean(own, "coreset_s"), 1e-9))
                fit_ratio.append(mean(base, "fit_s") / mean(own, "fit_s"))
        aurocs = [r["auroc"] for r in mine]
        rows[name] = {"auroc_mean": round(float(np.mean(aurocs)), 4),
                      "auroc_std": round(float(np.std(aurocs)), 4),
                      "coreset_speedup": round(float(np.mean(coreset_ratio)), 2),
                      "fit_speedup": round(float(np.mean(fit_ratio)), 2), "runs": len(mine)}
    return rows


def table(summary: dict, meta: dict) -> str:
    lines = [f"Patch fit: coreset variants ({meta['command']}); load averages in the JSON.", "",
             "| variant | validation AUROC | speed vs default: coreset | speed vs default: whole fit |",
             "|---|---|---|---|"]
    for name, row in summary.items():
        lines.append(f"| {name} | {row['auroc_mean']:.4f} ± {row['auroc_std']:.4f} | "
                     f"{row['coreset_speedup']:.2f}x | {row['fit_speedup']:.2f}x |")
    return "\n".join(lines) + "\n"


@click.command()
@click.option("--data", type=click.Path(file_okay=False, path_type=Path),
              default=REPO.parent / "shared" / "data" / "magnetic-tile", show_default=True)
@click.option("--train", "n_train", default=700, show_default=True, help="Earliest MT_Free tiles fitted on.")
@click.option("--good", "n_good", default=200, show_default=True, help="Latest MT_Free tiles: held-out good.")
@click.option("--defects", "n_defects", default=40, show_default=True, help="Tiles per defect type.")
@click.option("--seeds", default="0,1,2", show_default=True)
@click.option("--variants", default=",".join(VARIANTS), show_default=True)
@click.option("--coreset", default=PatchConfig().coreset, show_default=True, help="Bank size (patches).")
@click.option("--record", is_flag=True, help="Write benchmarks/results/patch-coreset-speed.{json,md}.")
def main(data: Path, n_train: int, n_good: int, n_defects: int, seeds: str, variants: str, coreset: int,
         record: bool) -> None:
    names = [v.strip() for v in variants.split(",") if v.strip()]
    unknown = [v for v in names if v not in VARIANTS]
    if unknown:
        raise SystemExit(f"unknown variant {unknown[0]!r}: use {', '.join(VARIANTS)}")
    parts = split(data, n_train, n_good, n_defects)
    runs: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="ovdoc-coreset-") as tmp:
        for seed in (int(s) for s in seeds.split(",")):
            order = ["default", *[v for v in names if v != "default"], "default"]
            for name in order:
                runs.append(run_variant(name, seed, parts, coreset, Path(tmp)))
                print(json.dumps(runs[-1]), flush=True)
    summary = summarise(runs)
    command = "python benchmarks/coreset_speed.py " + " ".join(sys.argv[1:])
    meta = {"command": command, "cpus": os.cpu_count(), "train": n_train, "good": n_good,
            "defects_per_type": n_defects, "coreset": coreset}
    print(table(summary, meta))
    if record:
        results = REPO / "benchmarks" / "results"
        (results / "patch-coreset-speed.json").write_text(
            json.dumps({"meta": meta, "summary": summary, "runs": runs}, indent=2) + "\n")
        (results / "patch-coreset-speed.md").write_text(table(summary, meta))


if __name__ == "__main__":
    main()
