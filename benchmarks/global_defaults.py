"""Global mode's defaults for the shipped backbone, chosen on validation data only: kNN distance (euclidean
vs cosine) and geometry (center_crop vs stretch, the whole frame), on every data set the project measures.

    python benchmarks/global_defaults.py              # every data set, seeds 0,1,2, recorded
    python benchmarks/global_defaults.py --backbone efficientnet-lite0   # the other shipped backbone
    python benchmarks/global_defaults.py --data mt --no-record

Why: every accuracy record of global mode (methods-*, backbones, the CI gate's `shipped + knn`) scores with
cosine kNN, while `ovdoc fit`'s global default was euclidean, and the shipped backbone's IR crops the centre
of the frame (a camera's sides were never looked at). A default serves every data set, so a candidate is
adopted only if it beats the default by the frozen-defaults rule (lever_rule.against_default) somewhere and
is not worse than the default by more than that data set's margin anywhere.

Data (validation only; no test split is read):
- cifar10 / fmnist: one class normal in turn, a fixed per-class pool (CIFAR-10: the only copy in ../shared,
  its test set, less every image of methods-cifar10-one-class's test carves for seeds 0-2, so that
  record's test stays unseen; Fashion-MNIST: its train split); per seed and class 80 % of the drawn
  normals index, 20 % set the threshold (1 % target), validation = other normals of the class vs images
  of the other nine.
- sneaker-vs-boot: Fashion-MNIST train split, sneakers normal, ankle boots anomalous, same roles.
- mt: magnetic tiles split by tile (accuracy.mt_split's protocol; the fixed test tiles are never read);
  20 % of the seed's train tiles, whole, set the threshold.
Images are square in the first three, so center_crop and stretch give the same features there; the
geometry rows are measured on the tiles only. Scorer: the product's (`make_scorer("knn", k=5,
metric=...)`, flat index). Writes benchmarks/results/global-defaults.{json,md}.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from pathlib import Path

import click
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import accuracy  # noqa: E402  (the benchmark module beside this file)
from lever_rule import against_default  # noqa: E402

COMMAND = "python benchmarks/global_defaults.py"
DATA = ("cifar10", "fmnist", "sneaker-vs-boot", "mt")
METRICS = ("euclidean", "cosine", "sqrt-cosine")
DEFAULT = "center_crop + euclidean"
FPR = 0.01
# per class: pool carved once, then (normals drawn for index + threshold, validation normals, anomalies)
# CIFAR-10: only images in no seed's methods-cifar10-one-class test carve (accuracy.cifar10_never_test,
# ~340 per class), so that record's test images stay unseen here
POOLS = {"cifar10": (300, (200, 50, 50)), "fmnist": (400, (300, 100, 100))}
SNEAKER_SIZES = (2000, 500, 500)


BACKBONE = {"name": "mobilenetv2"}  # set by --backbone


def extractor(resize: str):
    from ovdoc.irmodels.backbones import get_backbone
    from ovdoc.runtime.features import FeatureExtractor
    from ovdoc.runtime.ir import read_ir

    model, spec, _ = read_ir(get_backbone(BACKBONE["name"]).xml)
    return FeatureExtractor(model, dataclasses.replace(spec, resize=resize), batch=8)


def score_run(f: np.ndarray, index: np.ndarray, cal: np.ndarray, normal: np.ndarray, anomalous: np.ndarray,
              metric: str) -> dict:
    """The product's kNN on one split: AUROC, and TPR/FPR at the 1 % threshold set on `cal`."""
    from ovdoc.runtime.evaluation import auc
    from ovdoc.runtime.scoring import make_scorer

    s = make_scorer("knn", k=5, index="flat", metric=metric).fit(f[index])
    threshold = float(np.quantile(s.score_samples(f[cal]), 1.0 - FPR))
    s_n, s_a = s.score_samples(f[normal]), s.score_samples(f[anomalous])
    return {"image_auroc": auc(s_n, s_a), "tpr": float(np.mean(s_a > threshold)),
            "fpr": float(np.mean(s_n > threshold))}


