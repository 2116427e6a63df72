"""PyTorch `.pth` checkpoints (the zip format `torch.save` writes since torch 1.6), without torch.

Layout (spec/formats.md §1): a zip (entries stored, usually 64-byte aligned) holding `<archive>/data.pkl`,
a protocol-2 pickle of the state dict, and one `<archive>/data/<key>` entry of raw little-endian bytes per
storage. Each tensor in the pickle is `torch._utils._rebuild_tensor_v2(storage, offset, size, stride, ...)`
whose storage is a persistent id `("storage", torch.<Type>Storage, key, location, numel)`.

Reading never executes pickle code: `TensorUnpickler.find_class` admits only the names tensor rebuilding
needs (table `ADMITTED_GLOBALS`) and maps them to harmless stand-ins; any other global raises ModelFileError.
Storages are memory-mapped copy-on-write. bf16 is upcast exactly to float32; a top-level `state_dict` key is
used instead of the whole object, as Ai00's converter does.

Writing emits the pickle opcodes directly (pickle.Pickler would need torch's classes). The oracle check
`tests/oracle/check_pth_roundtrip.py` (run with .venv-oracle) compares both directions with real torch.
"""
from __future__ import annotations

import io
import os
import pickle
import struct
import zipfile
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import numpy as np

from ai00ref.errors import ModelFileError
from ai00ref.weights.safetensors_io import bf16_bits_to_float32, check_readable_file, float32_to_bf16_bits

# torch dtype name -> numpy dtype of the stored bits (bfloat16 is kept as its uint16 bits until the end).
STORED_DTYPES = {
    "float32": "<f4", "float16": "<f2", "bfloat16": "<u2", "float64": "<f8", "int64": "<i8",
    "int32": "<i4", "int16": "<i2", "int8": "<i1", "uint8": "<u1", "bool": "|b1",
}
STORAGE_CLASSES = {  # legacy typed-storage class name -> torch dtype name
    "FloatStorage": "float32", "HalfStorage": "float16", "BFloat16Storage": "bfloat16",
    "DoubleStorage": "float64", "LongStorage": "int64", "IntStorage": "int32", "ShortStorage": "int16",
    "CharStorage": "int8", "ByteStorage": "uint8", "BoolStorage": "bool",
}
LEGACY_MESSAGE = ("is a legacy (pre-1.6, non-zip) torch checkpoint, which is not supported; "
                  "re-save it with torch>=1.6: torch.save(torch.load(p), p)")


# ---- stand-ins for the admitted globals ----

class Unbuildable:
    """Refuses pickle's BUILD opcode, which would otherwise overwrite a stand-in's attributes."""

    def __setstate__(self, state):
        raise pickle.UnpicklingError(f"BUILD on a {type(self).__name__}")


class StandIn(Unbuildable):
    """A harmless callable that the unpickler hands out in place of a torch function."""
    __slots__ = ("function",)

    def __init__(self, function):
        self.function = function

    def __call__(self, *args):
        return self.function(*args)


@dataclass(frozen=True)
class TorchDType(Unbuildable):
    """Stand-in for a `torch.<dtype>` object or a `torch.<Type>Storage` class: just the dtype name."""
    name: str


@dataclass(frozen=True)
class Storage(Unbuildable):
    """One `data/<key>` entry: its raw bytes and the element dtype it was saved with."""
    key: str
    raw: np.ndarray  # (nbytes,) uint8, a copy-on-write memory map where possible
    dtype: str


@dataclass(frozen=True)
class PthTensor(Unbuildable):
    """A tensor as the pickle describes it; `to_numpy()` reads it out of its storage."""
    storage: Storage
    offset: int
    shape: tuple
    stride: tuple
    dtype: str

    def to_numpy(self) -> np.ndarray:
        """A C-contiguous array (a view of the file when possible); bf16 becomes float32 exactly."""
        elements = self.storage.raw.view(STORED_DTYPES[self.dtype])  # (numel,)
        itemsize = elements.itemsize
        if any(n == 0 for n in self.shape):
            view = np.zeros(self.shape, elements.dtype)
        else:
            view = np.lib.stride_tricks.as_strided(
                elements[self.offset:], shape=self.shape, strides=[s * itemsize for s in self.stride])
            if not view.flags.c_contiguous:
                view = view.copy(order="C")
        return bf16_bits_to_float32(view) if self.dtype == "bfloat16" else view

    def check(self, path) -> None:
        """The size, strides and offset are sane and stay inside the storage."""
        itemsize = np.dtype(STORED_DTYPES[self.dtype]).itemsize
        numel = self.storage.raw.size // itemsize
        if (self.storage.raw.size % itemsize or len(self.shape) != len(self.stride)
                or not all(type(v) is int and v >= 0 for v in (self.offset, *self.shape, *self.stride))):
            raise ModelFileError(path, f"bad tensor in data.pkl: size {self.shape}, stride {self.stride}, "
                                       f"offset {self.offset} over a {self.storage.raw.size}-byte storage")
        last = self.offset + sum((n - 1) * s for n, s in zip(self.shape, self.stride))
        if 0 not in self.shape and last >= numel:
            raise ModelFileError(path, f"bad tensor in data.pkl: it reaches element {last} of storage "
                                       f"'{self.storage.key}', which has only {numel}")


def rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None,
                      metadata=None) -> PthTensor:
    if not isinstance(storage, Storage):
        raise pickle.UnpicklingError("_rebuild_tensor_v2 without a storage")
    return PthTensor(storage, storage_offset, tuple(size), tuple(stride), storage.dtype)


def rebuild_tensor_v3(storage, storage_offset, size, stride, requires_grad, backward_hooks, dtype,
                      metadata=None) -> PthTensor:
    if not isinstance(storage, Storage) or not isinstance(dtype, TorchDType):
        raise pickle.UnpicklingError("_rebuild_tensor_v3 without a storage and dtype")
    return PthTensor(storage, storage_offset, tuple(size), tuple(stride), dtype.name)


def rebuild_parameter(data, requires_grad=False, backward_hooks=None, state=None) -> PthTensor:
    return data


def latin1_encode(text: str, encoding: str = "latin1") -> bytes:
    """`_codecs.encode`, which protocol-2 pickles use for bytes objects; only latin1 is admitted."""
    if encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError(f"_codecs.encode with encoding {encoding!r}")
    return text.encode("latin1")


ADMITTED_GLOBALS = {
    ("torch._utils", "_rebuild_tensor_v2"): StandIn(rebuild_tensor_v2),
    ("torch._utils", "_rebuild_tensor_v3"): StandIn(rebuild_tensor_v3),
    ("torch._utils", "_rebuild_parameter"): StandIn(rebuild_parameter),
    ("torch._utils", "_rebuild_parameter_with_state"): StandIn(rebuild_parameter),
    ("collections", "OrderedDict"): OrderedDict,  # a builtin type: BUILD on the class itself fails
    ("torch", "Size"): tuple,
    ("_codecs", "encode"): StandIn(latin1_encode),
    ("torch", "UntypedStorage"): TorchDType("uint8"),
    ("torch.storage", "UntypedStorage"): TorchDType("uint8"),
    **{("torch", cls): TorchDType(dtype) for cls, dtype in STORAGE_CLASSES.items()},
    **{("torch", name): TorchDType(name) for name in STORED_DTYPES},
}


class TensorUnpickler(pickle.Unpickler):
    """Unpickles data.pkl with only `ADMITTED_GLOBALS`; storages come from `load_storage(key, dtype)`."""

    def __init__(self, file, path, load_storage):
        super().__init__(file)
        self.path, self.load_storage, self.storages = path, load_storage, {}

    def find_class(self, module, name):
        try:
            return ADMITTED_GLOBALS[(module, name)]
        except KeyError:
            raise ModelFileError(self.path, f"refuses to load: the pickle asks for {module}.{name}, "
                                            "which is not tensor data") from None

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"
                and isinstance(pid[1], TorchDType) and isinstance(pid[2], str)):
            raise ModelFileError(self.path, f"bad storage reference in data.pkl: {pid!r:.100}")
        key = pid[2]
        if key not in self.storages:  # tensors that share a storage share one Storage
            self.storages[key] = Storage(key, self.load_storage(key), pid[1].name)
        return self.storages[key]


# ---- reading ----

