"""RWKV-7 layer kernels. Must match `ai00ref/ref/v7.py` (spec/v7.md) to the tolerances of spec/tolerances.md.

One layer is one kernel launch (`layer_kernel`) of eight tasks in a GPU decode pass (nine otherwise; six in a GPU
decode pass of a dense group, where LN1 and LN2 ride on the matrix tasks that read them: `folded_projections_task`,
kernels/norm_linear.py), each a `ti.func` named after what it mirrors:

task                  must match (ref/v7.py)                              threads
shift_mix_task        layer_norm(ln1), previous_tokens, six lerp_previous  lanes per position (kernels/layer_norms.py)
projections_task      linear: r, k, v; the first stages of w, a, g, v     lanes per (output row, token tile)
second_stage_task     linear: the second stages of w, a, g, v; then the   lanes per (output row, token tile); GPU
                      w, a, kk, k, v lines of time_mix                    batch and prefill: tiled products, then
                                                                          lanes per (position, head)
wkv_gate_task         wkv_step over each row's tokens, group_norm(ln_x)   GPU decode: lanes per (row, head);
                      + bonus, times g (kernels/v7_wkv.py)                else one per (row, head, value row), then
                                                                          lanes per (position, head)
linear_task           linear(·, output); the channel mix's key, value    lanes per (output row, token tile)
shift_mix_task        layer_norm(ln2), previous_tokens, lerp_previous    lanes per position

Weights are stacked by layer (`V7Layers`, built once at load by `device_blocks`, kernels/v7_layout.py, in groups of
layers: see kernels/stacking.py), so one compiled kernel serves every layer. Each task costs a dispatch and a wait
for the one before (BENCHMARKS.md: ~6-15 µs of host time and a dependent phase on the device), so the lines of
time_mix that work per channel ride on the task that produces their inputs.
"""
import functools

import taichi as ti

from ai00ref.ref.common import L2_EPS, LN_EPS
from ai00ref.ref.v7 import DECAY_SCALE
from kernels.common import ACT_NONE, ACT_RELU_SQUARED, ACT_SIGMOID, ACT_TANH
from kernels import gpu_gemm, lanes, norm_linear, x64_tasks
from kernels.lanes import (GROUP, clamped, dot_tile, emit_tile, emit_value, lane_sum, linear_task, row_tile_items,
                           tiles)
from kernels.layer_norms import shift_mix_task, stats_column
from kernels.quant import DENSE
from kernels.stacking import LayerGroups, layer_arrays, layer_launch
from kernels.v7_layout import (A0, FFN_MIX, K_A, K_K, LN1, LN2, LNX, MIX, MIX_A, MIX_G, MIX_K, MIX_R, MIX_V,  # noqa: F401
                               MIX_W, NV, R_K, V0, W0, Shape, V7Layers, device_blocks)
from kernels.v7_wkv import cell, output_gate_task, wkv_gate_task  # noqa: F401


def rkv_route(s: Shape) -> tuple:
    """gpu_gemm's route of the r, k, v rows: each from its mixed block; k to K_RAW, r and v to PROJ."""
    return ((0, s.MIXED + MIX_R * s.C, s.PROJ, ACT_NONE), (s.C, s.MIXED + MIX_K * s.C, s.K_RAW, ACT_NONE),
            (2 * s.C, s.MIXED + MIX_V * s.C, s.PROJ + 2 * s.C, ACT_NONE))


def first_stage_route(s: Shape) -> tuple:
    """gpu_gemm's route of the first stages' rows (w1, a1, g1, v1): into PROJ's columns after r, k, v."""
    starts = (0, s.Dw, s.Dw + s.Da, s.Dw + s.Da + s.Dg)
    parts = ((MIX_W, ACT_TANH), (MIX_A, ACT_NONE), (MIX_G, ACT_SIGMOID), (MIX_V, ACT_NONE))
    return tuple((first, s.MIXED + mix * s.C, s.PROJ + 3 * s.C + first, act) for first, (mix, act) in zip(starts, parts))


