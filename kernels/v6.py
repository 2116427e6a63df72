"""RWKV-6 layer kernels, and RWKV-5's (kernels/v5.py). Must match `ai00ref/ref/v6.py` and `ai00ref/ref/v5.py`
(spec/v6.md, spec/v5.md) to the tolerances of spec/tolerances.md.

One layer is one kernel launch (`layer_kernel`) of twelve tasks (`TASKS`), each a `ti.func`:

task            ti.func            must match (ref/v6.py)                                threads: lanes per
shift_mix       shift_mix_task     layer_norm(ln1), previous_tokens, token_shift_mixes'  position (kernels/lanes.py)
                                   xxx and x + (prev-x)·maa_s; keeps prev - x
maa_lora        linear_task        token_shift_mixes: tanh(xxx W1ᵀ)                      (output row, token tile)
data_mix        data_mix_task      token_shift_mixes: x_s += (prev-x)·(lora_s W2_sᵀ)     (output row, token tile)
projections     projections_task   time_mix: r, k, v, gate; decay: tanh(x_w Wd1ᵀ)        (output row, token tile)
decay           decay_task         decay: exp(-exp(time_decay + (·) Wd2ᵀ))               (channel, token tile)
wkv             wkv_task           ref.v5.wkv_step over each row's tokens                one thread per (row, head, i)
output_gate     output_gate_task   time_mix: group_norm(ln_x) · silu(gate)               (position, head)
output          linear_task        time_mix: linear(·, output), added to x               (output row, token tile)
ffn_shift_mix   shift_mix_task     channel_mix: layer_norm(ln2), previous_tokens, lerps  position
ffn_key         linear_task        channel_mix: relu²(x_k W_kᵀ)                          (output row, token tile)
ffn_receptance  linear_task        channel_mix: σ(x_r W_rᵀ)                              (output row, token tile)
ffn_value       linear_task        channel_mix: x += r · (k W_vᵀ), r as linear_task's gate (output row, token tile)

RWKV-5 is this layer without the data-dependent parts (`Shape.data_dependent` false: no maa LoRA, no data_mix,
no decay task; the WKV reads the static decay), with v5's lerp_current mixes stored as 1 - mix at load
(x·m + prev·(1-m) = x + (prev-x)·(1-m)), and, for v5.0, without the gate (`Shape.gated`).

Weights are stacked by layer (`V6Layers`, built once at load by `device_blocks`, in groups of layers: see
kernels/stacking.py), so one compiled kernel serves every layer. The WKV state keeps the reference's layout S[b, l, h, key j, value i] on every arch: the threads of
a warp, one per value channel i, read neighbouring addresses at each key j.
"""
import dataclasses
import functools

import numpy as np
import taichi as ti

from ai00ref.ref.common import GN_EPS, LN_EPS
from kernels import lanes, quant
from kernels.common import ACT_NONE, ACT_RELU_SQUARED, ACT_SIGMOID, ACT_TANH
from kernels.lanes import (GROUP, LENGTH, START, dot_tile, emit_tile, lane_sum, linear_task, mean_and_inv,
                           shift_mix_task)
from kernels.quant import DENSE, storage_of
from kernels.stacking import LayerGroups, layer_arrays, layer_launch, stack_in_groups, upload

# Blocks of the scratch buffer's mixed inputs, and the matching rows of V6Layers.vec from MIX on. The kernel orders
# the five data-dependent mixes r, k, v, g, w (the reference: w, k, v, r, g) so that mixed block 1 + m feeds
# projection m; `REF_ORDER` permutes the reference's maa_* blocks into this order at load.
MIX_X, MIX_R, MIX_K, MIX_V, MIX_G, MIX_W = range(6)
REF_ORDER = (3, 1, 2, 4, 0)  # the reference's index of r, k, v, g, w in its w, k, v, r, g order

