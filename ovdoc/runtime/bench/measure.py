"""Timing primitives for `ovdoc bench`: each one measures one thing on frames every run shares.

All model timings go through the runtime's own code (`FeatureExtractor`, `Pipeline`), so a figure here is
what `ovdoc run` does, not what a re-implementation would do.
"""

from __future__ import annotations

import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import openvino as ov

from ovdoc.errors import OvdocError
from ovdoc.runtime.arrays import pad_batch
from ovdoc.runtime.preprocess import PreprocessSpec


def rss_mb() -> float | None:
    """Resident memory of this process now (psutil), after a GC pass; None when psutil is missing.

    Process-wide and cumulative (allocators rarely hand memory back), so read it as "this much was
    needed so far", not as one configuration's footprint.
    """
    import gc

    gc.collect()
    try:
        import psutil

        return round(psutil.Process().memory_info().rss / 2**20, 1)
    except Exception:
        return None


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (ru_maxrss is KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(peak / (2**20 if sys.platform == "darwin" else 2**10), 1)


def read_frames(source: str | Path, res: tuple[int, int] | None, n: int) -> list[np.ndarray]:
    """The first `n` frames of `source` at `--res`, decoded by the runtime's own source class."""
    from ovdoc.runtime.stream.sources import open_source

    src = open_source(str(source), res=res)
    frames = []
    try:
        while len(frames) < n:
            frame = src.read()
            if frame is None:
                break
            frames.append(frame.image)
    finally:
        src.close()
    if not frames:
        raise OvdocError(f"{source} has no readable frames")
    return frames


def decode_ceiling(
    source: str | Path, res: tuple[int, int] | None, n: int, spec: PreprocessSpec, *, min_seconds: float = 2.0
) -> dict:
    """Decode + resize to --res + crop/resize to model size, nothing else: no pipeline can beat this.

    The same first `n` frames, re-read until `min_seconds` have passed; the best pass counts (a short clip
    read once is dominated by codec start-up and scheduler noise).
    """
    from ovdoc.runtime.stream.sources import open_source

    best = 0.0
    count = 0
    total = 0.0
    while total < min_seconds:
        src = open_source(str(source), res=res)
        count = 0
        start = time.perf_counter()
        try:
            while count < n:
                frame = src.read()
                if frame is None:
                    break
                spec.prepare(frame.image)
                count += 1
        finally:
            src.close()
        wall = time.perf_counter() - start
        total += wall
        if count == 0:
            raise OvdocError(f"{source} has no readable frames")
        best = max(best, count / wall)
    return {"decode_fps": round(best, 1), "frames": count, "res": _res_text(res)}


def model_speed(extractor, prepared: np.ndarray, *, min_seconds: float = 1.0, latency_runs: int = 30) -> dict:
    """images/s through the AsyncInferQueue (as fit/run use it) and per-batch latency p50/p99 (sync)."""
    batch = extractor.batch
    blocks = [prepared[i : i + batch] for i in range(0, len(prepared) - batch + 1, batch)] or [
        prepared[:batch]
    ]
    extractor.set_callback(lambda feats, _: None)
    extractor.submit(blocks[0])  # warm-up: first inference allocates
    extractor.wait()
    done = 0
    start = time.perf_counter()
    while True:
        for block in blocks:
            extractor.submit(block)
            done += len(block)
        extractor.wait()
        wall = time.perf_counter() - start
        if wall >= min_seconds:
            break
    extractor.set_callback(None)
    request = extractor.compiled.create_infer_request()
    latencies = []
    full = pad_batch(blocks[0], batch)
    for i in range(latency_runs):
        t0 = time.perf_counter()
        request.infer({0: full})
        if i:  # the first sync request of a new InferRequest is a warm-up
            latencies.append((time.perf_counter() - t0) * 1000.0)
    lat = np.asarray(latencies)
    return {
        "model_ips": round(done / wall, 1),
        "latency_ms_p50": round(float(np.percentile(lat, 50)), 3),
        "latency_ms_p99": round(float(np.percentile(lat, 99)), 3),
    }


def scorer_speed(scorer, queries: np.ndarray, *, repeats: int = 3) -> dict:
    """Microseconds to score ONE feature vector (live scoring queries one frame at a time)."""
    best = None
    for _ in range(repeats):
        start = time.perf_counter()
        for q in queries:
            scorer.score_samples(q[None])
        per = (time.perf_counter() - start) / len(queries) * 1e6
        best = per if best is None else min(best, per)
    return {"scorer_us_per_query": round(best, 1)}


def time_to_first_result(
    model: ov.Model, spec: PreprocessSpec, device: str, batch: int, frame: np.ndarray, scorer
) -> dict:
    """Seconds from nothing compiled to the first score, without and then with OpenVINO's model cache.

    Both starts use a fresh `ov.Core` and the same empty temp CACHE_DIR: the first compiles and fills it
    (cold), the second imports the cached blob (warm), which is what a board's second boot sees.
    """
    from ovdoc.runtime.ir import compile_ir

    prepared = np.repeat(spec.prepare(frame)[None], batch, axis=0)
    out = {}
    with tempfile.TemporaryDirectory(prefix="ovdoc-bench-cache-") as cache:
        for label in ("cold", "warm"):
            start = time.perf_counter()
            compiled = compile_ir(model, spec, device=device, batch=batch, core=ov.Core(), cache_dir=cache)
            feats = compiled.create_infer_request().infer({0: prepared})[0]
            scorer.score_samples(np.asarray(feats, np.float32).reshape(batch, -1)[:1])
            out[f"first_result_s_{label}"] = round(time.perf_counter() - start, 3)
            del compiled
    return out


def pipeline_fps(
    detector,
    source: str | Path,
    res: tuple[int, int] | None,
    frames: int,
    *,
    smooth: int = 10,
    repeats: int = 3,
) -> dict:
    """End-to-end FPS of `ovdoc run`'s Pipeline (decode, resize, infer, score, smoothing), no display.

    Run `repeats` times on the same frames; the median counts (one run on a shared 2-core box swings by 2x).
    """
    from ovdoc.runtime.stream.pipeline import Pipeline, RunOptions
    from ovdoc.runtime.stream.sources import open_source

    runs = []
    count = 0
    for _ in range(max(1, repeats)):
        src = open_source(str(source), res=res)
        try:
            summary = Pipeline(detector, src, RunOptions(smooth=smooth, max_frames=frames)).run()
        finally:
            src.close()
        if summary.get("error"):
            raise OvdocError(summary["error"])
        runs.append(summary["fps"])
        count = summary["frames"]
    return {
        "pipeline_fps": round(float(np.median(runs)), 1),
        "pipeline_fps_runs": runs,
        "pipeline_frames": count,
    }


def _res_text(res: tuple[int, int] | None) -> str:
    return f"{res[0]}x{res[1]}" if res else "native"


def add_pipeline(row: dict, detector, cfg) -> dict:
    """Fill `row` with `pipeline_fps` on cfg's clip (or the error line) and the process's RSS after it."""
    from ovdoc.errors import first_line

    try:
        row.update(pipeline_fps(detector, cfg.source, cfg.res, cfg.frames, repeats=cfg.repeats))
    except Exception as exc:  # a configuration that fails is reported, the rest goes on
        row["pipeline_fps"] = None
        row["error"] = first_line(exc)
    row["rss_mb"] = rss_mb()
    return row
