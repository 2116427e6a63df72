"""RWKV-6's (and RWKV-5's) decode-pass tasks on a GPU, the middle and ends of kernels/v6.py's layer kernel: the WKV
with its output gate as one task per head (`wkv_gate_task`, with v6's decays made inside it: `head_decays`), the
channel mix's key and receptance as one task (`ffn_in_task`), and the tasks that fold a LayerNorm in
(`folded_maa_task`, `folded_ffn_in_task`: kernels/norm_linear.py). Must match ref.v6 and ref.v5 (spec/v6.md,
spec/v5.md) to the tolerances of spec/tolerances.md; kernels/v6.py holds the other tasks and the layer kernel.
"""
import taichi as ti

from ai00ref.ref.common import GN_EPS, LN_EPS
from kernels import gpu_rows, lanes, norm_linear, wkv_lanes
from kernels.common import ACT_RELU_SQUARED, ACT_SIGMOID, ACT_TANH
from kernels.quant import DENSE
from kernels.lanes import (GROUP, LENGTH, START, dot_tile, emit_tile, emit_value, lane_sum, row_tile_item,
                           row_tile_items)
from kernels.v6_layout import BONUS, DECAY, FFN_MIX, LN1, LN2, LNX, MIX


@ti.func
def folded_maa_task(s: ti.template(), x: ti.template(), vec: ti.template(), low: ti.template(), slot: ti.template(),
                    low_at: ti.template(), att_x: ti.template(), layer: ti.template(), plan: ti.template(),
                    sc: ti.template()):
    """`shift_mix_task` (LN1, token shift) and the maa LoRA's first stage tanh(xxx W1ᵀ) as one task in a GPU decode
    pass (kernels/norm_linear.py; a quantized group's too: the LoRA is dense): each workgroup stages
    xxx = z + (prev - z)·maa_x (vec row MIX); z goes to MIXED's first block and prev - z to DELTA, from which
    `data_mix_task` (with `keep`) makes the five mixed inputs and keeps z into the state."""
    n_out = ti.static(5 * s.Dm)
    ti.loop_config(block_dim=norm_linear.NORM_GROUP)
    for thread in range(lanes.task_range(norm_linear.items(x.shape[0], n_out))):
        for rnd in range(lanes.task_rounds(thread, norm_linear.items(x.shape[0], n_out))):
            tid, t, row_block, o = norm_linear.item(lanes.task_item(thread, rnd), x.shape[0])
            lane = tid % lanes.LANES
            xs = ti.simt.block.SharedArray((s.C,), ti.f32)
            partials = ti.simt.block.SharedArray((ti.static(norm_linear.group_rows()),), ti.f32)
            norm_linear.stage_mixed(x, vec, slot, LN1, MIX, att_x, layer, plan, LN_EPS, t, s.C, lane, tid, xs, xs,
                                    partials, sc, s.MIXED, row_block == 0, s.DELTA)
            if o < n_out:
                total = lane_sum(norm_linear.dot_staged(low, slot, low_at + s.MAA_FIRST + o, xs, xs, vec, slot, 0,
                                                        s.C, lane, True))
                if lane == 0:
                    emit_value(total, sc, s.LORA + o, t, ACT_TANH, False, None, 0)


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
def head_decays(s: ti.template(), vec: ti.template(), second: ti.template(), slot: ti.i32, sc: ti.template(),
                t: ti.i32, h: ti.i32, p: ti.i32, i: ti.i32, ws: ti.template()):
    """`decay_task` for head h's N channels inside the decode WKV's workgroup: thread (p, i) sums part p of channel
    h·N + i's Dd terms, the parts meet in `wkv_lanes.add_parts`, and ws[i] = exp(-exp(time_decay + sum)). Ends with
    a barrier: ws is ready."""
    N = ti.static(s.N)
    per = ti.static((s.Dd + wkv_lanes.KEY_PARTS - 1) // wkv_lanes.KEY_PARTS)  # terms per part
    c = h * N + ti.min(i, N - 1)
    part = 0.0
    for q in ti.static(range(per)):
        d = p * per + q
        term = ti.cast(second[slot, c, s.DECAY_SECOND + ti.min(d, s.Dd - 1)], ti.f32) * sc[t, s.DECAY_LOW +
                                                                                             ti.min(d, s.Dd - 1)]
        part += ti.select(d < s.Dd, term, 0.0)
    total = wkv_lanes.add_parts(part, p, i, N)
    if p == 0 and i < N:
        ws[i] = ti.exp(-ti.exp(vec[slot, DECAY, c] + total))
    ti.simt.block.sync()


@ti.func
def wkv_gate_task(s: ti.template(), vec: ti.template(), S: ti.template(), slot: ti.template(), layer: ti.template(),
                  plan: ti.template(), sc: ti.template(), second: ti.template() = None):
    """A decode pass's `wkv_task` and `output_gate_task` as one task on a GPU (as kernels/v7_wkv.py): a workgroup
    per (row b, head h) of wkv_lanes.head_threads(N) threads, thread (p, i) owning value column i and the keys of
    part p (wkv_lanes.part_keys). Each part's keys go in blocks whose loads are all issued before the first store (a
    load after a store waits for it); y sums a part's keys in order, then the parts in order
    (`wkv_lanes.add_parts`), and the head's GroupNorm statistics go through workgroup memory
    (`wkv_lanes.column_stats`). One subgroup per head (32 on the 1.6B shape) walked all 64 keys: 14-15 µs a layer
    on the H100. With `second` (v6), the task also makes the decays itself (`head_decays`), so there is no decay
    task before it (4.9 µs a layer)."""
    N = ti.static(s.N)
    ti.loop_config(block_dim=ti.static(wkv_lanes.head_threads(s.N)))
    for thread in range(lanes.task_range(S.shape[0] * s.H * ti.static(wkv_lanes.head_threads(s.N)))):
        for rnd in range(lanes.task_rounds(thread, S.shape[0] * s.H * ti.static(wkv_lanes.head_threads(s.N)))):
            b, h, p, i = wkv_lanes.head_item(lanes.task_item(thread, rnd), s.H, N)
            R, K, V = s.PROJ, s.PROJ + s.C, s.PROJ + 2 * s.C
            col = ti.min(i, N - 1)
            ws = ti.simt.block.SharedArray((N,), ti.f32)  # the head's decays (`head_decays`)
            for step in range(plan[LENGTH, b]):  # the same for the whole workgroup: its barriers are uniform
                t = plan[START, b] + step
                if ti.static(lanes._given(second)):
                    head_decays(s, vec, second, slot, sc, t, h, p, i, ws)
                v = sc[t, V + h * N + col]
                y = 0.0
                for block in range(ti.static(wkv_lanes.part_blocks(N))):
                    keys, live = wkv_lanes.part_block(N, p, block)
                    c = ti.Vector([h * N + keys[q] for q in ti.static(range(keys.n))])
                    k = ti.Vector([sc[t, K + c[q]] for q in ti.static(range(keys.n))])
                    r = ti.Vector([sc[t, R + c[q]] for q in ti.static(range(keys.n))])
                    u = ti.Vector([vec[slot, BONUS, c[q]] for q in ti.static(range(keys.n))])
                    w = ti.Vector([decay_at(s, vec, slot, sc, t, c[q]) for q in ti.static(range(keys.n))])
                    if ti.static(lanes._given(second)):
                        w = ti.Vector([ws[keys[q]] for q in ti.static(range(keys.n))])
                    old = ti.Vector([S[b, layer, h, keys[q], col] for q in ti.static(range(keys.n))])
                    for q in ti.static(range(keys.n)):
                        kv = k[q] * v
                        if live[q]:
                            y += r[q] * (u[q] * kv + old[q])
                            if i < N:
                                S[b, layer, h, keys[q], col] = kv + w[q] * old[q]
                y = wkv_lanes.add_parts(y, p, i, N)
                stats = wkv_lanes.column_stats(y, p, i, N, GN_EPS)
                if p == 0 and i < N:
                    gate_channel(s, vec, slot, sc, t, h * N + i, y, stats)


@ti.func
def gate_channel(s: ti.template(), vec: ti.template(), slot: ti.i32, sc: ti.template(), t: ti.i32, c: ti.i32,
                 y: ti.f32, stats: ti.math.vec2):
    """Y[t, c] = GN(y) with ln_x's affine, times silu(gate) when gated; `stats` the head's (mean, 1/σ)."""
    out = (y - stats[0]) * stats[1] * vec[slot, LNX, c] + vec[slot, LNX + 1, c]
    if ti.static(s.gated):
        gate = sc[t, s.PROJ + 3 * s.C + c]
        out *= gate / (1.0 + ti.exp(-gate))
    sc[t, s.Y + c] = out


@ti.func
def folded_ffn_in_task(s: ti.template(), x: ti.template(), vec: ti.template(), mats: ti.template(),
                       slot: ti.template(), ffn_x: ti.template(), layer: ti.template(), plan: ti.template(),
                       sc: ti.template(), storage: ti.template()):
    """The channel mix's `shift_mix_task` (LN2, token shift) and `ffn_in_task` as one task in a GPU decode pass
    (kernels/norm_linear.py): each workgroup stages both mixed inputs (the key's, vec row FFN_MIX; the receptance's,
    FFN_MIX + 1), and each output row reads its own (dense rows as `norm_linear.dot_staged`, quantized ones as
    `gpu_rows.dot_tile`, NF4/SF4 with the workgroup's `gpu_rows.shared_table`, written before the staging's
    barriers). z = LN2(x[t]) also goes to MIXED's first block, which the value task copies into the state at each
    row's last position. (Mixing each row's input as it is read, from staged z and prev - z, took 27.8 µs a v6
    layer on the H100.)"""
    n_out = ti.static(s.F + s.C)
    ti.loop_config(block_dim=norm_linear.NORM_GROUP)
    for thread in range(lanes.task_range(norm_linear.items(x.shape[0], n_out))):
        for rnd in range(lanes.task_rounds(thread, norm_linear.items(x.shape[0], n_out))):
            tid, t, row_block, o = norm_linear.item(lanes.task_item(thread, rnd), x.shape[0])
            lane = tid % lanes.LANES
            keys = ti.simt.block.SharedArray((s.C,), ti.f32)
            receptances = ti.simt.block.SharedArray((s.C,), ti.f32)
            partials = ti.simt.block.SharedArray((ti.static(norm_linear.group_rows()),), ti.f32)
            entries = gpu_rows.shared_table(tid, storage)
            norm_linear.stage_mixed(x, vec, slot, LN2, FFN_MIX, ffn_x, layer, plan, LN_EPS, t, s.C, lane, tid, keys,
                                    receptances, partials, sc, s.MIXED, row_block == 0, None, FFN_MIX + 1)
            if o < s.F:
                total = lane_sum(staged_dot(mats, slot, s.FFN_KEY + o, keys, vec, s.C, lane, storage, entries))
                if lane == 0:
                    emit_value(total, sc, s.HIDDEN + o, t, ACT_RELU_SQUARED, False, None, 0)
            elif o < n_out:
                total = lane_sum(staged_dot(mats, slot, s.FFN_KEY + o, receptances, vec, s.C, lane, storage, entries))
                if lane == 0:
                    emit_value(total, sc, s.FFN_R + o - s.F, t, ACT_SIGMOID, False, None, 0)


@ti.func
def staged_dot(W: ti.template(), slot: ti.i32, o: ti.i32, xs: ti.template(), vec: ti.template(), n_in: ti.template(),
               lane: ti.i32, storage: ti.template(), entries: ti.template()) -> ti.f32:
    """This lane's share of W[slot, o, :n_in] · xs, a staged mixed input: dense rows as `norm_linear.dot_staged`,
    quantized ones as `gpu_rows.dot_tile` (NF4/SF4 with the `gpu_rows.shared_table` `entries`)."""
    total = 0.0
    if ti.static(storage == DENSE):
        total = norm_linear.dot_staged(W, slot, o, xs, xs, vec, slot, 0, n_in, lane, True)
    else:
        total = gpu_rows.dot_tile(W, slot, o, xs, 0, n_in, 0, 1, lane, lanes.LANES, 1, storage, entries)[0]
    return total


@ti.func
def ffn_in_task(s: ti.template(), mats: ti.template(), slot: ti.template(), sc: ti.template(), storage: ti.template()):
    """A GPU decode pass's ffn_key and ffn_receptance as one task (ref.v6.channel_mix, ref.v5.channel_mix):
    HIDDEN = relu²(x_k W_kᵀ), FFN_R = σ(x_r W_rᵀ). The receptance's rows follow the key's in `mats`, so output row o
    of the F + C is row FFN_KEY + o; each sum is linear_task's at tile 1, term for term."""
    ti.loop_config(block_dim=GROUP)
    for thread in range(lanes.task_range(row_tile_items(s.F + s.C, sc.shape[0], 1))):
        for rnd in range(lanes.task_rounds(thread, row_tile_items(s.F + s.C, sc.shape[0], 1))):
            T = sc.shape[0]
            lane, o, t = row_tile_item(lanes.task_item(thread, rnd), T, 1)
            x_col, y_col, act = s.MIXED, s.HIDDEN + o, ACT_RELU_SQUARED
            if o >= s.F:
                x_col, y_col, act = s.MIXED + s.C, s.FFN_R + o - s.F, ACT_SIGMOID
            acc = dot_tile(mats, slot, s.FFN_KEY + o, 0, sc, x_col, s.C, t, T, lane, 1, storage)
            emit_tile(acc, sc, y_col, t, T, lane, act, False)
