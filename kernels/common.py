"""The per-operation kernels of RWKV-4 (kernels/v4.py), and the activation codes every version uses (no
`from __future__ import annotations` here: Taichi reads the annotations). Each kernel mirrors a function of
`ai00ref/ref/common.py` and is tested against it. v5-v7 run one fused kernel per layer (kernels/lanes.py).

Shapes: x (T, C) holds the T token positions of one pass (all batch rows, concatenated); `row[t]` is the batch row
of position t and `first[t]` is 1 where t starts its row's segment. Weights may be f16 or f32; arithmetic is f32.
"""

import functools

import taichi as ti

import kernels
from kernels.launch import kernel

ACT_NONE, ACT_RELU_SQUARED, ACT_SIGMOID, ACT_TANH = 0, 1, 2, 3
MIX_CURRENT, MIX_PREVIOUS = 0, 1  # v4/v5: x*m + prev*(1-m); v6/v7: x + (prev-x)*m (spec/common.md §3)
NO_MIX = -1  # linear kernels: the input is x itself
BLOCK = 128  # GPU workgroup size of the matrix kernels
TOKENS_PER_BLOCK = 8  # GPU: positions sharing one read of a weight row
UNROLL = 4  # GPU: weight loads each lane issues before it waits for the first


@ti.func
def activate(s: ti.f32, act: ti.template()) -> ti.f32:
    r = s
    if ti.static(act == ACT_RELU_SQUARED):
        r = ti.max(s, 0.0) ** 2
    elif ti.static(act == ACT_SIGMOID):
        r = 1.0 / (1.0 + ti.exp(-s))
    elif ti.static(act == ACT_TANH):
        r = ti.tanh(s)
    return r


@ti.func
def mix(x: ti.f32, prev: ti.f32, m: ti.f32, convention: ti.template()) -> ti.f32:
    r = x + (prev - x) * m
    if ti.static(convention == MIX_CURRENT):
        r = x * m + prev * (1.0 - m)
    return r


@kernel
def _layer_norm_rows(x: ti.types.ndarray(), w: ti.types.ndarray(), b: ti.types.ndarray(), y: ti.types.ndarray(),
                     eps: ti.f32):
    """CPU: one thread per row."""
    for t in range(x.shape[0]):
        C = x.shape[1]
        mean = 0.0
        for c in range(C):
            mean += x[t, c]
        mean /= C
        var = 0.0
        for c in range(C):
            var += (x[t, c] - mean) ** 2
        inv = 1.0 / ti.sqrt(var / C + eps)
        for c in range(C):
            y[t, c] = (x[t, c] - mean) * inv * ti.cast(w[c], ti.f32) + ti.cast(b[c], ti.f32)


@ti.func
def block_sum(pad: ti.template(), lane: ti.i32, value: ti.f32) -> ti.f32:
    """The sum of `value` over the BLOCK lanes of a workgroup, through shared memory; every lane gets it."""
    ti.simt.block.sync()
    pad[lane] = value
    ti.simt.block.sync()
    half = BLOCK // 2
    while half > 0:
        if lane < half:
            pad[lane] = pad[lane] + pad[lane + half]
        ti.simt.block.sync()
        half //= 2
    return pad[0]


