"""RWKV-6 layer kernels, and RWKV-5's (kernels/v5.py). Must match `ai00ref/ref/v6.py` and `ai00ref/ref/v5.py`
(spec/v6.md, spec/v5.md) to the tolerances of spec/tolerances.md.

One layer is one kernel launch (`layer_kernel`) of twelve tasks (`TASKS`; nine in a GPU decode pass, where the decay
rides on the WKV task, `head_decays`; seven in one of a dense group, where LN1 and LN2 ride on the tasks after them:
`folded_maa_task`, `folded_ffn_in_task`, kernels/norm_linear.py), each a `ti.func` (the GPU decode pass's own tasks
are in kernels/v6_decode.py):

task            ti.func            must match (ref/v6.py)                                threads: lanes per
shift_mix       shift_mix_task     layer_norm(ln1), previous_tokens, token_shift_mixes'  position (kernels/layer_norms.py)
                                   xxx and x + (prev-x)·maa_s; keeps prev - x
maa_lora        linear_task        token_shift_mixes: tanh(xxx W1ᵀ)                      (output row, token tile)
data_mix        data_mix_task      token_shift_mixes: x_s += (prev-x)·(lora_s W2_sᵀ)     (output row, token tile)
                (GPU batch and prefill: data_mix_products, a tiled product)
projections     projections_task   time_mix: r, k, v, gate; decay: tanh(x_w Wd1ᵀ)        (output row, token tile)
decay           decay_task         decay: exp(-exp(time_decay + (·) Wd2ᵀ))               (channel, token tile)
                (GPU batch and prefill: decay_products, a tiled product and decay_finish_task)
wkv             wkv_task           ref.v5.wkv_step over each row's tokens                one thread per (row, head, i)
                (GPU prefill: lane_wkv_task)                                             lanes per (row, head, i)
output_gate     output_gate_task   time_mix: group_norm(ln_x) · silu(gate)               (position, head)
(GPU decode: the two as one task, wkv_gate_task, lanes per (row, head))
output          linear_task        time_mix: linear(·, output), added to x               (output row, token tile)
ffn_shift_mix   shift_mix_task     channel_mix: layer_norm(ln2), previous_tokens, lerps  position
ffn_key         linear_task        channel_mix: relu²(x_k W_kᵀ)                          (output row, token tile)
ffn_receptance  linear_task        channel_mix: σ(x_r W_rᵀ)                              (output row, token tile)
(GPU decode: the two as one task, ffn_in_task, lanes per (output row, position))
ffn_value       linear_task        channel_mix: x += r · (k W_vᵀ), r as linear_task's gate (output row, token tile)

RWKV-5 is this layer without the data-dependent parts (`Shape.data_dependent` false: no maa LoRA, no data_mix,
no decay task; the WKV reads the static decay), with v5's lerp_current mixes stored as 1 - mix at load
(x·m + prev·(1-m) = x + (prev-x)·(1-m)), and, for v5.0, without the gate (`Shape.gated`).

Weights are stacked by layer (`V6Layers`, built once at load by `device_blocks` in kernels/v6_layout.py, in groups
of layers: see kernels/stacking.py), so one compiled kernel serves every layer. The WKV state keeps the reference's
layout S[b, l, h, key j, value i] on every arch: the threads of a warp, one per value channel i, read neighbouring
addresses at each key j.

In GPU passes of gpu_gemm.BATCH_TILE and up, the matrix products (and data_mix) are tiled products
(kernels/gpu_gemm.py); the low-rank ones split over their inputs (`lanes.low_rank_task`).
"""
import functools
import math

import taichi as ti

from ai00ref.ref.common import GN_EPS, LN_EPS
from kernels import gpu_gemm, lanes, norm_linear, wkv_lanes
from kernels.common import ACT_NONE, ACT_RELU_SQUARED, ACT_SIGMOID, ACT_TANH
from kernels.lanes import (GROUP, LENGTH, START, dot_tile, emit_tile, lane_sum, linear_task,
                           row_tile_item, row_tile_items)
