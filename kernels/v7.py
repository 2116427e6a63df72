"""RWKV-7 layer kernels. Must match `ai00ref/ref/v7.py` (spec/v7.md) to the tolerances of spec/tolerances.md.

Kernel            must match (ref/v7.py)            shapes
prepare           time_mix: w, a, kk, k, v lines     per (t, h): (T, C) buffers
wkv               wkv_step over each row's tokens    per (b, h, i): S (B, L, H, N, N) [key j, value i] on the
                                                     device (the transpose of the reference's, so that the
                                                     threads of a warp read neighbouring addresses)
output_gate       time_mix: (GN(y) + bonus) * g      per (t, h)
"""

import taichi as ti

from ai00ref.ref.common import GN_EPS, L2_EPS, LN_EPS
from ai00ref.ref.v7 import DECAY_SCALE
from kernels.common import (ACT_NONE, ACT_RELU_SQUARED, ACT_SIGMOID, ACT_TANH, MIX_PREVIOUS, group_norm, layer_norm,
                            linear, linear_mixed, store_last, token_shift)
from kernels.launch import kernel


@kernel
def prepare(w: ti.types.ndarray(), k: ti.types.ndarray(), v: ti.types.ndarray(), a: ti.types.ndarray(),
            kk: ti.types.ndarray(), k_mod: ti.types.ndarray(), v_first: ti.types.ndarray(),
            w0: ti.types.ndarray(), a0: ti.types.ndarray(), v0: ti.types.ndarray(), k_k: ti.types.ndarray(),
            k_a: ti.types.ndarray(), v_gate: ti.types.ndarray(), n_head: ti.i32, first_layer: ti.i32,
            decay_scale: ti.f32, l2_eps: ti.f32):
    """In: w, a, v_gate hold the low-rank outputs (before their activations). Out: w, a, kk, k_mod, v as in ref.

    One thread per element; each recomputes its head's key norm (N cached reads) instead of a serial loop.
    """
    for t, c in ti.ndrange(k.shape[0], k.shape[1]):
        N = k.shape[1] // n_head
        h = c // N
        norm = 0.0
        for n in range(N):
            norm += (k[t, h * N + n] * ti.cast(k_k[h * N + n], ti.f32)) ** 2
        w[t, c] = ti.exp(-decay_scale / (1.0 + ti.exp(-(ti.cast(w0[c], ti.f32) + w[t, c]))))
        a[t, c] = 1.0 / (1.0 + ti.exp(-(ti.cast(a0[c], ti.f32) + a[t, c])))
        kk[t, c] = k[t, c] * ti.cast(k_k[c], ti.f32) / ti.max(ti.sqrt(norm), l2_eps)
        k_mod[t, c] = k[t, c] * (1.0 + (a[t, c] - 1.0) * ti.cast(k_a[c], ti.f32))
        if first_layer == 1:
            v_first[t, c] = v[t, c]
        else:
            gate = 1.0 / (1.0 + ti.exp(-(ti.cast(v0[c], ti.f32) + v_gate[t, c])))
            v[t, c] = v[t, c] + (v_first[t, c] - v[t, c]) * gate


@kernel
def wkv(r: ti.types.ndarray(), w: ti.types.ndarray(), k: ti.types.ndarray(), v: ti.types.ndarray(),
        kk: ti.types.ndarray(), a: ti.types.ndarray(), S: ti.types.ndarray(), layer: ti.i32,
        start: ti.types.ndarray(), length: ti.types.ndarray(), y: ti.types.ndarray()):
    """ref.v7.wkv_step over each row's tokens: S <- S diag(w) + (S (-kk))(kk a)^T + v k^T; y = S r.

    Thread (b, h, i) owns value row i; the device stores S[..., j, i], so at each j a warp reads one contiguous run.
    """
    H, N = S.shape[2], S.shape[3]
    for b, h, i in ti.ndrange(S.shape[0], H, N):
        for step in range(length[b]):
            t = start[b] + step
            removed = 0.0
            for j in range(N):
                removed -= S[b, layer, h, j, i] * kk[t, h * N + j]
            out = 0.0
            for j in range(N):
                c = h * N + j
                s = S[b, layer, h, j, i] * w[t, c] + removed * kk[t, c] * a[t, c] + v[t, h * N + i] * k[t, c]
                S[b, layer, h, j, i] = s
                out += s * r[t, c]
            y[t, h * N + i] = out