# Rows of V6Layers.vec (L, NV, C): every per-channel vector of a layer.
LN1, LN2 = 0, 2  # weight, then bias
MIX = 4  # six rows: maa_x, then the mixes of r, k, v, g, w (v5: 1 - mix, and no maa_x or w)
FFN_MIX = 10  # two rows: the channel mix's k, then r (v5: 1 - mix)
DECAY = 12  # v6: time_decay, raw (w = exp(-exp(time_decay + LoRA)) per token); v5: the static decay w itself
BONUS = 13  # u, (H, N) flattened
LNX = 14  # weight, then bias
NV = 16


@dataclasses.dataclass(frozen=True)
class Shape:
    """A model's sizes and, from them, where each matrix and buffer sits in the packed arrays (compile-time)."""
    C: int
    H: int
    F: int
    Dm: int  # width of each of the five token-shift LoRAs (0: v5, static mixes)
    Dd: int  # width of the decay LoRA (0: v5, static decay)
    gated: bool  # the output gate silu(x_g W_gᵀ): v6, v5.1, v5.2 (not v5.0)

    @property
    def N(self) -> int:
        return self.C // self.H

    @property
    def data_dependent(self) -> bool:  # v6
        return self.Dm > 0

    # rows of V6Layers.mats (L, ROWS, C): the matrices that read C inputs; the first Q_ROWS are those spec/quant.md
    # §1 quantizes, then the low-rank first stages (never quantized: in a quantized group they are V6Layers.low)
    @property
    def PROJ_ROWS(self) -> int:  # rows 0.. : receptance, key, value, gate (if gated)
        return (4 if self.gated else 3) * self.C

    @property
    def OUT(self) -> int:
        return self.PROJ_ROWS

    @property
    def FFN_KEY(self) -> int:
        return self.OUT + self.C

    @property
    def FFN_RECEPTANCE(self) -> int:
        return self.FFN_KEY + self.F

    @property
    def Q_ROWS(self) -> int:
        return self.FFN_RECEPTANCE + self.C

    # the low-rank rows, from the low-rank base (Q_ROWS in a dense mats; 0 in a quantized group's `low`)
    @property
    def DECAY_FIRST(self) -> int:  # decay_w1 (v6)
        return 0

    @property
    def MAA_FIRST(self) -> int:  # maa_w1's five Dm-row blocks, in the kernel's r, k, v, g, w order (v6)
        return self.Dd

    @property
    def LOW_ROWS(self) -> int:
        return max(self.Dd + 5 * self.Dm, 1)  # v5: one unused row

    @property
    def ROWS(self) -> int:
        return self.Q_ROWS + self.LOW_ROWS

    @property
    def N_PROJ(self) -> int:  # the projections task's rows: r, k, v, gate, then decay_w1's
        return self.PROJ_ROWS + self.Dd

    # columns of V6Layers.second (L, C, SECOND): maa_w2's five blocks (r, k, v, g, w), then decay_w2 (v6)
    @property
    def DECAY_SECOND(self) -> int:
        return 5 * self.Dm

    @property
    def SECOND(self) -> int:
        return max(5 * self.Dm + self.Dd, 1)  # v5: one unused column

    # columns of the scratch buffer (T, WIDTH)
    @property
    def MIXED(self) -> int:  # six blocks: xxx, then x_r, x_k, x_v, x_g, x_w; the channel mix's k, r reuse two
        return 0

    @property
    def DELTA(self) -> int:  # prev - x: written by shift_mix_task right after the six mixed blocks (v6)
        return self.MIXED + 6 * self.C

    @property
    def LORA(self) -> int:  # tanh(xxx W1ᵀ): five Dm-wide blocks r, k, v, g, w (v6)
        return self.DELTA + self.C

    @property
    def PROJ(self) -> int:  # r, k, v, g, then the decay LoRA's first stage (Dd): the projections task's rows
        return self.LORA + 5 * self.Dm

    @property
    def DECAY_LOW(self) -> int:
        return self.PROJ + 4 * self.C

    @property
    def W(self) -> int:  # the per-token decay (v6)
        return self.DECAY_LOW + self.Dd

    @property
    def Y(self) -> int:  # the WKV's output, then (in place) the gated GroupNorm
        return self.W + self.C

    @property
    def FFN_R(self) -> int:
        return self.Y + self.C

    @property
    def HIDDEN(self) -> int:
        return self.FFN_R + self.C

    @property
    def WIDTH(self) -> int:
        return self.HIDDEN + self.F


