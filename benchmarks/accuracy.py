"""Accuracy benchmarks through the real product path: train -> verified IR -> bundle -> score.

    python benchmarks/accuracy.py --experiment sneaker-vs-boot [--json]      # CI: exits 1 below AUC 0.95
    python benchmarks/accuracy.py --experiment magnetic-tile [--json]        # needs ../shared data
    python benchmarks/accuracy.py --experiment fmnist-one-class [--json]     # slow: outside CI

Results go to benchmarks/results/accuracy-<experiment>.{json,md} (and a ROC PNG for sneaker-vs-boot).
"""

from __future__ import annotations

import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import click
import numpy as np

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
SHARED = Path(os.environ.get("OVDOC_SHARED", REPO.parent / "shared"))
REQUIRED_AUC = {"sneaker-vs-boot": 0.95}


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def bundle_auc(
    model_xml: Path, normal_train: Path, normal_test, anomalous_test: dict, out: Path, metric: str = "cosine"
) -> dict:
    """Fit a bundle on `normal_train` with `model_xml`, score test sets; {name: auc} + the bundle path."""
    from ovdoc.runtime.bundle import fit_bundle
    from ovdoc.runtime.detector import Detector
    from ovdoc.runtime.evaluation import EvalResult

    fit_bundle(model_xml, normal_train, out, metric=metric, progress=False)
    det = Detector.load(out)
    normal_scores = det.score_samples(list(normal_test))
    results = {}
    for name, images in anomalous_test.items():
        res = EvalResult(normal_scores, det.score_samples(list(images)), det.threshold_)
        results[name] = res
    return {"detector": det, "results": results}


def untrained_ir(size: int, work: Path) -> Path:
    """The ImageNet backbone as is (GAP features): the no-training baseline, through the same converter."""
    import keras

    from ovdoc.host.convert import convert_keras_model
    from ovdoc.host.train.backbone import make_backbone

    bb = make_backbone("offline", size=size)
    model = keras.Model(
        bb.model.inputs, keras.layers.GlobalAveragePooling2D(name="features")(bb.model.outputs[0])
    )
    convert_keras_model(model, work, spec=bb.spec, precisions=("FP32",), name="untrained")
    return work / "FP32" / "model.xml"


