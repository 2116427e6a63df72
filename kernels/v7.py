"""RWKV-7 layer kernels. Must match `ai00ref/ref/v7.py` (spec/v7.md) to the tolerances of spec/tolerances.md.

One layer is one kernel launch (`layer_kernel`) of ten tasks, each a `ti.func` named after what it mirrors:

task                  must match (ref/v7.py)                              threads
shift_mix_task        layer_norm(ln1), previous_tokens, six lerp_previous  lanes per position (kernels/lanes.py)
projections_task      linear: r, k, v; the first stages of w, a, g, v     lanes per (output row, token tile)
second_stage_task     linear: the second stages of w, a, g, v             lanes per (output row, token tile)
prepare_task          w, a, kk, k, v lines of time_mix                    lanes per (position, head)
wkv_task              wkv_step over each row's tokens                     one per (row, head, value channel)
output_gate_task      group_norm(ln_x) + bonus, times g                   lanes per (position, head)
linear_task           linear(·, output); the channel mix's key, value    lanes per (output row, token tile)
shift_mix_task        layer_norm(ln2), previous_tokens, lerp_previous    lanes per position

Weights are stacked by layer (`V7Layers`, built once at load by `device_blocks`, in groups of layers: see
kernels/stacking.py), so one compiled kernel serves every layer. On a GPU the WKV state is stored key-major,
S[b, l, h, j (key), i (value)], so at each key j the threads of a warp read neighbouring addresses (`cell`,
engine.device_transposed).
"""
import dataclasses
import functools

import numpy as np
import taichi as ti

from ai00ref.ref.common import GN_EPS, L2_EPS, LN_EPS
from ai00ref.ref.v7 import DECAY_SCALE
from kernels.common import ACT_NONE, ACT_RELU_SQUARED, ACT_SIGMOID, ACT_TANH
from kernels import lanes, quant, x64_tasks, x64_v7
from kernels.lanes import (GROUP, LENGTH, START, dot_tile, emit_tile, lane_sum, linear_task, mean_and_inv,
                           shift_mix_task)
from kernels.quant import DENSE, storage_of
from kernels.stacking import LayerGroups, layer_arrays, layer_launch, stack_in_groups, upload

# Rows of V7Layers.vec (L, NV, C): every per-channel vector of a layer.
LN1, LN2 = 0, 2  # weight, then bias
MIX = 4  # six rows: the token-shift mixes of r, k, v, w, a, g (the order of the `mixed` buffer's blocks)
MIX_R, MIX_K, MIX_V, MIX_W, MIX_A, MIX_G = range(6)
FFN_MIX = 10
W0, A0, V0, K_K, K_A, LNX, R_K = 11, 12, 13, 14, 15, 16, 18  # LNX: weight, then bias; R_K: (H, N) flattened
NV = 19


@dataclasses.dataclass(frozen=True)
class Shape:
    """A model's sizes and, from them, where each matrix and buffer sits in the packed arrays (compile-time)."""
    C: int
    H: int
    Dw: int
    Da: int
    Dg: int
    Dv: int
    F: int

    @property
    def N(self) -> int:
        return self.C // self.H

    @property
    def D(self) -> int:  # the four low-rank widths together
        return self.Dw + self.Da + self.Dg + self.Dv

    # rows of V7Layers.mats (L, ROWS, C): the matrices that read C inputs; the first Q_ROWS are those spec/quant.md
    # §1 quantizes, then the low-rank first stages (never quantized: in a quantized group they are V7Layers.low)
    @property
    def RKV(self) -> int:
        return 0

    @property
    def OUT(self) -> int:
        return 3 * self.C

    @property
    def FFN_KEY(self) -> int:
        return 4 * self.C

    @property
    def Q_ROWS(self) -> int:
        return 4 * self.C + self.F

    @property
    def FIRST(self) -> int:  # w1, a1, g1, v1 in a dense group's mats (a quantized group's `low` holds them from 0)
        return self.Q_ROWS

    @property
    def ROWS(self) -> int:
        return self.Q_ROWS + self.D

    # columns of the scratch buffer (T, WIDTH)
    @property
    def MIXED(self) -> int:  # six mixed inputs r, k, v, w, a, g; the channel mix's one reuses the first block
        return 0

    @property
    def PROJ(self) -> int:  # r, k, v, then the four first-stage outputs
        return 6 * self.C

    @property
    def LOW(self) -> int:
        return self.PROJ + 3 * self.C

    @property
    def LORA(self) -> int:  # w, a, g, v-gate second-stage outputs
        return self.LOW + self.D

    @property
    def KK(self) -> int:
        return self.LORA + 4 * self.C

    @property
    def Y(self) -> int:
        return self.KK + self.C

    @property
    def V_FIRST(self) -> int:
        return self.Y + self.C

    @property
    def HIDDEN(self) -> int:
        return self.V_FIRST + self.C

    @property
    def WIDTH(self) -> int:
        return self.HIDDEN + self.F


