"""Operations every RWKV version shares (spec/common.md). Each is one equation; x is (T, C) unless noted."""
from __future__ import annotations

import numpy as np

LN_EPS = 1e-5  # ln0, ln1, ln2, ln_out (spec/common.md §1)
GN_EPS = 64e-5  # ln_x GroupNorm: 1e-5 * head_size_divisor**2, divisor 8 (spec/common.md §2)
L2_EPS = 1e-12  # v7 key normalization, torch F.normalize semantics (spec/v7.md §3)


def linear(x: np.ndarray, weight) -> np.ndarray:
    """y = W x for each row of x: (T, in) @ (out, in)^T -> (T, out).

    A quantized W (ai00ref.weights.quant.QuantizedMatrix) is dequantized here, at the product (spec/quant.md §5).
    """
    if not isinstance(weight, np.ndarray):
        weight = weight.dequantize()  # (out, in) float32
    return x @ weight.T


def layer_norm(x: np.ndarray, weight: np.ndarray, bias: np.ndarray, eps: float = LN_EPS) -> np.ndarray:
    """(x - mean) / sqrt(biased var + eps) * w + b over the last axis."""
    mean = x.mean(axis=-1, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * weight + bias


def group_norm(x: np.ndarray, n_head: int, weight: np.ndarray, bias: np.ndarray, eps: float = GN_EPS) -> np.ndarray:
    """LayerNorm within each head's N contiguous channels, then a per-channel affine: (T, C) -> (T, C)."""
    T, C = x.shape
    heads = x.reshape(T, n_head, C // n_head)  # (T, H, N)
    mean = heads.mean(axis=-1, keepdims=True)
    var = ((heads - mean) ** 2).mean(axis=-1, keepdims=True)
    return ((heads - mean) / np.sqrt(var + eps)).reshape(T, C) * weight + bias


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-x))


def silu(x: np.ndarray) -> np.ndarray:
    return x * sigmoid(x)


def relu_squared(x: np.ndarray) -> np.ndarray:
    return np.maximum(x, 0) ** 2


def l2_normalize(x: np.ndarray, eps: float = L2_EPS) -> np.ndarray:
    """x / max(||x||, eps) over the last axis."""
    return x / np.maximum(np.sqrt((x * x).sum(axis=-1, keepdims=True)), eps)


def previous_tokens(x: np.ndarray, last: np.ndarray) -> np.ndarray:
    """Token shift: row t gets row t-1 of x, row 0 gets `last` (the state's previous token): (T, C)."""
    return np.concatenate([last[None, :], x[:-1]], axis=0)


def lerp_current(x: np.ndarray, prev: np.ndarray, mix: np.ndarray) -> np.ndarray:
    """v4/v5 token mix: x*m + prev*(1-m); `mix` weights the current token (spec/common.md §3)."""
    return x * mix + prev * (1 - mix)


def lerp_previous(x: np.ndarray, prev: np.ndarray, mix: np.ndarray) -> np.ndarray:
    """v6/v7 token mix: x + (prev-x)*m; `mix` weights the previous token (spec/common.md §3)."""
    return x + (prev - x) * mix
