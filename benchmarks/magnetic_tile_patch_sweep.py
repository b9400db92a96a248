"""Validation-only sweep behind patch mode's defaults: channel reduction, bank size, index, input size,
and the anomaly map (layers, normalisation, neighbours, per-image levels).

    python benchmarks/magnetic_tile_patch_sweep.py [--seeds 0,1,2] [--rows all|none|N,N] [--crop-test]

Uses accuracy.py's tile-disjoint magnetic-tile split (`mt_split(seed, with_test=False)`: the fixed
test tiles are never read, `assert_no_test_tiles` checks every image's tile) and only its *validation*
part: the bank is built from 80 % of the seed's training normals (10 % more set the per-position
normalisation, as `ovdoc fit --mode patch` does, whole tiles held out), and held-out validation normals
are scored against the validation defects; the test split is never extracted. Product components
throughout: the patch-feature IR (`build_patch_model`, all 576 channels), `pca_matrix`,
`projection_matrix`, `greedy_coreset`, `PatchScorer` (flat or inverted-file index), the product's map
smoothing. Prints image AUROC and pooled pixel AUROC (mean ± std over seeds) and search ms per image, and
writes benchmarks/results/accuracy-magnetic-tile-patch-bank-sweep.{json,md}; rows not run this time keep
their earlier record (each with its own command). `--crop-test` adds `crop_test`: do defect images look
anomalous away from their defects?
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


@dataclasses.dataclass(frozen=True)
class Setting:
    """One row of the sweep; the defaults are `ovdoc fit --mode patch`'s."""

    size: tuple[int, int] = (128, 160)  # model input W x H
    reduce: str = "pca"
    dim: int = 64
    coreset: int = 32768  # 0 = every patch
    index: str = "ivf"
    nprobe: int = 8
    sigma: float = 4.0  # map smoothing, grid cells
    layers: tuple[str, ...] = ("block_6_expand_relu", "block_10_expand_relu")
    normalise: str = "ratio"
    neighbours: int = 1  # map = mean distance to this many nearest bank patches
    relative: float = 0.0  # map minus this share of (the image's own median - the normal level)
    context: bool = False  # each patch feature followed by itself minus its image's mean feature


D = Setting()
OLD = dict(size=(96, 128), index="flat", sigma=3.0)  # the grid the first rows were swept on
ROWS = {
    "random-64, bank 4096, 96x128 (previous defaults)": Setting(**OLD, reduce="project", coreset=4096),
    "random-64, every patch, 96x128": Setting(**OLD, reduce="project", coreset=0),
    "all 576 channels, every patch, ivf nprobe 16, 96x128": Setting(
        **(OLD | dict(index="ivf")), reduce="none", dim=576, coreset=0, nprobe=16),
    "PCA-64, every patch, ivf nprobe 16, 96x128": Setting(**(OLD | dict(index="ivf")), coreset=0, nprobe=16),
    "PCA-64, bank 4096, 96x128": Setting(**OLD, coreset=4096),
    "PCA-64, bank 16384, 96x128": Setting(**OLD, coreset=16384),
    "PCA-64, bank 32768, 96x128": Setting(**OLD),
    "PCA-64, every patch, 96x128": Setting(**OLD, coreset=0),
    "PCA-64, bank 32768, ivf nprobe 8, 96x128, sigma 4": Setting(size=(96, 128)),
    "PCA-64, bank 32768, flat, 128x160, sigma 4": Setting(index="flat"),
    "PCA-64, bank 32768, ivf nprobe 16, 128x160, sigma 4": Setting(nprobe=16),
    "PCA-32, bank 32768, ivf nprobe 8, 128x160, sigma 4": Setting(dim=32),
    "PCA-64, bank 32768, ivf nprobe 8, 128x160, sigma 3": Setting(sigma=3.0),
    "PCA-64, bank 32768, ivf nprobe 8, 128x160, sigma 6": Setting(sigma=6.0),
    "**defaults**: PCA-64, bank 32768, ivf nprobe 8, 128x160, sigma 4": D,
    "PCA-64, bank 32768, ivf nprobe 8, 160x192, sigma 4": Setting(size=(160, 192)),
    "PCA-64, bank 32768, ivf nprobe 8, 192x224, sigma 4": Setting(size=(192, 224)),
    # map variants, each one change from the defaults: can the map separate defect pixels from the rest
    # of a defect image better? (the pooled pixel AUROC's weak part, see pixel_breakdown)
    "defaults + a stride-4 layer (block_3_expand_relu; 16x20 -> 32x40 grid)": Setting(
        layers=("block_3_expand_relu", *D.layers)),
    "defaults, 256x320 input (32x40 grid), sigma 6": Setting(size=(256, 320), sigma=6.0),
    "defaults, per-position z-scores instead of ratios": Setting(normalise="z"),
    "defaults, no per-position normalisation": Setting(normalise="none"),
    "defaults, map = mean distance to the 3 nearest bank patches": Setting(neighbours=3),
    "defaults, map minus 0.5 x (image median - normal level)": Setting(relative=0.5),
    "defaults, map minus the image's median (relative map)": Setting(relative=1.0),
    "defaults + a third, deeper layer (block_13_expand_relu, stride 16), sigma 6": Setting(
        layers=(*D.layers, "block_13_expand_relu"), sigma=6.0),
    # large, low-contrast defects (Uneven: ~70 % of all annotated defect pixels) are made of patches that
    # look normal on their own; does a patch's difference from the rest of its tile show them?
    "defaults, features + (features - the image's mean feature)": Setting(context=True),
}
# defect-image pixels at least this far (frame px, ~1/5 of a tile) from every annotated defect pixel
FAR_FROM_MASK_PX = 60


