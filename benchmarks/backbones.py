"""Shipped backbones side by side, on validation data only: is EfficientNet-Lite worth shipping, and where?

    python benchmarks/backbones.py --experiment global-cifar10 --experiment global-fmnist
    python benchmarks/backbones.py --experiment patch-mt          # the slow one (a patch fit per seed)
    python benchmarks/backbones.py --experiment cost              # IR/wheel bytes, memory; FPS ratios

Each experiment updates its own section of benchmarks/results/accuracy-backbones.{json,md}.

Protocol (no test split is scored here; that belongs to the frozen-defaults protocol of issue #23):
- global-cifar10 / global-fmnist: one class normal in turn. A fixed per-class pool is carved once (CIFAR-10:
  the only copy in ../shared is its test set; Fashion-MNIST: its train split); per seed and class, normals
  are drawn for the bank (80 %) and calibration (20 %, threshold at a 1 % target FPR), the validation
  normals are other images of that class and the anomalies images of the other nine. Features are the
  backbone's pooled output at 224x224 (the IR's centre crop), scored as `ovdoc fit --metric cosine`
  does: mean cosine distance to the 5 nearest bank vectors. AUROC, and TPR/FPR at the threshold.
- patch-mt: magnetic tiles split by *tile*, the product's rule (`ovdoc.runtime.groups.tile_groups` over
  every folder at once: a gap of more than 150 in `num_` starts a tile, look-alike nearby runs merge).
  Defect-free tiles (no shot in a defect folder), in `num_` order: whole tiles go 60 % fit / 20 %
  validation / 20 % never read here. Defects: each type's tiles in `num_` order, its first third.
  `ovdoc fit --mode patch` with the product defaults; seeds vary the coreset start, the calibration
  split and the PCA images. Image AUROC, pooled pixel AUROC, TPR/FPR at the bundle threshold.
- cost: IR bytes, wheel bytes (compressed size of each backbone's files in a freshly built wheel), peak RSS
  of a process that compiles and runs the model; FPS at batch 1 and 8 relative to MobileNetV2, measured
  interleaved in one process. The machine this was recorded on is shared (its load average is recorded):
  the FPS ratios are a smoke of the harness, not a result.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import click
import numpy as np

from ovdoc.log import get_logger

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
SHARED = Path(os.environ.get("OVDOC_SHARED", REPO.parent / "shared"))
EXPERIMENTS = ("global-cifar10", "global-fmnist", "global-mt", "patch-mt", "cost")
MT_TYPES = ("Blowhole", "Break", "Crack", "Fray", "Uneven")
SECONDS_NOTE = "wall clock of the whole experiment (shared host, niced): not a timing result"
SIZE = 224  # global mode: every backbone at 224x224 (Lite2's own 260 would cost 35 % more pixels)
say = get_logger("ovdoc.benchmarks.backbones").info


# --- global mode: pooled features, cosine kNN (k=5) ---------------------------------------------------
def features(name: str, images: np.ndarray, batch: int = 8) -> np.ndarray:
    """Pooled features of `images` (BGR uint8) through the shipped IR at SIZE x SIZE, L2-normalised."""
    import dataclasses

    from ovdoc.irmodels.backbones import get_backbone
    from ovdoc.runtime.features import FeatureExtractor
    from ovdoc.runtime.ir import read_ir

    model, spec, _ = read_ir(get_backbone(name).xml)
    spec = dataclasses.replace(spec, height=SIZE, width=SIZE)
    feats = FeatureExtractor(model, spec, batch=batch).extract(list(images), progress=False)
    return feats / np.linalg.norm(feats, axis=1, keepdims=True)


def knn_score(bank: np.ndarray, x: np.ndarray, k: int = 5) -> np.ndarray:
    """Mean cosine distance to the k nearest bank vectors (both L2-normalised)."""
    d = 1.0 - x @ bank.T
    return np.sort(d, axis=1)[:, :k].mean(axis=1)


def one_class(feats: np.ndarray, labels: np.ndarray, sizes: tuple[int, int, int], seed: int,
              fpr: float = 0.01) -> dict:
    """Every class normal in turn: (n_train, n_val_normal, n_val_anomalous) drawn per class and seed."""
    from ovdoc.runtime.evaluation import auc

    n_train, n_val, n_anom = sizes
    rng = np.random.default_rng(seed)
    out = {}
    for c in np.unique(labels):
        own = rng.permutation(np.flatnonzero(labels == c))
        others = rng.permutation(np.flatnonzero(labels != c))[:n_anom]
        train, val = own[:n_train], own[n_train : n_train + n_val]
        n_bank = int(round(0.8 * n_train))
        bank, cal = feats[train[:n_bank]], feats[train[n_bank:]]
        threshold = float(np.quantile(knn_score(bank, cal), 1.0 - fpr))
        s_n, s_a = knn_score(bank, feats[val]), knn_score(bank, feats[others])
        out[int(c)] = {"auroc": auc(s_n, s_a), "tpr": float(np.mean(s_a > threshold)),
                       "fpr": float(np.mean(s_n > threshold))}
    return out


def global_experiment(dataset: str, backbones: list[str], seeds: list[int], pool: int,
                      sizes: tuple[int, int, int]) -> dict:
    from ovdoc.runtime.datasets import load_fashion_mnist, load_npz

    if dataset == "cifar10":
        data = load_npz(SHARED / "data" / "cifar10" / "cifar10-test.npz")
        x, y = np.asarray(data.images), np.asarray(data.labels)
        x = np.ascontiguousarray(x[..., ::-1])  # the .npz is RGB; images here are BGR
        source = "../shared/data/cifar10/cifar10-test.npz (the only copy in ../shared)"
    else:
        x, y = load_fashion_mnist("train")
        source = "Fashion-MNIST train split (Debian's dataset-fashion-mnist)"
    rng = np.random.default_rng(1234)  # the pool is fixed; seeds redraw the roles inside it
    keep = np.concatenate([rng.permutation(np.flatnonzero(y == c))[:pool] for c in np.unique(y)])
    x, y = x[keep], y[keep]
    rows = {}
    for name in backbones:
        t0 = time.perf_counter()
        feats = features(name, x)
        say(f"{dataset}: {name} features of {len(x)} images in {time.perf_counter() - t0:.0f} s")
        runs = [one_class(feats, y, sizes, seed) for seed in seeds]
        rows[name] = summarise(runs, seeds)
        say(f"  {name}: AUROC {rows[name]['auroc']}")
    return {"data": source, "pool_per_class": pool, "images": int(len(x)),
            "per_class": dict(zip(("train (80 % bank, 20 % calibration)", "validation normal",
                                   "validation anomalous"), sizes, strict=True)),
            "size": [SIZE, SIZE], "scorer": "cosine kNN, k=5; threshold at 1 % target FPR on the "
            "calibration normals", "backbones": rows}


def global_mt_experiment(backbones: list[str], seeds: list[int], fpr: float = 0.01) -> dict:
    """Global mode on the tile-disjoint split: whole tile stretched to 224x224 (as `ovdoc fit --resize
    stretch`), cosine kNN k=5; per seed a random 20 % of the fit tiles' images calibrate the threshold."""
    import dataclasses

    from ovdoc.irmodels.backbones import get_backbone
    from ovdoc.runtime.evaluation import auc
    from ovdoc.runtime.features import FeatureExtractor
    from ovdoc.runtime.ir import read_ir

    data = mt_tile_split()
    defects = [im for ims, _ in data["val"].values() for im in ims]
    rows = {}
    for name in backbones:
        model, spec, _ = read_ir(get_backbone(name).xml)
        spec = dataclasses.replace(spec, height=SIZE, width=SIZE, resize="stretch")
        ex = FeatureExtractor(model, spec, batch=8)
        f_fit, f_n, f_a = (ex.extract(list(x), progress=False) for x in (data["fit"], data["val_normal"],
                                                                          defects))
        f_fit, f_n, f_a = (f / np.linalg.norm(f, axis=1, keepdims=True) for f in (f_fit, f_n, f_a))
        runs = []
        for seed in seeds:
            order = np.random.default_rng(seed).permutation(len(f_fit))
            cut = int(round(0.8 * len(order)))
            bank, cal = f_fit[order[:cut]], f_fit[order[cut:]]
            threshold = float(np.quantile(knn_score(bank, cal), 1.0 - fpr))
            s_n, s_a = knn_score(bank, f_n), knn_score(bank, f_a)
            runs.append({"auroc": auc(s_n, s_a), "tpr": float(np.mean(s_a > threshold)),
                         "fpr": float(np.mean(s_n > threshold))})
        rows[name] = {k: [round(float(np.mean([r[k] for r in runs])), 4),
                          round(float(np.std([r[k] for r in runs])), 4)] for k in runs[0]}
        say(f"global-mt {name}: AUROC {rows[name]['auroc']}")
    return {"split": "as patch-mt (by tile)", "counts": data["counts"], "size": [SIZE, SIZE],
            "resize": "stretch", "scorer": "cosine kNN, k=5; threshold at 1 % target FPR on a seeded 20 % "
            "of the fit images (not grouped by tile: the threshold is optimistic)", "backbones": rows}


