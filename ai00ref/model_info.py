"""What a model file holds: its RWKV variant and sizes, read from tensor names and shapes (spec/formats.md §detect).

Works on tensors in Ai00 `.st` form (lower-case names, `time_first`, `time_mix`; see
`ai00ref.weights.convert.pth_to_st_tensors`), so `.st` and `.pth` files are detected alike.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from ai00ref.errors import ModelFileError

# Ordered: the first row whose tensors are all present wins (a v6 file also has v4's names).
_SIGNATURES = (
    ("v7", ("blocks.0.att.r_k", "blocks.0.att.x_r", "blocks.0.att.w1", "blocks.0.att.k_k")),
    ("v6", ("blocks.0.att.time_mix_w1", "blocks.0.att.time_decay_w1", "blocks.0.att.time_mix_x")),
    ("v5", ("blocks.0.att.ln_x.weight", "blocks.0.att.time_decay", "blocks.0.att.time_mix_k")),
    ("v4", ("blocks.0.att.time_decay", "blocks.0.att.time_first", "blocks.0.att.time_mix_k")),
)
_COMMON = ("emb.weight", "head.weight", "ln_out.weight", "blocks.0.ln0.weight")


@dataclass(frozen=True)
class ModelInfo:
    version: str  # "v4" | "v5" | "v6" | "v7"
    variant: str  # version plus sub-version: "v4", "v5.0", "v5.1", "v5.2", "v6", "v7"
    n_layer: int  # L
    n_embd: int  # C
    n_head: int  # H (1 for v4)
    head_size: int  # N = C / H (C for v4)
    n_vocab: int  # V
    ffn_size: int  # F
    # How the loaded weights are held; filled in by ai00ref.weights.canonical (spec/quant.md §5).
    quant_layers: int = 0  # layers 0..quant_layers-1 hold quantized matrices
    quant_type: str = "none"  # "int8" | "nf4" | "sf4" | "none"
    weight_bytes: int = 0  # the weights as a GPU engine holds them: fp16 tensors, quantized matrices' codes + scales
    weight_bytes_fp16: int = 0  # the same weights all in fp16 (Ai00 without quant): the baseline of the ratios
    quantized_bytes: int = 0  # the quantized matrices alone: codes + scales
    quantized_bytes_fp16: int = 0  # the same matrices in fp16

    @property
    def state_floats_per_sequence(self) -> int:
        if self.version == "v4":
            return self.n_layer * 5 * self.n_embd
        return self.n_layer * (2 * self.n_embd + self.n_head * self.head_size**2)

    @property
    def state_bytes_per_sequence(self) -> int:
        return 4 * self.state_floats_per_sequence  # the recurrent state is f32 (in web-rwkv too)


def detect_version(tensors: dict[str, np.ndarray], path: str = "<tensors>") -> str:
    """The RWKV version ("v4".."v7") from which tensor names are present."""
    missing_common = [name for name in _COMMON if name not in tensors]
    if missing_common:
        raise ModelFileError(path, f"not an RWKV model: missing {', '.join(missing_common)}")
    for version, names in _SIGNATURES:
        if all(name in tensors for name in names):
            return version
    raise ModelFileError(path, "unknown RWKV version: block 0 matches none of the v4, v5, v6, v7 tensor sets")


def _v5_subversion(tensors: dict[str, np.ndarray]) -> str:
    """The official package's rule: gate -> 5.1; per-channel decay (H, N>1) -> 5.2 (rwkv-math §1.2)."""
    if "blocks.0.att.gate.weight" not in tensors:
        return "v5.0"
    decay = tensors["blocks.0.att.time_decay"]
    return "v5.2" if decay.ndim > 1 and decay.shape[1] > 1 else "v5.1"


def _n_layer(tensors: dict[str, np.ndarray]) -> int:
    ids = [int(m.group(1)) for name in tensors if (m := re.match(r"blocks\.(\d+)\.", name))]
    return 1 + max(ids)


def _n_head(version: str, tensors: dict[str, np.ndarray]) -> int:
    if version == "v4":
        return 1
    if version == "v7":
        return tensors["blocks.0.att.r_k"].shape[0]
    return tensors["blocks.0.att.time_first"].shape[0]


def read_model_info(tensors: dict[str, np.ndarray], path: str = "<tensors>") -> ModelInfo:
    """Version and every size, from names and shapes alone."""
    version = detect_version(tensors, path)
    n_vocab, n_embd = tensors["emb.weight"].shape
    n_head = _n_head(version, tensors)
    if n_embd % n_head:
        raise ModelFileError(path, f"n_embd {n_embd} is not divisible by the head count {n_head}")
    return ModelInfo(
        version=version,
        variant=_v5_subversion(tensors) if version == "v5" else version,
        n_layer=_n_layer(tensors),
        n_embd=n_embd,
        n_head=n_head,
        head_size=n_embd // n_head,
        n_vocab=n_vocab,
        ffn_size=tensors["blocks.0.ffn.key.weight"].shape[0],
    )