@dataclasses.dataclass
class V7Layers:
    """A group of layers' weights stacked on a leading axis, on the device (few arrays: few kernel arguments);
    kernels/stacking.py groups the layers so each array stays within Taichi's index range.

    `storage` DENSE: mats and ffn_value hold floats, and mats ends with the low-rank rows (low is None).
    A quantized scheme: mats and ffn_value hold u32 rows (kernels/quant.py), and the low-rank rows are `low`."""
    shape: Shape
    vec: object  # (L, NV, C) f32: every per-channel vector
    mats: object  # (L, ROWS or Q_ROWS, C or words): receptance, key, value | output | ffn key | w1, a1, g1, v1
    second: object  # (L, C, D): w2 | a2 | g2 | v2 side by side along the input axis (v2 zero in layer 0)
    ffn_value: object  # (L, C, F or words)
    storage: str = DENSE
    low: object = None  # quantized groups: (L, D, C) w1 | a1 | g1 | v1, dense

    @property
    def n_layer(self) -> int:
        return self.vec.shape[0]


def _vectors(block) -> np.ndarray:
    att, ffn = block.att, block.ffn
    v0 = att.v0 if att.v0 is not None else np.zeros_like(att.w0)
    rows = [block.ln1.weight, block.ln1.bias, block.ln2.weight, block.ln2.bias,
            att.x_r, att.x_k, att.x_v, att.x_w, att.x_a, att.x_g, ffn.mix_k,
            att.w0, att.a0, v0, att.k_k, att.k_a, att.ln_x.weight, att.ln_x.bias, np.ravel(att.r_k)]
    return np.stack(rows).astype(np.float32)


def device_blocks(blocks, matrix_dtype) -> LayerGroups:
    """Canonical v7 blocks -> V7Layers in groups (the load-time stacking; matrices in `matrix_dtype`, vectors f32)."""
    host_dtype = np.float16 if matrix_dtype == ti.f16 else np.float32
    att = blocks[-1].att  # any layer past 0 has v1, v2 (a one-layer model has none: Dv 1, all zeros)
    C = att.w0.shape[0]
    Dv = att.v1.shape[0] if att.v1 is not None else 1
    shape = Shape(C=C, H=att.r_k.shape[0], Dw=att.w1.shape[0], Da=att.a1.shape[0], Dg=att.g1.shape[0], Dv=Dv,
                  F=blocks[0].ffn.key.shape[0])

    def v1(block):
        return block.att.v1 if block.att.v1 is not None else np.zeros((Dv, C), np.float32)

    def v2(block):
        return block.att.v2 if block.att.v2 is not None else np.zeros((C, Dv), np.float32)

    def matrices(per_layer_rows, storage):  # each layer's matrices, their rows one after another
        if storage == DENSE:
            return upload([np.concatenate([np.asarray(m, np.float32) for m in rows]) for rows in per_layer_rows],
                          host_dtype)
        return upload([quant.stack_rows(rows) for rows in per_layer_rows], np.uint32)

    def stack(group, storage) -> V7Layers:
        quantizable = [[b.att.receptance, b.att.key, b.att.value, b.att.output, b.ffn.key] for b in group]
        low = [[b.att.w1, b.att.a1, b.att.g1, v1(b)] for b in group]
        return V7Layers(
            shape=shape,
            vec=upload([_vectors(b) for b in group], np.float32),
            mats=matrices([q + w for q, w in zip(quantizable, low)] if storage == DENSE else quantizable, storage),
            second=upload([np.concatenate([b.att.w2, b.att.a2, b.att.g2, v2(b)], axis=1) for b in group], host_dtype),
            ffn_value=matrices([[b.ffn.value] for b in group], storage),
            storage=storage, low=None if storage == DENSE else matrices(low, DENSE),
        )

    return stack_in_groups(blocks, (NV * C, shape.ROWS * C, C * shape.D, C * shape.F), stack,
                           [storage_of(b.ffn.value) for b in blocks])