def summarise(runs: list[dict], seeds: list[int]) -> dict:
    """Per seed the mean over classes; then mean +- std over seeds (and the per-class means)."""
    per_seed = {k: [float(np.mean([r[c][k] for c in r])) for r in runs] for k in ("auroc", "tpr", "fpr")}
    classes = list(runs[0])
    return {k: [round(float(np.mean(v)), 4), round(float(np.std(v)), 4)] for k, v in per_seed.items()} | {
        "per_seed_auroc": [round(v, 4) for v in per_seed["auroc"]], "seeds": seeds,
        "per_class_auroc": {str(c): round(float(np.mean([r[c]["auroc"] for r in runs])), 4) for c in classes}}


# --- patch mode on magnetic tiles, split by tile -------------------------------------------------------
def mt_tiles(root: Path) -> dict[str, list[list[Path]]]:
    """Per folder ('Free' and each defect type) its images as whole physical tiles, tiles in num_ order.

    Tiles are the product's rule, `ovdoc.runtime.groups.tile_groups` (gap + look-alike merge), run over
    every folder at once because one tile's shots can sit in MT_Free and in a defect folder. 'Free' keeps
    only tiles with no defect shot: a defective tile's clean shots would otherwise put that very tile in
    the bank while its defect shots are scored as anomalies.
    """
    from ovdoc.runtime.groups import tile_groups, tile_number

    paths = sorted(root.glob("MT_*/Imgs/*.jpg"))
    kinds = [p.parent.parent.name.removeprefix("MT_") for p in paths]
    keys = tile_groups(paths)
    defective = {k for k, kind in zip(keys, kinds, strict=True) if kind != "Free"}
    num = lambda p: tile_number(p)[1]  # noqa: E731
    out: dict[str, list[list[Path]]] = {}
    for folder in ("Free", *MT_TYPES):
        tiles: dict[str, list[Path]] = {}
        for p, kind, key in zip(paths, kinds, keys, strict=True):
            if kind == folder and (folder != "Free" or key not in defective):
                tiles.setdefault(key, []).append(p)
        out[folder] = sorted((sorted(g, key=num) for g in tiles.values()), key=lambda g: num(g[0]))
    return out


