"""Prefabs: a loaded model (LoRAs merged, quantized) saved as one safetensors file (spec/formats.md §Prefab).

Float tensors keep their names and dtypes; a quantized matrix `X.weight` is stored as `X.weight.codes` (U8) and
`X.weight.scales` (F16) in the layout of ai00ref.weights.quant (spec/quant.md §4). The metadata names the format
version, the vocabulary the prefab was made for, and the quant settings; loading checks all three.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass

import numpy as np

from ai00ref.errors import ModelFileError
from ai00ref.weights.canonical import QUANTIZED_MATRICES
from ai00ref.weights.files import check_float_tensors
from ai00ref.weights.quant import NO_QUANT, SCHEMES, QuantConfig, QuantizedMatrix
from ai00ref.weights.safetensors_io import read_safetensors, read_safetensors_metadata, write_safetensors

PREFAB_FORMAT = "2"  # 1: an `.st` with LoRAs merged (no quantization, no vocab); 2: this module
CODES, SCALES = ".codes", ".scales"


@dataclass(frozen=True)
class PrefabHeader:
    format: str  # PREFAB_FORMAT of the writer
    vocab: str  # `vocab_identity` of the tokenizer it was made for
    n_vocab: int
    n_layer: int
    quant: QuantConfig  # the settings it was quantized with (NO_QUANT: none)
    quantized: dict  # name -> {"scheme", "shape": [R, K]} of every quantized matrix
    source: str = ""  # the model file's name
    lora: str = ""  # "name*alpha;..." of the LoRAs merged
    writer: str = ""  # ai00ref's version


def vocab_identity(tokenizer, n_vocab: int) -> str:
    """sha256 over the bytes of ids 0..n_vocab-1 (an id the tokenizer cannot decode counts as b"\\xff<none>");
    the .txt and .json forms of one vocabulary give the same identity."""
    digest = hashlib.sha256()
    for token in range(n_vocab):
        try:
            data = tokenizer.token_bytes(token)
        except (KeyError, IndexError, ValueError):
            data = b"\xff<none>"
        digest.update(len(data).to_bytes(4, "little") + data)
    return f"{n_vocab}:sha256:{digest.hexdigest()[:32]}"


def writer_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return "ai00ref " + version("ai00ref")
    except PackageNotFoundError:
        return "ai00ref (not installed)"


# ---- writing ----

def write_prefab(path: str | os.PathLike, tensors: dict, header: PrefabHeader) -> None:
    """Tensors (arrays and QuantizedMatrix values) and the header as one safetensors file."""
    stored = {}
    for name, value in tensors.items():
        if isinstance(value, QuantizedMatrix):
            stored[name + CODES], stored[name + SCALES] = value.codes, value.scales
        else:
            stored[name] = np.ascontiguousarray(value)
    metadata = {"format": "pt", "ai00ref": "prefab", "prefab_version": header.format, "vocab": header.vocab,
                "n_vocab": str(header.n_vocab), "n_layer": str(header.n_layer), "quant": str(header.quant.layers),
                "quant_type": header.quant.scheme,
                "quantized": json.dumps(header.quantized, sort_keys=True), "source": header.source,
                "lora": header.lora, "writer": header.writer}
    write_safetensors(path, stored, metadata=metadata)


def quantized_entries(tensors: dict) -> dict:
    return {name: {"scheme": m.scheme, "shape": list(m.shape)}
            for name, m in tensors.items() if isinstance(m, QuantizedMatrix)}


# ---- reading ----

def is_prefab(path: str | os.PathLike) -> bool:
    """A safetensors file whose metadata says `ai00ref = "prefab"` (any format version)."""
    try:
        return read_safetensors_metadata(path).get("ai00ref") == "prefab"
    except (ModelFileError, OSError, ValueError):
        return False


def read_prefab_header(path: str | os.PathLike) -> PrefabHeader:
    """The header of a prefab of this format version; any other version is refused with one clear line."""
    meta = read_safetensors_metadata(path)
    found = meta.get("prefab_version", "?")
    if found != PREFAB_FORMAT:
        raise ModelFileError(path, f"prefab format {found} (written by {meta.get('writer') or 'an older ai00ref'}); "
                                   f"this ai00ref reads prefab format {PREFAB_FORMAT}: re-create it from the "
                                   "original model with `python -m ai00ref convert --prefab ...`")
    try:
        quant = QuantConfig(int(meta["quant"]), meta["quant_type"])
        return PrefabHeader(found, meta["vocab"], int(meta["n_vocab"]), int(meta["n_layer"]),
                            quant if quant.active else NO_QUANT,
                            json.loads(meta["quantized"]), meta.get("source", ""), meta.get("lora", ""),
                            meta.get("writer", ""))
    except (KeyError, ValueError) as error:
        raise ModelFileError(path, f"broken prefab metadata ({error!r})") from None


def read_prefab(path: str | os.PathLike) -> tuple[dict, PrefabHeader]:
    """The tensors (quantized matrices as QuantizedMatrix) and the header."""
    header = read_prefab_header(path)
    tensors = read_safetensors(path)
    for name, entry in header.quantized.items():
        tensors[name] = _quantized_matrix(path, name, entry, tensors.pop(name + CODES, None),
                                          tensors.pop(name + SCALES, None))
    check_float_tensors(path, {k: v for k, v in tensors.items() if not isinstance(v, QuantizedMatrix)})
    return tensors, header


def _quantized_matrix(path, name: str, entry: dict, codes, scales) -> QuantizedMatrix:
    from ai00ref.weights.quant import FP4_BLOCK, INT8_BLOCK

    scheme, (R, K) = entry.get("scheme"), entry.get("shape", (0, 0))
    matrix = re.fullmatch(r"blocks\.\d+\.(\w+\.\w+)\.weight", name)
    if matrix is None or matrix.group(1) not in QUANTIZED_MATRICES:
        raise ModelFileError(path, f"{name} is stored quantized, but only {', '.join(QUANTIZED_MATRICES)} can be")
    if scheme not in SCHEMES or codes is None or scales is None:
        raise ModelFileError(path, f"quantized matrix {name}: missing codes or scales, or unknown scheme {scheme!r}")
    block = INT8_BLOCK if scheme == "int8" else FP4_BLOCK
    n_blocks = -(-K // block)
    want_codes = (R, n_blocks * block) if scheme == "int8" else (R, n_blocks * block // 2)
    want_scales = (R, n_blocks, 2) if scheme == "int8" else (R, n_blocks)
    if (codes.dtype != np.uint8 or scales.dtype != np.float16 or codes.shape != want_codes
            or scales.shape != want_scales):
        raise ModelFileError(path, f"quantized matrix {name} ({scheme}, {R}x{K}): codes {codes.dtype}{codes.shape} "
                                   f"and scales {scales.dtype}{scales.shape}, expected uint8{want_codes} and "
                                   f"float16{want_scales}")
    if not np.all(np.isfinite(scales)):
        raise ModelFileError(path, f"quantized matrix {name}: scales hold inf or NaN")
    return QuantizedMatrix(scheme, (R, K), codes, scales)


def check_prefab_use(path, header: PrefabHeader, quant: QuantConfig, lora_count: int, vocab: str | None) -> None:
    """Loading a prefab: the vocabulary must match; a quantized one is never quantized again, so asked-for settings
    other than none or its own are refused, and LoRAs cannot be merged into its quantized matrices. (An unquantized
    prefab is a model like any other.)"""
    if vocab is not None and vocab != header.vocab:
        raise ModelFileError(path, f"prefab made for the vocabulary {header.vocab}, but the tokenizer in use is "
                                   f"{vocab}: re-create the prefab with this tokenizer")
    same_layers = min(quant.layers, header.n_layer) == min(header.quant.layers, header.n_layer)
    if header.quant.active and quant.active and (quant.scheme != header.quant.scheme or not same_layers):
        raise ModelFileError(path, f"prefab already quantized with quant={header.quant.layers} "
                                   f"quant_type={header.quant.scheme}; asked for quant={quant.layers} "
                                   f"quant_type={quant.scheme} (a prefab is never quantized again: load it with "
                                   "quant=0 or its own settings)")
    if lora_count and header.quantized:
        raise ModelFileError(path, "LoRAs cannot be merged into a quantized prefab: merge them when making it")