def latency_ms(model_xml: Path, runs: int = 200) -> dict:
    """Batch-1 latency and batch-8 throughput of an IR on CPU (f32), the figure a camera loop sees."""
    from ovdoc.runtime.ir import compile_ir, read_ir

    model, spec, _ = read_ir(model_xml)
    out = {}
    for batch, key in ((1, "latency_ms_b1"), (8, "ms_per_image_b8")):
        compiled = compile_ir(model, spec, batch=batch)
        request = compiled.create_infer_request()
        x = np.random.default_rng(0).integers(0, 255, (batch, spec.height, spec.width, 3), dtype=np.uint8)
        for _ in range(10):
            request.infer([x])
        start = time.perf_counter()
        for _ in range(runs // batch):
            request.infer([x])
        out[key] = round((time.perf_counter() - start) / (runs // batch) / batch * 1000, 3)
    return out


def doc_config(opts: dict, *, augment: int | None):
    """The training settings every experiment shares, from the command line (augment: None = automatic)."""
    from ovdoc.host.train.doc import TrainConfig

    return TrainConfig(
        weights="offline",
        size=opts["size"],
        epochs=opts["epochs"],
        lam=opts["lam"],
        lr=opts["lr"],
        freeze_until=opts["freeze_until"],
        augment=augment,
        reference_per_class=opts["reference_per_class"],
        seed=opts["seed"],
        ema=opts["ema"],
    )


def sneaker_vs_boot(opts: dict) -> dict:
    from ovdoc.host.train.pipeline import train_to_bundle
    from ovdoc.runtime.datasets import load_labelled, load_unlabelled, write_image_folder
    from ovdoc.runtime.evaluation import plot_roc

    started = time.perf_counter()
    target = load_unlabelled("fashion-mnist:sneaker")
    reference = load_labelled("fashion-mnist:-sneaker,-ankle_boot")
    test_normal = load_unlabelled("fashion-mnist-test:sneaker").images
    test_anomalous = load_unlabelled("fashion-mnist-test:ankle_boot").images
    config = doc_config(opts, augment=0)
    with tempfile.TemporaryDirectory(prefix="ovdoc-acc-") as work:
        work = Path(work)
        normal_dir = write_image_folder(target.images, work / "train-sneakers")
        timings = {}
        t0 = time.perf_counter()
        base = bundle_auc(
            untrained_ir(config.size, work / "untrained"),
            normal_dir,
            test_normal,
            {"ankle_boot": test_anomalous},
            work / "untrained.bundle",
            metric=opts["metric"],
        )
        timings["untrained_knn_s"] = round(time.perf_counter() - t0, 1)
        base_auc = base["results"]["ankle_boot"].metrics()["auc"]
        say(f"untrained ImageNet backbone + kNN at {config.size}px: AUC {base_auc:.4f}")

        t0 = time.perf_counter()
        report = train_to_bundle(
            "fashion-mnist:sneaker",
            "fashion-mnist:-sneaker,-ankle_boot",
            work / "doc",
            config,
            target_data=target,
            reference_data=reference,
            metric=opts["metric"],
            progress=opts["progress"],
        )
        timings["train_convert_fit_s"] = round(time.perf_counter() - t0, 1)
        t0 = time.perf_counter()
        doc = bundle_auc(
            work / "doc" / "ir" / "FP32" / "model.xml",
            normal_dir,
            test_normal,
            {"ankle_boot": test_anomalous},
            work / "doc-fp32.bundle",
            metric=opts["metric"],
        )
        fp16 = bundle_auc(
            work / "doc" / "ir" / "FP16" / "model.xml",
            normal_dir,
            test_normal,
            {"ankle_boot": test_anomalous},
            work / "doc-fp16.bundle",
            metric=opts["metric"],
        )
        timings["score_s"] = round(time.perf_counter() - t0, 1)
        result = doc["results"]["ankle_boot"]
        metrics = result.metrics()
        plot_roc(
            result,
            opts["roc_path"],
            title=f"sneaker vs ankle boot, DOC {config.size}px",
        )
        speed = {"doc": latency_ms(work / "doc" / "ir" / "FP32" / "model.xml")}
        if config.size != 96:
            speed["untrained_96px"] = latency_ms(untrained_ir(96, work / "u96"))
    train = report["train"]
    return {
        "experiment": "sneaker-vs-boot",
        "auc": round(metrics["auc"], 4),
        "required_auc": REQUIRED_AUC["sneaker-vs-boot"],
        "auc_fp16_ir": round(fp16["results"]["ankle_boot"].metrics()["auc"], 4),
        "auc_untrained_knn": round(base_auc, 4),
        "tpr_at_threshold": round(metrics["tpr_at_threshold"], 4),
        "fpr_at_threshold": round(metrics["fpr_at_threshold"], 4),
        "tpr_at_fpr_1pct": round(metrics["tpr_at_fpr_1pct"], 4),
        "n_train": len(target),
        "n_reference": train["n_reference"],
        "n_test_normal": len(test_normal),
        "n_test_anomalous": len(test_anomalous),
        "settings": {k: v for k, v in train["config"].items()} | {"metric": opts["metric"]},
        "losses": {
            k: train[k] for k in ("loss_d_first", "loss_d_last", "loss_c_first", "loss_c_last", "steps")
        },
        "timings_s": timings
        | {"train_only": train["seconds"], "total": round(time.perf_counter() - started, 1)},
        "speed_cpu_f32": speed,
    }


def magnetic_tile(opts: dict) -> dict:
    """Normal = a fixed 70% of MT_Free (seeded), test = the other 30% vs every defect image, per type."""
    from ovdoc.host.train.pipeline import train_to_bundle
    from ovdoc.runtime.datasets import Images, write_image_folder
    from ovdoc.runtime.images import expand_sources, read_image

    root = SHARED / "data" / "magnetic-tile"
    if not root.is_dir():
        raise SystemExit(f"magnetic-tile data not found at {root}")
    started = time.perf_counter()

    def images_of(folder: Path) -> list:
        return [read_image(p) for p in expand_sources(folder) if p.suffix.lower() == ".jpg"]

    free = images_of(root / "MT_Free")
    order = np.random.default_rng(0).permutation(len(free))
    cut = int(0.7 * len(free))
    train_imgs = [free[i] for i in order[:cut]]
    test_normal = [free[i] for i in order[cut:]]
    defects = {
        d.name.removeprefix("MT_"): images_of(d) for d in sorted(root.glob("MT_*")) if d.name != "MT_Free"
    }
    reference = opts["reference"]
    config = doc_config(opts, augment=None)
    with tempfile.TemporaryDirectory(prefix="ovdoc-mt-") as work:
        work = Path(work)
        normal_dir = write_image_folder(train_imgs, work / "normal")
        base = bundle_auc(
            untrained_ir(config.size, work / "untrained"),
            normal_dir,
            test_normal,
            defects,
            work / "u.bundle",
            metric=opts["metric"],
        )
        train_to_bundle(
            str(normal_dir),
            reference,
            work / "doc",
            config,
            target_data=Images(train_imgs, None),
            metric=opts["metric"],
            progress=opts["progress"],
        )
        doc = bundle_auc(
            work / "doc" / "ir" / "FP32" / "model.xml",
            normal_dir,
            test_normal,
            defects,
            work / "d.bundle",
            metric=opts["metric"],
        )
    per_type = {name: round(r.metrics()["auc"], 4) for name, r in doc["results"].items()}
    base_type = {name: round(r.metrics()["auc"], 4) for name, r in base["results"].items()}
    from ovdoc.runtime.evaluation import auc

    normal_scores = next(iter(doc["results"].values())).normal_scores
    all_anom = np.concatenate([r.anomalous_scores for r in doc["results"].values()])
    b_normal = next(iter(base["results"].values())).normal_scores
    b_anom = np.concatenate([r.anomalous_scores for r in base["results"].values()])
    return {
        "experiment": "magnetic-tile",
        "auc": round(auc(normal_scores, all_anom), 4),
        "auc_per_type": per_type,
        "auc_untrained_knn": round(auc(b_normal, b_anom), 4),
        "auc_untrained_knn_per_type": base_type,
        "n_train": len(train_imgs),
        "n_test_normal": len(test_normal),
        "n_test_anomalous": {k: len(v) for k, v in defects.items()},
        "reference": reference,
        "metric": opts["metric"],
        "settings": vars(config)
        if not hasattr(config, "__dataclass_fields__")
        else {k: getattr(config, k) for k in config.__dataclass_fields__},
        "timings_s": {"total": round(time.perf_counter() - started, 1)},
    }


def fmnist_one_class(opts: dict) -> dict:
    """Each Fashion-MNIST class normal in turn (reference: the other 9), mean AUC over the 10."""
    from ovdoc.host.train.pipeline import train_to_bundle
    from ovdoc.runtime.datasets import FASHION_MNIST_CLASSES, Images, load_fashion_mnist, write_image_folder

    started = time.perf_counter()
    xtr, ytr = load_fashion_mnist("train")
    xte, yte = load_fashion_mnist("test")
    rng = np.random.default_rng(0)
    n_train, n_test = opts["fmnist_train"], opts["fmnist_test"]
    per_class = {}
    for c, name in enumerate(FASHION_MNIST_CLASSES):
        say(f"class {c} ({name}) normal")
        tr = xtr[rng.permutation(np.flatnonzero(ytr == c))[:n_train]]
        others = np.flatnonzero(ytr != c)
        ref = Images(xtr[others], ytr[others], FASHION_MNIST_CLASSES)
        te_n = xte[rng.permutation(np.flatnonzero(yte == c))[:n_test]]
        te_a = xte[rng.permutation(np.flatnonzero(yte != c))[:n_test]]
        config = doc_config(opts, augment=0)
        with tempfile.TemporaryDirectory(prefix="ovdoc-fm-") as work:
            work = Path(work)
            normal_dir = write_image_folder(tr, work / "normal")
            train_to_bundle(
                str(normal_dir),
                f"fashion-mnist:-{name}",
                work / "doc",
                config,
                target_data=Images(tr, None),
                reference_data=ref,
                metric=opts["metric"],
                progress=opts["progress"],
            )
            res = bundle_auc(
                work / "doc" / "ir" / "FP32" / "model.xml",
                normal_dir,
                te_n,
                {"other": te_a},
                work / "b",
                metric=opts["metric"],
            )
        per_class[name] = round(res["results"]["other"].metrics()["auc"], 4)
        say(f"  AUC {per_class[name]}")
    return {
        "experiment": "fmnist-one-class",
        "auc": round(float(np.mean(list(per_class.values()))), 4),
        "auc_per_class": per_class,
        "n_train_per_class": n_train,
        "n_test_each": n_test,
        "settings": {
            k: opts[k]
            for k in ("size", "epochs", "lam", "lr", "freeze_until", "reference_per_class", "metric", "ema")
        },
        "timings_s": {"total": round(time.perf_counter() - started, 1)},
    }


def write_results(result: dict, command: str) -> None:
    name = result["experiment"]
    result = result | {
        "command": command,
        "machine": {
            "cpu_count": os.cpu_count(),
            "platform": platform.platform(),
            "processor": platform.processor(),
        },
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    (RESULTS / f"accuracy-{name}.json").write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
    rows = [("metric", "value")]
    for key, value in result.items():
        if isinstance(value, dict):
            rows += [
                (f"{key}.{k}", json.dumps(v) if isinstance(v, dict) else str(v)) for k, v in value.items()
            ]
        else:
            rows.append((key, str(value)))
    table = "\n".join(f"| {a} | {b} |" for a, b in rows[:1] + [("---", "---")] + rows[1:])
    (RESULTS / f"accuracy-{name}.md").write_text(f"# Accuracy: {name}\n\n`{command}`\n\n{table}\n")


@click.command()
@click.option(
    "--experiment",
    type=click.Choice(["sneaker-vs-boot", "fmnist-one-class", "magnetic-tile"]),
    default="sneaker-vs-boot",
    show_default=True,
)
@click.option("--size", default=160, show_default=True, type=int)
@click.option("--epochs", default=2, show_default=True, type=int)
@click.option("--freeze-until", default="block_13_expand", show_default=True)
@click.option("--reference-per-class", default=2000, show_default=True, type=int)
@click.option("--lambda", "lam", default=1.0, show_default=True, type=float)
@click.option("--lr", default=1e-4, show_default=True, type=float)
@click.option(
    "--metric",
    type=click.Choice(["euclidean", "cosine"]),
    default="cosine",
    show_default=True,
    help="kNN distance of every bundle (cosine = L2-normalised features).",
)
@click.option(
    "--reference", default="fashion-mnist:*", show_default=True, help="magnetic-tile only: the reference set."
)
@click.option(
    "--fmnist-train", default=2000, show_default=True, type=int, help="fmnist-one-class: normals per class."
)
@click.option(
    "--fmnist-test", default=1000, show_default=True, type=int, help="fmnist-one-class: test images each."
)
@click.option(
    "--ema", default=0.99, show_default=True, type=float, help="Weight averaging decay (0 = last weights)."
)
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--no-record", is_flag=True, help="Do not write benchmarks/results/.")
@click.option("--json", "as_json", is_flag=True)
def main(experiment, no_record, as_json, **opts) -> None:
    opts["progress"] = not as_json
    opts["roc_path"] = Path(os.environ.get("OVDOC_ROC", RESULTS / f"accuracy-{experiment}-roc.png"))
    run = {
        "sneaker-vs-boot": sneaker_vs_boot,
        "magnetic-tile": magnetic_tile,
        "fmnist-one-class": fmnist_one_class,
    }[experiment]
    result = run(opts)
    if not no_record:
        write_results(result, "python benchmarks/accuracy.py " + " ".join(sys.argv[1:]))
    if as_json:
        print(json.dumps(result, sort_keys=True))
    else:
        print(json.dumps(result, indent=2, sort_keys=True))
    required = REQUIRED_AUC.get(experiment)
    if required is not None and result["auc"] < required:
        say(f"FAIL: AUC {result['auc']:.4f} < required {required}")
        sys.exit(1)


if __name__ == "__main__":
    main()