def read_pth(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """All tensors of a torch zip checkpoint (its `state_dict` entry if it has one), as numpy arrays."""
    return {name: tensor.to_numpy() for name, tensor in open_pth(path).items()}


def open_pth(path: str | os.PathLike) -> dict[str, PthTensor]:
    """The checked tensor descriptions of a checkpoint; arrays are read later by `PthTensor.to_numpy()`."""
    _reject_non_zip(path)
    try:
        with zipfile.ZipFile(path) as zf:
            prefix = _archive_prefix(path, zf)
            _check_byteorder(path, zf, prefix)
            pickled = zf.read(prefix + "data.pkl")
            loaded = TensorUnpickler(io.BytesIO(pickled), path, lambda key: _storage_bytes(path, zf, prefix, key)).load()
    except ModelFileError:
        raise
    except (zipfile.BadZipFile, zipfile.LargeZipFile) as e:
        raise ModelFileError(path, f"truncated or damaged zip archive ({e})") from None
    except Exception as e:  # a malformed pickle can raise nearly anything; all of it means "bad file"
        raise ModelFileError(path, f"bad data.pkl ({type(e).__name__}: {e})") from None
    return _tensor_entries(path, loaded)


def _reject_non_zip(path) -> None:
    check_readable_file(path)
    with open(path, "rb") as f:
        magic = f.read(512)
    if magic.startswith(b"PK\x03\x04") or (magic.startswith(b"PK\x05\x06") and len(magic) == 22):
        return
    if (len(magic) > 1 and magic[0] == 0x80 and 2 <= magic[1] <= 5) or magic[257:262] == b"ustar":  # pickle/tar
        raise ModelFileError(path, LEGACY_MESSAGE)
    raise ModelFileError(path, "not a PyTorch checkpoint (no zip signature)")


def _archive_prefix(path, zf: zipfile.ZipFile) -> str:
    pickles = [n for n in zf.namelist() if n.endswith("/data.pkl") and n.count("/") == 1]
    if len(pickles) != 1:
        raise ModelFileError(path, "zip file is not a torch checkpoint (expected one '<archive>/data.pkl')")
    return pickles[0][: -len("data.pkl")]


def _check_byteorder(path, zf: zipfile.ZipFile, prefix: str) -> None:
    if prefix + "byteorder" in zf.namelist() and zf.read(prefix + "byteorder").strip() != b"little":
        raise ModelFileError(path, "big-endian torch checkpoints are not supported")


def _storage_bytes(path, zf: zipfile.ZipFile, prefix: str, key: str) -> np.ndarray:
    """A storage's bytes: a view of the memory-mapped file for stored entries, else decompressed."""
    try:
        info = zf.getinfo(f"{prefix}data/{key}")
    except KeyError:
        raise ModelFileError(path, f"storage '{key}' named in data.pkl is missing from the zip") from None
    if info.compress_type != zipfile.ZIP_STORED:
        return np.frombuffer(zf.read(info), np.uint8)
    start = _data_offset(zf, info)
    if start + info.file_size > os.path.getsize(path):
        raise ModelFileError(path, f"truncated file: storage '{key}' runs past the end")
    return np.memmap(path, np.uint8, mode="c", offset=start, shape=(info.file_size,)) if info.file_size \
        else np.zeros(0, np.uint8)


def _data_offset(zf: zipfile.ZipFile, info: zipfile.ZipInfo) -> int:
    """Where an entry's bytes start: after its local header, whose extra field may differ from the central one."""
    zf.fp.seek(info.header_offset)
    local = zf.fp.read(30)
    if local[:4] != b"PK\x03\x04":
        raise zipfile.BadZipFile(f"bad local header for {info.filename}")
    name_len, extra_len = struct.unpack("<HH", local[26:30])
    return info.header_offset + 30 + name_len + extra_len


def _tensor_entries(path, loaded) -> dict[str, PthTensor]:
    if isinstance(loaded, dict) and "state_dict" in loaded:
        loaded = loaded["state_dict"]
    if not isinstance(loaded, dict):
        raise ModelFileError(path, f"the checkpoint holds a {type(loaded).__name__}, not a dict of tensors")
    for name, tensor in loaded.items():
        if not isinstance(name, str) or not isinstance(tensor, PthTensor):
            raise ModelFileError(path, f"entry {name!r} is a {type(tensor).__name__}, not a tensor")
        tensor.check(path)
    return dict(loaded)


# ---- writing ----

WRITE_DTYPES = {"fp32": ("float32", "FloatStorage"), "fp16": ("float16", "HalfStorage"),
                "bf16": ("bfloat16", "BFloat16Storage")}
INT_STORAGES = {"int64": "LongStorage", "int32": "IntStorage", "int16": "ShortStorage",
                "int8": "CharStorage", "uint8": "ByteStorage", "bool": "BoolStorage"}
ALIGNMENT = 64  # torch aligns every entry's data to 64 bytes (so it can mmap them)


def write_pth(path: str | os.PathLike, tensors: Mapping[str, np.ndarray], dtype: str = "fp32") -> None:
    """Write a torch zip checkpoint of a flat state dict; float arrays are stored as `dtype`.

    `torch.load(path, weights_only=True)` reads it back as an OrderedDict of contiguous CPU tensors.
    """
    if dtype not in WRITE_DTYPES:
        raise ValueError(f"dtype must be one of {sorted(WRITE_DTYPES)}, not {dtype!r}")
    stored = {name: _stored_array(name, np.asarray(a), dtype) for name, a in tensors.items()}
    records = [("data.pkl", _state_dict_pickle(stored)), ("byteorder", b"little")]
    records += [(f"data/{i}", array) for i, (array, _) in enumerate(stored.values())]
    records.append(("version", b"3\n"))
    tmp = Path(f"{os.fspath(path)}.partial")
    try:
        with zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED) as zf:
            for name, data in records:
                _write_aligned(zf, "archive/" + name, data)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _stored_array(name: str, array: np.ndarray, dtype: str) -> tuple[np.ndarray, str]:
    """(contiguous little-endian data, torch storage class) for one tensor."""
    if array.dtype.kind == "f":
        torch_dtype, storage = WRITE_DTYPES[dtype]
        with np.errstate(over="ignore"):  # out-of-range values become inf, as torch's casts do
            data = float32_to_bf16_bits(array.astype(np.float32)) if dtype == "bf16" else array  # f64->f32->bf16 (c10)
            return data.astype(STORED_DTYPES[torch_dtype], order="C", copy=False), storage
    if array.dtype.name in INT_STORAGES:
        return array.astype(STORED_DTYPES[array.dtype.name], order="C"), INT_STORAGES[array.dtype.name]
    raise TypeError(f"tensor '{name}' has dtype {array.dtype}, which write_pth cannot store")


