"""Read a legacy (pre-zip) PyTorch checkpoint into NumPy arrays, without PyTorch.

The legacy format written by ``torch.save(..., _use_new_zipfile_serialization=False)`` is
a run of pickles followed by raw data:

1. the magic number, 2. the protocol version, 3. system info (endianness, type sizes),
4. the object itself, whose tensors are ``torch._utils._rebuild_tensor_v2(storage,
   offset, size, stride, ...)`` calls on *persistent ids*
   ``("storage", storage_type, key, location, numel)``,
5. the list of storage keys, in the order their bytes follow;
then, per storage, an 8-byte little-endian element count and the elements.

The unpickler here only admits the few names such a state dict uses; anything else (code,
arbitrary classes) is refused, so reading a file cannot run code.
"""

from __future__ import annotations

import collections
import pickle
import struct
from dataclasses import dataclass

import numpy as np

MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
PROTOCOL_VERSION = 1001

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


class CheckpointError(ValueError):
    """The file is not a legacy PyTorch checkpoint camcli can read."""


@dataclass
class _Storage:
    key: str
    dtype: type
    numel: int


@dataclass
class _TensorRef:
    storage: _Storage
    offset: int
    size: tuple
    stride: tuple


def _storage_type(name: str):
    def marker():  # pragma: no cover - never called, only compared by name
        raise CheckpointError(name)

    marker.storage_name = name
    return marker


def _rebuild_tensor_v2(storage, offset, size, stride, *_ignored):
    return _TensorRef(storage, int(offset), tuple(size), tuple(stride))


def _rebuild_parameter(data, *_ignored):
    return data


class _Unpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if module == "collections" and name == "OrderedDict":
            return collections.OrderedDict
        if module == "torch._utils" and name == "_rebuild_tensor_v2":
            return _rebuild_tensor_v2
        if module == "torch._utils" and name == "_rebuild_parameter":
            return _rebuild_parameter
        if module == "torch" and name in _STORAGE_DTYPES:
            return _storage_type(name)
        raise CheckpointError(f"unexpected object {module}.{name} in the checkpoint")

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and pid and pid[0] == "storage"):
            raise CheckpointError(f"unexpected persistent id {pid!r}")
        _, storage_type, key, _location, numel = pid[:5]
        name = getattr(storage_type, "storage_name", None)
        if name not in _STORAGE_DTYPES:
            raise CheckpointError(f"unsupported storage type {storage_type!r}")
        return _Storage(str(key), _STORAGE_DTYPES[name], int(numel))


def read_state_dict(path: str) -> dict[str, np.ndarray]:
    """Read a legacy PyTorch ``state_dict`` file into ``{name: array}`` (copies, C order).

    Raises:
        CheckpointError: not a legacy checkpoint, or truncated.
        OSError: the file cannot be read.
    """
    with open(path, "rb") as f:
        try:
            if _Unpickler(f).load() != MAGIC_NUMBER:
                raise CheckpointError(f"{path} is not a legacy PyTorch checkpoint")
            if _Unpickler(f).load() != PROTOCOL_VERSION:
                raise CheckpointError(f"{path}: unsupported checkpoint protocol")
            info = _Unpickler(f).load()
            if not info.get("little_endian", True):
                raise CheckpointError(f"{path}: big-endian checkpoints are not supported")
            state = _Unpickler(f).load()
            keys = _Unpickler(f).load()
        except (pickle.UnpicklingError, EOFError, AttributeError, TypeError) as exc:
            raise CheckpointError(f"{path} is not a readable legacy PyTorch checkpoint "
                                  f"({exc})") from None
        storages = {}
        wanted = {}
        for ref in state.values():
            if isinstance(ref, _TensorRef):
                wanted[ref.storage.key] = ref.storage
        for key in keys:
            header = f.read(8)
            if len(header) != 8:
                raise CheckpointError(f"{path} is truncated")
            (numel,) = struct.unpack("<q", header)
            dtype = np.dtype(wanted[key].dtype if key in wanted else np.uint8)
            data = f.read(numel * dtype.itemsize)
            if len(data) != numel * dtype.itemsize:
                raise CheckpointError(f"{path} is truncated")
            storages[key] = np.frombuffer(data, dtype=dtype)
    arrays = {}
    for name, ref in state.items():
        if not isinstance(ref, _TensorRef):
            continue
        flat = storages[ref.storage.key]
        itemsize = flat.dtype.itemsize
        view = np.lib.stride_tricks.as_strided(
            flat[ref.offset:], shape=ref.size, strides=tuple(s * itemsize for s in ref.stride)
        )
        arrays[name] = np.array(view, copy=True)
    return arrays
