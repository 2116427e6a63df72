"""Tiled matrix products on a GPU for passes of many positions (prefill, large batches): `gemm_task`.

`lanes.linear_task` gives each lane group one weight row (or four) and a tile of 8 positions, so every weight is read
from memory once per 8 positions and every input once per 4 rows, and each multiply-add waits on a load
(BENCHMARKS.md: ~2.5-5 TFLOP/s on the H100). Here a workgroup owns a block of BLOCK_T positions × `block_rows` output
rows; it walks the inputs in steps of STEP_K columns, each step staged once in workgroup shared memory (Xs, Ws), and
each thread keeps a register tile of PER × PER sums, so a staged value serves PER sums per shared-memory load. The
next step's values are loaded into registers while the current one is multiplied. Quantized rows (kernels/quant.py)
are staged the same way: each entry's code word and scale word are loaded, and decoded into the staged block
(`gpu_rows.element_value`), so the multiply loop is the dense one.

Must match ref.common.linear (and the activation, gate and accumulation of `lanes.emit_tile`) to spec/tolerances.md
§Taichi kernels: the sums add the same terms as the lane kernels, in another order.

Thread layout in a workgroup of (BLOCK_T / PER) × (block_rows / PER) threads: thread (tm, tn), tn the fast index,
owns positions t0 + tm + i·(BLOCK_T / PER) and rows o0 + tn + j·(block_rows / PER), i, j < PER. So at each staged
column a warp reads block_rows/PER neighbouring Ws entries and 32·PER/block_rows Xs entries (broadcasts): no bank
conflicts. The staged tiles are stored column-major with one padding entry per column, so a warp's staging stores
(the STEP_K = 32 neighbouring columns of one position or row, whose loads are one 128-byte line of X or of
quantized codes) fall in 32 different banks.

A `route` splits the output rows into blocks of consecutive rows that read different input columns and write
different output columns (v6's r, k, v, g projections, each from its own mixed input): a tuple of
(first row, x_col, y_col, act), first rows ascending from 0; rows o of the block starting at `first` read
X[:, x_col:x_col+n_in] and write column y_col + o - first, with act. Every block starts on a multiple of the
workgroup's rows (`block_rows`), so one staged input serves all of a workgroup's rows.
"""
import math

import taichi as ti

from kernels import gpu_rows, lanes
from kernels.quant import DENSE

PASS_TILE = 64  # a pass's tile (kernels/engine.py) from which its matrices go through gemm_task
BLOCK_T = 64  # positions per workgroup
MAX_ROWS = 32  # output rows per workgroup, fewer when a route's blocks start on a smaller multiple
MIN_ROWS = 16  # below this, routes go through the lane kernels (`fits`)
STEP_K = 32  # input columns staged per step (BENCHMARKS.md: 16 was up to 35 % slower on the H100)
PER = 4  # a thread's register tile: PER positions × PER rows
UNROLL_K = 4  # staged columns per iteration of the multiply loop


def takes(tile: int) -> bool:
    """Whether a pass of `tile` runs its matrices (dense or quantized) through gemm_task: PASS_TILE passes on a GPU.
    Called in ti.static."""
    return tile >= PASS_TILE and lanes.LANES > 1


def block_rows(route: tuple) -> int:
    """Output rows per workgroup: the largest power of two ≤ MAX_ROWS dividing every block's first row."""
    rows = MAX_ROWS
    for first, *_ in route:
        rows = math.gcd(rows, first) if first else rows
    return rows


def fits(route: tuple) -> bool:
    """Whether `gemm_task` takes this route (else the caller's lane kernels do)."""
    return block_rows(route) >= MIN_ROWS


@ti.func
def gemm_items(n_out: ti.template(), T: ti.template(), rows: ti.template()):
    """Work items of a `gemm_task`: one per thread of every (position block, row block) workgroup."""
    return (T + BLOCK_T - 1) // BLOCK_T * ((n_out + rows - 1) // rows) * (BLOCK_T // PER) * (rows // PER)