def split_groups(groups: list[list[Path]], fractions: tuple[float, ...]) -> list[list[Path]]:
    """Consecutive whole groups, cut where the running image count first reaches each fraction."""
    total = sum(len(g) for g in groups)
    cuts, parts, count, i = [f * total for f in np.cumsum(fractions)], [[] for _ in fractions], 0, 0
    for g in groups:
        while i < len(cuts) - 1 and count >= cuts[i]:
            i += 1
        parts[i] += g
        count += len(g)
    return parts


def mt_tile_split() -> dict:
    import cv2

    root = SHARED / "data" / "magnetic-tile"
    if not root.is_dir():
        raise SystemExit(f"magnetic-tile data not found at {root}")
    tiles = mt_tiles(root)
    free = tiles["Free"]
    fit, val, _never = split_groups(free, (0.6, 0.2, 0.2))
    read = lambda paths: [cv2.imread(str(p)) for p in paths]  # noqa: E731
    out = {"fit": read(fit), "val_normal": read(val), "val": {},
           "counts": {"free_tiles": len(free), "fit_images": len(fit), "val_normal_images": len(val),
                      "free_images_of_defective_tiles_unused":
                          len(list((root / "MT_Free").glob("Imgs/*.jpg"))) - sum(map(len, free))}}
    for kind in MT_TYPES:
        groups = tiles[kind]
        chosen = split_groups(groups, (1 / 3, 2 / 3))[0]
        masks = [cv2.imread(str(p.with_suffix(".png")), cv2.IMREAD_GRAYSCALE) > 127 for p in chosen]
        out["val"][kind] = (read(chosen), masks)
        out["counts"][kind] = {"tiles": len(groups), "val_images": len(chosen)}
    return out


