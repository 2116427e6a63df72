"""RWKV-7's WKV recurrence and output gate, the middle of a layer kernel (kernels/v7.py). Must match
ref.v7.wkv_step over each row's tokens and the last lines of ref.v7.time_mix (spec/v7.md), to the tolerances of
spec/tolerances.md.

In a decode pass (tile 1) on a GPU both are one task (`lane_wkv_gate_task`): a lane group (one subgroup) owns a
(row, head), and lane `lane` owns value rows lane, lane + LANES, ... of the head's state, so the head's GroupNorm
statistics and r·k·r_k bonus are subgroup sums and need no second task (a task costs a dispatch and a dependent
phase: BENCHMARKS.md). A longer pass walks each row's tokens one after another, so there the WKV keeps a thread per
value row (`thread_wkv_task`) or, in a pass of gpu_gemm.PASS_TILE (prefill), a lane group per value row
(`lane_wkv_task`, the lanes sharing its keys: 32x the threads), and the gate is a task of its own
(`output_gate_task`, parallel over positions); on the CPU the recurrence is kernels/x64_v7.py.

On a GPU the WKV state is stored key-major, S[b, l, h, j (key), i (value)], so at each key j the lanes read
neighbouring addresses (`cell`, engine.device_transposed).
"""
import taichi as ti