def split_images(seed: int) -> dict:
    """The seed's train and validation tiles only: the test tiles are never read (asserted)."""
    data = accuracy.mt_split(seed, with_test=False)
    assert_no_test_tiles(data)
    return {"train": data["train"], "val_normal": data["val_normal"], "val": data["val"],
            "groups": data["groups"], "tiles": data["tiles"]}


def assert_no_test_tiles(data: dict) -> None:
    """The sweep tunes settings: not one image of a fixed test tile may reach it."""
    test = accuracy.mt_test_tiles()
    seen = {g for keys in data["groups"].values() for g in keys}
    leaked = seen & test
    if "test" in data or "test_normal" in data or leaked:
        raise AssertionError(f"the sweep was given test tiles: {sorted(leaked)[:5]}")


def full_features(images: list, size: tuple[int, int], layers: tuple[str, ...]) -> np.ndarray:
    """[n, h, w, c] float16 patch features (before any reduction) of BGR images at `size` (W x H)."""
    from ovdoc.irmodels import imagenet_backbone
    from ovdoc.runtime.features import FeatureExtractor
    from ovdoc.runtime.ir import read_ir
    from ovdoc.runtime.patch import PatchConfig, build_patch_model

    w, h = size
    backbone, spec, _ = read_ir(imagenet_backbone())
    model, record = build_patch_model(backbone, h, w, PatchConfig(reduce="none", layers=layers))
    ext = FeatureExtractor(model, dataclasses.replace(spec, height=h, width=w, resize="stretch"))
    gh, gw = record["grid"]
    return ext.extract(images, progress=False).reshape(len(images), gh, gw, -1).astype(np.float16)


