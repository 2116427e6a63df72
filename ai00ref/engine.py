"""The engine interface and `load_model`, the one place a backend is chosen (spec/engine.md).

    model = ai00ref.load_model("model.st")              # or .pth; backend="ref"
    state = model.new_state(batch=2)
    logits, state = model.forward([[1, 2, 3], [4]], state)   # (2, V) after each row's last token

File -> `.st`-form tensors -> (LoRA merge) -> ModelInfo -> canonical Weights (quantized: spec/quant.md) -> engine.
"""
from __future__ import annotations

import os
import zipfile
from dataclasses import dataclass
from typing import Protocol, Sequence

import numpy as np

from ai00ref.model_info import ModelInfo, read_model_info
from ai00ref.ref.state import RecurrentState
from ai00ref.weights.adapters import has_time_state, merge_lora, state_from_tensors, state_to_tensors
from ai00ref.weights.canonical import canonical_weights, quantize_tensors
from ai00ref.weights.prefab import (PREFAB_FORMAT, PrefabHeader, check_prefab_use, is_prefab, quantized_entries,
                                    read_prefab, read_prefab_header, vocab_identity, write_prefab, writer_version)
from ai00ref.weights.quant import QuantConfig, quant_config

BACKENDS = ("ref", "taichi")


class Engine(Protocol):
    info: ModelInfo

    def new_state(self, batch: int = 1) -> RecurrentState: ...

    def forward(self, tokens: Sequence[Sequence[int]], state: RecurrentState,
                full_output: bool = False) -> tuple[np.ndarray, RecurrentState]: ...


@dataclass(frozen=True)
class Lora:
    path: str
    alpha: float = 1.0


def read_tensors(path: str | os.PathLike) -> tuple[dict[str, np.ndarray], bool]:
    """A model, state, LoRA or prefab file as `.st`-form tensors, and whether it stores v5's bonus as log(u).

    Only an original `.pth` can say so: old v5 checkpoints with `time_first` and no `time_faaaa`
    (the official package then uses u = exp(time_first); the converter keeps the name, and Ai00 uses it raw).
    A prefab's quantized matrices come back as QuantizedMatrix values.
    """
    from ai00ref.weights.convert import pth_to_st_tensors
    from ai00ref.weights.files import read_model_tensors
    from ai00ref.weights.pth import read_pth

    if is_prefab(path):
        return read_prefab(path)[0], False
    if not zipfile.is_zipfile(path):
        return read_model_tensors(path), False
    raw = read_pth(path)
    log_bonus = any(k.endswith("att.ln_x.weight") for k in raw) and any(k.endswith("att.time_first") for k in raw)
    return pth_to_st_tensors(raw), log_bonus


def model_tensors(path: str | os.PathLike, lora: Sequence[Lora] = ()) -> tuple[dict[str, np.ndarray], bool]:
    """`read_tensors` of the model with its LoRAs merged in order (what load_model builds its weights from)."""
    tensors, log_bonus = read_tensors(path)
    for adapter in lora:
        lora_tensors, _ = read_tensors(adapter.path)
        tensors = merge_lora(tensors, lora_tensors, adapter.alpha, os.fspath(adapter.path))
    return tensors, log_bonus


def resolve_quant(path: str, quant: int, quant_type: str, lora: Sequence[Lora], tokenizer=None) -> QuantConfig:
    """The quant settings a load or save uses: the asked-for ones, or a quantized prefab's own (checked against them,
    and a prefab's vocabulary against the tokenizer's when one is given)."""
    config = quant_config(quant, quant_type)
    if not is_prefab(path):
        return config
    header = read_prefab_header(path)
    vocab = vocab_identity(tokenizer, header.n_vocab) if tokenizer is not None else None
    check_prefab_use(path, header, config, len(lora), vocab)
    return header.quant if header.quant.active else config