@ti.func
def projections_task(s: ti.template(), mats: ti.template(), low: ti.template(), slot: ti.i32, sc: ti.template(),
                     tile: ti.template(), storage: ti.template() = DENSE):
    """r, k, v and the first stages tanh(x_w w1ᵀ), x_a a1ᵀ, σ(x_g g1ᵀ), x_v v1ᵀ (ref.v7.time_mix) into sc's PROJ
    and LOW columns; each reads its own mixed input. The r, k, v rows are in `mats` (in `storage`), the first
    stages' in `low` (dense; the same array as mats in a dense group)."""
    T = sc.shape[0]
    n_tiles = (T + tile - 1) // tile
    ti.loop_config(block_dim=GROUP)
    for g in range((3 * s.C + s.D) * n_tiles * lanes.LANES):
        lane, group = g % lanes.LANES, g // lanes.LANES
        o, t0 = group // n_tiles, group % n_tiles * tile
        o, t0 = x64_tasks.cpu_order(o, t0, group, 3 * s.C + s.D, n_tiles, tile, lanes.LANES)  # the CPU's: tile-major
        mix, act = o // s.C, ACT_NONE  # r, k, v: blocks MIX_R, MIX_K, MIX_V
        if o >= 3 * s.C:
            j = o - 3 * s.C
            mix = MIX_V  # the v1 rows
            if j < s.Dw:
                mix, act = MIX_W, ACT_TANH
            elif j < s.Dw + s.Da:
                mix = MIX_A
            elif j < s.Dw + s.Da + s.Dg:
                mix, act = MIX_G, ACT_SIGMOID
        acc = ti.Vector([0.0] * tile)
        if ti.static(storage == DENSE):  # one array: the first stages' rows after the quantizable ones
            row = s.RKV + o if o < 3 * s.C else s.FIRST + o - 3 * s.C
            acc = dot_tile(mats, slot, row, 0, sc, s.MIXED + mix * s.C, s.C, t0, T, lane, tile)
        elif o < 3 * s.C:
            acc = dot_tile(mats, slot, s.RKV + o, 0, sc, s.MIXED + mix * s.C, s.C, t0, T, lane, tile, storage)
        else:
            acc = dot_tile(low, slot, o - 3 * s.C, 0, sc, s.MIXED + mix * s.C, s.C, t0, T, lane, tile)
        emit_tile(acc, sc, s.PROJ + o, t0, T, lane, act, False)


@ti.func
def second_stage_task(s: ti.template(), second: ti.template(), slot: ti.i32, layer: ti.i32, sc: ti.template(),
                      tile: ti.template()):
    """The w, a, g, v second stages of the LOW columns into LORA's four C-wide blocks (v: not in layer 0)."""
    T = sc.shape[0]
    n_tiles = (T + tile - 1) // tile
    ti.loop_config(block_dim=GROUP)
    for g in range(4 * s.C * n_tiles * lanes.LANES):
        lane, group = g % lanes.LANES, g // lanes.LANES
        o, t0 = group // n_tiles, group % n_tiles * tile
        o, t0 = x64_tasks.cpu_order(o, t0, group, 4 * s.C, n_tiles, tile, lanes.LANES)  # the CPU's: tile-major
        part, c = o // s.C, o % s.C
        begin, width = 0, s.Dw
        if part == 1:
            begin, width = s.Dw, s.Da
        elif part == 2:
            begin, width = s.Dw + s.Da, s.Dg
        elif part == 3:
            begin, width = s.Dw + s.Da + s.Dg, s.Dv
        if part < 3 or layer > 0:  # layer 0 has no value residual
            acc = dot_tile(second, slot, c, begin, sc, s.LOW + begin, width, t0, T, lane, tile)
            emit_tile(acc, sc, s.LORA + o, t0, T, lane, ACT_NONE, False)


