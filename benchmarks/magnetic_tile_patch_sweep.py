"""Validation-only sweep behind patch mode's defaults: channel reduction, bank size, index, input size.

    python benchmarks/magnetic_tile_patch_sweep.py [--seeds 0,1,2] [--rows all|NAME,NAME]

Uses accuracy.py's per-seed magnetic-tile split (`mt_split`) and only its *validation* part: the bank
is built from 80 % of the seed's training normals (10 % more set the per-position normalisation, as
`ovdoc fit --mode patch` does), and held-out validation normals are scored against the validation
defects; the test split is never extracted. Product components throughout: the patch-feature IR
(`build_patch_model`, all 576 channels), `pca_matrix`,
`projection_matrix`, `greedy_coreset`, `PatchScorer` (flat or inverted-file index), the product's map
smoothing. Prints image AUROC and pooled pixel AUROC (mean ± std over seeds) and search ms per image, and
writes benchmarks/results/accuracy-magnetic-tile-patch-bank-sweep.{json,md}.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from pathlib import Path

import click
import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import accuracy  # noqa: E402  (the benchmark module beside this file)

# name -> (input W x H, reduce, dim, coreset (0 = every patch), index, nprobe, map sigma in cells)
ROWS = {
    "random-64, bank 4096, 96x128 (previous defaults)": ((96, 128), "project", 64, 4096, "flat", 0, 3.0),
    "random-64, every patch, 96x128": ((96, 128), "project", 64, 0, "flat", 0, 3.0),
    "all 576 channels, every patch, ivf nprobe 16, 96x128": ((96, 128), "none", 576, 0, "ivf", 16, 3.0),
    "PCA-64, every patch, ivf nprobe 16, 96x128": ((96, 128), "pca", 64, 0, "ivf", 16, 3.0),
    "PCA-64, bank 4096, 96x128": ((96, 128), "pca", 64, 4096, "flat", 0, 3.0),
    "PCA-64, bank 16384, 96x128": ((96, 128), "pca", 64, 16384, "flat", 0, 3.0),
    "PCA-64, bank 32768, 96x128": ((96, 128), "pca", 64, 32768, "flat", 0, 3.0),
    "PCA-64, every patch, 96x128": ((96, 128), "pca", 64, 0, "flat", 0, 3.0),
    "PCA-64, bank 32768, ivf nprobe 8, 96x128, sigma 4": ((96, 128), "pca", 64, 32768, "ivf", 8, 4.0),
    "PCA-64, bank 32768, flat, 128x160, sigma 4": ((128, 160), "pca", 64, 32768, "flat", 0, 4.0),
    "PCA-64, bank 32768, ivf nprobe 16, 128x160, sigma 4": ((128, 160), "pca", 64, 32768, "ivf", 16, 4.0),
    "PCA-32, bank 32768, ivf nprobe 8, 128x160, sigma 4": ((128, 160), "pca", 32, 32768, "ivf", 8, 4.0),
    "PCA-64, bank 32768, ivf nprobe 8, 128x160, sigma 3": ((128, 160), "pca", 64, 32768, "ivf", 8, 3.0),
    "PCA-64, bank 32768, ivf nprobe 8, 128x160, sigma 6": ((128, 160), "pca", 64, 32768, "ivf", 8, 6.0),
    "**defaults**: PCA-64, bank 32768, ivf nprobe 8, 128x160, sigma 4": (
        (128, 160), "pca", 64, 32768, "ivf", 8, 4.0),
    "PCA-64, bank 32768, ivf nprobe 8, 160x192, sigma 4": ((160, 192), "pca", 64, 32768, "ivf", 8, 4.0),
    "PCA-64, bank 32768, ivf nprobe 8, 192x224, sigma 4": ((192, 224), "pca", 64, 32768, "ivf", 8, 4.0),
}


def split_images(seed: int) -> dict:
    data = accuracy.mt_split(seed)
    return {"train": data["train"], "val_normal": data["val_normal"], "val": data["val"]}


def full_features(images: list, size: tuple[int, int]) -> np.ndarray:
    """[n, h, w, 576] float16 patch features (before any reduction) of BGR images at `size` (W x H)."""
    from ovdoc.irmodels import imagenet_backbone
    from ovdoc.runtime.features import FeatureExtractor
    from ovdoc.runtime.ir import read_ir
    from ovdoc.runtime.patch import PatchConfig, build_patch_model

    w, h = size
    backbone, spec, _ = read_ir(imagenet_backbone())
    model, record = build_patch_model(backbone, h, w, PatchConfig(reduce="none"))
    ext = FeatureExtractor(model, dataclasses.replace(spec, height=h, width=w, resize="stretch"))
    gh, gw = record["grid"]
    return ext.extract(images, progress=False).reshape(len(images), gh, gw, -1).astype(np.float16)


def evaluate(data: dict, feats: dict, row: tuple, seed: int) -> dict:
    """Validation image AUROC, pooled pixel AUROC and search time of one setting on one seed."""
    from ovdoc.runtime.evaluation import auc
    from ovdoc.runtime.patch import (
        PatchConfig,
        PatchScorer,
        aggregate,
        bank_split,
        gaussian_smooth,
        greedy_coreset,
        pca_matrix,
        projection_matrix,
    )

    _, reduce, dim, coreset, index, nprobe, sigma = row
    train = feats["train"].astype(np.float32)
    n, gh, gw, channels = train.shape
    config = PatchConfig(seed=seed)  # the product's split: calib_fraction, pca_images
    rng, cal, bank_order = bank_split(n, config)
    stats, bank_imgs = cal[: len(cal) // 2], np.sort(bank_order)
    if reduce == "pca":
        matrix = pca_matrix(train[bank_order[: config.pca_images]].reshape(-1, channels), dim)
    elif reduce == "project":
        matrix = projection_matrix(channels, dim, seed)
    else:
        matrix = np.eye(channels, dtype=np.float32)
    d = matrix.shape[1]
    reduced = (train.reshape(-1, channels) @ matrix).reshape(n, gh, gw, d)
    cand = reduced[bank_imgs].reshape(-1, d)
    if len(cand) > config.max_candidates:
        cand = cand[np.sort(rng.choice(len(cand), config.max_candidates, replace=False))]
    if coreset and coreset < len(cand):
        cand = cand[greedy_coreset(cand, coreset, projection_dim=32, seed=seed)]
    scorer = PatchScorer((gh, gw), d, normalise="ratio", index=index, nprobe=nprobe or 8).fit(cand)
    scorer.fit_position(scorer.raw_maps(reduced[stats]))

    def maps(x: np.ndarray) -> np.ndarray:
        return scorer.patch_maps(x.astype(np.float32).reshape(-1, channels) @ matrix)

    t0 = time.perf_counter()
    normal_maps = maps(feats["val_normal"])
    search_ms = (time.perf_counter() - t0) / len(normal_maps) * 1000
    defect_maps = {k: maps(feats[k]) for k in accuracy.MT_TYPES}
    normal_scores = aggregate(normal_maps, "topk", 10)
    per_type = {k: round(auc(normal_scores, aggregate(m, "topk", 10)), 4) for k, m in defect_maps.items()}
    image = auc(normal_scores, np.concatenate([aggregate(m, "topk", 10) for m in defect_maps.values()]))

    def frame_maps(grid_maps: np.ndarray, images: list) -> list:
        smooth = gaussian_smooth(grid_maps.astype(np.float32), sigma)
        return [cv2.resize(m, (im.shape[1], im.shape[0]), interpolation=cv2.INTER_LINEAR)
                for m, im in zip(smooth, images, strict=True)]

    all_maps = frame_maps(normal_maps, data["val_normal"])
    all_masks = [np.zeros(im.shape[:2], bool) for im in data["val_normal"]]
    for kind, (images, masks) in data["val"].items():
        all_maps += frame_maps(defect_maps[kind], images)
        all_masks += masks
    pixel = accuracy.pixel_auroc(all_maps, all_masks)
    return {"image_auroc": round(image, 4), "per_type": per_type, "pixel_auroc": round(pixel, 4),
            "search_ms_per_image": round(search_ms, 2), "bank": int(len(cand)),
            "pixel_breakdown": pixel_breakdown(all_maps, all_masks, len(data["val_normal"]))}


def pixel_breakdown(maps: list, masks: list, n_normal: int) -> dict:
    """Why pooled pixel AUROC depends on the mix of images: defect pixels against normal images' pixels
    and against the off-mask pixels of defect images, the pool with the defect images counted twice (as
    in the test split, 2/3 of the defects against the same number of normals), and mean map levels."""
    from sklearn.metrics import roc_auc_score

    px = [(m[::2, ::2], k[::2, ::2]) for m, k in zip(maps, masks, strict=True)]
    normal = np.concatenate([m.ravel() for m, _ in px[:n_normal]])
    on = np.concatenate([m[k] for m, k in px[n_normal:]])
    off = np.concatenate([m[~k] for m, k in px[n_normal:]])

    def roc(neg: list) -> float:
        neg = np.concatenate(neg)
        return round(float(roc_auc_score(np.r_[np.ones(len(on)), np.zeros(len(neg))], np.r_[on, neg])), 4)

    return {"vs_normal_images": roc([normal]), "vs_defect_images_off_mask": roc([off]),
            "pooled": roc([normal, off]), "pooled_defect_images_twice": roc([normal, off, off]),
            "mean_map": {"normal_images": round(float(normal.mean()), 3),
                         "defect_images_off_mask": round(float(off.mean()), 3),
                         "on_mask": round(float(on.mean()), 3)}}


@click.command()
@click.option("--seeds", default="0,1,2", show_default=True)
@click.option("--rows", default="all", show_default=True, help="all, or row numbers (1-based), e.g. 1,5.")
@click.option("--no-record", is_flag=True, help="Print only; write nothing under benchmarks/results.")
def main(seeds: str, rows: str, no_record: bool) -> None:
    names = list(ROWS)
    if rows != "all":
        names = [names[int(i) - 1] for i in rows.split(",")]
    seeds_ = [int(s) for s in seeds.split(",")]
    results: dict[str, list[dict]] = {name: [] for name in names}
    for seed in seeds_:
        data = split_images(seed)
        parts = {"train": data["train"], "val_normal": data["val_normal"],
                 **{k: images for k, (images, _) in data["val"].items()}}
        for size in dict.fromkeys(ROWS[name][0] for name in names):
            feats = {k: full_features(v, size) for k, v in parts.items()}
            for name in names:
                if ROWS[name][0] == size:
                    results[name].append(evaluate(data, feats, ROWS[name], seed))
                    r = results[name][-1]
                    print(f"seed {seed} {name}: image {r['image_auroc']} pixel {r['pixel_auroc']} "
                          f"({r['search_ms_per_image']} ms/img)", flush=True)
    table = ["| setting | val image AUROC | per seed | Blowhole / Break / Crack / Fray / Uneven | "
             "val pooled pixel AUROC | search ms/img |", "|---|---|---|---|---|---|"]
    summary = {}
    for name, rs in results.items():
        img = [r["image_auroc"] for r in rs]
        pix = [r["pixel_auroc"] for r in rs]
        types = " / ".join(f"{np.mean([r['per_type'][k] for r in rs]):.3f}" for k in accuracy.MT_TYPES)
        summary[name] = {"image_auroc": [round(float(np.mean(img)), 4), round(float(np.std(img)), 4)],
                         "pixel_auroc": [round(float(np.mean(pix)), 4), round(float(np.std(pix)), 4)],
                         "runs": rs}
        table.append(f"| {name} | {np.mean(img):.4f} ± {np.std(img):.4f} | {', '.join(map(str, img))} | "
                     f"{types} | {np.mean(pix):.4f} ± {np.std(pix):.4f} | "
                     f"{np.median([r['search_ms_per_image'] for r in rs]):.1f} |")
    table += ["", "Pooled pixel AUROC depends on the mix of images (`pixel_breakdown`, mean over seeds):", "",
              "| setting | defect px vs normal images | vs off-mask px of defect images | pooled | pooled, "
              "defect images x2 | mean map: normal / off-mask / on-mask |", "|---|---|---|---|---|---|"]
    for name, rs in results.items():
        b = [r["pixel_breakdown"] for r in rs]
        mean = {key: np.mean([x[key] for x in b]) for key in b[0] if key != "mean_map"}
        levels = " / ".join(f"{np.mean([x['mean_map'][k] for x in b]):.2f}"
                            for k in ("normal_images", "defect_images_off_mask", "on_mask"))
        table.append(f"| {name} | {mean['vs_normal_images']:.4f} | {mean['vs_defect_images_off_mask']:.4f} | "
                     f"{mean['pooled']:.4f} | {mean['pooled_defect_images_twice']:.4f} | {levels} |")
    text = "\n".join(table)
    print(text)
    if no_record:
        return
    from ovdoc.atomic import write_text_atomic

    command = "python benchmarks/magnetic_tile_patch_sweep.py " + " ".join(sys.argv[1:])
    out = accuracy.RESULTS / "accuracy-magnetic-tile-patch-bank-sweep"
    write_text_atomic(out.with_suffix(".json"), json.dumps(
        {"command": command, "seeds": seeds_, "rows": summary,
         "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}, indent=2) + "\n")
    write_text_atomic(out.with_suffix(".md"), (
        "# Magnetic tile, patch mode: validation sweep of reduction, bank, index and input size\n\n"
        f"`{command}`\n\nValidation split only (seeds {seeds_}): bank from 80 % of the seed's training "
        "normals (greedy k-center on a 32-d projection), per-position ratio normalisation from 10 %, "
        "image score = mean of the 10 hottest patches; validation normals vs validation defects. "
        "Search time is per image on this (shared) 2-core machine, to compare rows with each other "
        "only.\n\n" + text + "\n"))


if __name__ == "__main__":
    main()