@kernel
def _layer_norm_blocks(x: ti.types.ndarray(), w: ti.types.ndarray(), b: ti.types.ndarray(), y: ti.types.ndarray(),
                       eps: ti.f32):
    """GPU: one workgroup per row; lanes stride the channels and meet in shared memory."""
    C = x.shape[1]
    ti.loop_config(block_dim=BLOCK)
    for g in range(x.shape[0] * BLOCK):
        t, lane = g // BLOCK, g % BLOCK
        pad = ti.simt.block.SharedArray((BLOCK,), ti.f32)
        part = 0.0
        for chunk in range((C + BLOCK - 1) // BLOCK):
            c = chunk * BLOCK + lane
            if c < C:
                part += x[t, c]
        mean = block_sum(pad, lane, part) / C
        part = 0.0
        for chunk in range((C + BLOCK - 1) // BLOCK):
            c = chunk * BLOCK + lane
            if c < C:
                part += (x[t, c] - mean) ** 2
        inv = 1.0 / ti.sqrt(block_sum(pad, lane, part) / C + eps)
        for chunk in range((C + BLOCK - 1) // BLOCK):
            c = chunk * BLOCK + lane
            if c < C:
                y[t, c] = (x[t, c] - mean) * inv * ti.cast(w[c], ti.f32) + ti.cast(b[c], ti.f32)


def layer_norm(x, w, b, y, eps: float) -> None:
    """Must match ref.common.layer_norm: rows of x (T, C) -> y (T, C); y may be x."""
    (_layer_norm_blocks if kernels.is_gpu() else _layer_norm_rows)(x, w, b, y, eps)


@kernel
def token_shift(x: ti.types.ndarray(), shift: ti.types.ndarray(), layer: ti.i32, row: ti.types.ndarray(),
                first: ti.types.ndarray(), prev: ti.types.ndarray()):
    """Must match ref.common.previous_tokens per row: prev[t] = x[t-1], or the row's state at its first token."""
    for t, c in ti.ndrange(x.shape[0], x.shape[1]):
        if first[t] == 1:
            prev[t, c] = shift[row[t], layer, c]
        else:
            prev[t, c] = x[t - 1, c]


@kernel
def store_last(x: ti.types.ndarray(), last: ti.types.ndarray(), shift: ti.types.ndarray(), layer: ti.i32):
    """The state keeps the last position of each row: shift[b, layer] = x[last[b]] (rows with last[b] < 0 keep theirs)."""
    for b, c in ti.ndrange(last.shape[0], x.shape[1]):
        if last[b] >= 0:
            shift[b, layer, c] = x[last[b], c]


# ---- y = act(W x) [+ y]: must match ref.common.linear ----
# The input may be mixed on the fly: x_in = mix(x, prev; m) (ref: linear(lerp_*(x, prev, m), W)), which saves a
# launch and a buffer per token-shifted projection. With NO_MIX, `prev` and `m` are not read.

@ti.func
def read_input(x: ti.template(), prev: ti.template(), m: ti.template(), t: ti.i32, i: ti.i32,
               convention: ti.template()) -> ti.f32:
    value = x[t, i]
    if ti.static(convention != NO_MIX):
        value = mix(x[t, i], prev[t, i], ti.cast(m[i], ti.f32), convention)
    return value


@functools.cache
def _linear_rows(act: int, accumulate: bool, convention: int):
    """CPU: one thread per output row o, every position t reusing the cached row W[o]."""

    @kernel
    def linear_rows(x: ti.types.ndarray(), prev: ti.types.ndarray(), m: ti.types.ndarray(),
                    W: ti.types.ndarray(), y: ti.types.ndarray()):
        for o in range(W.shape[0]):
            for t in range(x.shape[0]):
                s = 0.0
                for i in range(W.shape[1]):
                    s += read_input(x, prev, m, t, i, convention) * ti.cast(W[o, i], ti.f32)
                s = activate(s, act)
                if ti.static(accumulate):
                    y[t, o] += s
                else:
                    y[t, o] = s
    return linear_rows


@functools.cache
def _linear_blocks(act: int, accumulate: bool, convention: int, tile: int):
    """GPU: one workgroup per (output row, `tile` positions); lanes stride the input, then a shared-memory sum."""

    @kernel
    def linear_blocks(x: ti.types.ndarray(), prev: ti.types.ndarray(), m: ti.types.ndarray(),
                      W: ti.types.ndarray(), y: ti.types.ndarray()):
        n_out, n_in, T = W.shape[0], W.shape[1], x.shape[0]
        n_tiles = (T + tile - 1) // tile
        ti.loop_config(block_dim=BLOCK)
        for g in range(n_out * n_tiles * BLOCK):
            lane, o, first_t = g % BLOCK, (g // BLOCK) % n_out, g // BLOCK // n_out * tile
            pad = ti.simt.block.SharedArray((tile * BLOCK,), ti.f32)
            acc = ti.Vector([0.0] * tile)
            for group in range((n_in + BLOCK * UNROLL - 1) // (BLOCK * UNROLL)):
                for q in ti.static(range(UNROLL)):  # UNROLL independent loads in flight per lane
                    i = (group * UNROLL + q) * BLOCK + lane
                    if i < n_in:
                        w = ti.cast(W[o, i], ti.f32)
                        for u in ti.static(range(tile)):
                            if first_t + u < T:
                                acc[u] += w * read_input(x, prev, m, first_t + u, i, convention)
            for u in ti.static(range(tile)):
                pad[u * BLOCK + lane] = acc[u]
            ti.simt.block.sync()
            half = BLOCK // 2
            while half > 0:
                if lane < half:
                    for u in ti.static(range(tile)):
                        pad[u * BLOCK + lane] = pad[u * BLOCK + lane] + pad[u * BLOCK + lane + half]
                ti.simt.block.sync()
                half //= 2
            if lane < tile:
                t = first_t + lane
                if t < T:
                    s = activate(pad[lane * BLOCK], act)
                    if ti.static(accumulate):
                        y[t, o] += s
                    else:
                        y[t, o] = s
            ti.simt.block.sync()  # read before this thread's next item (past Taichi's grid) writes the pad
    return linear_blocks


def linear_mixed(x, prev, m, W, y, convention: int, act: int = ACT_NONE, accumulate: bool = False) -> None:
    """y (T, out) = act(mix(x, prev; m) (T, in) @ W (out, in)ᵀ), or y += that; NO_MIX: the input is x."""
    if not kernels.is_gpu():
        _linear_rows(act, accumulate, convention)(x, prev, m, W, y)
    else:  # decode passes (a few positions) take one position per workgroup: no idle token slots
        tile = 1 if x.shape[0] <= 4 else TOKENS_PER_BLOCK
        _linear_blocks(act, accumulate, convention, tile)(x, prev, m, W, y)


def linear(x, W, y, act: int = ACT_NONE, accumulate: bool = False) -> None:
    """y (T, out) = act(x (T, in) @ W (out, in)ᵀ), or y += that. The GPU kernel needs workgroup shared memory."""
    linear_mixed(x, x, x, W, y, NO_MIX, act, accumulate)  # prev and m are unused placeholders
