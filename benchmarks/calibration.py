"""Does the calibrated threshold hold on *new* groups, and is fpr_upper_95 an honest bound?

    python benchmarks/calibration.py [--cells tiles,video,fmnist,cifar10,tiles-patch] [--seeds 0,1,2,3,4]

Group-disjoint cells (fit on some parts, measure on parts never seen):
- tiles: magnetic tiles split by physical tile as in the sight issue (#23): benchmarks/accuracy.py's
  tile-disjoint split (tiles by `ovdoc.runtime.groups.tile_groups`; the test tiles fixed once for every
  seed, a seed re-carves the rest into train and validation tiles). Fit on the training tiles' MT_Free
  shots, measure on the test tiles' MT_Free shots (validation: the validation tiles' MT_Free shots). Not
  photograph order: a later stretch of tiles also differs from the earlier ones (a drift, measured in the
  previous record), which no calibration on the earlier tiles can see and which the live flag-rate watch
  is for. One folder, so the groups are the near-duplicate groups ovdoc finds (several exposures per
  tile); `near-dup off` shows the sequence blocks and `true tiles` the data set's tiles instead.
- video: vtest.avi (`ovdoc.runtime.images.iter_video_frames`), fit on the first half (a seed starts it
  20 x seed frames later), run the second.
- fmnist / cifar10: one class; fit on 600 of its images, test on others of that class (Fashion-MNIST:
  the test split; CIFAR-10: the rest of its test set). A seed picks the class and the subsample.
- tiles-patch: the tiles split in patch mode through `fit_bundle_images` (240 training images a seed,
  an 8192-patch bank: CPU was scarce; it measures the calibration, not the detector's accuracy).

Validation (to choose the estimator, never the test): tiles use the validation tiles; video, fmnist and
cifar10 refit on the first 70 % of their training images (in order: the video's earlier frames) and
score the other 30 % (for the video, its later frames; for the image sets, other images).

Global cells go through the product path below the bundle: the shipped backbone's features, the kNN
scorer and `calibration.calibrate` exactly as `ovdoc fit` calls them (the bundle writing is skipped).
Each fit records three thresholds from the same held-out scores: the group bootstrap, the group
conformal quantile (`alternative`) and the pooled quantile (what ovdoc did before); plus the
leave-one-out one. Results: benchmarks/results/calibration.{json,md}.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path

import click
import numpy as np

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
SHARED = Path(os.environ.get("OVDOC_SHARED", REPO.parent / "shared"))
TARGETS = (0.01, 0.05)
ESTIMATORS = ("bootstrap", "conformal", "pooled", "loo")
PATCH_IMAGES = 240  # tiles-patch: training images per seed


def _patch_config():
    from ovdoc.runtime.patch import PatchConfig

    return PatchConfig(coreset=8192)


def _extractor():
    import openvino as ov

    from ovdoc.irmodels import resolve_model
    from ovdoc.runtime.features import FeatureExtractor
    from ovdoc.runtime.ir import read_ir

    core = ov.Core()
    model, spec, _ = read_ir(resolve_model(None), core)
    cache = Path(tempfile.gettempdir()) / "ovdoc-calib-cache"
    return FeatureExtractor(model, spec, core=core, cache_dir=cache)


def _accuracy():
    sys.path.insert(0, str(REPO / "benchmarks"))
    import accuracy  # the benchmark module beside this file: the tile-disjoint split of the sight issue

    return accuracy


def tile_split(seed: int) -> dict:
    """{'train', 'val', 'test'}: (MT_Free image paths, their tile keys) of the seed's training, validation
    and (fixed) test tiles (benchmarks/accuracy.py's mt_tile_parts)."""
    acc = _accuracy()
    info, parts = acc.mt_tiles(), acc.mt_tile_parts(seed)
    out = {}
    for name in ("train", "val", "test"):
        idx = [i for i, (t, g) in enumerate(zip(info["types"], info["tiles"], strict=True))
               if t == "Free" and g in parts[name]]
        out[name] = ([info["paths"][i] for i in idx], [info["tiles"][i] for i in idx])
    return out


def video_halves() -> tuple[list[np.ndarray], list[np.ndarray]]:
    from ovdoc.runtime.images import iter_video_frames

    frames = list(iter_video_frames(SHARED / "data" / "video" / "vtest.avi"))
    half = len(frames) // 2
    return frames[:half], frames[half:]


def global_cell(name: str, train: np.ndarray, evaluate: dict[str, np.ndarray], keys, thumbs, seed: int,
                oracle: np.ndarray | None = None,
                near_names: tuple[str, ...] = ("auto", "off")) -> list[dict]:
    """One fit's thresholds at each target, and the share of each evaluated set (split name -> features:
    new groups) above each."""
    from ovdoc.runtime.bundle import _near_groups
    from ovdoc.runtime.calibration import calibrate
    from ovdoc.runtime.scoring import make_scorer

    scorer = make_scorer("knn", k=5, index="flat").fit(train)
    scored = {split: scorer.score_samples(x) for split, x in evaluate.items()}
    loo = scorer.loo_scores()
    rows = []
    options = {"auto": _near_groups(keys, thumbs), "off": None} if thumbs is not None else {"n/a": None}
    near_options = [(n, v) for n, v in options.items() if n in near_names or n == "n/a"]
    if oracle is not None:  # diagnostic: the true parts instead of the near-duplicate groups
        near_options.append(("true tiles", oracle))
    for near_name, near in near_options:
        for fpr in TARGETS:
            t = calibrate(loo, train, fpr, keys=keys, k=5, near=near,
                          build=lambda x: make_scorer("knn", k=5, index="flat").fit(x))
            rows += [_row(name, "global", near_name, seed, fpr, t, sc, loo, split=split)
                     for split, sc in scored.items()]
    return rows


def _row(cell, mode, near, seed, fpr, t, test_scores, loo=None, *, split: str = "test") -> dict:
    from ovdoc.runtime.calibration import threshold_at_fpr

    values = {"bootstrap": t["value"] if t["estimator"] == "group-bootstrap" else t["alternative"]["value"],
              "conformal": t["value"] if t["estimator"] == "group-conformal" else t["alternative"]["value"],
              "pooled": t.get("pooled_value", t["value"])}
    if loo is not None:
        values["loo"] = threshold_at_fpr(loo, fpr, method="loo")["value"]
    measured = {k: float(np.mean(test_scores > v)) for k, v in values.items()}
    default = t["estimator"].removeprefix("group-")
    return {"cell": cell, "mode": mode, "near_duplicates": near, "seed": seed, "target": fpr, "split": split,
            "grouping": t.get("grouping", t.get("method", "")[:40]), "groups": t["groups"],
            "n_effective": t["n_effective"], "heldout_fpr": t["heldout_fpr"],
            "fpr_upper_95": t["fpr_upper_95"], "estimator": default, "floor": t.get("floor"),
            "message": t.get("message"), "measured": measured,
            "under_bound": measured[default] <= t["fpr_upper_95"], "n_test": int(len(test_scores))}


def _cut(n: int, share: float = 0.7) -> int:
    return int(round(share * n))


def run_global(cell: str, seeds: list[int], extractor) -> list[dict]:
    import cv2

    from ovdoc.runtime.near_duplicates import thumbnail

    rows: list[dict] = []
    if cell == "tiles":
        for seed in seeds:
            split = tile_split(seed)
            images = {name: [cv2.imread(str(p)) for p in paths] for name, (paths, _) in split.items()}
            feats = {name: extractor.extract(ims, progress=False) for name, ims in images.items()}
            keys = [("file", "MT_Free/Imgs")] * len(feats["train"])
            thumbs = [thumbnail(im) for im in images["train"]]
            oracle = np.unique(split["train"][1], return_inverse=True)[1].ravel()
            rows += global_cell(cell, feats["train"], {"test": feats["test"], "val": feats["val"]}, keys,
                                thumbs, seed, oracle=oracle)
    elif cell == "video":
        first, second = video_halves()
        f1, f2 = extractor.extract(first, progress=False), extractor.extract(second, progress=False)
        for seed in seeds:
            start = 20 * seed
            train = f1[start:]
            keys = [("frame", "vtest-first-half")] * len(train)
            rows += global_cell(cell, train, {"test": f2}, keys, None, seed)
            c = _cut(len(train))  # validation: the earlier 70 % of the first half, run on its later 30 %
            rows += global_cell(cell, train[:c], {"val": train[c:]}, keys[:c], None, seed)
    else:
        from ovdoc.runtime.datasets import load_fashion_mnist

        if cell == "fmnist":
            xtr, ytr = load_fashion_mnist("train")
            xte, yte = load_fashion_mnist("test")
            classes = (0, 7, 9)
        else:
            data = np.load(SHARED / "data" / "cifar10" / "cifar10-test.npz")
            xtr, ytr = data["x"], data["y"].ravel()
            xte, yte = xtr, ytr
            classes = (0, 1, 8)
        for seed in seeds:
            c = classes[seed % len(classes)]
            rng = np.random.default_rng(seed)
            idx = rng.permutation(np.flatnonzero(ytr == c))
            train_idx = idx[:600]
            others = rng.permutation(np.flatnonzero(yte == c))[:1000]
            test_idx = idx[600:1000] if cell == "cifar10" else others
            tr = extractor.extract(_bgr(xtr[train_idx]), progress=False)
            te = extractor.extract(_bgr(xte[test_idx]), progress=False)
            keys = [("frame", f"array:{cell}")] * len(tr)
            thumbs = [thumbnail(im) for im in _bgr(xtr[train_idx])]
            rows += global_cell(cell, tr, {"test": te}, keys, thumbs, seed)
            cut = _cut(len(tr))  # validation: refit on 70 % of the training images, score the other 30 %
            rows += global_cell(cell, tr[:cut], {"val": tr[cut:]}, keys[:cut], thumbs[:cut], seed,
                                near_names=("auto",))
    return rows


def _bgr(x: np.ndarray) -> list[np.ndarray]:
    import cv2

    if x.ndim == 3:
        return [cv2.cvtColor(im, cv2.COLOR_GRAY2BGR) for im in x]
    return [np.ascontiguousarray(im[..., ::-1]) for im in x]


def run_tiles_patch(seeds: list[int]) -> list[dict]:
    """Patch mode, a smaller bank than the default (CPU was scarce): this measures the calibration,
    not the detector's accuracy."""
    import cv2

    from ovdoc.irmodels import resolve_model
    from ovdoc.runtime.bundle import FitConfig, fit_bundle_images
    from ovdoc.runtime.detector import Detector

    PATCH = _patch_config()  # noqa: N806
    rows = []
    for seed in seeds:
        split = tile_split(seed)
        pool = split["train"][0]
        pick = np.sort(np.random.default_rng(seed).choice(len(pool), min(PATCH_IMAGES, len(pool)),
                                                          replace=False))
        images = [cv2.imread(str(pool[i])) for i in pick]
        keys = [("file", "MT_Free/Imgs")] * len(pick)
        with tempfile.TemporaryDirectory() as tmp:
            det = None
            for fpr in TARGETS:  # the thresholds need the held-out scores back: one fit per target
                manifest = fit_bundle_images(resolve_model(None), images, Path(tmp) / f"b{fpr}",
                                             FitConfig(mode="patch", fpr=fpr, patch=PATCH), progress=False,
                                             input_report={"keys": keys})
                if det is None:  # the same seeded bank at every target: score the new tiles once
                    det = Detector.load(Path(tmp) / f"b{fpr}")
                    scored = {name: det.score_samples([cv2.imread(str(q)) for q in split[name][0]])
                              for name in ("test", "val")}
                rows += [_row("tiles", "patch", "auto", seed, fpr, manifest["threshold"], sc, split=name)
                         for name, sc in scored.items()]
    return rows


def summarise(rows: list[dict]) -> list[dict]:
    out = []
    ident = lambda r: (r["cell"], r["mode"], r["near_duplicates"], r["target"], r.get("split", "test"))  # noqa: E731
    for key in sorted({ident(r) for r in rows}, key=lambda c: (c[4] != "test", c[1], c[0], c[2], c[3])):
        sel = [r for r in rows if ident(r) == key]
        cell, mode, near, target, split = key
        entry = {"cell": cell, "mode": mode, "near_duplicates": near, "target": target, "split": split,
                 "runs": len(sel), "groups": float(np.mean([r["groups"] for r in sel])),
                 "estimator": sel[0].get("estimator", "bootstrap"),
                 "fpr_upper_95": _ms([r["fpr_upper_95"] for r in sel]),
                 "heldout_fpr": _ms([r["heldout_fpr"] for r in sel]),
                 "under_bound": float(np.mean([r["under_bound"] for r in sel]))}
        for est in ESTIMATORS:
            vals = [r["measured"][est] for r in sel if est in r["measured"]]
            if vals:
                entry[est] = _ms(vals)
                entry[f"{est}_under_bound"] = float(np.mean(
                    [r["measured"][est] <= r["fpr_upper_95"] for r in sel if est in r["measured"]]))
        out.append(entry)
    return out


def _ms(values) -> list[float]:
    return [round(float(np.mean(values)), 4), round(float(np.std(values)), 4)]


def _log_miss(entry: dict, est: str) -> float:
    """How far an estimator's mean measured FPR is from the target, as |log ratio| (0 = on target; a
    measured 0 counts as a tenth of the target, so one empty cell does not outweigh the rest)."""
    return abs(float(np.log(max(entry[est][0], 0.1 * entry["target"]) / entry["target"])))


def estimator_choice(summary: list[dict]) -> dict:
    """Which group estimator lands nearer the target on the *validation* groups (ovdoc's defaults:
    near-duplicates auto; video n/a), at 5 % and at 1 %: mean |log(measured / target)| over cells."""
    out: dict = {}
    for target in TARGETS:
        sel = [e for e in summary if e["split"] == "val" and e["target"] == target
               and e["near_duplicates"] in ("auto", "n/a") and "conformal" in e]
        if sel:
            out[str(target)] = {est: round(float(np.mean([_log_miss(e, est) for e in sel])), 3)
                                for est in ("bootstrap", "conformal")}
            out[str(target)]["within_2x"] = {
                est: sum(0.5 <= e[est][0] / target <= 2 for e in sel) for est in ("bootstrap", "conformal")}
            out[str(target)]["cells"] = [e["cell"] for e in sel]
    return out


def markdown(summary: list[dict], command: str, choice: dict | None = None) -> str:
    default = next((e["estimator"] for e in summary if e["split"] == "test"), "bootstrap")
    lines = [
        "# Calibration on new groups", "",
        f"`{command}` — mean ± std over seeds of the share of *new* groups' normal images flagged "
        f"(target = `--fpr`). {default} = the threshold ovdoc sets (the group {default} quantile); "
        "bootstrap / conformal = the group bootstrap / group conformal quantile; pooled = the plain "
        "quantile of the held-out images (before groups); loo = leave-one-out. under bound = share of "
        f"runs whose measured FPR at ovdoc's threshold ({default}) is <= fpr_upper_95. Split: test = the new "
        "groups (tiles: the fixed test tiles of the sight issue's tile-disjoint split); val = validation "
        "groups carved from the training side (what the estimator was chosen on).", "",
        "| split | cell | mode | near-dup | target | groups | bootstrap | conformal | pooled | loo "
        "| heldout_fpr | fpr_upper_95 | under bound |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for e in summary:
        def f(key: str, e: dict = e) -> str:
            return f"{e[key][0]:.4f} ± {e[key][1]:.4f}" if key in e else "-"

        lines.append(f"| {e['split']} | {e['cell']} | {e['mode']} | {e['near_duplicates']} | {e['target']} "
                     f"| {e['groups']:.0f} | {f('bootstrap')} | {f('conformal')} | {f('pooled')} "
                     f"| {f('loo')} | {f('heldout_fpr')} "
                     f"| {f('fpr_upper_95')} | {e['under_bound']:.0%} |")
    if choice:
        lines += ["", "Estimator choice on the validation groups (mean |log(measured / target)| over cells, "
                  "0 = on target; and how many cells land within 0.5x-2x):", "",
                  "| target | cells | bootstrap | conformal |", "|---|---|---|---|"]
        for target, c in choice.items():
            w = c["within_2x"]
            lines.append(f"| {target} | {len(c['cells'])} | {c['bootstrap']:.3f} ({w['bootstrap']} within) "
                         f"| {c['conformal']:.3f} ({w['conformal']} within) |")
    lines += ["", f"Targets (test split; ovdoc's defaults: near-duplicates auto, video n/a; the {default} "
              "threshold): measured FPR within 0.5x-2x of the target at 5 %, and <= fpr_upper_95 in >= 90 % "
              "of runs at 1 %.", "",
              "| cell | mode | runs | 5 %: measured / target | met | 1 %: runs under the bound | met |",
              "|---|---|---|---|---|---|---|"]
    for cell, mode in sorted({(e["cell"], e["mode"]) for e in summary}):
        rows = {e["target"]: e for e in summary if (e["cell"], e["mode"]) == (cell, mode)
                and e["near_duplicates"] in ("auto", "n/a") and e["split"] == "test"}
        if 0.05 not in rows or 0.01 not in rows:
            continue
        ratio = rows[0.05][default][0] / 0.05
        under = rows[0.01]["under_bound"]
        met = "yes" if 0.5 <= ratio <= 2 else "no"
        lines.append(f"| {cell} | {mode} | {rows[0.01]['runs']} | {ratio:.2f}x | {met} | {under:.0%} "
                     f"| {'yes' if under >= 0.9 else 'no'} |")
    return "\n".join(lines) + "\n"


@click.command()
@click.option("--cells", default="tiles,video,fmnist,cifar10,tiles-patch", show_default=True)
@click.option("--seeds", default="0,1,2,3,4", show_default=True)
@click.option("--out", default=str(RESULTS / "calibration"), show_default=True,
              help="Path stem (.json, .md).")
@click.option("--merge", is_flag=True, help="Replace only these cells' runs in an existing result file.")
def main(cells: str, seeds: str, out: str, merge: bool) -> None:
    seed_list = [int(s) for s in seeds.split(",")]
    rows: list[dict] = []
    extractor = None
    for cell in [c.strip() for c in cells.split(",") if c.strip()]:
        t0 = time.perf_counter()
        if cell == "tiles-patch":
            rows += run_tiles_patch(seed_list)
        else:
            extractor = extractor or _extractor()
            rows += run_global(cell, seed_list, extractor)
        print(f"{cell}: done ({time.perf_counter() - t0:.0f} s)", file=sys.stderr)
    command = "python benchmarks/calibration.py --cells " + cells + " --seeds " + seeds
    if merge and Path(out + ".json").is_file():  # keep the other cells' runs from the previous file
        previous = json.loads(Path(out + ".json").read_text())
        done = {(r["cell"], r["mode"]) for r in rows}
        rows = [r for r in previous["runs"] if (r["cell"], r["mode"]) not in done] + rows
        rerun = command + " --merge"
        if rerun not in previous["command"]:  # a cell rerun with the same options replaces its runs only
            command = previous["command"] + "; then " + rerun
        else:
            command = previous["command"]
    summary = summarise(rows)
    choice = estimator_choice(summary)
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out + ".json").write_text(json.dumps({"command": command, "summary": summary,
                                               "estimator_choice": choice, "runs": rows}, indent=2) + "\n")
    Path(out + ".md").write_text(markdown(summary, command, choice))
    print(markdown(summary, command, choice))


if __name__ == "__main__":
    main()