def save_prefab(model_path: str | os.PathLike, output: str | os.PathLike, lora: Sequence[Lora] = (),
                quant: int = 0, quant_type: str = "int8", tokenizer=None, progress: bool = False) -> None:
    """Write the model with its LoRAs merged and its first `quant` layers quantized as one prefab (spec/formats.md
    §Prefab), which load_model reads without quantizing again. An old v5 `.pth` bonus stored as log(u) is written
    as u. `tokenizer`: the model's, whose `vocab_identity` the prefab records (default: the bundled World one)."""
    model_path = os.fspath(model_path)
    config = resolve_quant(model_path, quant, quant_type, lora)
    tensors, log_bonus = model_tensors(model_path, lora)
    if log_bonus:
        tensors = {name: np.exp(value) if name.endswith("att.time_first") else value
                   for name, value in tensors.items()}
    info = read_model_info(tensors, model_path)
    tensors = quantize_tensors(tensors, info, config, model_path, progress)
    if config.active:  # the settings as applied: quant beyond the last layer quantizes them all
        config = QuantConfig(min(config.layers, info.n_layer), config.scheme)
    if tokenizer is None:
        from ai00ref.tokenizer import load_tokenizer
        tokenizer = load_tokenizer()
    header = PrefabHeader(PREFAB_FORMAT, vocab_identity(tokenizer, info.n_vocab), info.n_vocab, info.n_layer, config,
                          quantized_entries(tensors),
                          source=os.path.basename(model_path), writer=writer_version(),
                          lora=";".join(f"{os.path.basename(a.path)}*{a.alpha}" for a in lora))
    write_prefab(output, tensors, header)


def load_model(path: str | os.PathLike, backend: str = "ref", dtype: str = "float32",
               state: str | os.PathLike | None = None, lora: Sequence[Lora] = (), quant: int = 0,
               quant_type: str = "int8", tokenizer=None, progress: bool = False, **options) -> Engine:
    """Load an Ai00 `.st`, an original `.pth` or a prefab and return an engine of the chosen backend.

    options: the Taichi backend takes `arch` ("auto", "vulkan", "cuda", "cpu") and `precision` ("fp32", "fp16").
    state: a `.state` file to start every new state from (else the model's own `time_state`, else zeros).
    lora: LoRA files merged at load, in order, before any other load-time transform.
    quant, quant_type: quantize the first `quant` layers' matrices with "int8", "nf4" or "sf4" (spec/quant.md);
    a prefab keeps its own quantization. tokenizer: the one the model is used with; a prefab made for another
    vocabulary is refused (prefab.vocab_identity). progress: a progress bar while quantizing.
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; available: {', '.join(BACKENDS)}")
    if options and backend == "ref":
        raise ValueError(f"backend 'ref' takes no options {sorted(options)} (they are for backend='taichi')")
    path = os.fspath(path)
    config = resolve_quant(path, quant, quant_type, lora, tokenizer)
    tensors, log_bonus = model_tensors(path, lora)
    info = read_model_info(tensors, path)
    weights = canonical_weights(tensors, info, path, dtype, log_bonus, config, progress)
    initial = load_state(state, info, dtype) if state is not None else None
    if initial is None and has_time_state(tensors):
        initial = state_from_tensors(tensors, info, path, dtype)
    if backend == "taichi":  # kernels/ is imported only when asked for: taichi is optional for the reference
        from kernels.engine import TaichiModel
        return TaichiModel(weights, initial_state=initial, **options)
    from ai00ref.ref.model import RefModel
    return RefModel(weights, dtype, initial)


def load_state(path: str | os.PathLike, info: ModelInfo, dtype: str = "float32") -> RecurrentState:
    """A batch-1 state from a `.state` file (Ai00's, or one `save_state` wrote)."""
    tensors, _ = read_tensors(path)
    return state_from_tensors(tensors, info, os.fspath(path), dtype)


def save_state(state: RecurrentState, info: ModelInfo, path: str | os.PathLike, row: int = 0,
               dtype: str = "float32") -> None:
    """Write one row of a state as a `.state` safetensors file; dtype "float16" for files Ai00 itself loads."""
    from ai00ref.weights.adapters import STATE_FORMAT
    from ai00ref.weights.safetensors_io import write_safetensors

    tensors = {k: np.asarray(v, dtype=dtype) for k, v in state_to_tensors(state, info, row).items()}
    write_safetensors(path, tensors, metadata={"format": "pt", "ai00ref": STATE_FORMAT, "version": info.version})
