"""RWKV-7's WKV recurrence and output gate, the middle of a layer kernel (kernels/v7.py). Must match
ref.v7.wkv_step over each row's tokens and the last lines of ref.v7.time_mix (spec/v7.md), to the tolerances of
spec/tolerances.md.

In a decode pass (tile 1) on a GPU both are one task (`lane_wkv_gate_task`): a workgroup owns a (row, head), a
thread a value row and a part of the keys, so the head's GroupNorm statistics and r·k·r_k bonus are workgroup sums
and need no second task (a task costs a dispatch and a dependent phase: BENCHMARKS.md). A longer pass walks each row's tokens one after another, so there the WKV keeps a thread per
value row (`thread_wkv_task`) or, in a pass of gpu_gemm.PASS_TILE (prefill), a lane group per value row
(`lane_wkv_task`, the lanes sharing its keys: 32x the threads), and the gate is a task of its own
(`output_gate_task`, parallel over positions); on the CPU the recurrence is kernels/x64_v7.py.

On a GPU the WKV state is stored key-major, S[b, l, h, j (key), i (value)], so at each key j the lanes read
neighbouring addresses (`cell`, engine.device_transposed).
"""
import math

import taichi as ti

from ai00ref.ref.common import GN_EPS
from kernels import gpu_gemm, lanes, wkv_lanes, x64_v7
from kernels.layer_norms import mean_and_inv
from kernels.lanes import GROUP, LENGTH, START, lane_sum
from kernels.v7_layout import LNX, R_K


@ti.func
def cell(j: ti.i32, i: ti.i32) -> ti.math.ivec2:
    """Where S's (key j, value i) sits in its last two axes: key-major on a GPU (a subgroup's lanes, one per value
    row, then read neighbouring addresses), value-major on the CPU (a thread's walk over j is contiguous)."""
    at = ti.math.ivec2(i, j)
    if ti.static(lanes.LANES > 1):
        at = ti.math.ivec2(j, i)
    return at


@ti.func
def wkv_gate_task(s: ti.template(), S: ti.template(), vec: ti.template(), slot: ti.template(),
                  layer: ti.template(), plan: ti.template(), sc: ti.template(), tile: ti.template()):
    """Y <- (GN(y; ln_x) + (Σ_head r k r_k) v) * g, y the WKV outputs of each row's tokens (S updated in place).
    `tile`: the pass's token tile (1: a decode pass)."""
    if ti.static(lanes.LANES == 1):  # the CPU: a thread per value row, then the gate as a second task
        x64_v7.wkv_task(s, S, layer, plan, sc)
        output_gate_task(s, vec, slot, sc)
    elif ti.static(tile == 1):
        lane_wkv_gate_task(s, S, vec, slot, layer, plan, sc)
    elif ti.static(tile >= gpu_gemm.PASS_TILE):
        lane_wkv_task(s, S, layer, plan, sc)
        output_gate_task(s, vec, slot, sc)
    else:
        thread_wkv_task(s, S, layer, plan, sc)
        output_gate_task(s, vec, slot, sc)