from kernels.layer_norms import mean_and_inv, shift_mix_task, stats_column
from kernels.quant import DENSE
from kernels.stacking import LayerGroups, layer_arrays, layer_launch
from kernels.v6_decode import (decay_at, ffn_in_task, folded_ffn_in_task, folded_maa_task, gate_channel,
                               wkv_gate_task)
from kernels.v6_layout import BONUS, DECAY, FFN_MIX, LN1, LN2, MIX, MIX_R, MIX_W, Shape
from kernels.v6_layout import device_blocks  # noqa: F401  (the engine calls module.device_blocks)


@ti.func
def data_mix_task(s: ti.template(), vec: ti.template(), second: ti.template(), slot: ti.template(),
                  sc: ti.template(), tile: ti.template(), keep: ti.template() = None):
    """The rest of ref.v6.token_shift_mixes, in place: mixed block 1 + m (x + (prev-x)·maa_m, from shift_mix_task)
    += (prev - x) · (lora_m W2_mᵀ), for m in r, k, v, g, w; lora_m is LORA's block m, prev - x is DELTA. With `keep`
    (after `folded_maa_task`, tile 1), the block is written whole from z (MIXED's first block) and DELTA,
    z + (prev-z)·maa_m + (prev-z)·(lora_m W2_mᵀ), in that order, and channel c's r row keeps z into the state."""
    ti.loop_config(block_dim=GROUP)
    for thread in range(lanes.task_range(row_tile_items(5 * s.C, sc.shape[0], tile))):
        for rnd in range(lanes.task_rounds(thread, row_tile_items(5 * s.C, sc.shape[0], tile))):
            T = sc.shape[0]
            lane, o, t0 = row_tile_item(lanes.task_item(thread, rnd), T, tile)
            m, c = o // s.C, o % s.C
            acc = dot_tile(second, slot, c, m * s.Dm, sc, s.LORA + m * s.Dm, s.Dm, t0, T, lane, tile)
            col = s.MIXED + (MIX_R + m) * s.C + c
            if ti.static(lanes._given(keep)):
                if m == 0 and lane == 0:
                    lanes.keep_row(keep, c, t0)
                total = lane_sum(acc[0])
                if lane == 0:
                    delta = sc[t0, s.DELTA + c]
                    sc[t0, col] = sc[t0, s.MIXED + c] + delta * vec[slot, MIX + MIX_R + m, c] + total * delta
            else:
                emit_tile(acc, sc, col, t0, T, lane, ACT_NONE, True, sc, s.DELTA + c)


@ti.func
def data_mix_products(s: ti.template(), second: ti.template(), slot: ti.template(), sc: ti.template(),
                      tile: ti.template()):
    """`data_mix_task` (without `keep`) as one tiled product (kernels/gpu_gemm.py) of five route blocks: mixed block
    1 + m += (lora_m W2_mᵀ) · DELTA, W2_m being columns m·Dm of `second`'s rows."""
    gpu_gemm.gemm_task(second, slot, 0, 5 * s.C, s.Dm, sc, ti.static(data_mix_route(s)), sc, True, sc, s.DELTA,
                       shape=ti.static(gpu_gemm.shape_for(tile, 5 * s.C, data_mix_route(s))))


def data_mix_route(s: Shape) -> tuple:
    """gpu_gemm's route of the data mix: block m reads LORA's block m and columns m·Dm of the W2 rows (rows 0 on),
    adds into mixed block 1 + m, gated by DELTA (gate columns 0 on)."""
    return tuple((m * s.C, s.LORA + m * s.Dm, s.MIXED + (MIX_R + m) * s.C, ACT_NONE, 0, m * s.Dm, 0) for m in range(5))


def low_base(s: Shape, storage: str) -> int:
    """Where the low-rank rows start: after the Q_ROWS in a dense group's mats, at 0 of a quantized group's low."""
    return s.Q_ROWS if storage == DENSE else 0


