"""Canonical weights: every load-time transform, in one place (spec/load.md).

Input: tensors in Ai00 `.st` form (all matrices (out, in), so y = W x; LoRA-style matrices already
transposed by the converter). Output: frozen dataclasses per version, in the compute dtype, which the
reference engine and the kernels both consume. The transforms, each cited:

- `.time_*` and `x_*` vectors (1,1,C) are flattened to (C,)                      spec/load.md §1
- v4 decay   w = -exp(time_decay)          (log space, for the max trick)       spec/v4.md §2
- v5 decay   w = exp(-exp(time_decay))     per channel (H, N)                   spec/v5.md §2
- v5 bonus   u = time_first, or exp(time_first) for old `.pth` without faaaa   spec/v5.md §2
- v6 decay   stays raw: exp(-exp(.)) is applied per token after its LoRA       spec/v6.md §2
- v5.0/v5.1 per-head decay and bonus (H,) are broadcast to (H, N)              spec/v5.md §1
- `quant`: the first N layers' big matrices are quantized (after LoRA merge)    spec/quant.md §1
Nothing else changes: LN0 is applied at run time (the official package folds it into the embedding).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np
from tqdm import tqdm

from ai00ref.errors import ModelFileError
from ai00ref.model_info import ModelInfo
from ai00ref.weights.quant import NO_QUANT, QuantConfig, QuantizedMatrix, quantize


@dataclass(frozen=True)
class LayerNorm:
    weight: np.ndarray  # (C,)
    bias: np.ndarray  # (C,)


@dataclass(frozen=True)
class ChannelMix:  # v4, v5, v6
    mix_k: np.ndarray  # (C,) v4/v5: weight of the current token; v6: weight of the previous one
    mix_r: np.ndarray  # (C,)
    key: np.ndarray  # (F, C)
    value: np.ndarray  # (C, F)
    receptance: np.ndarray  # (C, C)


@dataclass(frozen=True)
class V7ChannelMix:
    mix_k: np.ndarray  # (C,) x_k
    key: np.ndarray  # (F, C)
    value: np.ndarray  # (C, F)


@dataclass(frozen=True)
class V4TimeMix:
    mix_k: np.ndarray  # (C,)
    mix_v: np.ndarray  # (C,)
    mix_r: np.ndarray  # (C,)
    decay: np.ndarray  # (C,) w = -exp(time_decay), log space
    bonus: np.ndarray  # (C,) u = time_first
    key: np.ndarray  # (C, C)
    value: np.ndarray  # (C, C)
    receptance: np.ndarray  # (C, C)
    output: np.ndarray  # (C, C)


@dataclass(frozen=True)
class V5TimeMix:
    mix_k: np.ndarray  # (C,)
    mix_v: np.ndarray  # (C,)
    mix_r: np.ndarray  # (C,)
    mix_g: np.ndarray | None  # (C,); None for v5.0 (no gate)
    decay: np.ndarray  # (H, N) w = exp(-exp(time_decay))
    bonus: np.ndarray  # (H, N) u
    key: np.ndarray  # (C, C)
    value: np.ndarray  # (C, C)
    receptance: np.ndarray  # (C, C)
    gate: np.ndarray | None  # (C, C); None for v5.0
    output: np.ndarray  # (C, C)
    ln_x: LayerNorm  # GroupNorm affine, (C,)


@dataclass(frozen=True)
class V6TimeMix:
    maa_x: np.ndarray  # (C,)
    maa_wkvrg: np.ndarray  # (5, C) rows w, k, v, r, g
    maa_w1: np.ndarray  # (5*Dm, C)
    maa_w2: np.ndarray  # (5, C, Dm)
    decay: np.ndarray  # (C,) raw time_decay
    decay_w1: np.ndarray  # (Dd, C)
    decay_w2: np.ndarray  # (C, Dd)
    bonus: np.ndarray  # (H, N) u = time_faaaa
    key: np.ndarray  # (C, C)
    value: np.ndarray  # (C, C)
    receptance: np.ndarray  # (C, C)
    gate: np.ndarray  # (C, C)
    output: np.ndarray  # (C, C)
    ln_x: LayerNorm


@dataclass(frozen=True)
class V7TimeMix:
    x_r: np.ndarray  # (C,) token-shift weights
    x_w: np.ndarray
    x_k: np.ndarray
    x_v: np.ndarray
    x_a: np.ndarray
    x_g: np.ndarray
    w0: np.ndarray  # (C,)
    w1: np.ndarray  # (Dw, C)
    w2: np.ndarray  # (C, Dw)
    a0: np.ndarray  # (C,)
    a1: np.ndarray  # (Da, C)
    a2: np.ndarray  # (C, Da)
    v0: np.ndarray | None  # (C,); None in layer 0 (value residual source)
    v1: np.ndarray | None  # (Dv, C)
    v2: np.ndarray | None  # (C, Dv)
    g1: np.ndarray  # (Dg, C)
    g2: np.ndarray  # (C, Dg)
    k_k: np.ndarray  # (C,)
    k_a: np.ndarray  # (C,)
    r_k: np.ndarray  # (H, N)
    key: np.ndarray  # (C, C)
    value: np.ndarray  # (C, C)
    receptance: np.ndarray  # (C, C)
    output: np.ndarray  # (C, C)
    ln_x: LayerNorm


@dataclass(frozen=True)
class Block:
    ln1: LayerNorm
    att: Any  # V4TimeMix | V5TimeMix | V6TimeMix | V7TimeMix
    ln2: LayerNorm
    ffn: Any  # ChannelMix | V7ChannelMix


@dataclass(frozen=True)
class Weights:
    info: ModelInfo
    emb: np.ndarray  # (V, C) raw embedding; LN0 is applied at run time
    ln0: LayerNorm
    blocks: tuple[Block, ...]
    ln_out: LayerNorm
    head: np.ndarray  # (V, C)


class _Reader:
    """Looks tensors up by name, casting to the compute dtype, with file-naming errors."""

    def __init__(self, tensors: dict[str, np.ndarray], path: str, dtype: np.dtype):
        self.tensors, self.path, self.dtype = tensors, path, dtype

    def get(self, name: str, shape: tuple[int, ...] | None = None) -> np.ndarray:
        if name not in self.tensors:
            raise ModelFileError(self.path, f"missing tensor {name}")
        raw = np.asarray(self.tensors[name])
        if raw.dtype.kind != "f":
            raise ModelFileError(self.path, f"tensor {name} has dtype {raw.dtype}, expected a float type")
        value = raw.astype(self.dtype, order="C")  # contiguous: .st and .pth give one memory layout
        if shape is not None:
            if value.size != int(np.prod(shape)):
                raise ModelFileError(self.path, f"tensor {name} has shape {value.shape}, expected {shape}")
            value = value.reshape(shape)
        if not np.all(np.isfinite(value)):
            raise ModelFileError(self.path, f"tensor {name} holds inf or NaN")
        return value

    def vec(self, name: str, size: int) -> np.ndarray:
        return self.get(name, (size,))

    def matrix(self, name: str, rows: int | None = None, cols: int | None = None) -> np.ndarray | QuantizedMatrix:
        stored = self.tensors.get(name)
        value = stored if isinstance(stored, QuantizedMatrix) else self.get(name)
        if len(value.shape) != 2 or (rows and value.shape[0] != rows) or (cols and value.shape[1] != cols):
            raise ModelFileError(self.path, f"tensor {name} has shape {value.shape}, expected ({rows}, {cols})")
        return value

    def layer_norm(self, prefix: str, size: int) -> LayerNorm:
        return LayerNorm(self.vec(prefix + ".weight", size), self.vec(prefix + ".bias", size))


def _per_channel(r: _Reader, name: str, info: ModelInfo) -> np.ndarray:
    """(H,), (H,1) or (H,N) -> (H, N): v5.0/5.1 store one decay and bonus per head."""
    value = r.get(name)
    H, N = info.n_head, info.head_size
    if value.size == H:
        return np.repeat(value.reshape(H, 1), N, axis=1)
    return r.get(name, (H, N))


def _v4_att(r: _Reader, p: str, info: ModelInfo, log_bonus: bool) -> V4TimeMix:
    C = info.n_embd
    return V4TimeMix(
        mix_k=r.vec(p + "time_mix_k", C), mix_v=r.vec(p + "time_mix_v", C), mix_r=r.vec(p + "time_mix_r", C),
        decay=-np.exp(r.vec(p + "time_decay", C)),
        bonus=r.vec(p + "time_first", C),
        key=r.matrix(p + "key.weight", C, C), value=r.matrix(p + "value.weight", C, C),
        receptance=r.matrix(p + "receptance.weight", C, C), output=r.matrix(p + "output.weight", C, C),
    )


def _v5_att(r: _Reader, p: str, info: ModelInfo, log_bonus: bool) -> V5TimeMix:
    C, gated = info.n_embd, info.variant != "v5.0"
    bonus = _per_channel(r, p + "time_first", info)
    return V5TimeMix(
        mix_k=r.vec(p + "time_mix_k", C), mix_v=r.vec(p + "time_mix_v", C), mix_r=r.vec(p + "time_mix_r", C),
        mix_g=r.vec(p + "time_mix_g", C) if gated else None,
        decay=np.exp(-np.exp(_per_channel(r, p + "time_decay", info))),
        bonus=np.exp(bonus) if log_bonus else bonus,
        key=r.matrix(p + "key.weight", C, C), value=r.matrix(p + "value.weight", C, C),
        receptance=r.matrix(p + "receptance.weight", C, C), output=r.matrix(p + "output.weight", C, C),
        gate=r.matrix(p + "gate.weight", C, C) if gated else None,
        ln_x=r.layer_norm(p + "ln_x", C),
    )


def _v6_att(r: _Reader, p: str, info: ModelInfo, log_bonus: bool) -> V6TimeMix:
    C, H, N = info.n_embd, info.n_head, info.head_size
    maa_w1 = r.matrix(p + "time_mix_w1", cols=C)
    return V6TimeMix(
        maa_x=r.vec(p + "time_mix_x", C),
        maa_wkvrg=np.stack([r.vec(p + f"time_mix_{s}", C) for s in "wkvrg"]),
        maa_w1=maa_w1,
        maa_w2=r.get(p + "time_mix_w2", (5, C, maa_w1.shape[0] // 5)),
        decay=r.vec(p + "time_decay", C),
        decay_w1=r.matrix(p + "time_decay_w1", cols=C),
        decay_w2=r.matrix(p + "time_decay_w2", rows=C),
        bonus=r.get(p + "time_first", (H, N)),
        key=r.matrix(p + "key.weight", C, C), value=r.matrix(p + "value.weight", C, C),
        receptance=r.matrix(p + "receptance.weight", C, C), output=r.matrix(p + "output.weight", C, C),
        gate=r.matrix(p + "gate.weight", C, C),
        ln_x=r.layer_norm(p + "ln_x", C),
    )


def _v7_att(r: _Reader, p: str, info: ModelInfo, log_bonus: bool) -> V7TimeMix:
    C, H, N = info.n_embd, info.n_head, info.head_size
    first = p.startswith("blocks.0.")  # layer 0 has no value-residual mix (its v0/v1/v2 are unused)
    return V7TimeMix(
        **{f"x_{s}": r.vec(p + f"x_{s}", C) for s in "rwkvag"},
        w0=r.vec(p + "w0", C), w1=r.matrix(p + "w1", cols=C), w2=r.matrix(p + "w2", rows=C),
        a0=r.vec(p + "a0", C), a1=r.matrix(p + "a1", cols=C), a2=r.matrix(p + "a2", rows=C),
        v0=None if first else r.vec(p + "v0", C),
        v1=None if first else r.matrix(p + "v1", cols=C),
        v2=None if first else r.matrix(p + "v2", rows=C),
        g1=r.matrix(p + "g1", cols=C), g2=r.matrix(p + "g2", rows=C),
        k_k=r.vec(p + "k_k", C), k_a=r.vec(p + "k_a", C), r_k=r.get(p + "r_k", (H, N)),
        key=r.matrix(p + "key.weight", C, C), value=r.matrix(p + "value.weight", C, C),
        receptance=r.matrix(p + "receptance.weight", C, C), output=r.matrix(p + "output.weight", C, C),
        ln_x=r.layer_norm(p + "ln_x", C),
    )


def _ffn(r: _Reader, p: str, info: ModelInfo):
    C, F = info.n_embd, info.ffn_size
    key, value = r.matrix(p + "key.weight", F, C), r.matrix(p + "value.weight", C, F)
    if info.version == "v7":
        return V7ChannelMix(mix_k=r.vec(p + "x_k", C), key=key, value=value)
    return ChannelMix(mix_k=r.vec(p + "time_mix_k", C), mix_r=r.vec(p + "time_mix_r", C), key=key, value=value,
                      receptance=r.matrix(p + "receptance.weight", C, C))


_TIME_MIX = {"v4": _v4_att, "v5": _v5_att, "v6": _v6_att, "v7": _v7_att}


# ---- quantization (spec/quant.md §1) ----

# web-rwkv quantizes these (gate: v5.1+/v6; ffn receptance: v4-v6); never emb, head or the v6/v7 low-rank matrices.
QUANTIZED_MATRICES = ("att.key", "att.value", "att.receptance", "att.gate", "att.output",
                      "ffn.key", "ffn.value", "ffn.receptance")


def quantized_names(tensors: dict, info: ModelInfo, quant: QuantConfig) -> list[str]:
    """The `.st` names of the matrices `quant` holds quantized: QUANTIZED_MATRICES of layers 0..quant.layers-1."""
    if not quant.active:
        return []
    names = (f"blocks.{i}.{m}.weight" for i in range(min(quant.layers, info.n_layer)) for m in QUANTIZED_MATRICES)
    return [name for name in names if name in tensors]


def quantize_tensors(tensors: dict, info: ModelInfo, quant: QuantConfig, path: str = "<tensors>",
                     progress: bool = False) -> dict:
    """The tensors with `quantized_names` replaced by QuantizedMatrix (ones already quantized, from a prefab, kept)."""
    names = [n for n in quantized_names(tensors, info, quant) if not isinstance(tensors[n], QuantizedMatrix)]
    quantized = dict(tensors)
    for name in tqdm(names, desc=f"quantizing ({quant.scheme})", unit="matrix", disable=None if progress else True):
        try:
            quantized[name] = quantize(np.asarray(tensors[name]), quant.scheme)
        except ValueError as error:
            raise ModelFileError(path, f"tensor {name}: {error}") from None
    return quantized


def _stored_leaves(value):
    """Every array and quantized matrix in a Weights tree (its `info` left out)."""
    if isinstance(value, (np.ndarray, QuantizedMatrix)):
        yield value
    elif isinstance(value, tuple):
        for item in value:
            yield from _stored_leaves(item)
    elif dataclasses.is_dataclass(value):
        for field in dataclasses.fields(value):
            if field.name != "info":
                yield from _stored_leaves(getattr(value, field.name))


def with_memory(weights: Weights, quant: QuantConfig) -> Weights:
    """The weights with `info` reporting the quant settings and the bytes a GPU engine holds (fp16 tensors)."""
    leaves = list(_stored_leaves(weights))
    quantized = [m for m in leaves if isinstance(m, QuantizedMatrix)]
    fp16 = sum(2 * int(np.prod(m.shape)) for m in leaves)
    info = dataclasses.replace(
        weights.info, quant_layers=min(quant.layers, weights.info.n_layer) if quantized else 0,
        quant_type=quant.scheme if quantized else "none",
        weight_bytes=fp16 + sum(m.nbytes - 2 * int(np.prod(m.shape)) for m in quantized), weight_bytes_fp16=fp16,
        quantized_bytes=sum(m.nbytes for m in quantized),
        quantized_bytes_fp16=sum(2 * int(np.prod(m.shape)) for m in quantized))
    return dataclasses.replace(weights, info=info)


def canonical_weights(tensors: dict[str, np.ndarray], info: ModelInfo, path: str = "<tensors>",
                      dtype: str = "float32", log_bonus: bool = False, quant: QuantConfig = NO_QUANT,
                      progress: bool = False) -> Weights:
    """Build the typed weights. `log_bonus`: the file stores log(u) (old v5 `.pth` with `time_first`, no `time_faaaa`).
    `quant`: the matrices of `quantized_names` become QuantizedMatrix; the others are in `dtype`."""
    tensors = quantize_tensors(tensors, info, quant, path, progress)
    r = _Reader(tensors, path, np.dtype(dtype))
    C, V = info.n_embd, info.n_vocab
    blocks = tuple(
        Block(
            ln1=r.layer_norm(f"blocks.{i}.ln1", C),
            att=_TIME_MIX[info.version](r, f"blocks.{i}.att.", info, log_bonus),
            ln2=r.layer_norm(f"blocks.{i}.ln2", C),
            ffn=_ffn(r, f"blocks.{i}.ffn.", info),
        )
        for i in range(info.n_layer)
    )
    weights = Weights(info=info, emb=r.matrix("emb.weight", V, C), ln0=r.layer_norm("blocks.0.ln0", C),
                      blocks=blocks, ln_out=r.layer_norm("ln_out", C), head=r.matrix("head.weight", V, C))
    return with_memory(weights, quant)