from ai00ref.ref.common import GN_EPS
from kernels import gpu_gemm, lanes, wkv_lanes, x64_v7
from kernels.lanes import GROUP, LENGTH, START, group_stats, lane_sum, mean_and_inv
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
    per token cost more than its parallelism gains (BENCHMARKS.md: CUDA batch 32 −17 %)."""
    N = ti.static(s.N)
    ti.loop_config(block_dim=GROUP)
    for thread in range(lanes.task_range(S.shape[0] * s.H * N)):
        for rnd in range(lanes.task_rounds(thread, S.shape[0] * s.H * N)):
            g = lanes.task_item(thread, rnd)
            b, h, i = g // (s.H * N), g // N % s.H, g % N
            R, K, V, W, A = s.PROJ, s.PROJ + s.C, s.PROJ + 2 * s.C, s.LORA, s.LORA + s.C
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
def lane_wkv_task(s: ti.template(), S: ti.template(), layer: ti.template(), plan: ti.template(), sc: ti.template()):
    """ref.v7.wkv_step over each row's tokens: S <- S diag(w) + (S (-kk))(kk a)ᵀ + v kᵀ; y = S r into Y.
    Lane group (b, h, i) owns value row i of head h (`cell` gives the device layout of S), lane `lane` its keys
    j = m·LANES + lane, kept in registers over the row's tokens (loaded before the first, stored after the last);
    the row's sums S (-kk) and S r are subgroup sums of the lanes' shares. A thread per value row loaded and stored
    S at every key, and its threads (one per value row) left most of the GPU idle in prefill (kernels/v6.py
    `lane_wkv_task`). The sums over keys are trees instead of chains: spec/tolerances.md's WKV bound."""
    N = ti.static(s.N)
    M = ti.static((s.N + lanes.LANES - 1) // lanes.LANES)  # keys per lane
    ti.loop_config(block_dim=GROUP)
    for thread in range(lanes.task_range(S.shape[0] * s.H * N * lanes.LANES)):
        for rnd in range(lanes.task_rounds(thread, S.shape[0] * s.H * N * lanes.LANES)):
            lane, b, h, i = wkv_lanes.value_column_item(lanes.task_item(thread, rnd), s.H, N)
            R, K, V, W, A = s.PROJ, s.PROJ + s.C, s.PROJ + 2 * s.C, s.LORA, s.LORA + s.C
            keys = wkv_lanes.lane_keys(N, lane)
            row = ti.Vector([S[b, layer, h, cell(keys[m], i)[0], cell(keys[m], i)[1]] for m in ti.static(range(M))])
            for step in range(plan[LENGTH, b]):
                t = plan[START, b] + step
                part = 0.0
                for m in ti.static(range(M)):
                    if m * lanes.LANES + lane < N:
                        part -= row[m] * sc[t, s.KK + h * N + keys[m]]
                removed = lane_sum(part)
                v = sc[t, V + h * N + i]
                part = 0.0
                for m in ti.static(range(M)):
                    c = h * N + keys[m]
                    row[m] = row[m] * sc[t, W + c] + removed * sc[t, s.KK + c] * sc[t, A + c] + v * sc[t, K + c]
                    if m * lanes.LANES + lane < N:
                        part += row[m] * sc[t, R + c]
                out = lane_sum(part)
                if lane == 0:
                    sc[t, s.Y + h * N + i] = out
            for m in ti.static(range(M)):
                if m * lanes.LANES + lane < N:
                    S[b, layer, h, cell(keys[m], i)[0], cell(keys[m], i)[1]] = row[m]


@ti.func
def lane_wkv_gate_task(s: ti.template(), S: ti.template(), vec: ti.template(), slot: ti.template(),
                       layer: ti.template(), plan: ti.template(), sc: ti.template()):
    """Per token: S <- S diag(w) + (S (-kk))(kk a)ᵀ + v kᵀ, y = S r (ref.v7.wkv_step), then the output gate.

    Lane group (b, h); lane `lane` owns the M value rows i = m·LANES + lane (rows past N repeat row N-1 for loads
    and store nothing); each key's w, kk, a, k, r is loaded once for the lane's M rows. The keys go in blocks of
    wkv_lanes.key_block(N), each block's loads issued before its first store (a load after a store waits for it): one
    load latency per block, not per key. Every sum adds its terms in key order. A GPU-only task: S is key-major
    (`cell` on a GPU), read a block at a time by `wkv_lanes.key_block_of`."""
    N, C = ti.static(s.N), ti.static(s.C)
    M = ti.static((s.N + lanes.LANES - 1) // lanes.LANES)
    J = ti.static(wkv_lanes.key_block(s.N))
    ti.loop_config(block_dim=GROUP)
    for thread in range(lanes.task_range(S.shape[0] * s.H * lanes.LANES)):
        for rnd in range(lanes.task_rounds(thread, S.shape[0] * s.H * lanes.LANES)):
            g = lanes.task_item(thread, rnd)
            R, K, V, W, A = s.PROJ, s.PROJ + C, s.PROJ + 2 * C, s.LORA, s.LORA + C
            lane, group = g % lanes.LANES, g // lanes.LANES
            b, h = group // s.H, group % s.H
            base = h * N
            rows = ti.Vector([ti.min(m * lanes.LANES + lane, N - 1) for m in ti.static(range(M))])
            for step in range(plan[LENGTH, b]):
                t = plan[START, b] + step
                removed = ti.Vector([0.0] * M)
                for block in range(N // J):
                    kk = ti.Vector([sc[t, s.KK + base + block * J + q] for q in ti.static(range(J))])
                    old = wkv_lanes.key_block_of(S, b, layer, h, block * J, rows, J)
                    for q in ti.static(range(J)):
                        for m in ti.static(range(M)):
                            removed[m] -= old[q, m] * kk[q]
                v = ti.Vector([sc[t, V + base + rows[m]] for m in ti.static(range(M))])
                y = ti.Vector([0.0] * M)
                for block in range(N // J):
                    c0 = base + block * J
                    w = ti.Vector([sc[t, W + c0 + q] for q in ti.static(range(J))])
                    kk_a = ti.Vector([sc[t, s.KK + c0 + q] * sc[t, A + c0 + q] for q in ti.static(range(J))])
                    k = ti.Vector([sc[t, K + c0 + q] for q in ti.static(range(J))])
                    r = ti.Vector([sc[t, R + c0 + q] for q in ti.static(range(J))])
                    old = wkv_lanes.key_block_of(S, b, layer, h, block * J, rows, J)  # all loaded before a store
                    for q in ti.static(range(J)):
                        for m in ti.static(range(M)):
                            new = old[q, m] * w[q] + removed[m] * kk_a[q] + v[m] * k[q]
                            if m * lanes.LANES + lane < N:
                                S[b, layer, h, block * J + q, rows[m]] = new
                            y[m] += new * r[q]
                gate_rows(s, vec, slot, sc, t, h, lane, y)


@ti.func
def gate_rows(s: ti.template(), vec: ti.template(), slot: ti.i32, sc: ti.template(), t: ti.i32, h: ti.i32,
              lane: ti.i32, y: ti.template()):
    """Y[t] of this lane's rows of head h = (GN(y) + bonus v) * g, GN's statistics (two passes, as
    ref.common.group_norm) and the bonus Σ r k r_k summed over the head's lanes."""
    N, C = ti.static(s.N), ti.static(s.C)
    base = h * N
    bonus = 0.0
    for m in ti.static(range(y.n)):
        i = m * lanes.LANES + lane
        if i < N:
            bonus += sc[t, s.PROJ + base + i] * sc[t, s.PROJ + C + base + i] * vec[slot, R_K, base + i]
    bonus = lane_sum(bonus)
    stats = group_stats(y, lane, N, GN_EPS)
    for m in ti.static(range(y.n)):
        if m * lanes.LANES + lane < N:
            gate_channel(s, vec, slot, sc, t, base + m * lanes.LANES + lane, y[m], stats, bonus)


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