def pixel_auroc(maps: list, masks: list) -> float:
    """Pixel AUROC over frame-sized maps and their masks (every 2nd pixel each way, as accuracy.py)."""
    from sklearn.metrics import roc_auc_score

    y = np.concatenate([m[::2, ::2].ravel() for m in masks])
    s = np.concatenate([a[::2, ::2].ravel() for a in maps])
    return float(roc_auc_score(y, s))


def patch_experiment(backbones: list[str], seeds: list[int], pixels: bool, runs_dir: Path,
                     saved_only: bool = False) -> dict:
    from ovdoc.irmodels.backbones import get_backbone
    from ovdoc.runtime.bundle import FitConfig, fit_bundle_images
    from ovdoc.runtime.detector import Detector
    from ovdoc.runtime.evaluation import auc
    from ovdoc.runtime.patch import PatchConfig

    data = mt_tile_split()
    say(f"magnetic tiles by tile: {data['counts']}")
    defects = [im for ims, _ in data["val"].values() for im in ims]
    masks = [m for _, ms in data["val"].values() for m in ms]
    rows = {}
    runs_dir.mkdir(parents=True, exist_ok=True)
    for name in backbones:
        runs = []
        for seed in seeds:
            saved = runs_dir / f"{name}-seed{seed}-{'pixels' if pixels else 'image'}.json"
            if saved.is_file():  # one fit per file: seeds run in parallel processes, a rerun resumes
                runs.append(json.loads(saved.read_text()))
                continue
            if saved_only:
                continue
            with tempfile.TemporaryDirectory(prefix="ovdoc-bb-") as work:
                t0 = time.perf_counter()
                config = FitConfig(mode="patch", patch=PatchConfig(seed=seed))
                manifest = fit_bundle_images(get_backbone(name).xml, iter(data["fit"]), Path(work) / "b",
                                             config, progress=False)
                det = Detector.load(Path(work) / "b")
                s_n, s_a = det.score_samples(data["val_normal"]), det.score_samples(defects)
                run = {"seed": seed, "image_auroc": auc(s_n, s_a),
                       "tpr": float(np.mean(s_a > det.threshold_)),
                       "fpr": float(np.mean(s_n > det.threshold_)),
                       "per_type_image_auroc": {}, "layers": manifest["patch"]["layers"],
                       "size": [manifest["preprocess"]["width"], manifest["preprocess"]["height"]]}
                start = 0
                for kind, (ims, _) in data["val"].items():
                    run["per_type_image_auroc"][kind] = round(auc(s_n, s_a[start : start + len(ims)]), 4)
                    start += len(ims)
                if pixels:
                    maps = det.anomaly_map(data["val_normal"]) + det.anomaly_map(defects)
                    zeros = [np.zeros(m.shape, bool) for m in maps[: len(data["val_normal"])]]
                    run["pixel_auroc"] = pixel_auroc(maps, zeros + masks)
                say(f"patch-mt {name} seed {seed}: image {run['image_auroc']:.4f}, TPR {run['tpr']:.3f}, "
                    f"FPR {run['fpr']:.3f}" + (f", pixel {run['pixel_auroc']:.4f}" if pixels else "")
                    + f" ({time.perf_counter() - t0:.0f} s)")
                saved.write_text(json.dumps(run, indent=1))
                runs.append(run)
        if not runs:
            rows[name] = {"missing": f"no finished run in {runs_dir}"}
            continue
        keys = ["image_auroc", "tpr", "fpr"] + (["pixel_auroc"] if pixels else [])
        rows[name] = {k: [round(float(np.mean([r[k] for r in runs])), 4),
                          round(float(np.std([r[k] for r in runs])), 4)] for k in keys}
        rows[name]["per_type_image_auroc"] = {
            t: round(float(np.mean([r["per_type_image_auroc"][t] for r in runs])), 4) for t in MT_TYPES}
        rows[name] |= {"layers": runs[0]["layers"], "size": runs[0]["size"], "runs": runs,
                       "seeds": [r["seed"] for r in runs]}
    return {"split": "defect-free tiles (ovdoc.runtime.groups.tile_groups, num_ order) 60 % fit / 20 % "
            "validation / last 20 % unread; defects: first third of each type's tiles",
            "counts": data["counts"],
            "settings": "ovdoc fit --mode patch defaults (PatchConfig()), seed per run; threshold = the "
            "bundle's (1 % target FPR on held-out fit normals)", "backbones": rows}