@ti.func
def route_of(route: ti.template(), o: ti.i32) -> ti.math.ivec4:
    """(first row, x_col, y_col, act) of the route block holding output row o."""
    found = ti.math.ivec4(route[0][0], route[0][1], route[0][2], route[0][3])
    for q in ti.static(range(1, len(route))):
        if o >= route[q][0]:
            found = ti.math.ivec4(route[q][0], route[q][1], route[q][2], route[q][3])
    return found


@ti.func
def stage_x(X: ti.template(), x_col: ti.i32, n_in: ti.i32, t0: ti.i32, T: ti.i32, k0: ti.i32, tid: ti.i32,
            threads: ti.template()):
    """This thread's share of the X block's step at column k0: X[t0 + m, x_col + k0 + kk] for its (m, kk), as
    f32; columns past n_in read as zero, positions past T as position T-1 (never written back)."""
    values = no_x(threads)
    for r in ti.static(range(values.n)):
        e = tid + r * threads
        m, kk = e // STEP_K, e % STEP_K
        k = k0 + kk
        values[r] = ti.select(k < n_in, X[ti.min(t0 + m, T - 1), x_col + ti.min(k, n_in - 1)], 0.0)
    return values


@ti.func
def no_x(threads: ti.template()):
    """`stage_x`'s values for no columns: zeros."""
    return ti.Vector([0.0] * ti.static(BLOCK_T * STEP_K // threads))


@ti.func
def no_w(threads: ti.template(), rows: ti.template(), storage: ti.template()):
    """`fetch_w`'s entries for no columns: zeros (a quantized zero word decodes to a zero weight)."""
    return ti.Matrix([[0] * ti.static(1 if storage == DENSE else 2) for _ in ti.static(range(rows * STEP_K // threads))],
                     dt=ti.f32 if ti.static(storage == DENSE) else ti.u32)


@ti.func
def fetch_w(W: ti.template(), layer: ti.i32, w_row: ti.i32, o0: ti.i32, n_out: ti.i32, n_in: ti.i32, k0: ti.i32,
            tid: ti.i32, threads: ti.template(), rows: ti.template(), storage: ti.template()):
    """This thread's share of the W block's step at column k0, entries (n, kk) for W[layer, w_row + o0 + n, k0 + kk]
    (rows past n_out repeat the last one; columns past n_in repeat the last one, against a zero input). Dense: the
    weights as f32. Quantized: each entry's two words, its code and scale in their low bits
    (`gpu_rows.element_words`), decoded by `store_w`."""
    fetched = no_w(threads, rows, storage)
    for r in ti.static(range(fetched.n)):
        e = tid + r * threads
        o, k = w_row + ti.min(o0 + e // STEP_K, n_out - 1), ti.min(k0 + e % STEP_K, n_in - 1)
        if ti.static(storage == DENSE):
            fetched[r, 0] = ti.cast(W[layer, o, k], ti.f32)
        else:
            words = gpu_rows.element_words(W, layer, o, k, n_in, lanes.LANES, storage)
            fetched[r, 0], fetched[r, 1] = words[0], words[1]
    return fetched


@ti.func
def store_w(ws: ti.template(), fetched: ti.template(), tid: ti.i32, threads: ti.template(), storage: ti.template(),
            entries: ti.template()):
    """`fetch_w`'s entries into the staged W block, ws[kk, n]; quantized ones decoded on the way
    (`gpu_rows.element_value`; `entries`: the thread's `gpu_rows.lane_table`), in a loop over the entries: one
    decoding compiled per call (unrolled, a v6 NF4 model test compiled ~30 s longer on lavapipe)."""
    if ti.static(storage == DENSE):
        for r in ti.static(range(fetched.n)):
            e = tid + r * threads
            ws[e % STEP_K, e // STEP_K] = fetched[r, 0]
    else:
        for r in range(fetched.n):
            words = ti.math.uvec2(fetched[0, 0], fetched[0, 1])
            for q in ti.static(range(1, fetched.n)):
                if r == q:
                    words = ti.math.uvec2(fetched[q, 0], fetched[q, 1])
            e = tid + r * threads
            ws[e % STEP_K, e // STEP_K] = gpu_rows.element_value(words, entries, lanes.LANES, storage)


@ti.func
def gemm_task(W: ti.template(), layer: ti.template(), w_row: ti.template(), n_out: ti.template(),
              n_in: ti.template(), X: ti.template(), route: ti.template(), Y: ti.template(),
              accumulate: ti.template(), gate: ti.template() = None, gate_col: ti.template() = 0,
              storage: ti.template() = DENSE):
    """One task: for every position t and output row o (in route block (first, x_col, y_col, act)):
    Y[t, y_col + o - first] (+)= act(X[t, x_col:x_col+n_in] · W[layer, w_row + o, :n_in]), times
    gate[t, gate_col + o] when a gate array is given. W dense (f16 or f32) or quantized (`storage`: u32 rows in the
    GPU's code order, kernels/quant.py), X and Y f32."""
    rows = ti.static(block_rows(route))
    row_threads = ti.static(rows // PER)
    threads = ti.static((BLOCK_T // PER) * row_threads)
    ti.loop_config(block_dim=threads)
    for thread in range(lanes.task_range(gemm_items(n_out, X.shape[0], rows))):
        for rnd in range(lanes.task_rounds(thread, gemm_items(n_out, X.shape[0], rows))):
            T = X.shape[0]
            g = lanes.task_item(thread, rnd)
            tid, block = g % threads, g // threads
            t_blocks = (T + BLOCK_T - 1) // BLOCK_T
            o0, t0 = block // t_blocks * rows, block % t_blocks * BLOCK_T
            tm, tn = tid // row_threads, tid % row_threads
            part = route_of(route, o0)
            entries = gpu_rows.lane_table(tid % lanes.LANES, lanes.LANES, storage)  # NF4/SF4 on CUDA: table by shuffle
            xs = ti.simt.block.SharedArray((STEP_K, BLOCK_T + 1), ti.f32)
            ws = ti.simt.block.SharedArray((STEP_K, rows + 1), ti.f32)
            acc = ti.Matrix([[0.0] * PER for _ in ti.static(range(PER))])  # acc[i, j]: position i, row j
            steps = (n_in + STEP_K - 1) // STEP_K
            x_next, w_next = no_x(threads), no_w(threads, rows, storage)
            # step s stages what step s - 1 loaded and multiplies it while loading step s's columns; step 0 stages
            # zeros (its products add nothing), so the loads are compiled once (lavapipe: 86 s for a v6 layer at
            # tile 64 with a first load before the loop, as the loads doubled from 16 to 32 columns a step)
            for step in range(steps + 1):
                for r in ti.static(range(x_next.n)):
                    e = tid + r * threads
                    xs[e % STEP_K, e // STEP_K] = x_next[r]
                store_w(ws, w_next, tid, threads, storage, entries)
                ti.simt.block.sync()
                k_next = ti.min(step, steps - 1) * STEP_K  # the last step loads its own columns again: no branch
                x_next = stage_x(X, part[1], n_in, t0, T, k_next, tid, threads)
                w_next = fetch_w(W, layer, w_row, o0, n_out, n_in, k_next, tid, threads, rows, storage)
                for kq in range(STEP_K // UNROLL_K):  # a loop, not unrolled whole: CUDA compiles the layer in seconds
                    for q in ti.static(range(UNROLL_K)):
                        kk = kq * UNROLL_K + q
                        x = ti.Vector([xs[kk, tm + i * (BLOCK_T // PER)] for i in ti.static(range(PER))])
                        w = ti.Vector([ws[kk, tn + j * row_threads] for j in ti.static(range(PER))])
                        acc += x.outer_product(w)
                ti.simt.block.sync()
            for i in ti.static(range(PER)):
                for j in ti.static(range(PER)):
                    t, o = t0 + tm + i * (BLOCK_T // PER), o0 + tn + j * row_threads
                    if t < T and o < n_out:
                        s = lanes.activate(acc[i, j], part[3])
                        if ti.static(lanes._given(gate)):
                            s *= gate[t, gate_col + o]
                        col = part[2] + o - part[0]
                        if ti.static(accumulate):
                            Y[t, col] = Y[t, col] + s
                        else:
                            Y[t, col] = s