@ti.func
def prepare_task(s: ti.template(), vec: ti.template(), slot: ti.i32, layer: ti.i32, sc: ti.template()):
    """In place: LORA's w, a blocks -> the decay w and rate a; PROJ's k -> k·(1+(a-1)k_a) and v -> v with the value
    residual (layer 0: V_FIRST = v); KK = normalize(k·k_k) per head. The same lines of ref.v7.time_mix."""
    T, C, N = sc.shape[0], s.C, s.N
    K, V, W, A, VG = s.PROJ + C, s.PROJ + 2 * C, s.LORA, s.LORA + C, s.LORA + 3 * C
    ti.loop_config(block_dim=GROUP)
    for g in range(T * s.H * lanes.LANES):
        lane, th = g % lanes.LANES, g // lanes.LANES
        t, h = th // s.H, th % s.H
        part = 0.0
        for q in range((N + lanes.LANES - 1) // lanes.LANES):
            n = q * lanes.LANES + lane
            if n < N:
                c = h * N + n
                part += (sc[t, K + c] * vec[slot, K_K, c]) ** 2
        norm = ti.max(ti.sqrt(lane_sum(part)), L2_EPS)
        for q in range((N + lanes.LANES - 1) // lanes.LANES):
            n = q * lanes.LANES + lane
            if n < N:
                c = h * N + n
                k = sc[t, K + c]
                a = 1.0 / (1.0 + ti.exp(-(vec[slot, A0, c] + sc[t, A + c])))
                sc[t, W + c] = ti.exp(-DECAY_SCALE / (1.0 + ti.exp(-(vec[slot, W0, c] + sc[t, W + c]))))
                sc[t, A + c] = a
                sc[t, s.KK + c] = k * vec[slot, K_K, c] / norm
                sc[t, K + c] = k * (1.0 + (a - 1.0) * vec[slot, K_A, c])
                v = sc[t, V + c]
                if layer == 0:
                    sc[t, s.V_FIRST + c] = v
                else:
                    gate = 1.0 / (1.0 + ti.exp(-(vec[slot, V0, c] + sc[t, VG + c])))
                    sc[t, V + c] = v + (sc[t, s.V_FIRST + c] - v) * gate


@ti.func
def cell(j: ti.i32, i: ti.i32) -> ti.math.ivec2:
    """Where S's (key j, value i) sits in its last two axes: key-major on a GPU (a warp's threads, one per value
    row, then read neighbouring addresses), value-major on the CPU (a thread's walk over j is contiguous)."""
    at = ti.math.ivec2(i, j)
    if ti.static(lanes.LANES > 1):
        at = ti.math.ivec2(j, i)
    return at


@ti.func
def wkv_task(s: ti.template(), S: ti.template(), layer: ti.i32, plan: ti.template(), sc: ti.template()):
    if ti.static(lanes.LANES == 1):  # the CPU: kernels/x64_v7.py (the state row kept in a local array)
        x64_v7.wkv_task(s, S, layer, plan, sc)
    else:
        lane_wkv_task(s, S, layer, plan, sc)


@ti.func
def lane_wkv_task(s: ti.template(), S: ti.template(), layer: ti.i32, plan: ti.template(), sc: ti.template()):
    """ref.v7.wkv_step over each row's tokens: S <- S diag(w) + (S (-kk))(kk a)ᵀ + v kᵀ; y = S r.

    Thread (b, h, i) owns value row i of head h; `cell` gives the device layout of S.
    """
    N = s.N
    R, K, V, W, A = s.PROJ, s.PROJ + s.C, s.PROJ + 2 * s.C, s.LORA, s.LORA + s.C
    for b, h, i in ti.ndrange(S.shape[0], s.H, N):
        for step in range(plan[LENGTH, b]):
            t = plan[START, b] + step
            removed = 0.0
            for j in range(N):
                at = cell(j, i)
                removed -= S[b, layer, h, at[0], at[1]] * sc[t, s.KK + h * N + j]
            out = 0.0
            v = sc[t, V + h * N + i]
            for j in range(N):
                c, at = h * N + j, cell(j, i)
                new = (S[b, layer, h, at[0], at[1]] * sc[t, W + c] + removed * sc[t, s.KK + c] * sc[t, A + c]
                       + v * sc[t, K + c])
                S[b, layer, h, at[0], at[1]] = new
                out += new * sc[t, R + c]
            sc[t, s.Y + h * N + i] = out


@ti.func
def output_gate_task(s: ti.template(), vec: ti.template(), slot: ti.i32, sc: ti.template()):
    """In place: Y <- (GN(Y) + (Σ_head r k r_k) v) * g, GN with ln_x's affine (ref.v7.time_mix's last line)."""
    T, C, N = sc.shape[0], s.C, s.N
    ti.loop_config(block_dim=GROUP)
    for g in range(T * s.H * lanes.LANES):
        lane, th = g % lanes.LANES, g // lanes.LANES
        t, h = th // s.H, th % s.H
        stats = mean_and_inv(sc, t, s.Y + h * N, N, lane, GN_EPS)
        part = 0.0
        for q in range((N + lanes.LANES - 1) // lanes.LANES):
            n = q * lanes.LANES + lane
            if n < N:
                c = h * N + n
                part += sc[t, s.PROJ + c] * sc[t, s.PROJ + C + c] * vec[slot, R_K, c]
        bonus = lane_sum(part)
        for q in range((N + lanes.LANES - 1) // lanes.LANES):
            n = q * lanes.LANES + lane
            if n < N:
                c = h * N + n
                normed = (sc[t, s.Y + c] - stats[0]) * stats[1] * vec[slot, LNX, c] + vec[slot, LNX + 1, c]
                sc[t, s.Y + c] = (normed + bonus * sc[t, s.PROJ + 2 * C + c]) * sc[t, s.LORA + 2 * C + c]


TASKS = ("shift_mix", "projections", "second_stage", "prepare", "wkv", "output_gate", "output", "ffn_shift_mix",
         "ffn_key", "ffn_value")


@functools.cache
def layer_kernel(s: Shape, tile: int, tasks: tuple = TASKS, storage: str = DENSE):
    """The kernel of one layer (every position of a pass); `tile` positions share each weight read.
    `storage`: the group's matrices (kernels/quant.py); a quantized kernel takes the low-rank rows as one more array.
    `tasks` leaves some out, for profiling only (benchmarks/gpu_bench.py --profile)."""
    linear = x64_tasks.linear_task if lanes.LANES == 1 else linear_task  # the CPU's order of the groups

    @ti.func
    def body(x: ti.template(), vec: ti.template(), mats: ti.template(), low: ti.template(), second: ti.template(),
             ffn_value: ti.template(), att_x: ti.template(), S: ti.template(), ffn_x: ti.template(),
             plan: ti.template(), sc: ti.template(), layer: ti.i32, slot: ti.i32):
        if ti.static("shift_mix" in tasks):
            shift_mix_task(x, vec, slot, LN1, MIX, 6, att_x, layer, plan, LN_EPS, sc, s.MIXED)
        if ti.static("projections" in tasks):
            projections_task(s, mats, low, slot, sc, tile, storage)
        if ti.static("second_stage" in tasks):
            second_stage_task(s, second, slot, layer, sc, tile)
        if ti.static("prepare" in tasks):
            prepare_task(s, vec, slot, layer, sc)
        if ti.static("wkv" in tasks):
            wkv_task(s, S, layer, plan, sc)
        if ti.static("output_gate" in tasks):
            output_gate_task(s, vec, slot, sc)
        if ti.static("output" in tasks):
            linear(mats, slot, s.OUT, s.C, s.C, sc, s.Y, x, 0, ACT_NONE, True, tile, storage=storage)
        if ti.static("ffn_shift_mix" in tasks):
            shift_mix_task(x, vec, slot, LN2, FFN_MIX, 1, ffn_x, layer, plan, LN_EPS, sc, s.MIXED)
        if ti.static("ffn_key" in tasks):
            linear(mats, slot, s.FFN_KEY, s.F, s.C, sc, s.MIXED, sc, s.HIDDEN, ACT_RELU_SQUARED, False, tile,
                   storage=storage)
        if ti.static("ffn_value" in tasks):
            linear(ffn_value, slot, 0, s.C, s.F, sc, s.HIDDEN, x, 0, ACT_NONE, True, tile, storage=storage)

    return layer_launch(body, storage)


def run_blocks(layers: LayerGroups, info, x, state, plan, ws, tile: int, tasks: tuple = TASKS) -> None:
    """Every layer over the pass's positions: one launch each, with its group's weights."""
    scratch = ws.buffer("v7_scratch", (plan.T, layers.shape.WIDTH))
    for i in range(layers.n_layer):
        group, slot = layers.locate(i)
        layer_kernel(layers.shape, tile, tasks, group.storage)(x, *layer_arrays(group), state.att_x, state.wkv,
                                                               state.ffn_x, plan.packed, scratch, i, slot)