def one_class(images: np.ndarray, labels: np.ndarray, sizes: tuple[int, int, int], seeds: list[int],
              classes: list[int] | None = None, anomalous: int | None = None) -> dict:
    """Rows {metric: [per-seed mean over classes]} for square images (one geometry)."""
    f = extractor("center_crop").extract(list(images), progress=False)
    n_fit, n_val, n_anom = sizes
    rows: dict[str, list[dict]] = {}
    for seed in seeds:
        rng = np.random.default_rng(seed)
        per: dict[str, list[dict]] = {}
        for c in classes if classes is not None else np.unique(labels):
            own = rng.permutation(np.flatnonzero(labels == c))
            pool = labels == anomalous if anomalous is not None else labels != c
            others = rng.permutation(np.flatnonzero(pool))[:n_anom]
            fit, val = own[:n_fit], own[n_fit:n_fit + n_val]
            cut = int(round(0.8 * n_fit))
            for metric in METRICS:
                per.setdefault(metric, []).append(score_run(f, fit[:cut], fit[cut:], val, others, metric))
        for metric, runs in per.items():
            rows.setdefault(f"center_crop + {metric}", []).append(
                {k: float(np.mean([r[k] for r in runs])) for k in runs[0]})
    return rows


def pool_indices(dataset: str, labels: np.ndarray) -> np.ndarray:
    """The fixed per-class pool (POOLS) of `dataset`'s images; CIFAR-10's from outside every test carve."""
    allowed = accuracy.cifar10_never_test(labels) if dataset == "cifar10" else np.ones(len(labels), bool)
    pool = POOLS[dataset][0]
    rng = np.random.default_rng(1234)  # the pool is fixed; seeds redraw the roles inside it
    keep = np.concatenate([rng.permutation(np.flatnonzero((labels == c) & allowed))[:pool]
                           for c in np.unique(labels)])
    if min(np.bincount(labels[keep])) < pool:
        raise SystemExit(f"{dataset}: fewer than {pool} images per class outside the test carves")
    return keep


def pooled(dataset: str) -> tuple[np.ndarray, np.ndarray]:
    from ovdoc.runtime.datasets import load_fashion_mnist, load_npz

    if dataset == "cifar10":
        data = load_npz(accuracy.SHARED / "data" / "cifar10" / "cifar10-test.npz")
        x, y = np.ascontiguousarray(np.asarray(data.images)[..., ::-1]), np.asarray(data.labels)  # RGB -> BGR
    else:
        x, y = load_fashion_mnist("train")
    keep = pool_indices(dataset, y)
    return x[keep], y[keep]


def sneaker_vs_boot(seeds: list[int]) -> dict:
    from ovdoc.runtime.datasets import FASHION_MNIST_CLASSES, load_fashion_mnist

    x, y = load_fashion_mnist("train")
    sneaker, boot = FASHION_MNIST_CLASSES.index("sneaker"), FASHION_MNIST_CLASSES.index("ankle_boot")
    n_fit, n_val, n_anom = SNEAKER_SIZES
    rng = np.random.default_rng(1234)
    keep = np.concatenate([rng.permutation(np.flatnonzero(y == sneaker))[:n_fit + n_val],
                           rng.permutation(np.flatnonzero(y == boot))[:n_anom]])
    return one_class(x[keep], y[keep], SNEAKER_SIZES, seeds, classes=[sneaker], anomalous=boot)


