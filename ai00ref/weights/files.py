"""Open any model file (Ai00 `.st` or a PyTorch `.pth`) as tensors in `.st` form (spec/formats.md §4).

The reader is picked by content, not by file name: a zip (`PK`) or a pickle (`\\x80`, legacy torch) goes to
the `.pth` reader followed by the converter's name/layout transform `pth_to_st_tensors`; anything else must
be safetensors. dtypes are kept (float16, float32, float64); bf16 becomes float32 exactly. Every problem with
the file itself is one ModelFileError line naming the path; checks about which tensors a model needs belong
to the engine's loader.
"""
from __future__ import annotations

import os
import numpy as np

from ai00ref.errors import ModelFileError
from ai00ref.weights.convert import pth_to_st_tensors
from ai00ref.weights.pth import read_pth
from ai00ref.weights.safetensors_io import check_readable_file, read_safetensors

MODEL_DTYPES = (np.float16, np.float32, np.float64)
ZIP_MAGIC = b"PK\x03\x04"
# PROTO 2, LONG1 of 10 bytes (torch's legacy magic number). No safetensors file starts like this: read as a
# header length these bytes say 177 MB, above the 100 MB header limit. A bare b"\x80" would not do: any
# safetensors header of 128 + 256k bytes starts with it.
LEGACY_TORCH_MAGIC = b"\x80\x02\x8a\x0a"


def read_model_tensors(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """The tensors of a model, state or LoRA file, named and laid out as in Ai00's `.st` files."""
    check_readable_file(path)
    with open(path, "rb") as f:
        magic = f.read(4)
    if magic in (ZIP_MAGIC, LEGACY_TORCH_MAGIC):  # read_pth explains why legacy files are refused
        tensors = read_pth(path)
        try:
            tensors = pth_to_st_tensors(tensors)
        except ValueError as e:  # a name collision, or a v5.1 file without emb.weight
            raise ModelFileError(path, str(e)) from None
    else:
        tensors = _read_safetensors_model(path)
    check_float_tensors(path, tensors)
    return tensors


def _read_safetensors_model(path) -> dict[str, np.ndarray]:
    try:
        return read_safetensors(path)
    except ModelFileError as e:
        if e.problem.startswith("not a safetensors file"):
            raise ModelFileError(path, "not a model file: neither a PyTorch zip checkpoint nor safetensors "
                                       f"({e.problem})") from None
        raise


def check_float_tensors(path, tensors: dict[str, np.ndarray]) -> None:
    """Model tensors are floating point; an integer or bool tensor means this is not a model file."""
    for name, value in tensors.items():
        if value.dtype not in MODEL_DTYPES:
            raise ModelFileError(path, f"tensor '{name}' has unsupported dtype {value.dtype} "
                                       "(model tensors must be F16, BF16, F32 or F64)")