@dataclasses.dataclass
class V6Layers:
    """A group of layers' weights stacked on a leading axis, on the device (few arrays: few kernel arguments);
    kernels/stacking.py groups the layers so each array stays within Taichi's index range.

    `storage` DENSE: mats and ffn_value hold floats, and mats ends with the low-rank rows (low is None).
    A quantized scheme: mats and ffn_value hold u32 rows (kernels/quant.py), and the low-rank rows are `low`."""
    shape: Shape
    vec: object  # (L, NV, C) f32: every per-channel vector
    mats: object  # (L, ROWS or Q_ROWS, C or words): receptance, key, value, gate | output | ffn key, receptance | low
    second: object  # (L, C, Shape.SECOND): maa_w2's five blocks, then decay_w2, side by side along the input axis
    ffn_value: object  # (L, C, F or words)
    storage: str = DENSE
    low: object = None  # quantized groups: (L, LOW_ROWS, C) decay_w1 | maa_w1, dense

    @property
    def n_layer(self) -> int:
        return self.vec.shape[0]


def stack_layers(shape: Shape, vectors, quantizable, low, second, ffn_value, matrix_dtype) -> LayerGroups:
    """Per-layer host weights -> V6Layers, in groups of layers of one storage (kernels/stacking.py): vectors (NV, C),
    quantizable (the Q_ROWS rows' matrices in order, float or QuantizedMatrix), low (LOW_ROWS, C), second
    (C, SECOND), ffn_value (C, F) float or QuantizedMatrix."""
    host_dtype = np.float16 if matrix_dtype == ti.f16 else np.float32
    storage = [storage_of(ffn) for ffn in ffn_value]
    per_layer = [len(vectors[0]) * shape.C, shape.ROWS * shape.C, np.size(second[0]), shape.C * shape.F]

    def stack(layers, kind) -> V6Layers:
        def matrices(per_layer_rows):  # each layer's matrices, their rows one after another
            if kind == DENSE:
                return upload([np.concatenate([np.asarray(m, np.float32) for m in rows]) for rows in per_layer_rows],
                              host_dtype)
            return upload([quant.stack_rows(rows) for rows in per_layer_rows], np.uint32)

        q_rows = [quantizable[i] for i in layers]
        low_rows = [np.asarray(low[i], np.float32) for i in layers]
        return V6Layers(shape=shape, vec=upload([vectors[i] for i in layers], np.float32),
                        mats=matrices([[*q, w] for q, w in zip(q_rows, low_rows)] if kind == DENSE else q_rows),
                        second=upload([second[i] for i in layers], host_dtype),
                        ffn_value=matrices([[ffn_value[i]] for i in layers]), storage=kind,
                        low=None if kind == DENSE else upload(low_rows, host_dtype))

    return stack_in_groups(range(len(vectors)), per_layer, stack, storage)


def _vectors(block) -> np.ndarray:
    att, ffn = block.att, block.ffn
    maa = np.asarray(att.maa_wkvrg)[list(REF_ORDER)]  # (5, C) r, k, v, g, w
    rows = [block.ln1.weight, block.ln1.bias, block.ln2.weight, block.ln2.bias, att.maa_x, *maa, ffn.mix_k,
            ffn.mix_r, att.decay, np.ravel(att.bonus), att.ln_x.weight, att.ln_x.bias]
    return np.stack(rows).astype(np.float32)


def _maa_first(att) -> np.ndarray:
    """maa_w1 (5Dm, C), its Dm-row blocks permuted into r, k, v, g, w."""
    blocks = np.asarray(att.maa_w1).reshape(5, -1, att.maa_w1.shape[1])
    return blocks[list(REF_ORDER)].reshape(att.maa_w1.shape)


def _second(att) -> np.ndarray:
    """maa_w2 (5, C, Dm) in r, k, v, g, w order and decay_w2 (C, Dd), side by side: (C, 5Dm + Dd)."""
    maa_w2 = np.asarray(att.maa_w2)[list(REF_ORDER)]
    return np.concatenate([*maa_w2, att.decay_w2], axis=1)


