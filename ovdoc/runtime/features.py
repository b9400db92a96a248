"""Feature extraction through OpenVINO: batched, asynchronous, same preprocessing in fit and run.

Host side only crops/resizes to uint8 (`PreprocessSpec.prepare`); colour order and scaling run in-graph
(`ovdoc.runtime.ir.compile_ir`). Batches go through `openvino.AsyncInferQueue`, so decoding/resizing the next
batch overlaps with inference of the current one.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import openvino as ov

from ovdoc.errors import OvdocError
from ovdoc.log import progress_bar
from ovdoc.runtime.arrays import pad_batch
from ovdoc.runtime.ir import compile_ir, read_ir
from ovdoc.runtime.preprocess import PreprocessSpec

DEFAULT_BATCH = 8


def default_cache_dir() -> Path:
    """Where OpenVINO caches compiled models (OVDOC_CACHE_DIR overrides); makes the second start fast."""
    import os

    env = os.environ.get("OVDOC_CACHE_DIR")
    if env is not None:
        return Path(env).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")).expanduser() / "ovdoc" / "ov-cache"


class FeatureExtractor:
    """A compiled IR with a static batch and an AsyncInferQueue; images in, float32 features out."""

    def __init__(
        self,
        model: ov.Model | str | Path,
        spec: PreprocessSpec | None = None,
        *,
        device: str = "CPU",
        batch: int = DEFAULT_BATCH,
        hint: str = "throughput",
        inference_precision: str | None = "f32",
        cache_dir: str | Path | None = None,
        core: ov.Core | None = None,
        jobs: int = 0,
    ) -> None:
        if batch < 1:
            raise OvdocError(f"batch must be at least 1, got {batch}")
        self.core = core or ov.Core()
        if not isinstance(model, ov.Model):
            model, read_spec, _ = read_ir(model, self.core)
            spec = spec or read_spec
        if spec is None:
            from ovdoc.runtime.ir import preprocess_of

            spec = preprocess_of(model)
        self.spec = spec
        self.batch = batch
        self.device = device
        self.compiled = compile_ir(
            model,
            spec,
            device=device,
            batch=batch,
            hint=hint,
            inference_precision=inference_precision,
            cache_dir=cache_dir,
            core=self.core,
        )
        self.device = device.upper()
        self.inference_precision = _property(self.compiled, "INFERENCE_PRECISION_HINT")
        self.dim = _feature_dim(self.compiled)
        self.queue = ov.AsyncInferQueue(self.compiled, jobs)
        self._callback: Callable[[np.ndarray, object], None] | None = None
        self._error: BaseException | None = None
        self._lock = threading.Lock()
        self.queue.set_callback(self._on_done)
        # single frames (a live camera's partial batches) go to a batch-1 copy, built in the background
        # the first time one is seen: padding one frame to `batch` would compute batch-1 wasted images
        self._single: ov.AsyncInferQueue | None = None
        self._single_started = batch == 1
        self._single_args = (model, dict(device=device, batch=1, hint=hint,
                                         inference_precision=inference_precision, cache_dir=cache_dir,
                                         core=self.core), jobs)

    # --- asynchronous interface (used by extract and the live pipeline) ---------------------------
    def set_callback(self, fn: Callable[[np.ndarray, object], None]) -> None:
        """`fn(features[n, d], userdata)` runs in OpenVINO's thread when a batch finishes."""
        self._callback = fn

    def _on_done(self, request: ov.InferRequest, userdata: tuple[int, object]) -> None:
        n, payload = userdata
        try:
            out = request.get_output_tensor(0).data
            feats = np.array(out.reshape(out.shape[0], -1)[:n], dtype=np.float32, copy=True)
            if isinstance(payload, _Part):  # one image of a small batch sent as singles
                feats, payload = payload.gather.add(payload.index, feats)
                if feats is None:
                    return
            if self._callback is not None:
                self._callback(feats, payload)
        except BaseException as exc:  # surface in the caller's thread, not lost in OpenVINO's
            with self._lock:
                self._error = exc

    def submit(self, prepared: np.ndarray, userdata: object = None) -> None:
        """Queue one batch (NHWC uint8 BGR at model size, 1..batch images); blocks while all jobs are busy."""
        self.raise_pending()
        n = len(prepared)
        if n == 0 or n > self.batch:
            raise OvdocError(f"a batch holds 1..{self.batch} images, got {n}")
        if n <= self.batch // 2:
            # a live source's small batch: n batch-1 requests (run side by side) cost n images, padding
            # to the full batch would cost `batch`
            single = self._single_queue()
            if single is not None:
                if n == 1:
                    single.start_async({0: prepared}, (1, userdata))
                    return
                gather = _Gather(n, userdata)
                for i in range(n):
                    single.start_async({0: prepared[i:i + 1]}, (1, _Part(gather, i)))
                return
        # static batch is fastest on CPU: pad the tail
        self.queue.start_async({0: pad_batch(prepared, self.batch)}, (n, userdata))

    def _single_queue(self) -> ov.AsyncInferQueue | None:
        """The batch-1 copy once it is compiled (the first call starts compiling it), else None."""
        if not self._single_started:
            self._single_started = True
            # not a daemon: an interpreter exiting during a native compile aborts; exit waits for it
            threading.Thread(target=self._build_single, name="ovdoc-compile-batch1", daemon=False).start()
        return self._single

    def _build_single(self) -> None:
        """Compile the batch-1 copy; until it is ready (or if it fails) single frames are padded."""
        model, options, jobs = self._single_args
        try:
            queue = ov.AsyncInferQueue(compile_ir(model, self.spec, **options), jobs)
        except Exception:  # padding still works: slower for single frames, never wrong
            return
        queue.set_callback(self._on_done)
        self._single = queue

    def wait(self) -> None:
        self.queue.wait_all()
        if self._single is not None:
            self._single.wait_all()
        self.raise_pending()

    def raise_pending(self) -> None:
        with self._lock:
            error, self._error = self._error, None
        if error is not None:
            raise error

    # --- synchronous conveniences -----------------------------------------------------------------
    def prepare(self, images: Iterable[np.ndarray]) -> np.ndarray:
        return self.spec.prepare_batch(list(images))

    def extract(
        self,
        images: Iterable[np.ndarray],
        *,
        progress: bool = True,
        total: int | None = None,
        desc: str = "features",
    ) -> np.ndarray:
        """Features of BGR uint8 images of any size, in input order, as float32 [n, d]."""
        results: dict[int, np.ndarray] = {}
        previous = self._callback
        self._callback = lambda feats, seq: results.__setitem__(seq, feats)
        bar = progress_bar(total=total, desc=desc, enabled=progress)
        try:
            chunk: list[np.ndarray] = []
            seq = 0
            for image in images:
                chunk.append(self.spec.prepare(image))
                if len(chunk) == self.batch:
                    self.submit(np.stack(chunk), seq)
                    seq += 1
                    bar.update(len(chunk))
                    chunk = []
            if chunk:
                self.submit(np.stack(chunk), seq)
                seq += 1
                bar.update(len(chunk))
            self.wait()
        except BaseException:
            # an image that failed mid-stream: let the requests in flight finish before the error unwinds,
            # or OpenVINO's threads call back into an exiting interpreter ("FATAL: exception not rethrown")
            self.queue.wait_all()
            raise
        finally:
            bar.close()
            self._callback = previous
        if not results:
            return np.zeros((0, self.dim), np.float32)
        return np.concatenate([results[i] for i in range(seq)])

    def extract_prepared(self, prepared: np.ndarray) -> np.ndarray:
        """Features of an already prepared NHWC uint8 batch (any length), synchronously."""
        request = self.compiled.create_infer_request()
        outs = []
        for start in range(0, len(prepared), self.batch):
            part = prepared[start : start + self.batch]
            n = len(part)
            out = request.infer({0: pad_batch(part, self.batch)})[0]
            outs.append(np.array(out.reshape(out.shape[0], -1)[:n], np.float32))
        return np.concatenate(outs) if outs else np.zeros((0, self.dim), np.float32)