@ti.func
def thread_wkv_task(s: ti.template(), S: ti.template(), layer: ti.template(), plan: ti.template(),
                    sc: ti.template()):
    """ref.v7.wkv_step over each row's tokens: S <- S diag(w) + (S (-kk))(kk a)ᵀ + v kᵀ; y = S r into Y.
    Thread (b, h, i) owns value row i of head h; `cell` gives the device layout of S. On a GPU for passes of fewer
    than gpu_gemm.PASS_TILE's positions (batch decode: a row's token or few), where `lane_wkv_task`'s subgroup sums
    per token cost more than its parallelism gains (BENCHMARKS.md: CUDA batch 32 −17 %). The keys go
    wkv_lanes.KEYS_AT_ONCE at a time, their loads issued together before their sums (as kernels/v6.py's wkv_task);
    the sums keep the reference's order."""
    N = ti.static(s.N)
    U = ti.static(math.gcd(N, wkv_lanes.KEYS_AT_ONCE))
    ti.loop_config(block_dim=GROUP)
    for thread in range(lanes.task_range(S.shape[0] * s.H * N)):
        for rnd in range(lanes.task_rounds(thread, S.shape[0] * s.H * N)):
            g = lanes.task_item(thread, rnd)
            b, h, i = g // (s.H * N), g // N % s.H, g % N
            R, K, V, W, A = s.PROJ, s.PROJ + s.C, s.PROJ + 2 * s.C, s.LORA, s.LORA + s.C
            for step in range(plan[LENGTH, b]):
                t = plan[START, b] + step
                removed = 0.0
                for j0 in range(N // U):
                    old = ti.Vector([S[b, layer, h, cell(j0 * U + u, i)[0], cell(j0 * U + u, i)[1]]
                                     for u in ti.static(range(U))])
                    kk = ti.Vector([sc[t, s.KK + h * N + j0 * U + u] for u in ti.static(range(U))])
                    for u in ti.static(range(U)):
                        removed -= old[u] * kk[u]
                out = 0.0
                v = sc[t, V + h * N + i]
                for j0 in range(N // U):
                    c0 = h * N + j0 * U
                    old = ti.Vector([S[b, layer, h, cell(j0 * U + u, i)[0], cell(j0 * U + u, i)[1]]
                                     for u in ti.static(range(U))])
                    w = ti.Vector([sc[t, W + c0 + u] for u in ti.static(range(U))])
                    kka = ti.Vector([sc[t, s.KK + c0 + u] * sc[t, A + c0 + u] for u in ti.static(range(U))])
                    k = ti.Vector([sc[t, K + c0 + u] for u in ti.static(range(U))])
                    r = ti.Vector([sc[t, R + c0 + u] for u in ti.static(range(U))])
                    for u in ti.static(range(U)):
                        new = old[u] * w[u] + removed * kka[u] + v * k[u]
                        at = cell(j0 * U + u, i)
                        S[b, layer, h, at[0], at[1]] = new
                        out += new * r[u]
                sc[t, s.Y + h * N + i] = out


@ti.func
def wkv_inputs(s: ti.template(), sc: ti.template(), t: ti.i32, h: ti.i32, i: ti.i32, keys: ti.template()):
    """Position t's inputs to `lane_wkv_task` for value row i of head h and a lane's `keys`: kk, w, kk·a, k and r
    of each key, and v[i]."""
    N = ti.static(s.N)
    R, K, V, W, A = s.PROJ, s.PROJ + s.C, s.PROJ + 2 * s.C, s.LORA, s.LORA + s.C
    kk = ti.Vector([sc[t, s.KK + h * N + keys[m]] for m in ti.static(range(keys.n))])
    w = ti.Vector([sc[t, W + h * N + keys[m]] for m in ti.static(range(keys.n))])
    kk_a = ti.Vector([kk[m] * sc[t, A + h * N + keys[m]] for m in ti.static(range(keys.n))])
    k = ti.Vector([sc[t, K + h * N + keys[m]] for m in ti.static(range(keys.n))])
    r = ti.Vector([sc[t, R + h * N + keys[m]] for m in ti.static(range(keys.n))])
    return kk, w, kk_a, k, r, sc[t, V + h * N + i]


@ti.func
def lane_wkv_task(s: ti.template(), S: ti.template(), layer: ti.template(), plan: ti.template(), sc: ti.template()):
    """ref.v7.wkv_step over each row's tokens: S <- S diag(w) + (S (-kk))(kk a)ᵀ + v kᵀ; y = S r into Y.
    Lane group (b, h, i) owns value row i of head h (`cell` gives the device layout of S), lane `lane` its keys
    j = m·LANES + lane, kept in registers over the row's tokens (loaded before the first, stored after the last);
    the row's sums S (-kk) and S r are subgroup sums of the lanes' shares. A thread per value row loaded and stored
    S at every key, and its threads (one per value row) left most of the GPU idle in prefill (kernels/v6.py
    `lane_wkv_task`). The sums over keys are trees instead of chains: spec/tolerances.md's WKV bound.
    Each step loads the next step's inputs (`wkv_lanes.ahead`) and the outputs wait in registers, LANES steps at a
    time (`wkv_lanes.keep_output`, `store_outputs`), as in kernels/v6.py `lane_wkv_task`."""
    N = ti.static(s.N)
    M = ti.static((s.N + lanes.LANES - 1) // lanes.LANES)  # keys per lane
    ti.loop_config(block_dim=GROUP)
    for thread in range(lanes.task_range(S.shape[0] * s.H * N * lanes.LANES)):
        for rnd in range(lanes.task_rounds(thread, S.shape[0] * s.H * N * lanes.LANES)):
            lane, b, h, i = wkv_lanes.value_column_item(lanes.task_item(thread, rnd), s.H, N)
            start, length, T = plan[START, b], plan[LENGTH, b], sc.shape[0]
            keys = wkv_lanes.lane_keys(N, lane)
            row = ti.Vector([S[b, layer, h, cell(keys[m], i)[0], cell(keys[m], i)[1]] for m in ti.static(range(M))])
            kk, w, kk_a, k, r, v = wkv_inputs(s, sc, ti.min(start, T - 1), h, i, keys)
            kept = 0.0
            for step in range(length):
                kk_now, w_now, kk_a_now, k_now, r_now, v_now = kk, w, kk_a, k, r, v
                kk, w, kk_a, k, r, v = wkv_inputs(s, sc, wkv_lanes.ahead(start, step, length, T), h, i, keys)
                part = 0.0
                for m in ti.static(range(M)):
                    if m * lanes.LANES + lane < N:
                        part -= row[m] * kk_now[m]
                removed = lane_sum(part)
                part = 0.0
                for m in ti.static(range(M)):
                    row[m] = row[m] * w_now[m] + removed * kk_a_now[m] + v_now * k_now[m]
                    if m * lanes.LANES + lane < N:
                        part += row[m] * r_now[m]
                kept = wkv_lanes.keep_output(kept, lane_sum(part), step, lane)
                wkv_lanes.store_outputs(sc, s.Y + h * N + i, start, step, length, lane, kept)
            for m in ti.static(range(M)):
                if m * lanes.LANES + lane < N:
                    S[b, layer, h, cell(keys[m], i)[0], cell(keys[m], i)[1]] = row[m]


@ti.func
def lane_wkv_gate_task(s: ti.template(), S: ti.template(), vec: ti.template(), slot: ti.template(),
                       layer: ti.template(), plan: ti.template(), sc: ti.template()):
    """Per token: S <- S diag(w) + (S (-kk))(kk a)ᵀ + v kᵀ, y = S r (ref.v7.wkv_step), then the output gate.

    A workgroup per (row b, head h) of wkv_lanes.head_threads(N) threads: thread (p, i) owns value row i and the
    keys of part p (wkv_lanes.part_keys). Each part's keys go in blocks whose loads are all issued before the first
    store (a load after a store waits for it). The sums over keys (S (-kk) and y) add a part's keys in order, then the
    parts in order (`wkv_lanes.add_parts`); the GroupNorm statistics and the bonus Σ r k r_k go through workgroup
    memory (`wkv_lanes.column_stats`, `column_total`). One subgroup per head (32 on the 1.5B shape) walked all 64
    keys twice: 17 µs a layer on the H100. A GPU-only task: S is key-major (`cell` on a GPU)."""
    N = ti.static(s.N)  # one name per ti.static: a tuple assignment would make them run-time values
    C = ti.static(s.C)
    ti.loop_config(block_dim=ti.static(wkv_lanes.head_threads(s.N)))
    for thread in range(lanes.task_range(S.shape[0] * s.H * ti.static(wkv_lanes.head_threads(s.N)))):
        for rnd in range(lanes.task_rounds(thread, S.shape[0] * s.H * ti.static(wkv_lanes.head_threads(s.N)))):
            b, h, p, i = wkv_lanes.head_item(lanes.task_item(thread, rnd), s.H, N)
            R, K, V, W, A = s.PROJ, s.PROJ + C, s.PROJ + 2 * C, s.LORA, s.LORA + C
            row = ti.min(i, N - 1)
            for step in range(plan[LENGTH, b]):  # the same for the whole workgroup: its barriers are uniform
                t = plan[START, b] + step
                removed = 0.0
                for block in range(ti.static(wkv_lanes.part_blocks(N))):
                    keys, live = wkv_lanes.part_block(N, p, block)
                    kk = ti.Vector([sc[t, s.KK + h * N + keys[q]] for q in ti.static(range(keys.n))])
                    old = ti.Vector([S[b, layer, h, keys[q], row] for q in ti.static(range(keys.n))])
                    for q in ti.static(range(keys.n)):
                        if live[q]:
                            removed -= old[q] * kk[q]
                removed = wkv_lanes.add_parts(removed, p, i, N)
                v = sc[t, V + h * N + row]
                y = 0.0
                for block in range(ti.static(wkv_lanes.part_blocks(N))):
                    keys, live = wkv_lanes.part_block(N, p, block)
                    c = ti.Vector([h * N + keys[q] for q in ti.static(range(keys.n))])
                    w = ti.Vector([sc[t, W + c[q]] for q in ti.static(range(keys.n))])
                    kk_a = ti.Vector([sc[t, s.KK + c[q]] * sc[t, A + c[q]] for q in ti.static(range(keys.n))])
                    k = ti.Vector([sc[t, K + c[q]] for q in ti.static(range(keys.n))])
                    r = ti.Vector([sc[t, R + c[q]] for q in ti.static(range(keys.n))])
                    old = ti.Vector([S[b, layer, h, keys[q], row] for q in ti.static(range(keys.n))])
                    for q in ti.static(range(keys.n)):
                        new = old[q] * w[q] + removed * kk_a[q] + v * k[q]
                        if live[q]:
                            y += new * r[q]
                            if i < N:
                                S[b, layer, h, keys[q], row] = new
                y = wkv_lanes.add_parts(y, p, i, N)
                c = h * N + row
                bonus = wkv_lanes.column_total(sc[t, s.PROJ + c] * sc[t, s.PROJ + C + c] * vec[slot, R_K, c], p, i, N)
                stats = wkv_lanes.column_stats(y, p, i, N, GN_EPS)
                if p == 0 and i < N:
                    gate_channel(s, vec, slot, sc, t, c, y, stats, bonus)


@ti.func
def gate_channel(s: ti.template(), vec: ti.template(), slot: ti.i32, sc: ti.template(), t: ti.i32, c: ti.i32,
                 y: ti.f32, stats: ti.math.vec2, bonus: ti.f32):
    """Y[t, c] = (GN(y) with ln_x's affine + bonus v) * g; `stats` the head's (mean, 1/σ), `bonus` its Σ r k r_k."""
    normed = (y - stats[0]) * stats[1] * vec[slot, LNX, c] + vec[slot, LNX + 1, c]
    sc[t, s.Y + c] = (normed + bonus * sc[t, s.PROJ + 2 * s.C + c]) * sc[t, s.LORA + 2 * s.C + c]


@ti.func
def output_gate_task(s: ti.template(), vec: ti.template(), slot: ti.template(), sc: ti.template()):
    """In place: Y <- (GN(Y) + (Σ_head r k r_k) v) * g, GN with ln_x's affine (ref.v7.time_mix's last line): the task
    after the WKV on the CPU and in GPU passes of more than one position."""
    ti.loop_config(block_dim=GROUP)
    for thread in range(lanes.task_range(sc.shape[0] * s.H * lanes.LANES)):
        for rnd in range(lanes.task_rounds(thread, sc.shape[0] * s.H * lanes.LANES)):
            g = lanes.task_item(thread, rnd)
            C, N = s.C, s.N
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
                    gate_channel(s, vec, slot, sc, t, h * N + n, sc[t, s.Y + h * N + n], stats, bonus)
