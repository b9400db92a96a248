"""Validation-only probe of two cheap levers for sneaker-vs-boot: test-time flips and score ensembles.

    python benchmarks/sneaker_ensembles.py --seeds 0,1,2 [--epochs 4]

Uses accuracy.py's per-seed split (methods_tasks) and models: the untrained backbone at 96 and 160 px
and ArcFace own-class at 96 px. Scores held-out training sneakers vs training ankle boots only (the test
split is never extracted): the product's kNN scorer (cosine, k=5) on each feature set, on the mean of an
image's and its mirror's unit features ("flip"), on the sum of two z-scored kNN scores (each standardised
by the leave-one-out scores of the training normals, so no anomaly informs the weights' scale) and on
concatenated features.
Prints validation AUC mean ± std over seeds; results are recorded by hand in
benchmarks/results/accuracy-sneaker-vs-boot-validation-sweep.md.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import click
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import accuracy  # noqa: E402  (the benchmark module beside this file)


def knn(train: np.ndarray):
    """The product's kNN scorer, as accuracy.py's methods rows use it (cosine, k=5)."""
    from ovdoc.runtime.scoring import ScorerSpec

    return ScorerSpec.parse("knn", k=5, metric="cosine").build().fit(train)


def features(task: dict, opts: dict, seed: int) -> dict:
    """{(model, flip): {part: unit features}} for train, val normal, val anomalous."""
    from ovdoc.runtime.features import FeatureExtractor
    from ovdoc.runtime.ir import read_ir
    from ovdoc.runtime.scoring import l2_normalise

    parts = {"train": task["target"].images, "val_n": task["val"][0], "val_a": task["val"][1]}
    out = {}
    with tempfile.TemporaryDirectory(prefix="ovdoc-ens-") as work:
        work = Path(work)
        for name, size in (("untrained-96", 96), ("untrained-160", 160), ("arcface-96", 96)):
            o = opts | {"size": size}
            if name.startswith("untrained"):
                xml = accuracy.untrained_ir(size, work / name)
            else:
                xml, _ = accuracy._trained_ir("arcface-own-class", task["target"], task["reference"], o, seed,
                                              work / name)
            model, spec, _ = read_ir(xml)
            ext = FeatureExtractor(model, spec, batch=8)
            plain, flipped = {}, {}
            for part, images in parts.items():
                x = np.asarray(list(images))
                plain[part] = l2_normalise(ext.extract(list(x), progress=False))
                mirror = l2_normalise(ext.extract(list(x[:, :, ::-1].copy()), progress=False))
                flipped[part] = l2_normalise(plain[part] + mirror)
            out[(name, False)], out[(name, True)] = plain, flipped
    return out


def seed_aucs(feats: dict) -> dict:
    from ovdoc.runtime.evaluation import auc

    z = {}
    for key, f in feats.items():
        scorer = knn(f["train"])
        loo = scorer.loo_scores()
        z[key] = {p: (scorer.score_samples(f[p]) - loo.mean()) / loo.std() for p in ("val_n", "val_a")}
    res = {f"{name}{' + flip' if flip else ''}": auc(s["val_n"], s["val_a"]) for (name, flip), s in z.items()}
    for other in ("untrained-96", "untrained-160"):
        for flip in (False, True):
            for w in (0.1, 0.2, 0.3, 0.5):
                a, b = z[("arcface-96", flip)], z[(other, flip)]
                res[f"z-sum arcface-96 + {w} x {other}{' + flip' if flip else ''}"] = auc(
                    (1 - w) * a["val_n"] + w * b["val_n"], (1 - w) * a["val_a"] + w * b["val_a"])
        for w in (0.3, 0.5, 0.7):
            fa, fb = feats[("arcface-96", False)], feats[(other, False)]
            cat = {p: np.hstack([fa[p], w * fb[p]]) for p in fa}  # the scorer rescales to unit length
            scorer = knn(cat["train"])
            res[f"concat arcface-96 + {w} x {other}"] = auc(scorer.score_samples(cat["val_n"]),
                                                           scorer.score_samples(cat["val_a"]))
    return res


@click.command()
@click.option("--seeds", default="0,1,2", show_default=True)
@click.option("--epochs", default=4, show_default=True, type=int, help="ArcFace epochs.")
def main(seeds: str, epochs: int) -> None:
    args = ["--experiment", "methods-sneaker-vs-boot", "--size", "96", "--epochs", str(epochs), "--n-train",
            "2000", "--n-val", "500", "--reference-per-class", "500", "--no-normal-only", "--no-record"]
    with accuracy.main.make_context("accuracy.py", args) as ctx:
        opts = dict(ctx.params) | {"experiment": "methods-sneaker-vs-boot", "progress": False}
    per_seed = []
    for seed in (int(s) for s in seeds.split(",")):
        task = accuracy.methods_tasks(opts, seed)[0]
        per_seed.append(seed_aucs(features(task, opts, seed)))
        accuracy.say(f"seed {seed} done")
    print("| setting | validation AUC, mean ± std |\n|---|---|")
    for key in per_seed[0]:
        v = np.array([r[key] for r in per_seed])
        print(f"| {key} | {v.mean():.4f} ± {v.std():.4f} |")


if __name__ == "__main__":
    from ovdoc.log import tolerant_streams

    tolerant_streams()
    main()
