"""Matrix tasks on the CPU (arch x64, one thread per row: kernels/lanes.py LANES == 1).

The order of the work, not the arithmetic: on a GPU neighbouring threads share a weight row (lanes.linear_task: row
major). On the CPU, for tiles of several positions (prefill), consecutive groups take the next rows for the same tile
of positions instead, so the tile's inputs (8 positions × n_in floats) stay in L1 while each weight row is read once
from L2/L3; row-major, every input row came from L2 again for each weight row, and a 3072×768 fp16 matrix over 128
positions ran at half the speed (BENCHMARKS.md, "Taichi engine on this CPU"). At tile 1 (decode) the order stays row
major: a row's weights then serve every position from L1.
"""
import taichi as ti

from kernels import x64_rows
from kernels.lanes import emit_tile
from kernels.quant import DENSE


@ti.func
def row_and_tile(group: ti.i32, n_rows: ti.i32, n_tiles: ti.i32, tile: ti.template()) -> ti.math.ivec2:
    """(output row, first position) of a matrix task's group on the CPU."""
    at = ti.math.ivec2(group // n_tiles, group % n_tiles * tile)
    if ti.static(tile > 1):
        at = ti.math.ivec2(group % n_rows, group // n_rows * tile)
    return at


@ti.func
def cpu_order(o: ti.i32, t0: ti.i32, group: ti.i32, n_rows: ti.i32, n_tiles: ti.i32, tile: ti.template(),
              lanes: ti.template()) -> ti.math.ivec2:
    """A task's (row, first position) for `group`: on the CPU (one lane) `row_and_tile`'s, elsewhere (o, t0)."""
    at = ti.math.ivec2(o, t0)
    if ti.static(lanes == 1):
        at = row_and_tile(group, n_rows, n_tiles, tile)
    return at


@ti.func
def linear_task(W: ti.template(), layer: ti.i32, w_row: ti.i32, n_out: ti.i32, n_in: ti.i32, X: ti.template(),
                x_col: ti.i32, Y: ti.template(), y_col: ti.i32, act: ti.i32, accumulate: ti.template(),
                tile: ti.template(), gate: ti.template() = None, gate_col: ti.i32 = 0, storage: ti.template() = DENSE):
    """lanes.linear_task on the CPU (the same contract and arithmetic; the groups in `row_and_tile` order)."""
    T = X.shape[0]
    n_tiles = (T + tile - 1) // tile
    for group in range(n_out * n_tiles):
        at = row_and_tile(group, n_out, n_tiles, tile)
        o, t0 = at[0], at[1]
        acc = x64_rows.dot_tile(W, layer, w_row + o, 0, X, x_col, n_in, t0, T, tile, storage)
        emit_tile(acc, Y, y_col + o, t0, T, 0, act, accumulate, gate, gate_col + o)