def device_blocks(blocks, matrix_dtype) -> LayerGroups:
    """Canonical v6 blocks -> V6Layers in groups (the load-time stacking; matrices in `matrix_dtype`, vectors f32)."""
    att = blocks[0].att
    shape = Shape(C=att.maa_x.shape[0], H=att.bonus.shape[0], F=blocks[0].ffn.key.shape[0],
                  Dm=att.maa_w2.shape[2], Dd=att.decay_w1.shape[0], gated=True)
    quantizable = [[b.att.receptance, b.att.key, b.att.value, b.att.gate, b.att.output, b.ffn.key, b.ffn.receptance]
                   for b in blocks]
    low = [np.concatenate([b.att.decay_w1, _maa_first(b.att)]) for b in blocks]
    return stack_layers(shape, [_vectors(b) for b in blocks], quantizable, low, [_second(b.att) for b in blocks],
                        [b.ffn.value for b in blocks], matrix_dtype)


@ti.func
def data_mix_task(s: ti.template(), second: ti.template(), slot: ti.i32, sc: ti.template(), tile: ti.template()):
    """The rest of ref.v6.token_shift_mixes, in place: mixed block 1 + m (x + (prev-x)·maa_m, from shift_mix_task)
    += (prev - x) · (lora_m W2_mᵀ), for m in r, k, v, g, w; lora_m is LORA's block m, prev - x is DELTA."""
    T = sc.shape[0]
    n_tiles = (T + tile - 1) // tile
    ti.loop_config(block_dim=GROUP)
    for g in range(5 * s.C * n_tiles * lanes.LANES):
        lane, group = g % lanes.LANES, g // lanes.LANES
        o, t0 = group // n_tiles, group % n_tiles * tile
        m, c = o // s.C, o % s.C
        acc = dot_tile(second, slot, c, m * s.Dm, sc, s.LORA + m * s.Dm, s.Dm, t0, T, lane, tile)
        emit_tile(acc, sc, s.MIXED + (MIX_R + m) * s.C + c, t0, T, lane, ACT_NONE, True, sc, s.DELTA + c)


def low_base(s: Shape, storage: str) -> int:
    """Where the low-rank rows start: after the Q_ROWS in a dense group's mats, at 0 of a quantized group's low."""
    return s.Q_ROWS if storage == DENSE else 0


@ti.func
def projections_task(s: ti.template(), mats: ti.template(), low: ti.template(), slot: ti.i32, sc: ti.template(),
                     tile: ti.template(), storage: ti.template()):
    """r, k, v, gate = x_s W_sᵀ (ref.v6.time_mix, ref.v5.time_mix) and the decay LoRA's first stage
    tanh(x_w Wd1ᵀ) (ref.v6.decay) into PROJ's columns; row block m reads mixed block 1 + m. The r, k, v, gate rows
    are in `mats` (in `storage`), decay_w1's in `low` (dense; the same array as mats in a dense group)."""
    T = sc.shape[0]
    n_tiles = (T + tile - 1) // tile
    ti.loop_config(block_dim=GROUP)
    for g in range(s.N_PROJ * n_tiles * lanes.LANES):
        lane, group = g % lanes.LANES, g // lanes.LANES
        o, t0 = group // n_tiles, group % n_tiles * tile
        mix, act = MIX_R + o // s.C, ACT_NONE
        if o >= s.PROJ_ROWS:  # decay_w1's rows (v6: always gated, so they follow the gate's)
            mix, act = MIX_W, ACT_TANH
        acc = ti.Vector([0.0] * tile)
        if ti.static(storage == DENSE):  # one array: decay_w1's rows after the quantizable ones
            row = o if o < s.PROJ_ROWS else s.Q_ROWS + s.DECAY_FIRST + o - s.PROJ_ROWS
            acc = dot_tile(mats, slot, row, 0, sc, s.MIXED + mix * s.C, s.C, t0, T, lane, tile)
        elif o < s.PROJ_ROWS:
            acc = dot_tile(mats, slot, o, 0, sc, s.MIXED + mix * s.C, s.C, t0, T, lane, tile, storage)
        else:
            acc = dot_tile(low, slot, s.DECAY_FIRST + o - s.PROJ_ROWS, 0, sc, s.MIXED + mix * s.C, s.C, t0, T, lane,
                           tile)
        emit_tile(acc, sc, s.PROJ + o, t0, T, lane, act, False)