def fit_maps(train: np.ndarray, row: Setting, seed: int, groups: list[str] | None = None):
    """Bank + per-position statistics from the training normals' features, as `ovdoc fit --mode patch`
    builds them; returns (maps: features [n, h, w, c] -> patch-score grids [n, h, w], the map level of a
    typical normal patch, the bank size). `groups` (each training image's tile): whole tiles held out."""
    from ovdoc.runtime.patch import (
        PatchConfig,
        PatchScorer,
        bank_split,
        greedy_coreset,
        pca_matrix,
        projection_matrix,
    )

    train = train.astype(np.float32)
    n, gh, gw, channels = train.shape
    config = PatchConfig(seed=seed)  # the product's split: calib_fraction, pca_images
    rng, cal, bank_order = bank_split(n, config, groups)
    stats, bank_imgs = cal[: len(cal) // 2], np.sort(bank_order)
    if row.reduce == "pca":
        matrix = pca_matrix(train[bank_order[: config.pca_images]].reshape(-1, channels), row.dim)
    elif row.reduce == "project":
        matrix = projection_matrix(channels, row.dim, seed)
    else:
        matrix = np.eye(channels, dtype=np.float32)
    d = matrix.shape[1]
    reduced = (train.reshape(-1, channels) @ matrix).reshape(n, gh, gw, d)
    cand = reduced[bank_imgs].reshape(-1, d)
    if len(cand) > config.max_candidates:
        cand = cand[np.sort(rng.choice(len(cand), config.max_candidates, replace=False))]
    if row.coreset and row.coreset < len(cand):
        cand = cand[greedy_coreset(cand, row.coreset, projection_dim=32, seed=seed)]
    scorer = PatchScorer((gh, gw), d, normalise=row.normalise, index=row.index, nprobe=row.nprobe).fit(cand)

    def raw(x: np.ndarray) -> np.ndarray:
        if row.neighbours == 1:
            return scorer.raw_maps(x)
        d2, _ = scorer.index_.search(np.ascontiguousarray(x.reshape(-1, d)), row.neighbours)
        return np.sqrt(np.maximum(d2, 0.0)).mean(axis=1).reshape(-1, gh, gw).astype(np.float32)

    scorer.fit_position(raw(reduced[stats]))

    def maps(x: np.ndarray) -> np.ndarray:
        return scorer.normalised(raw(x.astype(np.float32).reshape(-1, channels) @ matrix))

    return maps, scorer.map_baseline, len(cand)


def with_context(feats: np.ndarray) -> np.ndarray:
    """[n, h, w, 2c]: each patch feature, then its difference from its image's mean patch feature."""
    x = feats.astype(np.float32)
    return np.concatenate([x, x - x.mean(axis=(1, 2), keepdims=True)], axis=-1).astype(np.float16)


def evaluate(data: dict, feats: dict, row: Setting, seed: int) -> dict:
    """Validation image AUROC, pooled pixel AUROC and search time of one setting on one seed."""
    from ovdoc.runtime.evaluation import auc
    from ovdoc.runtime.patch import aggregate, gaussian_smooth

    if row.context:
        feats = {k: with_context(v) for k, v in feats.items()}
    maps, level, bank = fit_maps(feats["train"], row, seed, data["groups"]["train"])
    t0 = time.perf_counter()
    normal_maps = maps(feats["val_normal"])
    search_ms = (time.perf_counter() - t0) / len(normal_maps) * 1000
    defect_maps = {k: maps(feats[k]) for k in accuracy.MT_TYPES}
    normal_scores = aggregate(normal_maps, "topk", 10)
    per_type = {k: round(auc(normal_scores, aggregate(m, "topk", 10)), 4) for k, m in defect_maps.items()}
    image = auc(normal_scores, np.concatenate([aggregate(m, "topk", 10) for m in defect_maps.values()]))

    def frame_maps(grid_maps: np.ndarray, images: list) -> list:
        smooth = gaussian_smooth(grid_maps.astype(np.float32), row.sigma)
        if row.relative:  # the map only: image scores above come from the unadjusted map
            median = np.median(smooth.reshape(len(smooth), -1), axis=1)
            smooth = smooth - row.relative * (median - level)[:, None, None]
        return [cv2.resize(m, (im.shape[1], im.shape[0]), interpolation=cv2.INTER_LINEAR)
                for m, im in zip(smooth, images, strict=True)]

    all_maps = frame_maps(normal_maps, data["val_normal"])
    all_masks = [np.zeros(im.shape[:2], bool) for im in data["val_normal"]]
    for kind, (images, masks) in data["val"].items():
        all_maps += frame_maps(defect_maps[kind], images)
        all_masks += masks
    pixel = accuracy.pixel_auroc(all_maps, all_masks)
    return {"image_auroc": round(image, 4), "per_type": per_type, "pixel_auroc": round(pixel, 4),
            "search_ms_per_image": round(search_ms, 2), "bank": int(bank),
            "pixel_breakdown": pixel_breakdown(all_maps, all_masks, len(data["val_normal"]))}


def defect_free_band(mask: np.ndarray, margin: int = FAR_FROM_MASK_PX) -> tuple[int, int, int, int] | None:
    """(x, y, w, h) of the largest full-width or full-height band along an image edge whose every pixel
    is more than `margin` px from every annotated defect pixel; None if under 30 % of the image."""
    height, width = mask.shape
    clear = cv2.distanceTransform((~mask).astype(np.uint8), cv2.DIST_L2, 5) > margin

    def run(v: np.ndarray) -> int:  # how many leading entries are True
        return int(np.argmin(v)) if not v.all() else len(v)

    rows, cols = clear.all(axis=1), clear.all(axis=0)
    top, bottom, left, right = run(rows), run(rows[::-1]), run(cols), run(cols[::-1])
    area, box = max((top * width, (0, 0, width, top)),
                    (bottom * width, (0, height - bottom, width, bottom)),
                    (left * height, (0, 0, left, height)),
                    (right * height, (width - right, 0, right, height)))
    return box if area >= 0.3 * height * width else None


def crop_test(data: dict, train: np.ndarray, seed: int) -> dict:
    """Are defect images anomalous away from their defects? Bands of the validation defect images far from
    every annotated defect (`defect_free_band`) against bands of the validation normals cut at the same
    relative place and size (each normal paired with a random defect band), both scored as whole images by
    the default bank: AUROC ~0.5 = the rest of a defect image looks normal, so what lifts its map off the
    mask is the map's reach from the defect (receptive field, neighbourhood, smoothing), not the tile."""
    from ovdoc.runtime.evaluation import auc
    from ovdoc.runtime.patch import aggregate

    defect_crops, boxes = [], []
    for images, masks in data["val"].values():
        for image, mask in zip(images, masks, strict=True):
            box = defect_free_band(mask)
            if box is not None:
                x, y, w, h = box
                defect_crops.append(image[y : y + h, x : x + w])
                boxes.append((x / mask.shape[1], y / mask.shape[0], w / mask.shape[1], h / mask.shape[0]))
    rng = np.random.default_rng(seed)
    normal_crops = []
    for image in data["val_normal"]:
        fx, fy, fw, fh = boxes[rng.integers(len(boxes))]
        height, width = image.shape[:2]
        x, y = int(fx * width), int(fy * height)
        normal_crops.append(image[y : y + max(8, int(fh * height)), x : x + max(8, int(fw * width))])
    maps, _, _ = fit_maps(train, D, seed, data["groups"]["train"])
    normal = aggregate(maps(full_features(normal_crops, D.size, D.layers)), "topk", 10)
    defect = aggregate(maps(full_features(defect_crops, D.size, D.layers)), "topk", 10)
    return {"image_auroc": round(auc(normal, defect), 4), "defect_crops": len(defect_crops),
            "normal_crops": len(normal_crops),
            "median_score": {"normal_crops": round(float(np.median(normal)), 3),
                             "defect_crops": round(float(np.median(defect)), 3)}}


def pixel_breakdown(maps: list, masks: list, n_normal: int) -> dict:
    """Why pooled pixel AUROC depends on the mix of images: defect pixels against normal images' pixels
    and against the off-mask pixels of defect images, the pool with the defect images counted twice (as
    in the test split, 2/3 of the defects against the same number of normals), mean map levels, and how
    well a defect image's map far from every annotated defect (its median there) tells it from a normal
    image (the median of its whole map). High means a defect lifts its whole image's map: either the map
    reaches far from the defect (receptive field, neighbourhood, smoothing) or the rest of the tile is
    anomalous too; `crop_test` tells the two apart."""
    from sklearn.metrics import roc_auc_score

    from ovdoc.runtime.evaluation import auc

    px = [(m[::2, ::2], k[::2, ::2]) for m, k in zip(maps, masks, strict=True)]
    normal = np.concatenate([m.ravel() for m, _ in px[:n_normal]])
    on = np.concatenate([m[k] for m, k in px[n_normal:]])
    off = np.concatenate([m[~k] for m, k in px[n_normal:]])

    def roc(neg: list) -> float:
        neg = np.concatenate(neg)
        return round(float(roc_auc_score(np.r_[np.ones(len(on)), np.zeros(len(neg))], np.r_[on, neg])), 4)

    far = []
    for m, k in zip(maps[n_normal:], masks[n_normal:], strict=True):
        distance = cv2.distanceTransform((~k).astype(np.uint8), cv2.DIST_L2, 5)
        if (distance > FAR_FROM_MASK_PX).mean() >= 0.1:  # at least a tenth of the image is far
            far.append(float(np.median(m[distance > FAR_FROM_MASK_PX])))
    normal_medians = [float(np.median(m)) for m in maps[:n_normal]]
    return {"vs_normal_images": roc([normal]), "vs_defect_images_off_mask": roc([off]),
            "pooled": roc([normal, off]), "pooled_defect_images_twice": roc([normal, off, off]),
            "far_from_mask_image_auroc": round(auc(normal_medians, far), 4), "far_from_mask_images": len(far),
            "mean_map": {"normal_images": round(float(normal.mean()), 3),
                         "defect_images_off_mask": round(float(off.mean()), 3),
                         "on_mask": round(float(on.mean()), 3)}}


def summarise(runs: list[dict], command: str, seeds: list[int]) -> dict:
    img = [r["image_auroc"] for r in runs]
    pix = [r["pixel_auroc"] for r in runs]
    return {"image_auroc": [round(float(np.mean(img)), 4), round(float(np.std(img)), 4)],
            "pixel_auroc": [round(float(np.mean(pix)), 4), round(float(np.std(pix)), 4)],
            "command": command, "seeds": seeds,
            "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "runs": runs}


def tables(summary: dict, crop: dict | None = None) -> str:
    """The two Markdown tables, rows in ROWS order, and the crop test's line."""
    table = ["| setting | val image AUROC | per seed | Blowhole / Break / Crack / Fray / Uneven | "
             "val pooled pixel AUROC | search ms/img |", "|---|---|---|---|---|---|"]
    for name, row in summary.items():
        rs = row["runs"]
        img, pix = row["image_auroc"], row["pixel_auroc"]
        types = " / ".join(f"{np.mean([r['per_type'][k] for r in rs]):.3f}" for k in accuracy.MT_TYPES)
        per_seed = ", ".join(str(r["image_auroc"]) for r in rs)
        table.append(f"| {name} | {img[0]:.4f} ± {img[1]:.4f} | {per_seed} | "
                     f"{types} | {pix[0]:.4f} ± {pix[1]:.4f} | "
                     f"{np.median([r['search_ms_per_image'] for r in rs]):.1f} |")
    table += ["", "Pooled pixel AUROC depends on the mix of images (`pixel_breakdown`, mean over seeds; the "
              f"last column: defect images told from normal ones by the median map more than "
              f"{FAR_FROM_MASK_PX} px from every annotated defect; — = row recorded before it was measured):",
              "", "| setting | defect px vs normal images | vs off-mask px of defect images | pooled | "
              "pooled, defect images x2 | mean map: normal / off-mask / on-mask | "
              "image AUROC far from the masks |",
              "|---|---|---|---|---|---|---|"]
    for name, row in summary.items():
        b = [r["pixel_breakdown"] for r in row["runs"]]
        mean = {key: np.mean([x[key] for x in b]) for key in b[0] if key != "mean_map"}
        levels = " / ".join(f"{np.mean([x['mean_map'][k] for x in b]):.2f}"
                            for k in ("normal_images", "defect_images_off_mask", "on_mask"))
        far = f"{mean['far_from_mask_image_auroc']:.4f}" if "far_from_mask_image_auroc" in mean else "—"
        table.append(f"| {name} | {mean['vs_normal_images']:.4f} | {mean['vs_defect_images_off_mask']:.4f} | "
                     f"{mean['pooled']:.4f} | {mean['pooled_defect_images_twice']:.4f} | {levels} | {far} |")
    if crop:
        r = crop["runs"]
        table += ["", f"Crop test (`crop_test`, defaults, seeds {crop['seeds']}): bands of the validation "
                  f"defect images more than {FAR_FROM_MASK_PX} px from every annotated defect "
                  f"({r[0]['defect_crops']} "
                  f"on seed {crop['seeds'][0]}) against the same bands of the validation normals, scored as "
                  f"whole images: AUROC **{crop['image_auroc'][0]:.4f} ± {crop['image_auroc'][1]:.4f}** "
                  f"(per seed {', '.join(str(x['image_auroc']) for x in r)})."]
    return "\n".join(table)


def merge_records(fresh: dict, previous: dict) -> dict:
    """Rows just run replace their records; rows not run keep theirs (each with its own command, seeds
    and date; a record from before rows carried them inherits the file's); rows no longer in ROWS drop."""
    recorded = {}
    for name, row in previous.get("rows", {}).items():
        recorded[name] = {key: previous[key] for key in ("command", "seeds", "date") if key in previous} | row
    return {name: fresh.get(name) or recorded[name] for name in ROWS if name in fresh or name in recorded}


@click.command()
@click.option("--seeds", default="0,1,2", show_default=True)
@click.option("--rows", default="all", show_default=True,
              help="all, none, or row numbers (1-based), e.g. 1,5.")
@click.option("--crop-test", "crops", is_flag=True,
              help="Also score defect-free bands of defect images against normal ones (see crop_test).")
@click.option("--no-record", is_flag=True, help="Print only; write nothing under benchmarks/results.")
def main(seeds: str, rows: str, crops: bool, no_record: bool) -> None:
    """Run the chosen rows; the record keeps earlier rows (each with its own command) and replaces these."""
    names = list(ROWS)
    if rows == "none":
        names = []
    elif rows != "all":
        names = [names[int(i) - 1] for i in rows.split(",")]
    seeds_ = [int(s) for s in seeds.split(",")]
    results: dict[str, list[dict]] = {name: [] for name in names}
    crop_runs: list[dict] = []
    for seed in seeds_:
        data = split_images(seed)
        parts = {"train": data["train"], "val_normal": data["val_normal"],
                 **{k: images for k, (images, _) in data["val"].items()}}
        for geometry in dict.fromkeys((ROWS[name].size, ROWS[name].layers) for name in names):
            feats = {k: full_features(v, *geometry) for k, v in parts.items()}
            for name in names:
                if (ROWS[name].size, ROWS[name].layers) == geometry:
                    results[name].append(evaluate(data, feats, ROWS[name], seed))
                    r = results[name][-1]
                    print(f"seed {seed} {name}: image {r['image_auroc']} pixel {r['pixel_auroc']} "
                          f"({r['search_ms_per_image']} ms/img)", flush=True)
        if crops:
            crop_runs.append(crop_test(data, full_features(data["train"], D.size, D.layers), seed))
            print(f"seed {seed} crop test: {crop_runs[-1]}", flush=True)
    command = "python benchmarks/magnetic_tile_patch_sweep.py " + " ".join(sys.argv[1:])
    fresh = {name: summarise(rs, command, seeds_) for name, rs in results.items()}
    crop = None
    if crops:
        auroc = [r["image_auroc"] for r in crop_runs]
        crop = {"image_auroc": [round(float(np.mean(auroc)), 4), round(float(np.std(auroc)), 4)],
                "command": command, "seeds": seeds_,
                "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "runs": crop_runs}
    print(tables(fresh, crop))
    if no_record:
        return
    from ovdoc.atomic import write_text_atomic

    out = accuracy.RESULTS / "accuracy-magnetic-tile-patch-bank-sweep"
    previous = json.loads(out.with_suffix(".json").read_text()) if out.with_suffix(".json").is_file() else {}
    summary = merge_records(fresh, previous)
    crop = crop or previous.get("crop_test")
    commands = sorted({row["command"] for row in [*summary.values(), *([crop] if crop else [])]})
    record = {"rows": summary} | ({"crop_test": crop} if crop else {})
    write_text_atomic(out.with_suffix(".json"), json.dumps(record, indent=2) + "\n")
    write_text_atomic(out.with_suffix(".md"), (
        "# Magnetic tile, patch mode: validation sweep of reduction, bank, index, input size and map\n\n"
        + "".join(f"`{c}`\n\n" for c in commands)
        + "Validation split only (each row's seeds and command in the JSON): bank from 80 % of the seed's "
        "training normals (greedy k-center on a 32-d projection), per-position normalisation from 10 %, "
        "image score = mean of the 10 hottest patches; validation normals vs validation defects. "
        "Search time is per image on this (shared) 2-core machine, to compare rows with each other "
        "only.\n\n" + tables(summary, crop) + "\n"))


if __name__ == "__main__":
    main()
