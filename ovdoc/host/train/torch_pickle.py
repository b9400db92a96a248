"""Read a legacy (non-zip) PyTorch checkpoint of plain tensors without torch, and without trusting it.

Pickle runs whatever callables a file names. The restricted unpickler below maps the handful of names a
state_dict needs (tensor rebuild, storage types, OrderedDict) to inert stand-ins and refuses the rest,
so a malicious file fails with an error instead of running code. Legacy layout (torch < 1.6 `_save`):
magic number, protocol version, sys_info, the object, the sorted storage keys, then per storage an
int64 element count followed by the raw little-endian data.
"""

from __future__ import annotations

import collections
import io
import pickle
import struct
from pathlib import Path

import numpy as np

from ovdoc.errors import OvdocError

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C

_STORAGE_DTYPES = {
    "FloatStorage": np.float32,
    "DoubleStorage": np.float64,
    "HalfStorage": np.float16,
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ShortStorage": np.int16,
    "CharStorage": np.int8,
    "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}


class _StorageType:
    """Stand-in for torch.FloatStorage etc.: only remembers the element dtype."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.dtype = np.dtype(_STORAGE_DTYPES[name])


class _Storage:
    """A storage whose bytes are read after the pickle (legacy files store them behind it)."""

    def __init__(self, dtype: np.dtype, numel: int) -> None:
        self.dtype = dtype
        self.numel = numel
        self.data: np.ndarray | None = None


class _LazyTensor:
    """What `_rebuild_tensor_v2` returns: a view description, materialised once storages are read."""

    def __init__(self, storage: _Storage, offset: int, size: tuple, stride: tuple) -> None:
        self.storage, self.offset, self.size, self.stride = storage, offset, tuple(size), tuple(stride)

    def to_numpy(self) -> np.ndarray:
        data = self.storage.data
        if data is None:
            raise OvdocError("checkpoint is truncated: a tensor's storage was never read")
        if not self.size:
            return np.array(data[self.offset], dtype=data.dtype)
        itemsize = data.dtype.itemsize
        needed = self.offset + sum((n - 1) * s for n, s in zip(self.size, self.stride, strict=True)) + 1
        if min(self.size) > 0 and needed > data.size:
            raise OvdocError("checkpoint is corrupt: a tensor points past the end of its storage")
        view = np.lib.stride_tricks.as_strided(
            data[self.offset :], shape=self.size, strides=tuple(s * itemsize for s in self.stride)
        )
        return np.array(view, copy=True)


def _rebuild_tensor_v2(
    storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None, metadata=None
):
    if not isinstance(storage, _Storage):
        raise OvdocError("checkpoint is not a plain tensor file (tensor without a storage)")
    return _LazyTensor(storage, int(storage_offset), size, stride)


def _rebuild_tensor(storage, storage_offset, size, stride):
    return _rebuild_tensor_v2(storage, storage_offset, size, stride)


_ALLOWED = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
} | {("torch", name): _StorageType(name) for name in _STORAGE_DTYPES}


class RestrictedUnpickler(pickle.Unpickler):
    """Allows only tensor rebuilding; any other global (os.system, builtins.eval, ...) is refused."""

    def __init__(self, file, storages: dict[str, _Storage]) -> None:
        super().__init__(file, encoding="latin1")
        self.storages = storages

    def find_class(self, module: str, name: str):
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(
                f"refusing to load {module}.{name}: not a tensor checkpoint"
            ) from None

    def persistent_load(self, saved_id):
        if not isinstance(saved_id, tuple) or not saved_id or saved_id[0] != "storage":
            raise pickle.UnpicklingError("unsupported persistent object in checkpoint")
        _, storage_type, key, _location, numel, view_metadata = saved_id
        if not isinstance(storage_type, _StorageType):
            raise pickle.UnpicklingError("unknown storage type in checkpoint")
        if view_metadata is not None:
            raise pickle.UnpicklingError("storage views are not supported")
        key = str(key)
        if key not in self.storages:
            self.storages[key] = _Storage(storage_type.dtype, int(numel))
        return self.storages[key]


def _safe_load(f) -> object:
    return RestrictedUnpickler(f, {}).load()


def load_legacy_state_dict(path: str | Path) -> dict[str, np.ndarray]:
    """`{name: numpy array}` from a legacy torch `.pth` state_dict; one clear error for anything else."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise OvdocError(f"cannot read {path}: {exc.strerror}") from exc
    if raw[:2] == b"PK":
        raise OvdocError(f"{path} is a zip-format torch checkpoint; only the legacy format is supported")
    f = io.BytesIO(raw)
    storages: dict[str, _Storage] = {}
    try:
        magic = _safe_load(f)
        if magic != LEGACY_MAGIC:
            raise OvdocError(f"{path} is not a legacy torch checkpoint (bad magic number)")
        _safe_load(f)  # protocol version
        _safe_load(f)  # sys_info
        obj = RestrictedUnpickler(f, storages).load()
        keys = _safe_load(f)
    except pickle.UnpicklingError as exc:
        raise OvdocError(f"{path}: {exc}") from exc
    except (EOFError, ValueError, TypeError, struct.error) as exc:
        raise OvdocError(f"{path} is corrupt or truncated ({type(exc).__name__})") from exc
    if not isinstance(keys, list):
        raise OvdocError(f"{path} is corrupt: no storage key list")
    for key in keys:
        storage = storages.get(str(key))
        head = f.read(8)
        if storage is None or len(head) != 8:
            raise OvdocError(f"{path} is corrupt or truncated (storage {key})")
        (numel,) = struct.unpack("<q", head)
        nbytes = numel * storage.dtype.itemsize
        blob = f.read(nbytes)
        if numel != storage.numel or len(blob) != nbytes:
            raise OvdocError(f"{path} is corrupt or truncated (storage {key})")
        storage.data = np.frombuffer(blob, dtype=storage.dtype.newbyteorder("<")).astype(storage.dtype)
    if not isinstance(obj, dict):
        raise OvdocError(f"{path} does not hold a state_dict")
    out: dict[str, np.ndarray] = {}
    for name, value in obj.items():
        if isinstance(value, _LazyTensor):
            out[str(name)] = value.to_numpy()
    return out