def _feature_dim(compiled: ov.CompiledModel) -> int:
    shape = compiled.outputs[0].get_partial_shape()
    dims = [d.get_length() for d in shape[1:] if d.is_static]
    return int(np.prod(dims)) if dims else -1


def _property(compiled: ov.CompiledModel, name: str) -> str | None:
    try:
        value = compiled.get_property(name)
    except Exception:
        return None
    return value.get_type_name() if isinstance(value, ov.Type) else str(value)


class _Gather:
    """The images of one small batch, sent as batch-1 requests, handed on together in their order."""

    def __init__(self, n: int, payload: object) -> None:
        self.parts: list[np.ndarray | None] = [None] * n
        self.left = n
        self.payload = payload
        self.lock = threading.Lock()

    def add(self, index: int, feats: np.ndarray) -> tuple[np.ndarray | None, object]:
        """Store image `index`'s features; the whole batch (and its payload) once the last one is in."""
        with self.lock:
            self.parts[index] = feats
            self.left -= 1
            if self.left:
                return None, None
        return np.concatenate(self.parts), self.payload


class _Part:
    """Userdata of one batch-1 request of a gathered batch."""

    __slots__ = ("gather", "index")

    def __init__(self, gather: _Gather, index: int) -> None:
        self.gather = gather
        self.index = index