@ti.func
def decay_task(s: ti.template(), vec: ti.template(), second: ti.template(), slot: ti.i32, sc: ti.template(),
               tile: ti.template()):
    """ref.v6.decay's second stage: W = exp(-exp(time_decay + DECAY_LOW Wd2ᵀ)), per position and channel."""
    T = sc.shape[0]
    n_tiles = (T + tile - 1) // tile
    ti.loop_config(block_dim=GROUP)
    for g in range(s.C * n_tiles * lanes.LANES):
        lane, group = g % lanes.LANES, g // lanes.LANES
        c, t0 = group // n_tiles, group % n_tiles * tile
        acc = dot_tile(second, slot, c, s.DECAY_SECOND, sc, s.DECAY_LOW, s.Dd, t0, T, lane, tile)
        for u in ti.static(range(tile)):
            lora = lane_sum(acc[u])
            if lane == 0 and t0 + u < T:
                sc[t0 + u, s.W + c] = ti.exp(-ti.exp(vec[slot, DECAY, c] + lora))


@ti.func
def decay_at(s: ti.template(), vec: ti.template(), slot: ti.i32, sc: ti.template(), t: ti.i32, c: ti.i32) -> ti.f32:
    """The decay w of channel c at position t: v6's per-token one (decay_task), or v5's static one."""
    w = 0.0
    if ti.static(s.data_dependent):
        w = sc[t, s.W + c]
    else:
        w = vec[slot, DECAY, c]
    return w


@ti.func
def wkv_task(s: ti.template(), vec: ti.template(), S: ti.template(), slot: ti.i32, layer: ti.i32, plan: ti.template(),
             sc: ti.template()):
    """ref.v5.wkv_step over each row's tokens, u the bonus and w the decay:

    y[i] = Σ_j r[j]·(u[j]·k[j]·v[i] + S[j,i]);   S[j,i] <- k[j]·v[i] + w[j]·S[j,i]

    Thread (b, h, i) owns value column i of head h: S[b, layer, h, :, i].
    """
    N = s.N
    R, K, V = s.PROJ, s.PROJ + s.C, s.PROJ + 2 * s.C
    for b, h, i in ti.ndrange(S.shape[0], s.H, N):
        for step in range(plan[LENGTH, b]):
            t = plan[START, b] + step
            v = sc[t, V + h * N + i]
            out = 0.0
            for j in range(N):
                c = h * N + j
                kv = sc[t, K + c] * v
                old = S[b, layer, h, j, i]
                out += sc[t, R + c] * (vec[slot, BONUS, c] * kv + old)
                S[b, layer, h, j, i] = kv + decay_at(s, vec, slot, sc, t, c) * old
            sc[t, s.Y + h * N + i] = out


