"""RWKV-4 layer kernels. Must match `ai00ref/ref/v4.py` (spec/v4.md) to the tolerances of spec/tolerances.md.

Kernel            must match (ref/v4.py)                     shapes
wkv               wkv_step over each row's tokens, times r    per (b, c): aa, bb, pp (B, L, C) kept in registers
gated_add         channel_mix: x += r ⊙ (Wv relu²(Wk xk))     per (t, c)
(v5 reuses `project`, `gated_add` and `channel_mix`; v6 uses `channel_mix` with MIX_PREVIOUS.)

A quantized matrix (kernels/quant.py QuantizedRows) is multiplied by the lane kernel of v5-v7
(`lanes.linear_task`, reading its u32 rows directly), after `mix_inputs` wrote the token-shifted input to a buffer.
"""
import functools

import taichi as ti

from ai00ref.ref.common import LN_EPS
from kernels.common import (ACT_NONE, ACT_RELU_SQUARED, ACT_SIGMOID, MIX_CURRENT, layer_norm, linear, linear_mixed,
                            mix, store_last, token_shift)
from kernels.lanes import linear_task
from kernels.launch import kernel
from kernels.quant import QuantizedRows


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


@functools.cache
def mix_inputs(convention: int):
    @kernel
    def mix_into(x: ti.types.ndarray(), prev: ti.types.ndarray(), m: ti.types.ndarray(), out: ti.types.ndarray()):
        """out = mix(x, prev; m) (ref.common.lerp_current, or lerp_previous by `convention`)."""
        for t, c in ti.ndrange(x.shape[0], x.shape[1]):
            out[t, c] = mix(x[t, c], prev[t, c], m[c], convention)
    return mix_into


@functools.cache
def quantized_linear(act: int, accumulate: bool, tile: int, storage: str):
    @kernel
    def linear_quantized(x: ti.types.ndarray(), W: ti.types.ndarray(), y: ti.types.ndarray()):
        """y (+)= act(x Ŵᵀ), W a QuantizedRows' (1, R, words) rows: ref.common.linear with a QuantizedMatrix."""
        linear_task(W, 0, 0, W.shape[1], x.shape[1], x, 0, y, 0, act, accumulate, tile, storage=storage)
    return linear_quantized


def product(x, weight, y, tile: int, act=ACT_NONE, accumulate=False):
    """y (+)= act(x Wᵀ) for a dense or a quantized W."""
    if isinstance(weight, QuantizedRows):
        quantized_linear(act, accumulate, tile, weight.storage)(x, weight.rows, y)
    else:
        linear(x, weight, y, act, accumulate)


def project(xa, prev, mix_weights, weight, out, ws, tile: int, act=ACT_NONE, convention=MIX_CURRENT):
    """out = act(W · mix(x, prev; m)): the token-shifted projections (ref: linear(lerp_*(x, prev, m), W))."""
    if isinstance(weight, QuantizedRows):
        mixed = ws.buffer("mixed", tuple(xa.shape))
        mix_inputs(convention)(xa, prev, mix_weights, mixed)
        product(mixed, weight, out, tile, act)
    else:
        linear_mixed(xa, prev, mix_weights, weight, out, convention, act)


def time_mix(i: int, p, x, state, plan, ws, tile: int):
    """One layer's time mix over all positions; adds its output to x and updates state row by row."""
    T, C = plan.T, x.shape[1]
    buf = {name: ws.buffer(name, (T, C)) for name in ("xa", "prev", "r", "k", "v", "y")}
    xa, prev, att = buf["xa"], buf["prev"], p.att
    layer_norm(x, p.ln1.weight, p.ln1.bias, xa, LN_EPS)
    token_shift(xa, state.att_x, i, plan.row, plan.first, prev)
    project(xa, prev, att.mix_r, att.receptance, buf["r"], ws, tile, ACT_SIGMOID)
    project(xa, prev, att.mix_k, att.key, buf["k"], ws, tile)
    project(xa, prev, att.mix_v, att.value, buf["v"], ws, tile)
    wkv(buf["r"], buf["k"], buf["v"], state.aa, state.bb, state.pp, att.decay, att.bonus, i, plan.start,
        plan.length, buf["y"])
    product(buf["y"], att.output, x, tile, accumulate=True)
    store_last(xa, plan.last, state.att_x, i)


def channel_mix(i: int, p, x, state, plan, ws, tile: int, convention=MIX_CURRENT):
    """v4/v5 channel mix (v6 passes MIX_PREVIOUS): x += σ(Wr·xr) ⊙ Wv·relu²(Wk·xk)."""
    T, C, ffn = plan.T, x.shape[1], p.ffn
    xf, prev, r, kv = (ws.buffer(name, (T, C)) for name in ("xa", "prev", "r", "ffn_kv"))
    hidden = ws.buffer("ffn_hidden", (T, ffn.key.shape[0]))
    layer_norm(x, p.ln2.weight, p.ln2.bias, xf, LN_EPS)
    token_shift(xf, state.ffn_x, i, plan.row, plan.first, prev)
    project(xf, prev, ffn.mix_k, ffn.key, hidden, ws, tile, ACT_RELU_SQUARED, convention)
    product(hidden, ffn.value, kv, tile)
    project(xf, prev, ffn.mix_r, ffn.receptance, r, ws, tile, ACT_SIGMOID, convention)
    gated_add(x, r, kv)
    store_last(xf, plan.last, state.ffn_x, i)


def device_blocks(blocks, matrix_dtype):
    """Canonical blocks -> the same dataclasses holding device arrays (kernels.engine.to_device)."""
    from kernels.engine import to_device
    return to_device(tuple(blocks), matrix_dtype)


def run_blocks(blocks, info, x, state, plan, ws, tile: int) -> None:
    """Every layer, kernel by kernel (`tile`: the quantized products'; the dense ones choose their own)."""
    for i, block in enumerate(blocks):
        time_mix(i, block, x, state, plan, ws, tile)
        channel_mix(i, block, x, state, plan, ws, tile)