# --- cost -----------------------------------------------------------------------------------------------
_RSS_PROBE = """
import resource, sys, dataclasses, numpy as np
from ovdoc.irmodels.backbones import get_backbone
from ovdoc.runtime.ir import compile_ir, read_ir
model, spec, _ = read_ir(get_backbone(sys.argv[1]).xml)
spec = dataclasses.replace(spec, height=224, width=224)
compiled = compile_ir(model, spec, batch=int(sys.argv[2]))
x = np.zeros((int(sys.argv[2]), 224, 224, 3), np.uint8)
for _ in range(3):
    compiled(x)
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def cost_experiment(backbones: list[str], fps_seconds: float) -> dict:
    import dataclasses

    from ovdoc.irmodels.backbones import get_backbone
    from ovdoc.runtime.ir import compile_ir, read_ir

    out: dict = {"load_average": [round(v, 2) for v in os.getloadavg()], "cpu_count": os.cpu_count()}
    base = subprocess.run([sys.executable, "-c", "import resource, openvino, ovdoc.runtime.ir; "
                           "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)"],
                          capture_output=True, text=True, check=True, env=_env())
    out["rss_baseline_mb"] = round(int(base.stdout.split()[-1]) / 1024, 1)
    with tempfile.TemporaryDirectory(prefix="ovdoc-wheel-") as tmp:
        subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", tmp, str(REPO)],
                       check=True, capture_output=True)
        wheel = next(Path(tmp).glob("ovdoc-*.whl"))
        import zipfile

        with zipfile.ZipFile(wheel) as z:
            infos = z.infolist()
        out["wheel_bytes"] = wheel.stat().st_size
    subprocess.run(["rm", "-rf", str(REPO / "build")], check=False)
    rows = {}
    for name in backbones:
        b = get_backbone(name)
        folder = f"ovdoc/irmodels/{b.folder}/"
        files = {p.name: p.stat().st_size for p in sorted(b.directory.glob("model.*"))}
        in_wheel = [i for i in infos if i.filename.startswith(folder)]
        rss = {}
        for batch in (1, 8):
            done = subprocess.run([sys.executable, "-c", _RSS_PROBE, name, str(batch)], capture_output=True,
                                  text=True, check=True, env=_env())
            rss[f"batch{batch}"] = round(int(done.stdout.split()[-1]) / 1024, 1)
        rows[name] = {"ir_bytes": sum(files.values()), "files": files,
                      "wheel_compressed_bytes": sum(i.compress_size for i in in_wheel) or None,
                      "peak_rss_mb": rss}
    # FPS ratios: each backbone compiled once per batch, timed in alternating slices in one process
    compiled = {}
    for name in backbones:
        model, spec, _ = read_ir(get_backbone(name).xml)
        spec = dataclasses.replace(spec, height=SIZE, width=SIZE)
        compiled[name] = {bs: compile_ir(model, spec, batch=bs) for bs in (1, 8)}
    for bs in (1, 8):
        x = np.random.default_rng(0).integers(0, 256, (bs, SIZE, SIZE, 3), dtype=np.uint8)
        spent = {n: 0.0 for n in backbones}
        frames = {n: 0 for n in backbones}
        for n in backbones:
            compiled[n][bs](x)  # warm-up
        deadline = time.perf_counter() + fps_seconds * len(backbones)
        while time.perf_counter() < deadline:
            for n in backbones:
                t0 = time.perf_counter()
                compiled[n][bs](x)
                spent[n] += time.perf_counter() - t0
                frames[n] += bs
        ref = frames[backbones[0]] / spent[backbones[0]]
        for n in backbones:
            rows[n][f"fps_ratio_batch{bs}"] = round(frames[n] / spent[n] / ref, 3)
    out["load_average_after"] = [round(v, 2) for v in os.getloadavg()]
    out["fps_note"] = (f"FPS relative to {backbones[0]} at {SIZE}x{SIZE}, interleaved in one process for "
                       f"{fps_seconds:g} s per backbone; the host is shared (load average above), so "
                       "these ratios are a smoke of the harness, not a speed result")
    out["backbones"] = rows
    return out


def _env() -> dict:
    return os.environ | {"PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}


# --- records ----------------------------------------------------------------------------------------------
def write_record(section: str, result: dict, command: str) -> dict:
    path = RESULTS / "accuracy-backbones.json"
    record = json.loads(path.read_text()) if path.is_file() else {"experiment": "backbones"}
    record.setdefault("sections", {})[section] = result | {
        "command": command, "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    path.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    (RESULTS / "accuracy-backbones.md").write_text(markdown(record))
    return record


def _ordered(rows: dict) -> list[str]:
    from ovdoc.irmodels.backbones import BACKBONES

    return [n for n in BACKBONES if n in rows] + [n for n in rows if n not in BACKBONES]


def _ms(v) -> str:
    return f"{v[0]:.4f} ± {v[1]:.4f}" if isinstance(v, list) else "–"


def markdown(record: dict) -> str:
    lines = ["# Shipped backbones side by side (validation only)", "",
             "Written by `benchmarks/backbones.py`; mean ± std over seeds; the full record is "
             "accuracy-backbones.json. No test split was scored.", ""]
    sections = record.get("sections", {})
    for key, title in (("global-cifar10", "Global mode, CIFAR-10 one-class"),
                       ("global-fmnist", "Global mode, Fashion-MNIST one-class"),
                       ("global-mt", "Global mode, magnetic tiles split by tile"),
                       ("patch-mt", "Patch mode, magnetic tiles split by tile")):
        if key not in sections:
            continue
        s = sections[key]
        pixel = key == "patch-mt" and any("pixel_auroc" in r for r in s["backbones"].values())
        lines += [f"## {title}", "", f"`{s['command']}` ({s['date']})", ""]
        head = "| backbone | AUROC | TPR at threshold | FPR at threshold |"
        head += " pixel AUROC |" if pixel else ""
        lines += [head, "|---|---|---|---|" + ("---|" if pixel else "")]
        for name in _ordered(s["backbones"]):
            r = s["backbones"][name]
            if "missing" in r:
                lines.append(f"| {name} | not measured ({r['missing']}) | | |" + (" |" if pixel else ""))
                continue
            a = r.get("auroc", r.get("image_auroc"))
            seeds = r.get("seeds")
            label = f"{name} (seeds {', '.join(map(str, seeds))})" if seeds and len(seeds) < 3 else name
            lines.append(f"| {label} | {_ms(a)} | {_ms(r['tpr'])} | {_ms(r['fpr'])} |"
                         + (f" {_ms(r.get('pixel_auroc'))} |" if pixel else ""))
        lines.append("")
    if "cost" in sections:
        s = sections["cost"]
        lines += ["## Cost", "", f"`{s['command']}` ({s['date']}); load average "
                  f"{s['load_average']} on {s['cpu_count']} CPUs: FPS ratios are a smoke, not a result.", "",
                  "| backbone | IR MB | in the wheel MB | peak RSS MB b1 / b8 | FPS vs the first, b1 / b8 |",
                  "|---|---|---|---|---|"]
        for name in _ordered(s["backbones"]):
            r = s["backbones"][name]
            w = r["wheel_compressed_bytes"]
            lines.append(f"| {name} | {r['ir_bytes'] / 1e6:.2f} | {w / 1e6:.2f} |" if w else
                         f"| {name} | {r['ir_bytes'] / 1e6:.2f} | not shipped |")
            lines[-1] += (f" {r['peak_rss_mb']['batch1']} / {r['peak_rss_mb']['batch8']} |"
                          f" {r['fps_ratio_batch1']} / {r['fps_ratio_batch8']} |")
        lines += ["", f"Wheel: {s['wheel_bytes'] / 1e6:.1f} MB; a process with OpenVINO and ovdoc loaded "
                  f"and no model: {s['rss_baseline_mb']} MB peak RSS.", ""]
    return "\n".join(lines)


@click.command()
@click.option("--experiment", "experiments", multiple=True, type=click.Choice(EXPERIMENTS), required=True)
@click.option("--backbones", default="mobilenetv2,efficientnet-lite0", show_default=True,
              help="Comma-separated registry names; the first is the FPS reference.")
@click.option("--seeds", default="0,1,2", show_default=True)
@click.option("--cifar-pool", default=150, show_default=True, help="Images per class carved once.")
@click.option("--cifar-sizes", default="100,50,50", show_default=True,
              help="Per class and seed: train (bank + calibration), validation normal, validation anomalous.")
@click.option("--fmnist-pool", default=80, show_default=True)
@click.option("--fmnist-sizes", default="50,30,30", show_default=True)
@click.option("--pixels/--no-pixels", default=True, show_default=True, help="patch-mt: pixel AUROC too.")
@click.option("--fps-seconds", default=5.0, show_default=True, help="cost: timed seconds per backbone.")
@click.option("--runs-dir", type=click.Path(path_type=Path), default=Path(tempfile.gettempdir())
              / "ovdoc-backbones-runs", show_default=True,
              help="patch-mt: one JSON per fit (backbone, seed); present ones are reused, so seeds can run "
              "in parallel processes and a final call with every seed records them.")
@click.option("--saved-only", is_flag=True, help="patch-mt: record the finished runs; fit none.")
@click.option("--no-record", is_flag=True, help="Print only; leave benchmarks/results alone.")
def main(experiments, backbones, seeds, cifar_pool, cifar_sizes, fmnist_pool, fmnist_sizes, pixels,
         fps_seconds, runs_dir, saved_only, no_record) -> None:
    from ovdoc.irmodels.backbones import get_backbone

    names = [get_backbone(n).name for n in backbones.split(",") if n.strip()]
    seed_list = [int(s) for s in seeds.split(",")]
    command = "python benchmarks/backbones.py " + " ".join(sys.argv[1:])
    sizes = lambda text: tuple(int(v) for v in text.split(","))  # noqa: E731
    for exp in experiments:
        t0 = time.perf_counter()
        if exp == "global-cifar10":
            result = global_experiment("cifar10", names, seed_list, cifar_pool, sizes(cifar_sizes))
        elif exp == "global-fmnist":
            result = global_experiment("fmnist", names, seed_list, fmnist_pool, sizes(fmnist_sizes))
        elif exp == "global-mt":
            result = global_mt_experiment(names, seed_list)
        elif exp == "patch-mt":
            result = patch_experiment(names, seed_list, pixels, runs_dir, saved_only)
        else:
            result = cost_experiment(names, fps_seconds)
        result["seconds"] = round(time.perf_counter() - t0, 1)
        result["seconds_note"] = SECONDS_NOTE
        if no_record:
            click.echo(json.dumps(result, indent=2, default=str))
        else:
            write_record(exp, result, command)
            say(f"{exp}: recorded in {RESULTS / 'accuracy-backbones.json'}")


if __name__ == "__main__":
    main()
