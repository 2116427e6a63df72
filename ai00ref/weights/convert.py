"""The `.pth` -> Ai00 `.st` conversion of Ai00's `assets/scripts/convert_safetensors.py` (rwkv-math.md §3.3).

For every tensor, in this order: v5.1 only, `time_decay`/`time_faaaa` (H,) are repeated to (H, N);
the name gets the renames `RENAMES` (case-sensitive, on the original name) and is then lower-cased;
the data is cast to fp16; the last two dims are transposed when the new name *contains* an entry of
`TRANSPOSED_SUBSTRINGS`. The file is saved as safetensors with metadata {"format": "pt"}.

`pth_to_st_tensors` is the pure name/shape part (no dtype change), shared by the model loader so that a
`.pth` loads exactly like its converted `.st`; `convert_file` adds the fp16 cast and the file I/O.
Checked against a torch re-enactment of the converter by tests/oracle/check_convert.py; spec/formats.md §3.
"""
from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ai00ref.errors import ModelFileError
from ai00ref.weights.pth import open_pth
from ai00ref.weights.safetensors_io import write_safetensors

RENAMES = {"time_faaaa": "time_first", "time_maa": "time_mix", "lora_A": "lora.0", "lora_B": "lora.1"}
# Substring rule. In real RWKV names "w1".."v2" only hit the v6/v7 low-rank matrices (no name has a layer
# index glued to a letter: "ln1"/"ln2" contain "n1"/"n2", not these); spec/formats.md §3 lists the hits.
TRANSPOSED_SUBSTRINGS = ("time_mix_w1", "time_mix_w2", "time_decay_w1", "time_decay_w2",
                         "w1", "w2", "a1", "a2", "g1", "g2", "v1", "v2", "time_state", "lora.0")
ST_METADATA = {"format": "pt"}


class Fp16RangeWarning(UserWarning):
    """Some values could not be represented in fp16: they became inf or were flushed to zero."""


# ---- the pure transform ----

def converter_version(tensors: dict[str, np.ndarray]) -> float:
    """The converter's rough version guess: 4, 5 (v5.0 *and v7*), 5.1, 5.2 or 6. Only 5.1 changes anything.

    The converter scans keys in file order, so a time_decay seen before any ln_x is ignored; with one layer
    a v5.2 file is taken for 5.1 and the converter crashes. This guess is order-independent.
    """
    names = list(tensors)
    version = 4.0
    if any("ln_x" in n for n in names):
        version = 5.0
    if any("gate.weight" in n for n in names):
        version = 5.1
    if int(version) == 5 and any("att.time_decay" in n and tensors[n].ndim > 1 and tensors[n].shape[1] > 1
                                 for n in names):
        version = 5.2
    if any("time_maa" in n for n in names):
        version = 6.0
    return version


def st_name(pth_name: str) -> str:
    """The `.st` name of a `.pth` tensor: the renames (case-sensitive), then lower case."""
    for old, new in RENAMES.items():
        pth_name = pth_name.replace(old, new)
    return pth_name.lower()


def is_transposed(name: str) -> bool:
    """Whether the converter swaps the last two dims of the tensor with this `.st` name."""
    return any(s in name for s in TRANSPOSED_SUBSTRINGS)


def repeat_v51_per_head(tensors: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """v5.1 stores time_decay/time_faaaa per head (H,); later versions per channel (H, N=C/H)."""
    n_emb = tensors["emb.weight"].shape[1]
    repeated = dict(tensors)
    for name, v in tensors.items():
        if "time_decay" in name or "time_faaaa" in name:
            if v.ndim != 1:
                raise ValueError(f"v5.1 tensor '{name}' should be (H,), not {v.shape}")
            repeated[name] = np.repeat(v[:, None], n_emb // v.shape[0], axis=1)  # (H, N)
    return repeated


def pth_to_st_tensors(tensors: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The converter's names, shapes and layouts for a `.pth` state dict; dtypes are kept.

    Transposed tensors come back as views. Raises ValueError when two names collide after renaming and
    lower-casing, or when a v5.1 file lacks `emb.weight` (the converter would crash on both).
    """
    if converter_version(tensors) == 5.1:
        if "emb.weight" not in tensors:
            raise ValueError("a v5.1 checkpoint needs emb.weight to size time_decay")
        tensors = repeat_v51_per_head(tensors)
    converted: dict[str, np.ndarray] = {}
    for name, value in tensors.items():
        new_name = st_name(name)
        if new_name in converted:
            raise ValueError(f"two tensors become '{new_name}' after renaming and lower-casing")
        converted[new_name] = np.swapaxes(value, -1, -2) if is_transposed(new_name) and value.ndim >= 2 else value
    return converted


# ---- fp16 cast with range accounting ----

@dataclass
class Fp16Cast:
    """Counts of values that fp16 cannot hold, over a whole conversion."""
    overflowed: int = 0  # finite, |x| > 65504 (after rounding) -> inf
    flushed: int = 0     # nonzero, |x| < 2**-25 -> (signed) zero

    def cast(self, value: np.ndarray) -> np.ndarray:
        """`value` as float16 (round to nearest even, like torch's .half()), counting range losses."""
        with np.errstate(over="ignore"):  # float64 goes through float32, as c10::Half(float) does in torch
            half = (value.astype(np.float32) if value.dtype == np.float64 else value).astype(np.float16)
        if value.dtype.kind == "f" and value.dtype != np.float16:
            self.overflowed += int(np.count_nonzero(np.isinf(half) & np.isfinite(value)))
            self.flushed += int(np.count_nonzero((half == 0) & (value != 0)))
        return half

    def warn(self, path) -> None:
        if self.overflowed or self.flushed:
            warnings.warn(f"{path}: fp16 cannot hold every value: {self.overflowed} overflowed to inf, "
                          f"{self.flushed} flushed to zero", Fp16RangeWarning, stacklevel=3)


# ---- the file conversion ----

@dataclass(frozen=True)
class ConversionResult:
    tensor_count: int
    output_bytes: int
    overflowed: int
    flushed: int


def convert_file(input_path: str | os.PathLike, output_path: str | os.PathLike,
                 progress: bool = True) -> ConversionResult:
    """Convert a `.pth` checkpoint into an Ai00 `.st` file (fp16 safetensors, metadata {"format": "pt"}).

    Tensors are read and cast to fp16 one at a time (the fp16 cast commutes with the renames, transposes
    and the v5.1 repeat), so memory peaks near the output size. Warns with Fp16RangeWarning on range loss.
    """
    refs = open_pth(input_path)
    cast = Fp16Cast()
    bar = tqdm(refs.items(), total=len(refs), unit="tensor", desc="converting", disable=None if progress else True)
    halves = {name: cast.cast(ref.to_numpy()) for name, ref in bar}
    try:
        converted = pth_to_st_tensors(halves)
    except ValueError as e:
        raise ModelFileError(input_path, str(e)) from None
    cast.warn(input_path)
    Path(output_path).parent.mkdir(parents=True, exist_ok=True)  # as the converter's os.makedirs(dirname)
    write_safetensors(output_path, converted, ST_METADATA)
    return ConversionResult(len(converted), os.path.getsize(output_path), cast.overflowed, cast.flushed)
