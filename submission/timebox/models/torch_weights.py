"""Read a PyTorch legacy-format (pre-1.6, non-zip) ``state_dict`` file with numpy alone.

The format is a sequence of pickles: a magic number, the protocol version, system info, the
state dict itself (whose tensors point at storages through ``persistent_load``), the list of
storage keys in file order, and then for each storage its element count (int64) and raw bytes.
Tensors are views into storages with an offset, a size and strides (possibly non-contiguous).
Every pickle goes through a restricted unpickler (no globals but the state dict's few torch names), so a
weights file cannot run code.

Example::

    weights = read_legacy_state_dict("efficientnet-lite0-57934424.pth")
    weights["_conv_stem.weight"].shape   # (32, 3, 3, 3)
"""

from __future__ import annotations

import collections
import pickle
import struct
from pathlib import Path

import numpy as np

from ..errors import UsageError

_MAGIC = 0x1950A86A20F9469CFC6C
_DTYPES = {
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
    def __init__(self, name: str):
        self.dtype = np.dtype(_DTYPES[name])


class _StorageRef:
    def __init__(self, key: str, dtype: np.dtype):
        self.key, self.dtype = key, dtype


class _TensorRef:
    def __init__(self, storage: _StorageRef, offset: int, size: tuple, stride: tuple):
        self.storage, self.offset, self.size, self.stride = storage, offset, tuple(size), tuple(stride)


def _rebuild_tensor(storage, offset, size, stride, *_ignored):
    return _TensorRef(storage, offset, size, stride)


class _PlainUnpickler(pickle.Unpickler):
    """Plain data only (numbers, strings, lists, dicts): any global, hence any code, is refused."""

    def find_class(self, module: str, name: str):
        raise pickle.UnpicklingError(f"unsupported global {module}.{name} in a weights file")


class _Unpickler(pickle.Unpickler):
    """Maps the few torch globals a state dict uses to inert stand-ins; refuses anything else."""

    def find_class(self, module: str, name: str):
        if module == "collections" and name == "OrderedDict":
            return collections.OrderedDict
        if module == "torch._utils" and name in ("_rebuild_tensor", "_rebuild_tensor_v2"):
            return _rebuild_tensor
        if module == "torch" and name in _DTYPES:
            return _StorageType(name)
        raise pickle.UnpicklingError(f"unsupported global {module}.{name} in a weights file")

    def persistent_load(self, pid):
        kind, storage_type, key, _location, _numel = pid[:5]
        if kind != "storage":
            raise pickle.UnpicklingError(f"unsupported persistent id {kind!r}")
        return _StorageRef(key, storage_type.dtype)


def read_legacy_state_dict(path: str | Path) -> dict[str, np.ndarray]:
    """Return ``{name: array}`` from a legacy-format ``.pth`` file, without torch."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            if _PlainUnpickler(f).load() != _MAGIC:
                raise UsageError(
                    f"{path}: not a legacy-format PyTorch file (zip-format files are not supported; "
                    "re-save with torch.save(..., _use_new_zipfile_serialization=False))"
                )
            _PlainUnpickler(f).load()  # protocol version
            _PlainUnpickler(f).load()  # system info
            state = _Unpickler(f).load()
            keys = _PlainUnpickler(f).load()
            storages = {}
            for key in keys:
                tensor_dtype = _storage_dtype(state, key)
                (numel,) = struct.unpack("<q", f.read(8))
                raw = f.read(numel * tensor_dtype.itemsize)
                if len(raw) != numel * tensor_dtype.itemsize:
                    raise UsageError(f"{path}: truncated weights file (storage {key}); reinstall its package")
                storages[key] = np.frombuffer(raw, dtype=tensor_dtype)
    except (pickle.UnpicklingError, EOFError, struct.error, ValueError, TypeError, AttributeError, KeyError, IndexError) as exc:
        raise UsageError(f"{path}: unreadable weights file ({exc}); reinstall or re-download it") from exc
    return {name: _materialise(ref, storages) for name, ref in state.items() if isinstance(ref, _TensorRef)}


def _storage_dtype(state: dict, key: str) -> np.dtype:
    for ref in state.values():
        if isinstance(ref, _TensorRef) and ref.storage.key == key:
            return ref.storage.dtype
    return np.dtype(np.float32)


def _materialise(ref: _TensorRef, storages: dict[str, np.ndarray]) -> np.ndarray:
    flat = storages[ref.storage.key]
    item = flat.itemsize
    view = np.lib.stride_tricks.as_strided(
        flat[ref.offset :], shape=ref.size, strides=tuple(s * item for s in ref.stride), writeable=False
    )
    return view.copy()
