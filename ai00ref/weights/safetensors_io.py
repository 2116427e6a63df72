"""Safetensors files (Ai00's `.st` models, `.state` files, LoRAs): a small strict reader and a writer.

Layout (spec/formats.md §2): 8-byte little-endian header length N, N bytes of JSON
`{"__metadata__": {str: str}, name: {"dtype", "shape", "data_offsets": [begin, end]}, ...}` padded with
spaces to a multiple of 8, then the raw little-endian data; offsets are relative to the data start.

The reader memory-maps the file copy-on-write, so tensors are views into the page cache (a 3 GB model is
not read twice) that may be modified without touching the file. BF16 is upcast exactly to float32.
The writer lays tensors out as the `safetensors` library does (dtype rank descending, then name), so its
bytes equal `safetensors.numpy.save`'s; tests/test_weights_io.py checks both directions.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Mapping

import numpy as np

from ai00ref.errors import ModelFileError

MAX_HEADER_BYTES = 100_000_000  # the safetensors library refuses larger headers too

# safetensors dtype string -> numpy dtype of the stored bits. BF16 is stored as uint16 bits.
STORED_DTYPES: dict[str, np.dtype] = {
    "BOOL": np.dtype(np.bool_), "U8": np.dtype("<u1"), "I8": np.dtype("<i1"),
    "I16": np.dtype("<i2"), "U16": np.dtype("<u2"), "F16": np.dtype("<f2"), "BF16": np.dtype("<u2"),
    "I32": np.dtype("<i4"), "U32": np.dtype("<u4"), "F32": np.dtype("<f4"), "F64": np.dtype("<f8"),
    "I64": np.dtype("<i8"), "U64": np.dtype("<u8"),
}
# The library sorts tensors by this rank, descending (its Rust `Dtype` enum order), then by name.
DTYPE_RANK = ["BOOL", "U8", "I8", "I16", "U16", "F16", "BF16", "I32", "U32", "F32", "F64", "I64", "U64"]
NUMPY_TO_ST = {np.dtype(v).newbyteorder("<"): k for k, v in STORED_DTYPES.items() if k != "BF16"}


def bf16_bits_to_float32(bits: np.ndarray) -> np.ndarray:
    """Exact bf16 -> float32: the 16 bf16 bits are the high half of the float32 bits."""
    return (bits.astype(np.uint32) << 16).view(np.float32)


def float32_to_bf16_bits(x: np.ndarray) -> np.ndarray:
    """float32 -> bf16 bits, rounding to nearest even (c10's rule); every NaN -> 0x7FC0."""
    bits = np.asarray(x, np.float32).view(np.uint32).astype(np.uint64)
    rounded = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype(np.uint16)
    return np.where(np.isnan(x), np.uint16(0x7FC0), rounded)


# ---- reading ----

def check_readable_file(path: str | os.PathLike) -> None:
    """The path names an existing, non-empty regular file (else a one-line ModelFileError)."""
    p = Path(path)
    if not p.exists():
        raise ModelFileError(path, "no such file")
    if p.is_dir():
        raise ModelFileError(path, "is a directory, not a model file")
    if p.stat().st_size == 0:
        raise ModelFileError(path, "the file is empty (0 bytes)")


def read_safetensors(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """All tensors of a safetensors file, in header order; BF16 comes back as float32."""
    header, data_start = read_safetensors_header(path)
    data = _map_file(path)
    tensors = {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        begin, end = entry["data_offsets"]
        stored = STORED_DTYPES[entry["dtype"]]
        array = data[data_start + begin:data_start + end].view(stored).reshape(entry["shape"])
        tensors[name] = bf16_bits_to_float32(array) if entry["dtype"] == "BF16" else array
    return tensors


def read_safetensors_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The `__metadata__` strings of a safetensors file ({} when there are none)."""
    return read_safetensors_header(path)[0].get("__metadata__", {})


def read_safetensors_header(path: str | os.PathLike) -> tuple[dict, int]:
    """The validated JSON header and the byte offset where the data starts."""
    check_readable_file(path)
    file_size = os.path.getsize(path)
    with open(path, "rb") as f:
        prefix = f.read(8)
        if len(prefix) < 8:
            raise ModelFileError(path, f"not a safetensors file: only {len(prefix)} bytes, the header length alone needs 8")
        header_len = int.from_bytes(prefix, "little")
        if header_len > min(MAX_HEADER_BYTES, file_size - 8):
            raise ModelFileError(path, f"not a safetensors file (or truncated): header length {header_len} "
                                       f"exceeds the {file_size - 8} bytes after it")
        raw = f.read(header_len)
    header = _parse_header_json(path, raw)
    _validate_entries(path, header, data_len=file_size - 8 - header_len)
    return header, 8 + header_len


def _parse_header_json(path, raw: bytes) -> dict:
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ModelFileError(path, f"not a safetensors file: its header is not valid JSON ({e})") from None
    if not isinstance(header, dict):
        raise ModelFileError(path, "not a safetensors file: its header is not a JSON object")
    metadata = header.get("__metadata__", {})
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise ModelFileError(path, "bad safetensors header: __metadata__ must map strings to strings")
    return header


def _validate_entries(path, header: dict, data_len: int) -> None:
    """Every tensor entry is well formed, in bounds, sized like its shape; the data has no tail."""
    data_end = 0
    for name, entry in header.items():
        if name != "__metadata__":
            data_end = max(data_end, _validate_entry(path, name, entry, data_len))
    if data_end < data_len:
        raise ModelFileError(path, f"bad safetensors file: {data_len - data_end} bytes after the last tensor")


def _validate_entry(path, name: str, entry, data_len: int) -> int:
    if not isinstance(entry, dict) or not {"dtype", "shape", "data_offsets"} <= entry.keys():
        raise ModelFileError(path, f"bad safetensors header: tensor '{name}' needs dtype, shape and data_offsets")
    dtype, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
    if dtype not in STORED_DTYPES:
        raise ModelFileError(path, f"tensor '{name}' has unsupported dtype {dtype!r} "
                                   f"(supported: {', '.join(DTYPE_RANK)})")
    if not _is_int_list(shape, 0) or not _is_int_list(offsets, 2) or offsets[0] > offsets[1]:
        raise ModelFileError(path, f"bad safetensors header: tensor '{name}' has shape {shape!r} "
                                   f"and data_offsets {offsets!r}")
    expected = int(np.prod(shape, dtype=np.int64)) * STORED_DTYPES[dtype].itemsize
    if offsets[1] - offsets[0] != expected:
        raise ModelFileError(path, f"bad safetensors header: tensor '{name}' {dtype}{shape} needs {expected} "
                                   f"bytes but data_offsets {offsets} span {offsets[1] - offsets[0]}")
    if offsets[1] > data_len:
        raise ModelFileError(path, f"truncated safetensors file: tensor '{name}' ends at data byte {offsets[1]} "
                                   f"but the file holds only {data_len} data bytes")
    return offsets[1]


def _is_int_list(value, length: int) -> bool:
    """A list of non-negative ints (of exactly `length` items unless length is 0)."""
    return (isinstance(value, list) and (length == 0 or len(value) == length)
            and all(type(v) is int and v >= 0 for v in value))


def _map_file(path) -> np.ndarray:
    """The whole file as a copy-on-write uint8 memory map (a zero-length array for an empty data part)."""
    return np.memmap(path, dtype=np.uint8, mode="c")


# ---- writing ----

def write_safetensors(path: str | os.PathLike, tensors: Mapping[str, np.ndarray],
                      metadata: Mapping[str, str] | None = None) -> None:
    """Write `tensors` as a safetensors file laid out byte-for-byte like the `safetensors` library does.

    The file is written next to `path` and renamed into place, so a failed write leaves no partial file.
    """
    arrays = {name: _little_endian_contiguous(name, a) for name, a in tensors.items()}
    order = sorted(arrays, key=lambda n: (-DTYPE_RANK.index(NUMPY_TO_ST[arrays[n].dtype]), n))
    header_bytes = _header_bytes(arrays, order, metadata)
    tmp = Path(f"{os.fspath(path)}.partial")
    try:
        with open(tmp, "wb") as f:
            f.write(len(header_bytes).to_bytes(8, "little"))
            f.write(header_bytes)
            for name in order:
                f.write(arrays[name].reshape(-1).view(np.uint8).data)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _little_endian_contiguous(name: str, array) -> np.ndarray:
    array = np.asarray(array)
    little = array.dtype.newbyteorder("<")
    if little not in NUMPY_TO_ST:
        raise TypeError(f"tensor '{name}' has dtype {array.dtype}, which safetensors cannot store")
    return array.astype(little, order="C", copy=False)  # (np.ascontiguousarray would turn 0-d into 1-d)


def _header_bytes(arrays: dict[str, np.ndarray], order: list[str], metadata) -> bytes:
    """Compact JSON (metadata first, then tensors in data order), space-padded to a multiple of 8."""
    header: dict = {"__metadata__": dict(metadata)} if metadata else {}
    offset = 0
    for name in order:
        a = arrays[name]
        header[name] = {"dtype": NUMPY_TO_ST[a.dtype], "shape": list(a.shape),
                        "data_offsets": [offset, offset + a.nbytes]}
        offset += a.nbytes
    raw = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    return raw + b" " * (-len(raw) % 8)