@ti.func
def projections_task(s: ti.template(), mats: ti.template(), low: ti.template(), slot: ti.template(),
                     sc: ti.template(), tile: ti.template(), storage: ti.template() = DENSE):
    """r, k, v and the first stages tanh(x_w w1ᵀ), x_a a1ᵀ, σ(x_g g1ᵀ), x_v v1ᵀ (ref.v7.time_mix) into sc's PROJ
    (k: K_RAW) and LOW columns; each reads its own mixed input. The r, k, v rows are in `mats` (in `storage`), the first
    stages' in `low` (dense; the same array as mats in a dense group). Where `gpu_gemm.shape_for` gives the r, k, v
    rows a workgroup shape: a gemm task for them, then the low-rank first stages as a gemm task split over the inputs
    (`gpu_gemm.low_rank_shape`) where their route fits, else by the lanes."""
    if ti.static(gpu_gemm.takes(tile, 3 * s.C, rkv_route(s))):
        gpu_gemm.gemm_task(mats, slot, s.RKV, 3 * s.C, s.C, sc, ti.static(rkv_route(s)), sc, False, storage=storage,
                           shape=ti.static(gpu_gemm.shape_for(tile, 3 * s.C, rkv_route(s))))
        if ti.static(gpu_gemm.takes_low_rank(tile, s.D, s.F, first_stage_route(s))):
            gpu_gemm.gemm_task(low, slot, ti.static(s.FIRST if storage == DENSE else 0), s.D, s.C, sc,
                               ti.static(first_stage_route(s)), sc, False,
                               shape=ti.static(gpu_gemm.low_rank_shape(tile, s.D, s.F, first_stage_route(s))),
                               parts=(sc, s.PARTS))
        else:
            lane_projections_task(s, mats, low, slot, sc, ti.static(lanes.lane_tile(tile)), storage, 3 * s.C)
    else:
        lane_projections_task(s, mats, low, slot, sc, ti.static(lanes.lane_tile(tile)), storage)


@ti.func
def lane_projections_task(s: ti.template(), mats: ti.template(), low: ti.template(), slot: ti.template(),
                          sc: ti.template(), tile: ti.template(), storage: ti.template() = DENSE,
                          first: ti.template() = 0):
    """`projections_task` by lane groups: one per (output row from `first` on, tile of positions)."""
    ti.loop_config(block_dim=GROUP)
    for thread in range(lanes.task_range(row_tile_items(3 * s.C + s.D - first, sc.shape[0], tile))):
        for rnd in range(lanes.task_rounds(thread, row_tile_items(3 * s.C + s.D - first, sc.shape[0], tile))):
            g = lanes.task_item(thread, rnd)
            T = sc.shape[0]
            n_tiles = tiles(T, tile)
            lane, group = g % lanes.LANES, g // lanes.LANES
            o, t0 = group // n_tiles, group % n_tiles * tile
            rows = ti.static(3 * s.C + s.D - first)
            o, t0 = x64_tasks.cpu_order(o, t0, group, rows, n_tiles, tile, lanes.LANES)  # CPU: tile-major
            o += first
            mix, act = projection_route(s, o)
            acc = ti.Vector([0.0] * tile)
            if ti.static(storage == DENSE):  # one array: the first stages' rows after the quantizable ones
                row = s.RKV + o if o < 3 * s.C else s.FIRST + o - 3 * s.C
                acc = dot_tile(mats, slot, row, 0, sc, s.MIXED + mix * s.C, s.C, t0, T, lane, tile)
            elif o < 3 * s.C:
                acc = dot_tile(mats, slot, s.RKV + o, 0, sc, s.MIXED + mix * s.C, s.C, t0, T, lane, tile, storage)
            else:
                acc = dot_tile(low, slot, o - 3 * s.C, 0, sc, s.MIXED + mix * s.C, s.C, t0, T, lane, tile)
            emit_tile(acc, sc, projection_col(s, o), t0, T, lane, act, False)


