"""RWKV-5 layer kernels (v5.0, v5.1, v5.2). Must match `ai00ref/ref/v5.py` (spec/v5.md) to spec/tolerances.md.

Kernel            must match (ref/v5.py)                    shapes
fill_decay        the static decay w (H, N), per position    (H, N) -> (T, C)
wkv               wkv_step over each row's tokens            per (b, h, i): S (B, L, H, N, N) [key j, value i]
apply_gate        time_mix: out * silu(Wg·xg)                per (t, c)
`wkv` reads its decay from a (T, C) buffer, so v6 (kernels/v6.py) reuses it with its per-token decay.
"""

import taichi as ti

from ai00ref.ref.common import GN_EPS, LN_EPS
from kernels.common import group_norm, layer_norm, linear, store_last, token_shift
from kernels.launch import kernel
from kernels.v4 import channel_mix, project


@kernel
def fill_decay(decay: ti.types.ndarray(), w: ti.types.ndarray()):
    """w[t, h*N + n] = decay[h, n] for every position t."""
    for t, c in ti.ndrange(w.shape[0], w.shape[1]):
        N = decay.shape[1]
        w[t, c] = ti.cast(decay[c // N, c % N], ti.f32)


@kernel
def wkv(r: ti.types.ndarray(), k: ti.types.ndarray(), v: ti.types.ndarray(), w: ti.types.ndarray(),
        bonus: ti.types.ndarray(), S: ti.types.ndarray(), layer: ti.i32, start: ti.types.ndarray(),
        length: ti.types.ndarray(), y: ti.types.ndarray()):
    """ref.v5.wkv_step over each row's tokens; thread (b, h, i) owns the column S[b, layer, h, :, i].

    y[i] = Σ_j r[j]·(u[j]·k[j]·v[i] + S[j,i]);   S[j,i] <- k[j]·v[i] + w[j]·S[j,i]   (w: (T, C), per position)
    """
    H, N = S.shape[2], S.shape[3]
    for b, h, i in ti.ndrange(S.shape[0], H, N):
        for step in range(length[b]):
            t = start[b] + step
            vi = v[t, h * N + i]
            out = 0.0
            for j in range(N):
                c = h * N + j
                kv = k[t, c] * vi
                s = S[b, layer, h, j, i]
                out += r[t, c] * (ti.cast(bonus[h, j], ti.f32) * kv + s)
                S[b, layer, h, j, i] = kv + w[t, c] * s
            y[t, h * N + i] = out


@kernel
def apply_gate(y: ti.types.ndarray(), g: ti.types.ndarray()):
    """y *= silu(g) = g·σ(g), all (T, C)."""
    for t, c in ti.ndrange(y.shape[0], y.shape[1]):
        y[t, c] *= g[t, c] / (1.0 + ti.exp(-g[t, c]))


def mix_output(i: int, att, x, state, plan, buf, n_head: int) -> None:
    """The shared v5/v6 tail: WKV over r, k, v, w in `buf`, GroupNorm, optional gate, x += Wo·out."""
    wkv(buf["r"], buf["k"], buf["v"], buf["w"], att.bonus, state.wkv, i, plan.start, plan.length, buf["y"])
    group_norm(buf["y"], att.ln_x.weight, att.ln_x.bias, buf["gn"], n_head, GN_EPS)
    if att.gate is not None:
        apply_gate(buf["gn"], buf["g"])
    linear(buf["gn"], att.output, x, accumulate=True)


def shifted_input(i: int, p, x, state, plan, ws) -> dict:
    """The shared v5/v6 head: the time mix's buffers, with xa = LN1(x) and prev = its token shift."""
    T, C = plan.T, x.shape[1]
    buf = {name: ws.buffer(name, (T, C)) for name in ("xa", "prev", "r", "k", "v", "w", "g", "y", "gn")}
    layer_norm(x, p.ln1.weight, p.ln1.bias, buf["xa"], LN_EPS)
    token_shift(buf["xa"], state.att_x, i, plan.row, plan.first, buf["prev"])
    return buf


def time_mix(i: int, p, x, state, plan, ws, n_head: int):
    """One layer's time mix over all positions; adds its output to x and updates state row by row."""
    buf = shifted_input(i, p, x, state, plan, ws)
    xa, prev, att = buf["xa"], buf["prev"], p.att
    project(xa, prev, att.mix_r, att.receptance, buf["r"])
    project(xa, prev, att.mix_k, att.key, buf["k"])
    project(xa, prev, att.mix_v, att.value, buf["v"])
    if att.gate is not None:  # v5.1 and v5.2
        project(xa, prev, att.mix_g, att.gate, buf["g"])
    fill_decay(att.decay, buf["w"])
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
        channel_mix(i, block, x, state, plan, ws)