@ti.func
def output_gate_task(s: ti.template(), vec: ti.template(), slot: ti.i32, sc: ti.template()):
    """In place: Y <- group_norm(Y) with ln_x's affine, times silu(gate) when gated (the last line of ref.v6.time_mix
    and ref.v5.time_mix)."""
    T, N = sc.shape[0], s.N
    ti.loop_config(block_dim=GROUP)
    for g in range(T * s.H * lanes.LANES):
        lane, th = g % lanes.LANES, g // lanes.LANES
        t, h = th // s.H, th % s.H
        stats = mean_and_inv(sc, t, s.Y + h * N, N, lane, GN_EPS)
        for q in range((N + lanes.LANES - 1) // lanes.LANES):
            n = q * lanes.LANES + lane
            if n < N:
                c = h * N + n
                out = (sc[t, s.Y + c] - stats[0]) * stats[1] * vec[slot, LNX, c] + vec[slot, LNX + 1, c]
                if ti.static(s.gated):
                    gate = sc[t, s.PROJ + 3 * s.C + c]
                    out *= gate / (1.0 + ti.exp(-gate))
                sc[t, s.Y + c] = out


TASKS = ("shift_mix", "maa_lora", "data_mix", "projections", "decay", "wkv", "output_gate", "output",
         "ffn_shift_mix", "ffn_key", "ffn_receptance", "ffn_value")


@functools.cache
def layer_kernel(s: Shape, tile: int, tasks: tuple = TASKS, storage: str = DENSE):
    """The kernel of one layer (every position of a pass); `tile` positions share each weight read.
    `storage`: the group's matrices (kernels/quant.py); a quantized kernel takes the low-rank rows as one more array.
    `tasks` leaves some out, for tests and profiling only."""
    v6 = s.data_dependent
    n_static = 4 if s.gated else 3  # v5: the static mixes of r, k, v (and g)
    low_at = low_base(s, storage)

    @ti.func
    def body(x: ti.template(), vec: ti.template(), mats: ti.template(), low: ti.template(), second: ti.template(),
             ffn_value: ti.template(), att_x: ti.template(), S: ti.template(), ffn_x: ti.template(),
             plan: ti.template(), sc: ti.template(), layer: ti.i32, slot: ti.i32):
        if ti.static("shift_mix" in tasks and v6):
            shift_mix_task(x, vec, slot, LN1, MIX, 6, att_x, layer, plan, LN_EPS, sc, s.MIXED, True)
        if ti.static("shift_mix" in tasks and not v6):
            shift_mix_task(x, vec, slot, LN1, MIX + MIX_R, n_static, att_x, layer, plan, LN_EPS, sc, s.MIXED + MIX_R * s.C)
        if ti.static("maa_lora" in tasks and v6):
            linear_task(low, slot, low_at + s.MAA_FIRST, 5 * s.Dm, s.C, sc, s.MIXED, sc, s.LORA, ACT_TANH, False, tile)
        if ti.static("data_mix" in tasks and v6):
            data_mix_task(s, second, slot, sc, tile)
        if ti.static("projections" in tasks):
            projections_task(s, mats, low, slot, sc, tile, storage)
        if ti.static("decay" in tasks and v6):
            decay_task(s, vec, second, slot, sc, tile)
        if ti.static("wkv" in tasks):
            wkv_task(s, vec, S, slot, layer, plan, sc)
        if ti.static("output_gate" in tasks):
            output_gate_task(s, vec, slot, sc)
        if ti.static("output" in tasks):
            linear_task(mats, slot, s.OUT, s.C, s.C, sc, s.Y, x, 0, ACT_NONE, True, tile, storage=storage)
        if ti.static("ffn_shift_mix" in tasks):
            shift_mix_task(x, vec, slot, LN2, FFN_MIX, 2, ffn_x, layer, plan, LN_EPS, sc, s.MIXED)
        if ti.static("ffn_key" in tasks):
            linear_task(mats, slot, s.FFN_KEY, s.F, s.C, sc, s.MIXED, sc, s.HIDDEN, ACT_RELU_SQUARED, False, tile,
                        storage=storage)
        if ti.static("ffn_receptance" in tasks):
            linear_task(mats, slot, s.FFN_RECEPTANCE, s.C, s.C, sc, s.MIXED + s.C, sc, s.FFN_R, ACT_SIGMOID, False,
                        tile, storage=storage)
        if ti.static("ffn_value" in tasks):
            linear_task(ffn_value, slot, 0, s.C, s.F, sc, s.HIDDEN, x, 0, ACT_NONE, True, tile, sc, s.FFN_R, storage)

    return layer_launch(body, storage)


def run_blocks(layers: LayerGroups, info, x, state, plan, ws, tile: int, tasks: tuple = TASKS) -> None:
    """Every layer over the pass's positions: one launch each, with its group's weights."""
    scratch = ws.buffer("v6_scratch", (plan.T, layers.shape.WIDTH))
    for i in range(layers.n_layer):
        group, slot = layers.locate(i)
        layer_kernel(layers.shape, tile, tasks, group.storage)(x, *layer_arrays(group), state.att_x, state.wkv,
                                                               state.ffn_x, plan.packed, scratch, i, slot)