@ti.func
def projection_route(s: ti.template(), o: ti.i32) -> ti.math.ivec2:
    """(mixed block, activation) of `projections_task`'s output row o: r, k, v read blocks MIX_R, MIX_K, MIX_V; the
    first stages w1 (tanh), a1, g1 (sigmoid), v1 read MIX_W, MIX_A, MIX_G, MIX_V."""
    mix, act = o // s.C, ACT_NONE
    if o >= 3 * s.C:
        j = o - 3 * s.C
        mix = MIX_V  # the v1 rows
        if j < s.Dw:
            mix, act = MIX_W, ACT_TANH
        elif j < s.Dw + s.Da:
            mix = MIX_A
        elif j < s.Dw + s.Da + s.Dg:
            mix, act = MIX_G, ACT_SIGMOID
    return ti.math.ivec2(mix, act)


@ti.func
def projection_col(s: ti.template(), o: ti.i32) -> ti.i32:
    """The scratch column of `projections_task`'s output row o: PROJ + o, but the raw key to K_RAW (second_stage_task
    makes PROJ's k from it)."""
    col = s.PROJ + o
    if s.C <= o < 2 * s.C:
        col = s.K_RAW + o - s.C
    return col


@ti.func
def folded_projections_task(s: ti.template(), x: ti.template(), vec: ti.template(), mats: ti.template(),
                            slot: ti.template(), att_x: ti.template(), layer: ti.template(), plan: ti.template(),
                            sc: ti.template()):
    """`shift_mix_task` (LN1, token shift) and `projections_task` as one task in a GPU decode pass of a dense group
    (kernels/norm_linear.py): each workgroup stages z = LN1(x[t]) and prev - z, and each output row mixes its own
    input as it reads it (`projection_route`'s block: vec row MIX + block). z also goes to MIXED's first block, which
    second_stage_task copies into the state at each row's last position."""
    n_out = ti.static(3 * s.C + s.D)
    ti.loop_config(block_dim=norm_linear.NORM_GROUP)
    for thread in range(lanes.task_range(norm_linear.items(x.shape[0], n_out))):
        for rnd in range(lanes.task_rounds(thread, norm_linear.items(x.shape[0], n_out))):
            tid, t, row_block, o = norm_linear.item(lanes.task_item(thread, rnd), x.shape[0])
            lane = tid % lanes.LANES
            zs = ti.simt.block.SharedArray((s.C,), ti.f32)
            ds = ti.simt.block.SharedArray((s.C,), ti.f32)
            partials = ti.simt.block.SharedArray((ti.static(norm_linear.group_rows()),), ti.f32)
            norm_linear.stage_mixed(x, vec, slot, LN1, None, att_x, layer, plan, LN_EPS, t, s.C, lane, tid, zs, ds,
                                    partials, sc, s.MIXED, row_block == 0)
            if o < n_out:
                mix, act = projection_route(s, o)
                row = s.RKV + o if o < 3 * s.C else s.FIRST + o - 3 * s.C
                total = lane_sum(norm_linear.dot_staged(mats, slot, row, zs, ds, vec, slot, MIX + mix, s.C, lane,
                                                        False))
                if lane == 0:
                    emit_value(total, sc, projection_col(s, o), t, act, False, None, 0)


def second_stage_route(s: Shape) -> tuple:
    """gpu_gemm's route of the second stages, one block of C rows per part p (w, a, g, v) and of its own width:
    `second`'s rows (channel c: row c) from column begin_p on, times LOW's columns begin_p on, into LORA's block p
    (the totals `finish_channels_task` finishes)."""
    widths = (s.Dw, s.Da, s.Dg, s.Dv)
    begins = [sum(widths[:p]) for p in range(4)]
    return tuple((p * s.C, s.LOW + begins[p], s.LORA + p * s.C, ACT_NONE, 0, begins[p], p * s.C, widths[p])
                 for p in range(4))


