"""RWKV-5 "Eagle" (spec/v5.md): matrix-valued heads with a fixed per-channel decay.

Covers v5.0 (no gate), v5.1 (gate, per-head decay) and v5.2 (gate, per-channel decay).
Must match the official `rwkv` package's `att_seq_v5`, `att_seq_v5_1`, `att_seq_v5_2`, `ffn_seq` under `cpu fp32`.
"""
from __future__ import annotations

import numpy as np

from ai00ref.ref.common import group_norm, layer_norm, lerp_current, linear, previous_tokens, silu
from ai00ref.ref.state import V5State
from ai00ref.ref.v4 import channel_mix
from ai00ref.weights.canonical import V5TimeMix, Weights


def wkv_step(r, k, v, S, decay, bonus):
    """One token, all heads (spec/v5.md §3). r, k, v, decay, bonus: (H, N); S: (H, N_key, N_value).

    y[i] = Σ_j r[j]·(u[j]·k[j]·v[i] + S[j,i]);   S[j,i] <- k[j]·v[i] + w[j]·S[j,i]
    """
    kv = k[:, :, None] * v[:, None, :]  # (H, N, N) [key j, value i]
    y = np.einsum("hj,hji->hi", r, bonus[:, :, None] * kv + S)  # (H, N)
    return y, kv + decay[:, :, None] * S


def time_mix(x, att_x, S, p: V5TimeMix, n_head: int):
    """x: (T, C) LN1 output. Returns the block output (T, C), the new att_x (C,) and S (H, N, N)."""
    T, C = x.shape
    prev = previous_tokens(x, att_x)
    r = linear(lerp_current(x, prev, p.mix_r), p.receptance).reshape(T, n_head, -1)  # (T, H, N)
    k = linear(lerp_current(x, prev, p.mix_k), p.key).reshape(T, n_head, -1)  # (T, H, N)
    v = linear(lerp_current(x, prev, p.mix_v), p.value).reshape(T, n_head, -1)  # (T, H, N)
    y = np.empty_like(r)
    for t in range(T):
        y[t], S = wkv_step(r[t], k[t], v[t], S, p.decay, p.bonus)
    out = group_norm(y.reshape(T, C), n_head, p.ln_x.weight, p.ln_x.bias)  # (T, C)
    if p.gate is not None:  # v5.1 and v5.2
        out = out * silu(linear(lerp_current(x, prev, p.mix_g), p.gate))
    return linear(out, p.output), x[-1], S


def run_blocks(w: Weights, x: np.ndarray, s: V5State, b: int, time_mix, channel_mix) -> np.ndarray:
    """The v5/v6 layer loop over one sequence x (T, C), updating row b of the state in place."""
    for i, block in enumerate(w.blocks):
        out, s.att_x[b, i], s.wkv[b, i] = time_mix(
            layer_norm(x, block.ln1.weight, block.ln1.bias), s.att_x[b, i], s.wkv[b, i], block.att, w.info.n_head)
        x = x + out
        out, s.ffn_x[b, i] = channel_mix(layer_norm(x, block.ln2.weight, block.ln2.bias), s.ffn_x[b, i], block.ffn)
        x = x + out
    return x


def forward_row(w: Weights, x: np.ndarray, s: V5State, b: int) -> np.ndarray:
    return run_blocks(w, x, s, b, time_mix, channel_mix)