def _write_aligned(zf: zipfile.ZipFile, name: str, data) -> None:
    """A stored entry whose data starts on an ALIGNMENT boundary, padded by an 'FB' extra field like torch's."""
    payload = memoryview(data.reshape(-1).view(np.uint8) if isinstance(data, np.ndarray) else data)
    info = zipfile.ZipInfo(name)
    info.file_size = payload.nbytes
    zip64 = info.file_size * 1.05 > zipfile.ZIP64_LIMIT  # zipfile's own rule; it then adds a 20-byte extra
    header_len = 30 + len(name.encode()) + (20 if zip64 else 0)
    pad = -(zf.fp.tell() + header_len) % ALIGNMENT
    if pad:
        pad += ALIGNMENT if pad < 4 else 0
        info.extra = struct.pack("<2sH", b"FB", pad - 4) + b"Z" * (pad - 4)
    with zf.open(info, "w") as f:
        f.write(payload)


# Pickle opcodes (protocol 2), written by hand: see pickletools for their meaning.
def _global(module: str, name: str) -> bytes:
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def _str(s: str) -> bytes:
    raw = s.encode("utf-8")
    return b"X" + struct.pack("<I", len(raw)) + raw


def _int(n: int) -> bytes:
    if 0 <= n < 0x100:
        return b"K" + bytes([n])
    if 0 <= n < 0x10000:
        return b"M" + struct.pack("<H", n)
    if -0x80000000 <= n < 0x80000000:
        return b"J" + struct.pack("<i", n)
    raw = n.to_bytes((n.bit_length() + 8) // 8, "little", signed=True)
    return b"\x8a" + bytes([len(raw)]) + raw  # LONG1


def _tuple(items) -> bytes:
    return b"(" + b"".join(items) + b"t"


EMPTY_ORDERED_DICT = _global("collections", "OrderedDict") + b")R"


def contiguous_strides(shape: tuple) -> list[int]:
    """torch's element strides of a contiguous tensor (a size-0 dimension counts as 1)."""
    strides, step = [], 1
    for n in reversed(shape):
        strides.insert(0, step)
        step *= max(n, 1)
    return strides


def _tensor_pickle(key: str, storage: str, array: np.ndarray) -> bytes:
    """`_rebuild_tensor_v2(storage, 0, size, stride, False, OrderedDict())` for a contiguous array."""
    persistent_id = _tuple([_str("storage"), _global("torch", storage), _str(key), _str("cpu"), _int(array.size)])
    strides = contiguous_strides(array.shape)
    args = [persistent_id + b"Q", _int(0), _tuple(map(_int, array.shape)), _tuple(map(_int, strides)),
            b"\x89", EMPTY_ORDERED_DICT]
    return _global("torch._utils", "_rebuild_tensor_v2") + _tuple(args) + b"R"


def _state_dict_pickle(stored: dict[str, tuple[np.ndarray, str]]) -> bytes:
    """An OrderedDict {name: tensor i on storage key "i"}, filled by one SETITEMS."""
    items = [_str(name) + _tensor_pickle(str(i), storage, array)
             for i, (name, (array, storage)) in enumerate(stored.items())]
    body = b"(" + b"".join(items) + b"u" if items else b""
    return b"\x80\x02" + EMPTY_ORDERED_DICT + body + b"."