@ti.func
def second_stage_task(s: ti.template(), vec: ti.template(), second: ti.template(), slot: ti.template(),
                      layer: ti.template(), sc: ti.template(), tile: ti.template(), keep: ti.template() = None):
    """The w, a, g, v second stages of the LOW columns (v: not in layer 0), each channel finished by its lines of
    ref.v7.time_mix (`finish_channel`): LORA's w and a blocks get the decay w and the rate a, PROJ's k and v the key
    and value the WKV uses, KK the unit key per head; g is written as it is. In passes where gpu_gemm takes them,
    a tiled product of the totals into LORA's blocks, then `finish_channels_task`; else `lane_second_stage_task`.
    `keep` (after `folded_projections_task`): channel c's w row also keeps LN1 into the state (`lanes.keep_row`)."""
    if ti.static(not lanes._given(keep) and gpu_gemm.takes(tile, 4 * s.C, second_stage_route(s))):
        gpu_gemm.gemm_task(second, slot, 0, 4 * s.C, ti.static(max(s.Dw, s.Da, s.Dg, s.Dv)), sc,
                           ti.static(second_stage_route(s)), sc, False,
                           shape=ti.static(gpu_gemm.shape_for(tile, 4 * s.C, second_stage_route(s))))
        finish_channels_task(s, vec, slot, layer, sc)
    else:
        lane_second_stage_task(s, vec, second, slot, layer, sc, ti.static(lanes.lane_tile(tile)), keep)


