"""RWKV-4 layer kernels. Must match `ai00ref/ref/v4.py` (spec/v4.md) to the tolerances of spec/tolerances.md.

Kernel            must match (ref/v4.py)                     shapes
wkv               wkv_step over each row's tokens, times r    per (b, c): aa, bb, pp (B, L, C) kept in registers
gated_add         channel_mix: x += r ⊙ (Wv relu²(Wk xk))     per (t, c)
(v5 reuses `project`, `gated_add` and `channel_mix`; v6 uses `channel_mix` with MIX_PREVIOUS.)
"""

import taichi as ti

from ai00ref.ref.common import LN_EPS
from kernels.common import (ACT_NONE, ACT_RELU_SQUARED, ACT_SIGMOID, MIX_CURRENT, layer_norm, linear, linear_mixed,
                            store_last, token_shift)
from kernels.launch import kernel


@kernel
def wkv(r: ti.types.ndarray(), k: ti.types.ndarray(), v: ti.types.ndarray(), aa: ti.types.ndarray(),
        bb: ti.types.ndarray(), pp: ti.types.ndarray(), decay: ti.types.ndarray(), bonus: ti.types.ndarray(),
        layer: ti.i32, start: ti.types.ndarray(), length: ti.types.ndarray(), y: ti.types.ndarray()):
    """ref.v4.wkv_step over each row's tokens: y[t] = r[t] ⊙ wkv_t; the state's aa, bb, pp at `layer` advance."""
    for b, c in ti.ndrange(aa.shape[0], aa.shape[2]):
        w = ti.cast(decay[c], ti.f32)
        u = ti.cast(bonus[c], ti.f32)
        num, den, p = aa[b, layer, c], bb[b, layer, c], pp[b, layer, c]
        for step in range(length[b]):
            t = start[b] + step
            kt, vt = k[t, c], v[t, c]
            ww = u + kt
            q = ti.max(p, ww)
            e1, e2 = ti.exp(p - q), ti.exp(ww - q)
            y[t, c] = r[t, c] * (e1 * num + e2 * vt) / (e1 * den + e2)
            ww = w + p
            q = ti.max(ww, kt)
            e1, e2 = ti.exp(ww - q), ti.exp(kt - q)
            num = e1 * num + e2 * vt
            den = e1 * den + e2
            p = q
        aa[b, layer, c], bb[b, layer, c], pp[b, layer, c] = num, den, p


@kernel
def gated_add(x: ti.types.ndarray(), r: ti.types.ndarray(), y: ti.types.ndarray()):
    """x += r ⊙ y, all (T, C): the channel mix's residual."""
    for t, c in ti.ndrange(x.shape[0], x.shape[1]):
        x[t, c] += r[t, c] * y[t, c]


def project(xa, prev, mix, weight, out, act=ACT_NONE, convention=MIX_CURRENT):
    """out = act(W · mix(x, prev; m)): the token-shifted projections (ref: linear(lerp_*(x, prev, m), W))."""
    linear_mixed(xa, prev, mix, weight, out, convention, act)


def time_mix(i: int, p, x, state, plan, ws):
    """One layer's time mix over all positions; adds its output to x and updates state row by row."""
    T, C = plan.T, x.shape[1]
    buf = {name: ws.buffer(name, (T, C)) for name in ("xa", "prev", "r", "k", "v", "y")}
    xa, prev, att = buf["xa"], buf["prev"], p.att
    layer_norm(x, p.ln1.weight, p.ln1.bias, xa, LN_EPS)
    token_shift(xa, state.att_x, i, plan.row, plan.first, prev)
    project(xa, prev, att.mix_r, att.receptance, buf["r"], ACT_SIGMOID)
    project(xa, prev, att.mix_k, att.key, buf["k"])
    project(xa, prev, att.mix_v, att.value, buf["v"])
    wkv(buf["r"], buf["k"], buf["v"], state.aa, state.bb, state.pp, att.decay, att.bonus, i, plan.start,
        plan.length, buf["y"])
    linear(buf["y"], att.output, x, accumulate=True)
    store_last(xa, plan.last, state.att_x, i)


def channel_mix(i: int, p, x, state, plan, ws, convention=MIX_CURRENT):
    """v4/v5 channel mix (v6 passes MIX_PREVIOUS): x += σ(Wr·xr) ⊙ Wv·relu²(Wk·xk)."""
    T, C, ffn = plan.T, x.shape[1], p.ffn
    xf, prev, r, kv = (ws.buffer(name, (T, C)) for name in ("xa", "prev", "r", "ffn_kv"))
    hidden = ws.buffer("ffn_hidden", (T, ffn.key.shape[0]))
    layer_norm(x, p.ln2.weight, p.ln2.bias, xf, LN_EPS)
    token_shift(xf, state.ffn_x, i, plan.row, plan.first, prev)
    project(xf, prev, ffn.mix_k, ffn.key, hidden, ACT_RELU_SQUARED, convention)
    linear(hidden, ffn.value, kv)
    project(xf, prev, ffn.mix_r, ffn.receptance, r, ACT_SIGMOID, convention)
    gated_add(x, r, kv)
    store_last(xf, plan.last, state.ffn_x, i)


def device_blocks(blocks, matrix_dtype):
    """Canonical blocks -> the same dataclasses holding device arrays (kernels.engine.to_device)."""
    from kernels.engine import to_device
    return to_device(tuple(blocks), matrix_dtype)


def run_blocks(blocks, info, x, state, plan, ws, tile: int) -> None:
    """Every layer, kernel by kernel (`tile` is chosen by the matrix kernels themselves here)."""
    for i, block in enumerate(blocks):
        time_mix(i, block, x, state, plan, ws)
        channel_mix(i, block, x, state, plan, ws)
