"""RWKV-6 "Finch" (spec/v6.md): data-dependent token shift and a data-dependent decay per token.

Must match the official `rwkv` package's `att_seq_v6_0` and `ffn_seq_v6` under `cpu fp32`.
"""
from __future__ import annotations

import numpy as np

from ai00ref.ref.common import group_norm, lerp_previous, linear, previous_tokens, relu_squared, sigmoid, silu
from ai00ref.ref.state import V5State
from ai00ref.ref.v5 import run_blocks, wkv_step
from ai00ref.weights.canonical import ChannelMix, V6TimeMix, Weights


def token_shift_mixes(x, prev, p: V6TimeMix) -> np.ndarray:
    """The five mixed inputs x_w, x_k, x_v, x_r, x_g (spec/v6.md §1): (5, T, C).

    xxx = x + (prev-x)·maa_x;  m = tanh(xxx W1) viewed (5, Dm);  x_s = x + (prev-x)·(maa_s + m_s W2_s)
    """
    T = x.shape[0]
    lora = np.tanh(linear(lerp_previous(x, prev, p.maa_x), p.maa_w1))  # (T, 5*Dm)
    lora = lora.reshape(T, 5, -1).transpose(1, 0, 2)  # (5, T, Dm) in the order w, k, v, r, g
    mix = p.maa_wkvrg[:, None, :] + np.einsum("std,scd->stc", lora, p.maa_w2)  # (5, T, C)
    return x[None] + (prev - x)[None] * mix


def decay(x_w, p: V6TimeMix) -> np.ndarray:
    """w = exp(-exp(time_decay + tanh(x_w Wd1) Wd2)) per token and channel (spec/v6.md §2): (T, C)."""
    return np.exp(-np.exp(p.decay + linear(np.tanh(linear(x_w, p.decay_w1)), p.decay_w2)))


def time_mix(x, att_x, S, p: V6TimeMix, n_head: int):
    """x: (T, C) LN1 output. Returns the block output (T, C), the new att_x (C,) and S (H, N_key, N_value)."""
    T, C = x.shape
    prev = previous_tokens(x, att_x)
    x_w, x_k, x_v, x_r, x_g = token_shift_mixes(x, prev, p)
    r = linear(x_r, p.receptance).reshape(T, n_head, -1)  # (T, H, N)
    k = linear(x_k, p.key).reshape(T, n_head, -1)  # (T, H, N)
    v = linear(x_v, p.value).reshape(T, n_head, -1)  # (T, H, N)
    w = decay(x_w, p).reshape(T, n_head, -1)  # (T, H, N)
    y = np.empty_like(r)
    for t in range(T):
        y[t], S = wkv_step(r[t], k[t], v[t], S, w[t], p.bonus)
    out = group_norm(y.reshape(T, C), n_head, p.ln_x.weight, p.ln_x.bias) * silu(linear(x_g, p.gate))
    return linear(out, p.output), x[-1], S


def channel_mix(x, ffn_x, p: ChannelMix):
    """As v4 but with the v6 token-mix convention (spec/v6.md §4)."""
    prev = previous_tokens(x, ffn_x)
    r = sigmoid(linear(lerp_previous(x, prev, p.mix_r), p.receptance))
    k = relu_squared(linear(lerp_previous(x, prev, p.mix_k), p.key))  # (T, F)
    return r * linear(k, p.value), x[-1]


def forward_row(w: Weights, x: np.ndarray, s: V5State, b: int) -> np.ndarray:
    return run_blocks(w, x, s, b, time_mix, channel_mix)  # v5's layer loop with v6's mixes
