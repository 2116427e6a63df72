"""RWKV-4 (spec/v4.md): a WKV with one exponential decay per channel, kept stable by a running max.

Must match the official `rwkv` package's `RWKV.att_seq`/`ffn_seq` (v4) under `cpu fp32`.
"""
from __future__ import annotations

import numpy as np

from ai00ref.ref.common import layer_norm, lerp_current, linear, previous_tokens, relu_squared, sigmoid
from ai00ref.ref.state import V4State
from ai00ref.weights.canonical import ChannelMix, V4TimeMix, Weights


def wkv_step(k, v, aa, bb, pp, decay, bonus):
    """One token of the v4 WKV (spec/v4.md §2). All (C,). Returns wkv and the new (aa, bb, pp).

    wkv = (e^{pp}·aa + e^{u+k}·v) / (e^{pp}·bb + e^{u+k}), written relative to the running max
    so nothing overflows; then the numerator and denominator decay by e^{w} and take in e^{k}·v, e^{k}.
    """
    ww = bonus + k
    q = np.maximum(pp, ww)
    e1, e2 = np.exp(pp - q), np.exp(ww - q)
    wkv = (e1 * aa + e2 * v) / (e1 * bb + e2)
    ww = decay + pp
    q = np.maximum(ww, k)
    e1, e2 = np.exp(ww - q), np.exp(k - q)
    return wkv, e1 * aa + e2 * v, e1 * bb + e2, q


def time_mix(x, att_x, aa, bb, pp, p: V4TimeMix):
    """x: (T, C) LN1 output. Returns the block output (T, C) and the new att_x, aa, bb, pp (C,)."""
    prev = previous_tokens(x, att_x)  # (T, C)
    r = sigmoid(linear(lerp_current(x, prev, p.mix_r), p.receptance))  # (T, C)
    k = linear(lerp_current(x, prev, p.mix_k), p.key)  # (T, C)
    v = linear(lerp_current(x, prev, p.mix_v), p.value)  # (T, C)
    wkv = np.empty_like(k)
    for t in range(x.shape[0]):
        wkv[t], aa, bb, pp = wkv_step(k[t], v[t], aa, bb, pp, p.decay, p.bonus)
    return linear(r * wkv, p.output), x[-1], aa, bb, pp


def channel_mix(x, ffn_x, p: ChannelMix):
    """x: (T, C) LN2 output -> σ(Wr·xr) ⊙ Wv·relu²(Wk·xk) (spec/v4.md §4), and the new ffn_x."""
    prev = previous_tokens(x, ffn_x)
    r = sigmoid(linear(lerp_current(x, prev, p.mix_r), p.receptance))
    k = relu_squared(linear(lerp_current(x, prev, p.mix_k), p.key))  # (T, F)
    return r * linear(k, p.value), x[-1]


def forward_row(w: Weights, x: np.ndarray, s: V4State, b: int) -> np.ndarray:
    """Run the blocks over one sequence x (T, C), updating row b of the state in place."""
    for i, block in enumerate(w.blocks):
        out, s.att_x[b, i], s.aa[b, i], s.bb[b, i], s.pp[b, i] = time_mix(
            layer_norm(x, block.ln1.weight, block.ln1.bias), s.att_x[b, i], s.aa[b, i], s.bb[b, i], s.pp[b, i],
            block.att)
        x = x + out
        out, s.ffn_x[b, i] = channel_mix(layer_norm(x, block.ln2.weight, block.ln2.bias), s.ffn_x[b, i], block.ffn)
        x = x + out
    return x