@kernel
def output_gate(y: ti.types.ndarray(), r: ti.types.ndarray(), k: ti.types.ndarray(), v: ti.types.ndarray(),
                g: ti.types.ndarray(), r_k: ti.types.ndarray(), n_head: ti.i32):
    """y <- (GN(y) + (Σ_j r k r_k) v) * g per head; y already holds GN(y). One thread per element."""
    for t, c in ti.ndrange(y.shape[0], y.shape[1]):
        N = y.shape[1] // n_head
        h = c // N
        bonus = 0.0
        for n in range(N):
            bonus += r[t, h * N + n] * k[t, h * N + n] * ti.cast(r_k[h, n], ti.f32)
        y[t, c] = (y[t, c] + bonus * v[t, c]) * g[t, c]


def low_rank(ws, name, xa, prev, mix, first, second, out, act_inside=ACT_NONE):
    """out = second · act(first · mix(xa, prev; m)): the small two-matrix projections."""
    hidden = ws.buffer(name, (xa.shape[0], first.shape[0]))
    linear_mixed(xa, prev, mix, first, hidden, MIX_PREVIOUS, act_inside)
    linear(hidden, second, out)


def time_mix(i: int, p, x, state, plan, ws, n_head: int):
    """One layer's time mix over all positions; adds its output to x and updates state row by row."""
    T, C = plan.T, x.shape[1]
    buf = {name: ws.buffer(name, (T, C)) for name in
           ("xa", "prev", "r", "w", "k", "v", "a", "g", "kk", "k_mod", "v_gate", "y", "gn", "v_first")}
    layer_norm(x, p.ln1.weight, p.ln1.bias, buf["xa"], LN_EPS)
    token_shift(buf["xa"], state.att_x, i, plan.row, plan.first, buf["prev"])
    att = p.att
    xa, prev = buf["xa"], buf["prev"]
    for mix, weight, out in ((att.x_r, att.receptance, "r"), (att.x_k, att.key, "k"), (att.x_v, att.value, "v")):
        linear_mixed(xa, prev, mix, weight, buf[out], MIX_PREVIOUS)
    low_rank(ws, "lora_w", xa, prev, att.x_w, att.w1, att.w2, buf["w"], ACT_TANH)
    low_rank(ws, "lora_a", xa, prev, att.x_a, att.a1, att.a2, buf["a"])
    low_rank(ws, "lora_g", xa, prev, att.x_g, att.g1, att.g2, buf["g"], ACT_SIGMOID)
    first_layer = att.v1 is None
    if not first_layer:
        low_rank(ws, "lora_v", xa, prev, att.x_v, att.v1, att.v2, buf["v_gate"])
    v0 = att.w0 if first_layer else att.v0  # layer 0 has no v0; the kernel ignores it there
    prepare(buf["w"], buf["k"], buf["v"], buf["a"], buf["kk"], buf["k_mod"], buf["v_first"], att.w0, att.a0, v0,
            att.k_k, att.k_a, buf["v_gate"], n_head, int(first_layer), float(DECAY_SCALE), L2_EPS)
    wkv(buf["r"], buf["w"], buf["k_mod"], buf["v"], buf["kk"], buf["a"], state.wkv, i, plan.start, plan.length,
        buf["y"])
    group_norm(buf["y"], att.ln_x.weight, att.ln_x.bias, buf["gn"], n_head, GN_EPS)
    output_gate(buf["gn"], buf["r"], buf["k_mod"], buf["v"], buf["g"], att.r_k, n_head)
    linear(buf["gn"], att.output, x, accumulate=True)
    store_last(buf["xa"], plan.last, state.att_x, i)


def channel_mix(i: int, p, x, state, plan, ws):
    T, C = plan.T, x.shape[1]
    xf, prev = (ws.buffer(name, (T, C)) for name in ("xa", "prev"))
    hidden = ws.buffer("ffn_hidden", (T, p.ffn.key.shape[0]))
    layer_norm(x, p.ln2.weight, p.ln2.bias, xf, LN_EPS)
    token_shift(xf, state.ffn_x, i, plan.row, plan.first, prev)
    linear_mixed(xf, prev, p.ffn.mix_k, p.ffn.key, hidden, MIX_PREVIOUS, ACT_RELU_SQUARED)
    linear(hidden, p.ffn.value, x, accumulate=True)
    store_last(xf, plan.last, state.ffn_x, i)


def run_blocks(weights, x, state, plan, ws) -> None:
    for i, block in enumerate(weights.blocks):
        time_mix(i, block, x, state, plan, ws, weights.info.n_head)
        channel_mix(i, block, x, state, plan, ws)
