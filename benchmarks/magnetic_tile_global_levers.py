"""Global mode's geometry and metric on the tile-disjoint magnetic-tile *validation* split (never the test
tiles): center_crop (the model's default) vs stretch (the whole tile), euclidean vs cosine kNN (k=5).

    python benchmarks/magnetic_tile_global_levers.py

Shipped backbone (224x224, 1280-d), features extracted once per geometry for every non-test image; per
seed 0-2 the kNN index holds that seed's train tiles' defect-free shots and scores its validation tiles'
shots (defect-free vs defect). Prints and writes benchmarks/results/accuracy-magnetic-tile-global-levers.json.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import accuracy  # noqa: E402  (the benchmark module beside this file)


def main() -> None:
    import argparse

    argparse.ArgumentParser(description=__doc__.split("\n\n")[0]).parse_args()
    from ovdoc.irmodels import imagenet_backbone
    from ovdoc.runtime.evaluation import auc
    from ovdoc.runtime.features import FeatureExtractor
    from ovdoc.runtime.ir import read_ir
    from ovdoc.runtime.scoring import make_scorer

    info = accuracy.mt_tiles()
    test = accuracy.mt_test_tiles()
    idx = [i for i, g in enumerate(info["tiles"]) if g not in test]  # the test tiles are never read
    images = [cv2.imread(str(info["paths"][i])) for i in idx]
    model, spec, _ = read_ir(imagenet_backbone())
    feats = {r: FeatureExtractor(model, dataclasses.replace(spec, resize=r)).extract(images, progress=False)
             for r in ("center_crop", "stretch")}
    pos = {i: k for k, i in enumerate(idx)}
    rows: dict[str, list[float]] = {}
    for seed in (0, 1, 2):
        parts = accuracy.mt_tile_parts(seed)
        def pick(tiles: set[str], free: bool) -> list[int]:
            return [pos[i] for i in idx if info["tiles"][i] in tiles and (info["types"][i] == "Free") == free]

        train = pick(parts["train"], True)
        val_normal, val_defect = pick(parts["val"], True), pick(parts["val"], False)
        for resize, f in feats.items():
            for metric in ("euclidean", "cosine"):
                s = make_scorer("knn", k=5, index="flat", metric=metric).fit(f[train])
                rows.setdefault(f"{resize} + {metric}", []).append(
                    round(auc(s.score_samples(f[val_normal]), s.score_samples(f[val_defect])), 4))
    result = {"experiment": "magnetic-tile-global-levers", "date": time.strftime("%Y-%m-%d"),
              "command": "python benchmarks/magnetic_tile_global_levers.py",
              "what": "validation image AUROC per seed 0-2 (tile-disjoint split, test tiles never read)",
              "default": "center_crop + euclidean (ovdoc fit's global defaults for the shipped backbone)",
              "rows": {k: {"per_seed": v,
                           "mean_std": [round(float(np.mean(v)), 4), round(float(np.std(v)), 4)]}
                       for k, v in rows.items()}}
    for k, v in result["rows"].items():
        print(f"{k}: {v['mean_std'][0]:.4f} ± {v['mean_std'][1]:.4f} {v['per_seed']}")
    out = accuracy.RESULTS / "accuracy-magnetic-tile-global-levers.json"
    out.write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
