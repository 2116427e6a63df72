"""RWKV-7 "Goose" (spec/v7.md): a generalized delta rule with a data-dependent decay and in-context learning rate.

Must match the official `rwkv` package's `RWKV_x070_TMix_seq` and `RWKV_x070_CMix_seq` under `cpu fp32`.
"""
from __future__ import annotations

import numpy as np

from ai00ref.ref.common import group_norm, l2_normalize, layer_norm, lerp_previous, linear, previous_tokens, relu_squared, sigmoid
from ai00ref.ref.state import V7State
from ai00ref.weights.canonical import V7ChannelMix, V7TimeMix, Weights

DECAY_SCALE = np.exp(-0.5)  # w = exp(-e^{-1/2}·σ(z)) keeps every decay in (0.545, 1); the package writes 0.606531


def wkv_step(r, w, k, v, kk, a, S):
    """One token, all heads (spec/v7.md §3). r, w, k, v, kk, a: (H, N); S: (H, N_value, N_key).

    S <- S·diag(w) + (S·(-kk))(kk·a)^T + v k^T;   y = S r
    """
    removed = np.einsum("hij,hj->hi", S, -kk)  # (H, N_value): what the state recalls at key kk
    S = S * w[:, None, :] + removed[:, :, None] * (kk * a)[:, None, :] + v[:, :, None] * k[:, None, :]
    return np.einsum("hij,hj->hi", S, r), S  # y (H, N), S (H, N, N)


def low_rank(x, first, second):
    """x A^T B^T: the small two-matrix projections (T, C) -> (T, C)."""
    return linear(linear(x, first), second)


def time_mix(x, att_x, S, v_first, p: V7TimeMix, n_head: int):
    """x: (T, C) LN1 output. Returns the output (T, C), att_x (C,), S (H, N, N), and v_first (T, C)."""
    T, C = x.shape
    prev = previous_tokens(x, att_x)
    x_r, x_w, x_k, x_v, x_a, x_g = (lerp_previous(x, prev, m) for m in (p.x_r, p.x_w, p.x_k, p.x_v, p.x_a, p.x_g))
    r = linear(x_r, p.receptance)  # (T, C)
    w = np.exp(-DECAY_SCALE * sigmoid(p.w0 + linear(np.tanh(linear(x_w, p.w1)), p.w2)))  # (T, C)
    k = linear(x_k, p.key)  # (T, C)
    v = linear(x_v, p.value)  # (T, C)
    a = sigmoid(p.a0 + low_rank(x_a, p.a1, p.a2))  # (T, C) in-context learning rate
    g = linear(sigmoid(linear(x_g, p.g1)), p.g2)  # (T, C) output gate
    kk = l2_normalize((k * p.k_k).reshape(T, n_head, -1)).reshape(T, C)  # (T, C) unit key per head
    k = k * (1 + (a - 1) * p.k_a)
    if v_first is None:  # layer 0: its values feed every later layer's value residual
        v_first = v
    else:
        v = v + (v_first - v) * sigmoid(p.v0 + low_rank(x_v, p.v1, p.v2))
    r, w, k, v, kk, a = (z.reshape(T, n_head, -1) for z in (r, w, k, v, kk, a))  # each (T, H, N)
    y = np.empty_like(r)
    for t in range(T):
        y[t], S = wkv_step(r[t], w[t], k[t], v[t], kk[t], a[t], S)
    out = group_norm(y.reshape(T, C), n_head, p.ln_x.weight, p.ln_x.bias)
    bonus = (r * k * p.r_k).sum(axis=-1, keepdims=True) * v  # (T, H, N): the r·k·r_k per-head bonus
    return linear((out + bonus.reshape(T, C)) * g, p.output), x[-1], S, v_first


def channel_mix(x, ffn_x, p: V7ChannelMix):
    """Wv·relu²(Wk·(x + (prev-x)·x_k)) (spec/v7.md §5); v7 has no receptance here."""
    prev = previous_tokens(x, ffn_x)
    return linear(relu_squared(linear(lerp_previous(x, prev, p.mix_k), p.key)), p.value), x[-1]


def forward_row(w: Weights, x: np.ndarray, s: V7State, b: int) -> np.ndarray:
    """Run the blocks over one sequence x (T, C), updating row b of the state in place."""
    v_first = None
    for i, block in enumerate(w.blocks):
        out, s.att_x[b, i], s.wkv[b, i], v_first = time_mix(
            layer_norm(x, block.ln1.weight, block.ln1.bias), s.att_x[b, i], s.wkv[b, i], v_first, block.att,
            w.info.n_head)
        x = x + out
        out, s.ffn_x[b, i] = channel_mix(layer_norm(x, block.ln2.weight, block.ln2.bias), s.ffn_x[b, i], block.ffn)
        x = x + out
    return x
