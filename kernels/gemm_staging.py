"""A `gpu_gemm.gemm_task` thread's share of staging one input step: its loads of the X and W blocks into registers
(`stage_x`, `fetch_w`), and their stores into the workgroup's staged blocks (`store_x`, `store_w`; quantized W
entries decoded on the way). The layout of the staged blocks and the threads is gpu_gemm's module docstring.
"""
import taichi as ti

from kernels import gpu_rows, lanes
from kernels.quant import DENSE


@ti.func
def stage_x(X: ti.template(), x_col: ti.i32, n_in: ti.i32, t0: ti.i32, T: ti.i32, k0: ti.i32, tid: ti.i32,
            threads: ti.template(), shape: ti.template()):
    """This thread's share (of a group of `threads`) of the X block's step at column k0: X[t0 + m, x_col + k0 + kk]
    for its (m, kk), as f32; columns past n_in (past the workgroup's split, in a split product) read as zero,
    positions past T as position T-1 (never written back)."""
    values = no_x(threads, shape)
    for r in ti.static(range(values.n)):
        e = tid + r * threads
        m, kk = e // shape.step, e % shape.step
        k = k0 + kk
        values[r] = ti.select(k < n_in, X[ti.min(t0 + m, T - 1), x_col + ti.min(k, n_in - 1)], 0.0)
    return values


@ti.func
def no_x(threads: ti.template(), shape: ti.template()):
    """`stage_x`'s values for no columns: zeros."""
    return ti.Vector([0.0] * ti.static(shape.positions * shape.step // threads))


@ti.func
def no_w(threads: ti.template(), rows: ti.template(), storage: ti.template(), shape: ti.template()):
    """`fetch_w`'s entries for no columns: zeros (a quantized zero word decodes to a zero weight)."""
    return ti.Matrix([[0] * ti.static(1 if storage == DENSE else 2)
                      for _ in ti.static(range(rows * shape.step // threads))],
                     dt=ti.f32 if ti.static(storage == DENSE) else ti.u32)


@ti.func
def fetch_w(W: ti.template(), layer: ti.i32, w_row: ti.i32, w_col: ti.i32, o0: ti.i32, n_out: ti.i32,
            n_in: ti.i32, k0: ti.i32, tid: ti.i32, threads: ti.template(), rows: ti.template(), storage: ti.template(),
            shape: ti.template()):
    """This thread's share of the W block's step at column k0, entries (n, kk) for W[layer, w_row + o0 + n,
    w_col + k0 + kk] (rows past n_out repeat the last one; columns past n_in repeat the last one, against a zero
    input). Dense: the weights as f32. Quantized: each entry's two words, its code and scale in their low bits
    (`gpu_rows.element_words`), decoded by `store_w`."""
    fetched = no_w(threads, rows, storage, shape)
    for r in ti.static(range(fetched.n)):
        e = tid + r * threads
        o, k = w_row + ti.min(o0 + e // shape.step, n_out - 1), ti.min(k0 + e % shape.step, n_in - 1)
        if ti.static(storage == DENSE):
            fetched[r, 0] = ti.cast(W[layer, o, w_col + k], ti.f32)
        else:
            words = gpu_rows.element_words(W, layer, o, k, n_in, lanes.LANES, storage)
            fetched[r, 0], fetched[r, 1] = words[0], words[1]
    return fetched


@ti.func
def store_x(xs: ti.template(), group: ti.i32, values: ti.template(), tid: ti.i32, threads: ti.template(),
            shape: ti.template()):
    """`stage_x`'s values into the group's staged X block, xs[group, kk, m]."""
    for r in ti.static(range(values.n)):
        e = tid + r * threads
        xs[group, e % shape.step, e // shape.step] = values[r]


@ti.func
def store_w(ws: ti.template(), group: ti.i32, fetched: ti.template(), tid: ti.i32, threads: ti.template(),
            storage: ti.template(), entries: ti.template(), shape: ti.template()):
    """`fetch_w`'s entries into the group's staged W block, ws[group, kk, n]; quantized ones decoded on the way
    (`gpu_rows.element_value`; `entries`: the thread's `gpu_rows.lane_table`), in a loop over the entries: one
    decoding compiled per call (unrolled, a v6 NF4 model test compiled ~30 s longer on lavapipe)."""
    if ti.static(storage == DENSE):
        for r in ti.static(range(fetched.n)):
            e = tid + r * threads
            ws[group, e % shape.step, e // shape.step] = fetched[r, 0]
    else:
        for r in range(fetched.n):
            words = ti.math.uvec2(fetched[0, 0], fetched[0, 1])
            for q in ti.static(range(1, fetched.n)):
                if r == q:
                    words = ti.math.uvec2(fetched[q, 0], fetched[q, 1])
            e = tid + r * threads
            ws[group, e % shape.step, e // shape.step] = gpu_rows.element_value(words, entries, lanes.LANES, storage)
