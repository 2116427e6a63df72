"""RWKV-6 layer kernels. Must match `ai00ref/ref/v6.py` (spec/v6.md) to the tolerances of spec/tolerances.md.

Kernel            must match (ref/v6.py)                              shapes
data_mix          token_shift_mixes: x_s = x + (prev-x)(maa_s + m_s)   one s of w,k,v,r,g per call; (T, C)
decay_exp         decay: w = exp(-exp(time_decay + lora))             per (t, c)
The WKV, GroupNorm and gate are v5's (kernels/v5.py: `wkv` reads the per-token decay buffer); the channel
mix is v4's with MIX_PREVIOUS (ref.v6.channel_mix).
"""

import taichi as ti

from kernels.common import ACT_TANH, MIX_PREVIOUS, linear, mix_inputs, store_last
from kernels.launch import kernel
from kernels.v4 import channel_mix
from kernels.v5 import mix_output, shifted_input

MIX_NAMES = ("w", "k", "v", "r", "g")  # the order of maa_wkvrg, maa_w1's blocks and maa_w2


@kernel
def data_mix(x: ti.types.ndarray(), prev: ti.types.ndarray(), lora: ti.types.ndarray(),
             maa: ti.types.ndarray(), maa_w2: ti.types.ndarray(), s: ti.i32, out: ti.types.ndarray()):
    """out = x + (prev-x)·(maa[s] + lora[:, s·Dm:(s+1)·Dm] W2[s]ᵀ); lora (T, 5Dm) = tanh(W1·xxx), W2 (5, C, Dm)."""
    for t, c in ti.ndrange(x.shape[0], x.shape[1]):
        Dm = maa_w2.shape[2]
        m = ti.cast(maa[s, c], ti.f32)
        for d in range(Dm):
            m += lora[t, s * Dm + d] * ti.cast(maa_w2[s, c, d], ti.f32)
        out[t, c] = x[t, c] + (prev[t, c] - x[t, c]) * m


@kernel
def decay_exp(w: ti.types.ndarray(), time_decay: ti.types.ndarray()):
    """w <- exp(-exp(time_decay + w)); w holds the decay LoRA's output (T, C)."""
    for t, c in ti.ndrange(w.shape[0], w.shape[1]):
        w[t, c] = ti.exp(-ti.exp(ti.cast(time_decay[c], ti.f32) + w[t, c]))


def token_shift_mixes(ws, xa, prev, att) -> list:
    """ref.v6.token_shift_mixes: the five (T, C) buffers x_w, x_k, x_v, x_r, x_g."""
    T, C = xa.shape[0], xa.shape[1]
    xxx = ws.buffer("mixed", (T, C))
    lora = ws.buffer("maa_lora", (T, att.maa_w1.shape[0]))
    mix_inputs(xa, prev, att.maa_x, xxx, MIX_PREVIOUS)
    linear(xxx, att.maa_w1, lora, ACT_TANH)
    outs = [ws.buffer(f"x_{name}", (T, C)) for name in MIX_NAMES]
    for s, out in enumerate(outs):
        data_mix(xa, prev, lora, att.maa_wkvrg, att.maa_w2, s, out)
    return outs


def decay(ws, x_w, att, w) -> None:
    """ref.v6.decay into w (T, C): exp(-exp(time_decay + tanh(x_w Wd1ᵀ) Wd2ᵀ))."""
    hidden = ws.buffer("decay_lora", (x_w.shape[0], att.decay_w1.shape[0]))
    linear(x_w, att.decay_w1, hidden, ACT_TANH)
    linear(hidden, att.decay_w2, w)
    decay_exp(w, att.decay)


def time_mix(i: int, p, x, state, plan, ws, n_head: int):
    """One layer's time mix over all positions; adds its output to x and updates state row by row."""
    buf = shifted_input(i, p, x, state, plan, ws)
    xa, prev, att = buf["xa"], buf["prev"], p.att
    x_w, x_k, x_v, x_r, x_g = token_shift_mixes(ws, xa, prev, att)
    linear(x_r, att.receptance, buf["r"])
    linear(x_k, att.key, buf["k"])
    linear(x_v, att.value, buf["v"])
    linear(x_g, att.gate, buf["g"])
    decay(ws, x_w, att, buf["w"])
    mix_output(i, att, x, state, plan, buf, n_head)
    store_last(xa, plan.last, state.att_x, i)


def device_blocks(blocks, matrix_dtype):
    """Canonical blocks -> the same dataclasses holding device arrays (kernels.engine.to_device)."""
    from kernels.engine import to_device
    return to_device(tuple(blocks), matrix_dtype)


def run_blocks(blocks, info, x, state, plan, ws, tile: int) -> None:
    """Every layer, kernel by kernel (`tile` is chosen by the matrix kernels themselves here)."""
    for i, block in enumerate(blocks):
        time_mix(i, block, x, state, plan, ws, info.n_head)
        channel_mix(i, block, x, state, plan, ws, MIX_PREVIOUS)