def magnetic_tiles(seeds: list[int]) -> dict:
    import cv2

    info = accuracy.mt_tiles()
    test = accuracy.mt_test_tiles()
    idx = [i for i, g in enumerate(info["tiles"]) if g not in test]  # the test tiles are never read
    images = [cv2.imread(str(info["paths"][i])) for i in idx]
    feats = {r: extractor(r).extract(images, progress=False) for r in ("center_crop", "stretch")}
    tiles = np.asarray([info["tiles"][i] for i in idx])
    free = np.asarray([info["types"][i] == "Free" for i in idx])
    rows: dict[str, list[dict]] = {}
    for seed in seeds:
        parts = accuracy.mt_tile_parts(seed)
        train_tiles = sorted(parts["train"])
        rng = np.random.default_rng(seed)
        held = {train_tiles[i] for i in rng.permutation(len(train_tiles))[: round(0.2 * len(train_tiles))]}
        in_train = np.isin(tiles, train_tiles) & free
        cal = np.flatnonzero(in_train & np.isin(tiles, list(held)))
        index = np.flatnonzero(in_train & ~np.isin(tiles, list(held)))
        in_val = np.isin(tiles, list(parts["val"]))
        normal, anomalous = np.flatnonzero(in_val & free), np.flatnonzero(in_val & ~free)
        for resize, f in feats.items():
            for metric in METRICS:
                rows.setdefault(f"{resize} + {metric}", []).append(
                    score_run(f, index, cal, normal, anomalous, metric))
    return rows


def summarise(rows: dict) -> dict:
    out = {}
    for name, runs in rows.items():
        out[name] = {"per_seed": [{k: round(v, 4) for k, v in r.items()} for r in runs],
                     "mean_std": {k: (round(float(np.mean([r[k] for r in runs])), 4),
                                      round(float(np.std([r[k] for r in runs])), 4)) for k in runs[0]}}
    return out


SQUARE = ("cifar10", "fmnist", "sneaker-vs-boot")  # square images: stretch and center_crop are one input


def row_for(data: str, rows: dict, name: str) -> dict | None:
    """`name`'s row on `data`; on square images a stretch row is the center_crop row of its metric."""
    if name in rows:
        return rows[name]
    return rows.get(name.replace("stretch", "center_crop")) if data in SQUARE else None


def decide(results: dict) -> dict:
    """Each candidate against the default on every data set: adopted if it wins somewhere and loses
    nowhere by more than that data set's margin; of those adopted, the best mean over data sets is chosen."""
    candidates = sorted({name.replace("center_crop", "stretch") for rows in results.values() for name in rows}
                        | {name for rows in results.values() for name in rows} - {DEFAULT})
    out: dict = {"candidates": {}}
    for cand in candidates:
        lines, wins, losses, means = [], [], [], []
        for data, rows in results.items():
            row = row_for(data, rows, cand)
            if row is None:
                continue
            d = against_default(f"{data}: {cand}", row, rows[DEFAULT], wins="wins", loses="no win")
            lines.append(d["line"])
            means.append(row["mean_std"]["image_auroc"][0])
            if d["verdict"] == "wins":
                wins.append(data)
            if d["delta"] < -d["margin"]:
                losses.append(data)
        complete = len(means) == len(results)
        verdict = "adopt" if wins and not losses and complete else "keep the default"
        out["candidates"][cand] = {"wins_on": wins, "loses_on": losses, "verdict": verdict, "lines": lines,
                                   "mean_over_data": round(float(np.mean(means)), 4) if complete else None}
    adopted = {c: d for c, d in out["candidates"].items() if d["verdict"] == "adopt"}
    out["chosen"] = max(adopted, key=lambda c: adopted[c]["mean_over_data"]) if adopted else DEFAULT
    return out