@ti.func
def finish_channels_task(s: ti.template(), vec: ti.template(), slot: ti.template(), layer: ti.template(),
                         sc: ti.template()):
    """`finish_channel` for every channel and position, from the second stages' totals in LORA's blocks: lanes per
    (position, head), which compute the head's key norm once (`lane_second_stage_task` did it per channel)."""
    ti.loop_config(block_dim=GROUP)
    for thread in range(lanes.task_range(sc.shape[0] * s.H * lanes.LANES)):
        for rnd in range(lanes.task_rounds(thread, sc.shape[0] * s.H * lanes.LANES)):
            g = lanes.task_item(thread, rnd)
            lane, th = g % lanes.LANES, g // lanes.LANES
            t, h = th // s.H, th % s.H
            norm = key_norm(s, vec, slot, sc, t, h, lane)
            for q in range((s.N + lanes.LANES - 1) // lanes.LANES):
                n = q * lanes.LANES + lane
                if n < s.N:
                    c = h * s.N + n
                    for part in ti.static(range(4)):
                        finish_channel(s, vec, slot, layer, sc, t, part, c, sc[t, s.LORA + part * s.C + c], norm)


@ti.func
def lane_second_stage_task(s: ti.template(), vec: ti.template(), second: ti.template(), slot: ti.template(),
                           layer: ti.template(), sc: ti.template(), tile: ti.template(), keep: ti.template() = None):
    """`second_stage_task` by lane groups, one per (output row, tile of positions), each channel finished as it is
    written."""
    ti.loop_config(block_dim=GROUP)
    for thread in range(lanes.task_range(row_tile_items(4 * s.C, sc.shape[0], tile))):
        for rnd in range(lanes.task_rounds(thread, row_tile_items(4 * s.C, sc.shape[0], tile))):
            g = lanes.task_item(thread, rnd)
            T = sc.shape[0]
            n_tiles = tiles(T, tile)
            lane, group = g % lanes.LANES, g // lanes.LANES
            o, t0 = group // n_tiles, group % n_tiles * tile
            o, t0 = x64_tasks.cpu_order(o, t0, group, 4 * s.C, n_tiles, tile, lanes.LANES)  # the CPU's: tile-major
            part, c = o // s.C, o % s.C
            if ti.static(lanes._given(keep)):
                if part == 0 and lane == 0:
                    lanes.keep_row(keep, c, t0)
            begin, width = 0, s.Dw
            if part == 1:
                begin, width = s.Dw, s.Da
            elif part == 2:
                begin, width = s.Dw + s.Da, s.Dg
            elif part == 3:
                begin, width = s.Dw + s.Da + s.Dg, s.Dv
            acc = ti.Vector([0.0] * tile)
            if part < 3 or layer > 0:  # layer 0 has no value residual
                acc = dot_tile(second, slot, c, begin, sc, s.LOW + begin, width, t0, T, lane, tile)
            for u in ti.static(range(tile)):
                t = clamped(t0 + u, T)
                norm = 1.0
                if part == 1:  # every lane of the group: the head's |k k_k|
                    norm = key_norm(s, vec, slot, sc, t, c // s.N, lane)
                total = lane_sum(acc[u])
                if lane == 0 and t0 + u < T:
                    finish_channel(s, vec, slot, layer, sc, t, part, c, total, norm)


@ti.func
def key_norm(s: ti.template(), vec: ti.template(), slot: ti.i32, sc: ti.template(), t: ti.i32, h: ti.i32,
             lane: ti.i32) -> ti.f32:
    """max(‖k k_k‖, eps) over head h's channels at position t (ref.common.l2_normalize's divisor), k the raw key."""
    part = 0.0
    for q in range((s.N + lanes.LANES - 1) // lanes.LANES):
        n = q * lanes.LANES + lane
        if n < s.N:
            c = h * s.N + n
            part += (sc[t, s.K_RAW + c] * vec[slot, K_K, c]) ** 2
    return ti.max(ti.sqrt(lane_sum(part)), L2_EPS)


@ti.func
def finish_channel(s: ti.template(), vec: ti.template(), slot: ti.i32, layer: ti.i32, sc: ti.template(), t: ti.i32,
                   part: ti.i32, c: ti.i32, total: ti.f32, norm: ti.f32):
    """Channel c of position t, from its second stage `total` (the lines of ref.v7.time_mix between the projections
    and the WKV): 0 w = exp(-e^-0.5 σ(w0 + ·)); 1 a = σ(a0 + ·), kk = k k_k / norm, k ← k (1 + (a - 1) k_a);
    2 g; 3 v ← v + (v_first - v) σ(v0 + ·), in layer 0 v_first ← v."""
    C = s.C
    if part == 0:
        sc[t, s.LORA + c] = ti.exp(-DECAY_SCALE / (1.0 + ti.exp(-(vec[slot, W0, c] + total))))
    elif part == 1:
        a = 1.0 / (1.0 + ti.exp(-(vec[slot, A0, c] + total)))
        k = sc[t, s.K_RAW + c]
        sc[t, s.LORA + C + c] = a
        sc[t, s.KK + c] = k * vec[slot, K_K, c] / norm
        sc[t, s.PROJ + C + c] = k * (1.0 + (a - 1.0) * vec[slot, K_A, c])
    elif part == 2:
        sc[t, s.LORA + 2 * C + c] = total
    else:
        v = sc[t, s.PROJ + 2 * C + c]
        if layer == 0:
            sc[t, s.V_FIRST + c] = v
        else:
            gate = 1.0 / (1.0 + ti.exp(-(vec[slot, V0, c] + total)))
            sc[t, s.PROJ + 2 * C + c] = v + (sc[t, s.V_FIRST + c] - v) * gate


TASKS = ("shift_mix", "projections", "second_stage", "wkv_gate", "output", "ffn_shift_mix", "ffn_key", "ffn_value")


@functools.cache
def layer_kernel(s: Shape, tile: int, tasks: tuple = TASKS, storage: str = DENSE):
    """The kernel of one layer (every position of a pass); `tile` positions share each weight read.
    `storage`: the group's matrices (kernels/quant.py); a quantized kernel takes the low-rank rows as one more array.
    `tasks` leaves some out, for profiling only (benchmarks/gpu_bench.py --profile)."""
    linear = x64_tasks.linear_task if lanes.LANES == 1 else linear_task  # the CPU's order of the groups
    folded = norm_linear.takes(tile) and storage == DENSE  # a GPU decode pass of a dense group: LN1, LN2 folded
    stats_col = stats_column(s.STATS, tile)  # where shift_mix_task keeps the LayerNorm statistics, if it does

    @ti.func
    def body(x: ti.template(), vec: ti.template(), mats: ti.template(), low: ti.template(), second: ti.template(),
             ffn_value: ti.template(), att_x: ti.template(), S: ti.template(), ffn_x: ti.template(),
             plan: ti.template(), sc: ti.template(), layer: ti.template(), slot: ti.template()):
        if ti.static("shift_mix" in tasks and not folded):
            shift_mix_task(x, vec, slot, LN1, MIX, 6, att_x, layer, plan, LN_EPS, sc, s.MIXED, stats_col)
        if ti.static("projections" in tasks and folded):  # LN1 and the mixes in the same task
            folded_projections_task(s, x, vec, mats, slot, att_x, layer, plan, sc)
        elif ti.static("projections" in tasks):
            projections_task(s, mats, low, slot, sc, tile, storage)
        if ti.static("second_stage" in tasks and folded):  # and LN1 of each row's last position into the state
            second_stage_task(s, vec, second, slot, layer, sc, tile, (sc, s.MIXED, att_x, layer, plan))
        elif ti.static("second_stage" in tasks):
            second_stage_task(s, vec, second, slot, layer, sc, tile)
        if ti.static("wkv_gate" in tasks):
            wkv_gate_task(s, S, vec, slot, layer, plan, sc, tile)
        if ti.static("output" in tasks):
            linear(mats, slot, s.OUT, s.C, s.C, sc, s.Y, x, 0, ACT_NONE, True, tile, storage=storage,
                   parts=(sc, s.SPLITS), room=s.SPLIT_ROOM)
        if ti.static("ffn_shift_mix" in tasks and not folded):
            shift_mix_task(x, vec, slot, LN2, FFN_MIX, 1, ffn_x, layer, plan, LN_EPS, sc, s.MIXED, stats_col)
        if ti.static("ffn_key" in tasks and folded):  # LN2 and its mix in the same task (kernels/norm_linear.py)
            norm_linear.norm_mix_linear_task(x, vec, slot, LN2, FFN_MIX, ffn_x, layer, plan, LN_EPS, mats, s.FFN_KEY,
                                             s.F, s.C, sc, s.HIDDEN, ACT_RELU_SQUARED, sc, s.MIXED)
        elif ti.static("ffn_key" in tasks):
            linear(mats, slot, s.FFN_KEY, s.F, s.C, sc, s.MIXED, sc, s.HIDDEN, ACT_RELU_SQUARED, False, tile,
                   storage=storage)
        if ti.static("ffn_value" in tasks and folded):  # and LN2 of each row's last position into the state
            linear(ffn_value, slot, 0, s.C, s.F, sc, s.HIDDEN, x, 0, ACT_NONE, True, tile,
                   keep=(sc, s.MIXED, ffn_x, layer, plan))
        elif ti.static("ffn_value" in tasks):
            linear(ffn_value, slot, 0, s.C, s.F, sc, s.HIDDEN, x, 0, ACT_NONE, True, tile, storage=storage,
                   parts=(sc, s.SPLITS), room=s.SPLIT_ROOM)

    return layer_launch(body, storage)


def run_blocks(layers: LayerGroups, info, x, state, plan, ws, tile: int, tasks: tuple = TASKS) -> None:
    """Every layer over the pass's positions: one launch each, with its group's weights."""
    scratch = ws.buffer("v7_scratch", (plan.T, layers.shape.WIDTH))
    for i in range(layers.n_layer):
        group, slot = layers.locate(i)
        layer_kernel(layers.shape, tile, tasks, group.storage)(x, *layer_arrays(group), state.att_x, state.wkv,
                                                               state.ffn_x, plan.packed, scratch, i, slot)