def projection_route(s: Shape) -> tuple:
    """gpu_gemm's route of the r, k, v (, gate) rows: row block m reads mixed block MIX_R + m, writes PROJ's."""
    return tuple((m * s.C, s.MIXED + (MIX_R + m) * s.C, s.PROJ + m * s.C, ACT_NONE) for m in range(s.PROJ_ROWS // s.C))


@ti.func
def projections_task(s: ti.template(), mats: ti.template(), low: ti.template(), slot: ti.template(),
                     sc: ti.template(), tile: ti.template(), storage: ti.template()):
    """r, k, v, gate = x_s W_sᵀ (ref.v6.time_mix, ref.v5.time_mix) and the decay LoRA's first stage
    tanh(x_w Wd1ᵀ) (ref.v6.decay) into PROJ's columns; row block m reads mixed block 1 + m. The r, k, v, gate rows
    are in `mats` (in `storage`), decay_w1's in `low` (dense; the same array as mats in a dense group).
    Where `gpu_gemm.shape_for` gives the projections a workgroup shape: a gemm task, and decay_w1's rows (not next to
    the others) as a low-rank product (`lanes.low_rank_task`)."""
    if ti.static(gpu_gemm.takes(tile, s.PROJ_ROWS, projection_route(s))):
        gpu_gemm.gemm_task(mats, slot, 0, s.PROJ_ROWS, s.C, sc, ti.static(projection_route(s)), sc, False,
                           storage=storage, shape=ti.static(gpu_gemm.shape_for(tile, s.PROJ_ROWS, projection_route(s))))
        if ti.static(s.data_dependent):
            lanes.low_rank_task(low, slot, ti.static(low_base(s, storage) + s.DECAY_FIRST), s.Dd, s.C, sc,
                                s.MIXED + MIX_W * s.C, sc, s.PROJ + s.PROJ_ROWS, ACT_TANH, tile, (sc, s.PARTS), s.F)
    else:
        lane_projections_task(s, mats, low, slot, sc, ti.static(lanes.lane_tile(tile)), storage)


@ti.func
def lane_projections_task(s: ti.template(), mats: ti.template(), low: ti.template(), slot: ti.template(),
                          sc: ti.template(), tile: ti.template(), storage: ti.template()):
    """`projections_task` by lane groups: one per (output row, tile of positions)."""
    ti.loop_config(block_dim=GROUP)
    for thread in range(lanes.task_range(row_tile_items(s.N_PROJ, sc.shape[0], tile))):
        for rnd in range(lanes.task_rounds(thread, row_tile_items(s.N_PROJ, sc.shape[0], tile))):
            T = sc.shape[0]
            lane, o, t0 = row_tile_item(lanes.task_item(thread, rnd), T, tile)
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
                acc = dot_tile(low, slot, s.DECAY_FIRST + o - s.PROJ_ROWS, 0, sc, s.MIXED + mix * s.C, s.C, t0, T,
                               lane, tile)
            emit_tile(acc, sc, s.PROJ + o, t0, T, lane, act, False)


@ti.func
def decay_task(s: ti.template(), vec: ti.template(), second: ti.template(), slot: ti.template(), sc: ti.template(),
               tile: ti.template()):
    """ref.v6.decay's second stage: W = exp(-exp(time_decay + DECAY_LOW Wd2ᵀ)), per position and channel."""
    ti.loop_config(block_dim=GROUP)
    for thread in range(lanes.task_range(row_tile_items(s.C, sc.shape[0], tile))):
        for rnd in range(lanes.task_rounds(thread, row_tile_items(s.C, sc.shape[0], tile))):
            T = sc.shape[0]
            lane, c, t0 = row_tile_item(lanes.task_item(thread, rnd), T, tile)
            acc = dot_tile(second, slot, c, s.DECAY_SECOND, sc, s.DECAY_LOW, s.Dd, t0, T, lane, tile)
            for u in ti.static(range(tile)):
                lora = lane_sum(acc[u])
                if lane == 0 and t0 + u < T:
                    sc[t0 + u, s.W + c] = ti.exp(-ti.exp(vec[slot, DECAY, c] + lora))


def decay_route(s: Shape) -> tuple:
    """gpu_gemm's route of the decay LoRA's second stage: DECAY_LOW's Dd columns times decay_w2's rows (`second`'s
    columns DECAY_SECOND on) into W's columns, the exponent's LoRA term that `decay_finish_task` completes."""
    return ((0, s.DECAY_LOW, s.W, ACT_NONE, 0, s.DECAY_SECOND),)


@ti.func
def decay_products(s: ti.template(), vec: ti.template(), second: ti.template(), slot: ti.template(),
                   sc: ti.template(), tile: ti.template()):
    """`decay_task` as a tiled product (kernels/gpu_gemm.py) and an elementwise task: its lanes summed Dd = 64
    terms per (channel, position), a subgroup sum each (62 µs a layer in a 256-token chunk on the H100)."""
    gpu_gemm.gemm_task(second, slot, 0, s.C, s.Dd, sc, ti.static(decay_route(s)), sc, False,
                       shape=ti.static(gpu_gemm.shape_for(tile, s.C, decay_route(s))))
    decay_finish_task(s, vec, slot, sc)


@ti.func
def decay_finish_task(s: ti.template(), vec: ti.template(), slot: ti.template(), sc: ti.template()):
    """In place, per position and channel: W = exp(-exp(time_decay + W)), W holding the LoRA term."""
    ti.loop_config(block_dim=GROUP)
    for thread in range(lanes.task_range(sc.shape[0] * s.C)):
        for rnd in range(lanes.task_rounds(thread, sc.shape[0] * s.C)):
            e = lanes.task_item(thread, rnd)
            t, c = e // s.C, e % s.C
            sc[t, s.W + c] = ti.exp(-ti.exp(vec[slot, DECAY, c] + sc[t, s.W + c]))


@ti.func
def wkv_task(s: ti.template(), vec: ti.template(), S: ti.template(), slot: ti.template(), layer: ti.template(),
             plan: ti.template(), sc: ti.template()):
    """ref.v5.wkv_step over each row's tokens, u the bonus and w the decay:

    y[i] = Σ_j r[j]·(u[j]·k[j]·v[i] + S[j,i]);   S[j,i] <- k[j]·v[i] + w[j]·S[j,i]

    Thread (b, h, i) owns value column i of head h: S[b, layer, h, :, i]. The keys go wkv_lanes.KEYS_AT_ONCE at a
    time, their loads issued together before their sums (one key at a time, each waiting on its loads, a batch-32
    pass's WKV took 33.1 µs a layer on the H100); the sums keep the reference's order.
    """
    ti.loop_config(block_dim=GROUP)
    N = ti.static(s.N)
    U = ti.static(math.gcd(N, wkv_lanes.KEYS_AT_ONCE))
    for thread in range(lanes.task_range(S.shape[0] * s.H * N)):
        for rnd in range(lanes.task_rounds(thread, S.shape[0] * s.H * N)):
            g = lanes.task_item(thread, rnd)
            b, h, i = g // (s.H * N), g // N % s.H, g % N
            R, K, V = s.PROJ, s.PROJ + s.C, s.PROJ + 2 * s.C
            for step in range(plan[LENGTH, b]):
                t = plan[START, b] + step
                v = sc[t, V + h * N + i]
                out = 0.0
                for j0 in range(N // U):
                    c0 = h * N + j0 * U
                    old = ti.Vector([S[b, layer, h, j0 * U + u, i] for u in ti.static(range(U))])
                    r = ti.Vector([sc[t, R + c0 + u] for u in ti.static(range(U))])
                    kv = ti.Vector([sc[t, K + c0 + u] for u in ti.static(range(U))]) * v
                    bonus = ti.Vector([vec[slot, BONUS, c0 + u] for u in ti.static(range(U))])
                    w = ti.Vector([decay_at(s, vec, slot, sc, t, c0 + u) for u in ti.static(range(U))])
                    for u in ti.static(range(U)):
                        out += r[u] * (bonus[u] * kv[u] + old[u])
                        S[b, layer, h, j0 * U + u, i] = kv[u] + w[u] * old[u]
                sc[t, s.Y + h * N + i] = out


@ti.func
def wkv_inputs(s: ti.template(), vec: ti.template(), slot: ti.template(), sc: ti.template(), t: ti.i32, h: ti.i32,
               i: ti.i32, keys: ti.template()):
    """Position t's inputs to `lane_wkv_task` for value column i of head h and a lane's `keys`: r, k and the decay
    w of each key, and v[i]."""
    N = ti.static(s.N)
    R, K, V = s.PROJ, s.PROJ + s.C, s.PROJ + 2 * s.C
    r = ti.Vector([sc[t, R + h * N + keys[m]] for m in ti.static(range(keys.n))])
    k = ti.Vector([sc[t, K + h * N + keys[m]] for m in ti.static(range(keys.n))])
    w = ti.Vector([decay_at(s, vec, slot, sc, t, h * N + keys[m]) for m in ti.static(range(keys.n))])
    return r, k, w, sc[t, V + h * N + i]


@ti.func
def lane_wkv_task(s: ti.template(), vec: ti.template(), S: ti.template(), slot: ti.template(), layer: ti.template(),
                  plan: ti.template(), sc: ti.template()):
    """`wkv_task` on a GPU, for passes of more than one position: lane group (b, h, i) owns value column i of head h,
    lane `lane` its keys j = m·LANES + lane, kept in registers over the row's tokens (loaded before the first,
    stored after the last). A token's y[i] is a subgroup sum of the lanes' shares. `wkv_task`'s single thread per
    column loaded and stored S at every key (each load waiting for the store before it), and its 2048 threads (1.6B
    shape, one row) left most of the GPU idle: 30 % of a prefill chunk's time (BENCHMARKS.md). The sum over keys
    is a tree instead of a chain: spec/tolerances.md's WKV bound.
    Each step loads the next step's inputs (`wkv_lanes.ahead`) and the outputs wait in registers, LANES steps at a
    time (`wkv_lanes.keep_output`, `store_outputs`): the arithmetic is `wkv_task`'s, in its order."""
    N = ti.static(s.N)
    M = ti.static((s.N + lanes.LANES - 1) // lanes.LANES)  # keys per lane
    ti.loop_config(block_dim=GROUP)
    for thread in range(lanes.task_range(S.shape[0] * s.H * N * lanes.LANES)):
        for rnd in range(lanes.task_rounds(thread, S.shape[0] * s.H * N * lanes.LANES)):
            lane, b, h, i = wkv_lanes.value_column_item(lanes.task_item(thread, rnd), s.H, N)
            start, length, T = plan[START, b], plan[LENGTH, b], sc.shape[0]
            keys = wkv_lanes.lane_keys(N, lane)
            state = ti.Vector([S[b, layer, h, keys[m], i] for m in ti.static(range(M))])
            u = ti.Vector([vec[slot, BONUS, h * N + keys[m]] for m in ti.static(range(M))])
            r, k, w, v = wkv_inputs(s, vec, slot, sc, ti.min(start, T - 1), h, i, keys)
            kept = 0.0
            for step in range(length):
                r_now, k_now, w_now, v_now = r, k, w, v
                r, k, w, v = wkv_inputs(s, vec, slot, sc, wkv_lanes.ahead(start, step, length, T), h, i, keys)
                part = 0.0
                for m in ti.static(range(M)):
                    kv = k_now[m] * v_now
                    if m * lanes.LANES + lane < N:
                        part += r_now[m] * (u[m] * kv + state[m])
                    state[m] = kv + w_now[m] * state[m]
                kept = wkv_lanes.keep_output(kept, lane_sum(part), step, lane)
                wkv_lanes.store_outputs(sc, s.Y + h * N + i, start, step, length, lane, kept)
            for m in ti.static(range(M)):
                if m * lanes.LANES + lane < N:
                    S[b, layer, h, keys[m], i] = state[m]


@ti.func
def output_gate_task(s: ti.template(), vec: ti.template(), slot: ti.template(), sc: ti.template()):
    """In place: Y <- group_norm(Y) with ln_x's affine, times silu(gate) when gated (the last line of ref.v6.time_mix
    and ref.v5.time_mix)."""
    ti.loop_config(block_dim=GROUP)
    for thread in range(lanes.task_range(sc.shape[0] * s.H * lanes.LANES)):
        for rnd in range(lanes.task_rounds(thread, sc.shape[0] * s.H * lanes.LANES)):
            g = lanes.task_item(thread, rnd)
            N = s.N
            lane, th = g % lanes.LANES, g // lanes.LANES
            t, h = th // s.H, th % s.H
            stats = mean_and_inv(sc, t, s.Y + h * N, N, lane, GN_EPS)
            for q in range((N + lanes.LANES - 1) // lanes.LANES):
                n = q * lanes.LANES + lane
                if n < N:
                    gate_channel(s, vec, slot, sc, t, h * N + n, sc[t, s.Y + h * N + n], stats)


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
    # a GPU decode pass: the WKV and the gate as one task (wkv_gate_task, lanes per head); a pass of PASS_TILE: lanes
    # per value column (lane_wkv_task); else a thread per value column (wkv_task); then the gate over positions
    lane_tile = lanes.lane_tile(tile)  # the lane tasks' tile; the matrix tasks take `tile` (kernels/gpu_gemm.py)
    stats_col = stats_column(s.STATS, tile)  # where shift_mix_task keeps the LayerNorm statistics, if it does
    fused = tile == 1 and lanes.LANES > 1 and "wkv" in tasks and "output_gate" in tasks
    ffn_fused = tile == 1 and lanes.LANES > 1 and "ffn_key" in tasks and "ffn_receptance" in tasks  # ffn_in_task
    ffn_folded = ffn_fused and "ffn_shift_mix" in tasks and norm_linear.takes(tile)  # and LN2 in it too
    att_folded = v6 and norm_linear.takes(tile) and {"shift_mix", "maa_lora", "data_mix"} <= set(tasks)
    decay_folded = v6 and fused and "decay" in tasks  # decay_task's work inside wkv_gate_task (head_decays)
    prefill_wkv = lanes.LANES > 1 and tile >= gpu_gemm.PASS_TILE  # lane_wkv_task; else a thread per value column

    @ti.func
    def body(x: ti.template(), vec: ti.template(), mats: ti.template(), low: ti.template(), second: ti.template(),
             ffn_value: ti.template(), att_x: ti.template(), S: ti.template(), ffn_x: ti.template(),
             plan: ti.template(), sc: ti.template(), layer: ti.template(), slot: ti.template()):
        if ti.static("shift_mix" in tasks and v6 and not att_folded):
            shift_mix_task(x, vec, slot, LN1, MIX, 6, att_x, layer, plan, LN_EPS, sc, s.MIXED, stats_col, True)
        if ti.static("shift_mix" in tasks and not v6):
            shift_mix_task(x, vec, slot, LN1, MIX + MIX_R, n_static, att_x, layer, plan, LN_EPS, sc,
                           s.MIXED + MIX_R * s.C, stats_col)
        if ti.static("maa_lora" in tasks and att_folded):  # LN1 and the maa mix in the same task
            folded_maa_task(s, x, vec, low, slot, low_at, att_x, layer, plan, sc)
        elif ti.static("maa_lora" in tasks and v6):
            lanes.low_rank_task(low, slot, low_at + s.MAA_FIRST, 5 * s.Dm, s.C, sc, s.MIXED, sc, s.LORA, ACT_TANH,
                                tile, (sc, s.PARTS), s.F)
        if ti.static("data_mix" in tasks and att_folded):  # the five mixes whole, and LN1 into the state
            data_mix_task(s, vec, second, slot, sc, lane_tile, (sc, s.MIXED, att_x, layer, plan))
        elif ti.static("data_mix" in tasks and v6 and gpu_gemm.takes(tile, 5 * s.C, data_mix_route(s))):
            data_mix_products(s, second, slot, sc, tile)
        elif ti.static("data_mix" in tasks and v6):
            data_mix_task(s, vec, second, slot, sc, lane_tile)
        if ti.static("projections" in tasks):
            projections_task(s, mats, low, slot, sc, tile, storage)
        if ti.static("decay" in tasks and v6 and not decay_folded and gpu_gemm.takes(tile, s.C, decay_route(s))):
            decay_products(s, vec, second, slot, sc, tile)
        elif ti.static("decay" in tasks and v6 and not decay_folded):
            decay_task(s, vec, second, slot, sc, lane_tile)
        if ti.static(fused and decay_folded):  # the decays made inside the WKV task
            wkv_gate_task(s, vec, S, slot, layer, plan, sc, second)
        elif ti.static(fused):
            wkv_gate_task(s, vec, S, slot, layer, plan, sc)
        if ti.static("wkv" in tasks and not fused and prefill_wkv):
            lane_wkv_task(s, vec, S, slot, layer, plan, sc)
        if ti.static("wkv" in tasks and not fused and not prefill_wkv):
            wkv_task(s, vec, S, slot, layer, plan, sc)
        if ti.static("output_gate" in tasks and not fused):
            output_gate_task(s, vec, slot, sc)
        if ti.static("output" in tasks):
            linear_task(mats, slot, s.OUT, s.C, s.C, sc, s.Y, x, 0, ACT_NONE, True, tile, storage=storage,
                        parts=(sc, s.SPLITS), room=s.SPLIT_ROOM)
        if ti.static("ffn_shift_mix" in tasks and not ffn_folded):
            shift_mix_task(x, vec, slot, LN2, FFN_MIX, 2, ffn_x, layer, plan, LN_EPS, sc, s.MIXED, stats_col)
        if ti.static(ffn_folded):  # LN2 and the mixes in the same task (kernels/norm_linear.py)
            folded_ffn_in_task(s, x, vec, mats, slot, ffn_x, layer, plan, sc, storage)
        elif ti.static(ffn_fused):
            ffn_in_task(s, mats, slot, sc, storage)
        if ti.static("ffn_key" in tasks and not ffn_fused):
            linear_task(mats, slot, s.FFN_KEY, s.F, s.C, sc, s.MIXED, sc, s.HIDDEN, ACT_RELU_SQUARED, False, tile,
                        storage=storage)
        if ti.static("ffn_receptance" in tasks and not ffn_fused):
            linear_task(mats, slot, s.FFN_RECEPTANCE, s.C, s.C, sc, s.MIXED + s.C, sc, s.FFN_R, ACT_SIGMOID, False,
                        tile, storage=storage, parts=(sc, s.SPLITS), room=s.SPLIT_ROOM)
        if ti.static("ffn_value" in tasks and ffn_folded):  # and LN2 of each row's last position into the state
            linear_task(ffn_value, slot, 0, s.C, s.F, sc, s.HIDDEN, x, 0, ACT_NONE, True, tile, sc, s.FFN_R, storage,
                        (sc, s.MIXED, ffn_x, layer, plan))
        elif ti.static("ffn_value" in tasks):
            linear_task(ffn_value, slot, 0, s.C, s.F, sc, s.HIDDEN, x, 0, ACT_NONE, True, tile, sc, s.FFN_R, storage,
                        parts=(sc, s.SPLITS), room=s.SPLIT_ROOM)

    return layer_launch(body, storage)


def run_blocks(layers: LayerGroups, info, x, state, plan, ws, tile: int, tasks: tuple = TASKS) -> None:
    """Every layer over the pass's positions: one launch each, with its group's weights."""
    scratch = ws.buffer("v6_scratch", (plan.T, layers.shape.WIDTH))
    for i in range(layers.n_layer):
        group, slot = layers.locate(i)
        layer_kernel(layers.shape, tile, tasks, group.storage)(x, *layer_arrays(group), state.att_x, state.wkv,
                                                               state.ffn_x, plan.packed, scratch, i, slot)