def markdown(record: dict) -> str:
    from ovdoc.irmodels.backbones import SHIPPED

    which = "the shipped backbone" if record["backbone"] in SHIPPED else "the backbone (not shipped)"
    lines = [f"# Global mode's defaults for {which} {record['backbone']} (validation only)", "",
             f"`{record['command']}` ({record['date']}); machine: {record['cpu']}", "",
             record["protocol"], ""]
    titles = {"cifar10": "CIFAR-10 one-class", "fmnist": "Fashion-MNIST one-class",
              "sneaker-vs-boot": "Fashion-MNIST sneaker vs ankle boot", "mt": "Magnetic tiles, split by tile"}
    for data, rows in record["results"].items():
        lines += [f"## {titles[data]}", "", "| geometry + metric | image AUROC | TPR at threshold | "
                  "FPR at threshold | AUROC per seed |", "|---|---|---|---|---|"]
        for name, r in rows.items():
            ms = r["mean_std"]
            mark = " (default)" if name == DEFAULT else ""
            per_seed = " / ".join(f"{s['image_auroc']:.4f}" for s in r["per_seed"])
            lines.append(f"| {name}{mark} | {ms['image_auroc'][0]:.4f} ± {ms['image_auroc'][1]:.4f} | "
                         f"{ms['tpr'][0]:.3f} | {ms['fpr'][0]:.3f} | "
                         f"{per_seed} |")
        lines.append("")
    chosen = record["decision"]["chosen"]
    lines += ["## Decision", "", f"**Chosen: {chosen}** (of the candidates adopted, the "
              "best mean image AUROC over the data sets; on square images stretch and center_crop are the "
              "same input, so their center_crop rows stand for both).", ""]
    for cand, d in record["decision"]["candidates"].items():
        lines.append(f"- **{cand}: {d['verdict']}** (mean over data sets {d['mean_over_data']}; "
                     f"wins on {', '.join(d['wins_on']) or 'none'}; worse "
                     f"beyond the margin on {', '.join(d['loses_on']) or 'none'})")
        lines += [f"  - {line}" for line in d["lines"]]
    return "\n".join(lines) + "\n"


@click.command(help=__doc__.split("\n\n")[0])
@click.option("--data", "datasets", default=",".join(DATA), show_default=True)
@click.option("--seeds", default="0,1,2", show_default=True)
@click.option("--backbone", default="mobilenetv2", show_default=True, help="A shipped backbone's name.")
@click.option("--no-record", is_flag=True, help="Print only; leave benchmarks/results alone.")
def main(datasets: str, seeds: str, backbone: str, no_record: bool) -> None:
    from ovdoc.runtime.bench.machine import describe_machine, summary_line

    seed_list = [int(s) for s in seeds.split(",")]
    BACKBONE["name"] = backbone
    results = {}
    for data in datasets.split(","):
        t0 = time.perf_counter()
        if data in POOLS:
            x, y = pooled(data)
            rows = one_class(x, y, POOLS[data][1], seed_list)
        elif data == "sneaker-vs-boot":
            rows = sneaker_vs_boot(seed_list)
        elif data == "mt":
            rows = magnetic_tiles(seed_list)
        else:
            raise SystemExit(f"unknown data set {data!r}: use {', '.join(DATA)}")
        results[data] = summarise(rows)
        for name, r in results[data].items():
            ms = r["mean_std"]
            print(f"{data}: {name}: {ms['image_auroc'][0]:.4f} ± {ms['image_auroc'][1]:.4f} "
                  f"(TPR {ms['tpr'][0]:.3f}, FPR {ms['fpr'][0]:.3f}) "
                  f"[{time.perf_counter() - t0:.0f} s]", flush=True)
    command = (COMMAND + (f" --backbone {backbone}" if backbone != "mobilenetv2" else "")
               + (f" --data {datasets}" if datasets != ",".join(DATA) else "")
               + (f" --seeds {seeds}" if seeds != "0,1,2" else ""))
    record = {"experiment": "global-defaults", "date": time.strftime("%Y-%m-%d"), "command": command,
              "backbone": backbone,
              "cpu": summary_line(describe_machine()), "seeds": seed_list, "default": DEFAULT,
              "protocol": __doc__.split("\n\n", 2)[2].strip(), "results": results,
              "decision": decide(results)}
    for cand, d in record["decision"]["candidates"].items():
        print(f"{cand}: {d['verdict']} (wins on {d['wins_on']}, loses on {d['loses_on']}, mean "
              f"{d['mean_over_data']})")
    print(f"chosen: {record['decision']['chosen']}")
    if not no_record:
        stem = "global-defaults" + (f"-{backbone}" if backbone != "mobilenetv2" else "")
        (accuracy.RESULTS / f"{stem}.json").write_text(json.dumps(record, indent=2) + "\n")
        (accuracy.RESULTS / f"{stem}.md").write_text(markdown(record))


if __name__ == "__main__":
    main()
