"""`fit --ray` / `eval --ray`: the "extract features" step on a Ray cluster, with Ray Data.

The images become a Ray Dataset of small rows (a file path, or an in-memory image's raw pixels);
`map_batches` sends them through a pool of actors, each of which compiles the IR once and decodes files
itself, so a big image set is read where it is processed. OpenVINO objects never cross a process: the model
travels as its IR bytes (xml + weights) and the preprocessing as its JSON dict. The driver gathers the
features back in input order; index, calibration and bundle are then built by the same code as a local fit.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path
from types import ModuleType

import numpy as np
import openvino as ov

from ovdoc.log import progress_bar
from ovdoc.runtime.extract import Extracted
from ovdoc.runtime.preprocess import PreprocessSpec


def model_bytes(model: ov.Model) -> tuple[bytes, bytes]:
    """The IR as (xml, weights) bytes: what an actor on another machine compiles from."""
    with tempfile.TemporaryDirectory(prefix="ovdoc-ir-") as tmp:
        xml = Path(tmp) / "model.xml"
        ov.save_model(model, str(xml), compress_to_fp16=False)
        return xml.read_bytes(), xml.with_suffix(".bin").read_bytes()


def compile_bytes(xml: bytes, weights: bytes, spec: dict, *, device: str, batch: int, cpus: int,
                  hint: str = "throughput", inference_precision: str = "f32"):
    """A FeatureExtractor built on this process from IR bytes (the actors' one compile)."""
    from ovdoc.runtime.cpu_share import shared_core
    from ovdoc.runtime.features import FeatureExtractor, default_cache_dir

    core = shared_core(cpus)
    model = core.read_model(model=xml, weights=ov.Tensor(np.frombuffer(weights, np.uint8)))
    return FeatureExtractor(model, PreprocessSpec.from_dict(spec), device=device, batch=batch, hint=hint,
                            core=core, cache_dir=default_cache_dir(), inference_precision=inference_precision)


class FeatureActor:
    """One Ray Data actor: the IR compiled once, then batches of rows -> features (rows it cannot read are
    returned flagged, not dropped, so the driver can name them)."""

    def __init__(self, ir: list, spec: dict, device: str, batch: int, cpus: int,
                 inference_precision: str = "f32") -> None:
        import ray

        xml, weights = ray.get(ir[0])  # (xml, weights) bytes, put once by the driver for every actor
        self.extractor = compile_bytes(xml, weights, spec, device=device, batch=batch, cpus=cpus,
                                       inference_precision=inference_precision)

    def __call__(self, rows: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from ovdoc.errors import OvdocError
        from ovdoc.runtime.images import read_image

        n = len(rows["pos"])
        ok = np.ones(n, bool)
        prepared = np.zeros((n, self.extractor.spec.height, self.extractor.spec.width, 3), np.uint8)
        for i in range(n):
            path = str(rows["path"][i])
            try:
                if path:
                    image = read_image(Path(path))
                else:
                    image = np.frombuffer(rows["pixels"][i], np.uint8).reshape(
                        [int(v) for v in rows["shape"][i] if int(v) > 0])
                prepared[i] = self.extractor.spec.prepare(image)
            except OvdocError:
                ok[i] = False
        feats = np.zeros((n, self.extractor.dim), np.float32)
        if ok.any():
            # padded to the compiled batch like a local fit's batches, so the features are the same numbers
            feats[ok] = self.extractor.extract_prepared(prepared[ok])
        precision = str(self.extractor.inference_precision or "")
        return {"pos": rows["pos"], "ok": ok, "features": feats,
                "precision": np.array([precision] * n, dtype=object),
                # this worker's CPU so far: the driver adds up its workers' (a benchmark's images per CPU-s)
                "pid": np.full(n, os.getpid(), np.int64), "cpu_s": np.full(n, time.process_time())}


def _row(pos: int, item: np.ndarray | Path) -> dict:
    if isinstance(item, Path):
        return {"pos": pos, "path": str(item), "pixels": b"", "shape": [0, 0, 0]}
    image = np.ascontiguousarray(item, dtype=np.uint8)
    shape = list(image.shape) + [0] * (3 - image.ndim)  # grey images keep their 2-d shape (0 = absent)
    return {"pos": pos, "path": "", "pixels": image.tobytes(), "shape": shape}


def _blocks(rows: list[dict], batch: int, most: int) -> list:
    """The rows as at most `most` Arrow tables (Ray Data blocks) of a whole number of batches each: an
    actor batches within a block, and a block ending in a partial batch would pad it to a full one
    (even blocks of 25 rows at batch 8 computed 32 images for every 25)."""
    import pyarrow as pa

    batches = -(-len(rows) // batch)
    per_block = batch * -(-batches // max(1, most))
    return [pa.Table.from_pylist(rows[at:at + per_block]) for at in range(0, len(rows), per_block)]


class RayExtract:
    """`Extract` on a Ray cluster: a pool of `actors` FeatureActors of `cpus` CPUs each (default: one
    actor per CPU the cluster has)."""

    reads_files = True

    def __init__(self, ray: ModuleType, *, actors: int | None = None, cpus: int = 1,
                 inference_precision: str = "f32") -> None:
        self.ray = ray
        self.cpus = max(1, int(cpus))
        self.inference_precision = inference_precision  # every worker computes in the one precision
        total = int(ray.cluster_resources().get("CPU", 1))
        self.actors = max(1, actors if actors else total // self.cpus)
        self.worker_cpu_s = 0.0  # CPU seconds of the last call's worker processes (their lives so far)

    def __call__(self, model: ov.Model, spec: PreprocessSpec, images: Iterable[np.ndarray | Path], *,
                 device: str, batch: int, progress: bool, total: int | None = None,
                 desc: str = "features") -> Extracted:
        import logging

        import ray.data

        rows = [_row(pos, item) for pos, item in enumerate(images)]
        if not rows:
            return Extracted(np.zeros((0, 0), np.float32), device.upper(), None)
        # wrapped in a list, the reference reaches each actor as is (not as a constructor argument in the
        # object store, which Ray warns about for restartable actors); the driver holds it until the end
        ir = [self.ray.put(model_bytes(model))]
        # ovdoc's own bar below, as for a local fit; a failure is one line (OVDOC_DEBUG=1: Ray's own log)
        level = logging.ERROR if os.environ.get("OVDOC_DEBUG") else logging.CRITICAL
        logging.getLogger("ray.data").setLevel(level)
        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = False
        context.execution_options.preserve_order = True
        dataset = ray.data.from_arrow(_blocks(rows, batch, self.actors * 4)).map_batches(
            FeatureActor, batch_size=batch, batch_format="numpy", num_cpus=self.cpus,
            compute=ray.data.ActorPoolStrategy(size=self.actors),
            fn_constructor_kwargs={"ir": ir, "spec": spec.to_dict(), "device": device, "batch": batch,
                                   "cpus": self.cpus, "inference_precision": self.inference_precision},
        )
        positions, oks, parts, precision, cpu = [], [], [], None, {}
        bar = progress_bar(total=total or len(rows), desc=desc, enabled=progress)
        try:
            for out in dataset.iter_batches(batch_size=None, batch_format="numpy"):
                positions.append(out["pos"])
                oks.append(out["ok"])
                parts.append(out["features"])
                precision = precision or (str(out["precision"][0]) or None)
                for pid, used in zip(out["pid"].tolist(), out["cpu_s"].tolist(), strict=True):
                    cpu[pid] = max(cpu.get(pid, 0.0), used)
                bar.update(len(out["pos"]))
        except self.ray.exceptions.RayError as exc:
            from ovdoc.cluster.connect import cluster_error

            raise cluster_error(exc, "feature extraction on the cluster failed") from None
        finally:
            bar.close()
        self.worker_cpu_s = sum(cpu.values())
        pos, ok, feats = np.concatenate(positions), np.concatenate(oks), np.concatenate(parts)
        order = np.argsort(pos, kind="stable")
        pos, ok, feats = pos[order], ok[order], feats[order]
        skipped = [(int(p), rows[int(p)]["path"]) for p in pos[~ok]]
        return Extracted(np.ascontiguousarray(feats[ok], np.float32), device.upper(), precision, skipped)
