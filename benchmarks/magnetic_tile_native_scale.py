"""Patch mode at a fixed scale (every tile resized by one factor, its aspect kept) against the default (every
tile stretched to one ~20k-pixel input), and power-normalised patch features, on the tile-disjoint
magnetic-tile *validation* split (never the test tiles).

    python benchmarks/magnetic_tile_native_scale.py                 # seeds 0,1,2, every row, recorded
    python benchmarks/magnetic_tile_native_scale.py --rows default,scale-0.5 --seeds 0 --no-record

Why: the tiles are 229-403 px tall but 103-620 px wide, so stretching each to 128x160 squeezes one tile's
surface texture up to 4.8x sideways and stretches another's 1.2x; the memory bank then has to hold every
texture at every squeeze. At a fixed scale a surface looks the same on every tile, which is what scoring
overlapping windows at native resolution (issue 23's `--tile`) would also give. Rows:
- default: the product's patch pipeline, reproduced with its own pieces (`build_patch_model` taps and 3x3
  neighbourhoods, PCA-64 fitted on 64 bank images, greedy k-center bank of 32,768 from <= 200k candidates,
  nearest-patch distance, per-position ratio normalisation from held-out tiles, top-10 mean);
- scale-F: each tile resized by F (both axes), reflect-padded to a multiple of 32, the grid cropped back
  to the tile; positions differ per tile, so the normalisation is per *distance to the tile's edges* (up
  to 3 cells from each side, 7x7 classes) from the same held-out tiles;
- default + sqrt / l2 / sqrt-l2: the default with each patch feature's square root (power normalisation:
  what sqrt-cosine does for global mode) and/or unit length, before the PCA.
Per seed the bank holds the seed's train tiles but a held-out 20 % (whole tiles); image AUROC on the
seed's validation tiles (defect-free vs defect shots), per defect type. Decision per row by the
frozen-defaults rule (lever_rule.against_default). Writes benchmarks/results/
accuracy-magnetic-tile-native-scale.{json,md}.
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
from lever_rule import against_default  # noqa: E402

COMMAND = "python benchmarks/magnetic_tile_native_scale.py"
DEFAULT_SIZE = (128, 160)  # (w, h): what `ovdoc fit --mode patch` picks for these tiles (~20k pixels)
EDGE_CELLS = 3  # scale rows: cells from each edge with their own normalisation class
# row -> (geometry: "default" or a scale factor, feature transform)
ROWS: dict[str, tuple[str | float, str]] = {
    "default": ("default", "none"),
    "scale-0.35": (0.35, "none"),
    "scale-0.5": (0.5, "none"),
    "scale-0.7": (0.7, "none"),
    "default + sqrt": ("default", "sqrt"),
    "default + l2": ("default", "l2"),
    "default + sqrt-l2": ("default", "sqrt-l2"),
}


class Features:
    """The shipped backbone's patch features (all 576 channels, before any reduction) at any input size."""

    def __init__(self) -> None:
        from ovdoc.irmodels import imagenet_backbone
        from ovdoc.runtime.ir import read_ir
        from ovdoc.runtime.patch import PatchConfig, model_layers

        self.model, self.spec, _ = read_ir(imagenet_backbone())
        config = PatchConfig()
        self.config = dataclasses.replace(config, layers=model_layers(self.model, config.layers))
        self.compiled: dict[tuple[int, int], object] = {}

    def _model(self, h: int, w: int):
        from ovdoc.runtime.ir import compile_ir
        from ovdoc.runtime.patch import build_patch_model

        if (h, w) not in self.compiled:
            patch, _ = build_patch_model(self.model, h, w, self.config)
            spec = dataclasses.replace(self.spec, height=h, width=w, resize="stretch")
            self.compiled[(h, w)] = compile_ir(patch, spec, batch=1)
        return self.compiled[(h, w)]

    def __call__(self, image: np.ndarray, geometry: str | float, transform: str) -> np.ndarray:
        """[grid h, grid w, 576] float16 for one BGR image."""
        if geometry == "default":
            w, h = DEFAULT_SIZE
            x = cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA)
            height, width, gh, gw = h, w, h // 8, w // 8
        else:
            f = float(geometry)
            nh, nw = max(32, round(image.shape[0] * f)), max(32, round(image.shape[1] * f))
            x = cv2.resize(image, (nw, nh), interpolation=cv2.INTER_AREA if f < 1 else cv2.INTER_LINEAR)
            height, width = -(-nh // 32) * 32, -(-nw // 32) * 32
            x = cv2.copyMakeBorder(x, 0, height - nh, 0, width - nw, cv2.BORDER_REFLECT_101)
            gh, gw = -(-nh // 8), -(-nw // 8)
        out = self._model(height, width)(x[None])[0][0][:gh, :gw]
        if "sqrt" in transform:
            out = np.sqrt(np.maximum(out, 0.0))
        if "l2" in transform:
            out = out / np.maximum(np.linalg.norm(out, axis=-1, keepdims=True), 1e-6)
        return out.astype(np.float16)


def edge_classes(gh: int, gw: int) -> np.ndarray:
    """[gh, gw] class of each cell by its distance to the tile's edges (EDGE_CELLS per side, else inner)."""
    def axis(n: int) -> np.ndarray:
        a = np.arange(n)
        out = np.full(n, EDGE_CELLS)
        out[a < EDGE_CELLS] = a[a < EDGE_CELLS]
        far = n - 1 - a
        out[far < EDGE_CELLS] = 2 * EDGE_CELLS - far[far < EDGE_CELLS]
        return out

    return axis(gh)[:, None] * (2 * EDGE_CELLS + 1) + axis(gw)[None, :]


def top_mean(m: np.ndarray, k: int = 10) -> float:
    flat = m.ravel()
    k = min(k, flat.size)
    return float(np.partition(flat, -k)[-k:].mean())


def score_seed(feats: dict[int, np.ndarray], geometry: str | float, seed: int) -> dict:
    """Image AUROC (all, per type) of one row on one seed's validation tiles."""
    import faiss

    from ovdoc.runtime.evaluation import auc
    from ovdoc.runtime.patch import greedy_coreset, pca_matrix

    info = accuracy.mt_tiles()
    parts = accuracy.mt_tile_parts(seed)
    pick = lambda part, free: [i for i in feats if info["tiles"][i] in parts[part]  # noqa: E731
                               and (info["types"][i] == "Free") == free]
    train, val_normal, val_defect = pick("train", True), pick("val", True), pick("val", False)
    rng = np.random.default_rng(seed)
    tiles = sorted({info["tiles"][i] for i in train})
    held = {tiles[i] for i in rng.permutation(len(tiles))[: round(0.2 * len(tiles))]}
    bank = [i for i in train if info["tiles"][i] not in held]
    cal = [i for i in train if info["tiles"][i] in held]
    rng.shuffle(bank)
    channels = next(iter(feats.values())).shape[-1]
    flat = lambda i: feats[i].reshape(-1, channels).astype(np.float32)  # noqa: E731
    pca = pca_matrix(np.concatenate([flat(i) for i in bank[:64]]), 64)
    per_image = max(1, 200_000 // len(bank))
    candidates = []
    for i in bank:
        x = flat(i)
        if len(x) > per_image:
            x = x[rng.choice(len(x), per_image, replace=False)]
        candidates.append(x @ pca)
    candidates = np.concatenate(candidates)
    chosen = candidates[greedy_coreset(candidates, min(32768, len(candidates)), seed=seed)]
    index = faiss.IndexFlatL2(64)
    index.add(np.ascontiguousarray(chosen))

    def raw(i: int) -> np.ndarray:
        d, _ = index.search(np.ascontiguousarray(flat(i) @ pca), 1)
        return np.sqrt(np.maximum(d[:, 0], 0.0)).reshape(feats[i].shape[:2])

    cal_maps = [raw(i) for i in cal]
    if geometry == "default":
        position = np.mean(cal_maps, axis=0)
        normalise = lambda m: m / np.maximum(position, 1e-6)  # noqa: E731
    else:
        classes = (2 * EDGE_CELLS + 1) ** 2
        sums, counts = np.zeros(classes), np.zeros(classes)
        for m in cal_maps:
            c = edge_classes(*m.shape).ravel()
            np.add.at(sums, c, m.ravel())
            np.add.at(counts, c, 1)
        table = sums / np.maximum(counts, 1)
        table[counts == 0] = np.median(table[counts > 0])
        normalise = lambda m: m / table[edge_classes(*m.shape)]  # noqa: E731
    score = lambda i: top_mean(normalise(raw(i)))  # noqa: E731
    s_n = np.array([score(i) for i in val_normal])
    s_d = np.array([score(i) for i in val_defect])
    types = np.array([info["types"][i] for i in val_defect])
    out = {"image_auroc": round(auc(s_n, s_d), 4)}
    out |= {f"auroc_{t}": round(auc(s_n, s_d[types == t]), 4)
            for t in accuracy.MT_TYPES if (types == t).any()}
    return out


def markdown(record: dict) -> str:
    lines = ["# Patch mode at a fixed scale, and power-normalised patch features (validation only)", "",
             f"`{record['command']}` ({record['date']}); {record['machine']}", "", record["protocol"], "",
             "| row | image AUROC | per seed | " + " | ".join(accuracy.MT_TYPES) + " |",
             "|---|---|---|" + "---|" * len(accuracy.MT_TYPES)]
    for name, r in record["rows"].items():
        mean, sd = r["mean_std"]["image_auroc"]
        per_type = " | ".join(f"{r['per_type'].get(t, float('nan')):.3f}" for t in accuracy.MT_TYPES)
        seeds = " / ".join(f"{s['image_auroc']:.4f}" for s in r["per_seed"])
        lines.append(f"| {name} | {mean:.4f} ± {sd:.4f} | {seeds} | {per_type} |")
    lines += ["", "## Decision", ""] + [f"- {d['line']}" for d in record["decisions"].values()]
    lines += ["", f"Mean patches per tile: {record['patches_per_tile']}.", ""]
    return "\n".join(lines)


@click.command(help=__doc__.split("\n\n")[0])
@click.option("--rows", default=",".join(ROWS), show_default=True)
@click.option("--seeds", default="0,1,2", show_default=True)
@click.option("--no-record", is_flag=True, help="Print only; leave benchmarks/results alone.")
def main(rows: str, seeds: str, no_record: bool) -> None:
    from ovdoc.runtime.bench.machine import describe_machine, summary_line

    names = [r for r in rows.split(",") if r]
    if "default" not in names or set(names) - set(ROWS):
        raise SystemExit(f"--rows: 'default' and any of {', '.join(ROWS)}")
    seed_list = [int(s) for s in seeds.split(",")]
    info = accuracy.mt_tiles()
    test = accuracy.mt_test_tiles()
    keep = [i for i, g in enumerate(info["tiles"]) if g not in test]  # the test tiles are never read
    images = {i: cv2.imread(str(info["paths"][i])) for i in keep}
    features = Features()
    results, patches = {}, {}
    for name in names:
        geometry, transform = ROWS[name]
        t0 = time.perf_counter()
        feats = {i: features(im, geometry, transform) for i, im in images.items()}
        patches[name] = round(float(np.mean([f.shape[0] * f.shape[1] for f in feats.values()])))
        runs = [score_seed(feats, geometry, seed) for seed in seed_list]
        del feats
        types = {t: round(float(np.mean([r[f"auroc_{t}"] for r in runs])), 4) for t in accuracy.MT_TYPES}
        aurocs = [r["image_auroc"] for r in runs]
        results[name] = {"per_seed": runs, "per_type": types,
                         "mean_std": {"image_auroc": (round(float(np.mean(aurocs)), 4),
                                                      round(float(np.std(aurocs)), 4))}}
        print(f"{name}: {np.mean(aurocs):.4f} ± {np.std(aurocs):.4f} {aurocs} "
              f"({time.perf_counter() - t0:.0f} s)", flush=True)
    decisions = {name: against_default(name, results[name], results["default"], wins="adopt",
                                       loses="not adopted") for name in names if name != "default"}
    for d in decisions.values():
        print(d["line"])
    record = {"experiment": "magnetic-tile-native-scale", "date": time.strftime("%Y-%m-%d"),
              "command": COMMAND, "machine": summary_line(describe_machine()), "seeds": seed_list,
              "protocol": accuracy.MT_VALIDATION_PROTOCOL + "; here no fit: the held-out 20 % of the train "
              "tiles set the normalisation (no threshold, image AUROC only)", "rows": results,
              "decisions": decisions, "patches_per_tile": patches}
    if not no_record:
        stem = accuracy.RESULTS / "accuracy-magnetic-tile-native-scale"
        stem.with_suffix(".json").write_text(json.dumps(record, indent=2) + "\n")
        stem.with_suffix(".md").write_text(markdown(record))


if __name__ == "__main__":
    main()
