"""Matrix tasks on the CPU (arch x64, one thread per row: kernels/lanes.py LANES == 1).

The order of the work, not the arithmetic: on a GPU neighbouring threads share a weight row (lanes.linear_task: row
major). On the CPU, for tiles of several positions (prefill), consecutive groups take the next rows for the same tile
of positions instead, so the tile's inputs (8 positions × n_in floats) stay in L1 while each weight row is read once
from L2/L3; row-major, every input row came from L2 again for each weight row, and a 3072×768 fp16 matrix over 128
positions ran at half the speed (BENCHMARKS.md, "Taichi engine on this CPU"). At tile 1 (decode) the order stays row
major: a row's weights then serve every position from L1.

Taichi's x64 backend runs a top-level loop of n iterations as one block of consecutive iterations per thread, each
block max(ceil(n / threads), 512) long (MIN_BLOCK), with no stealing: a loop of 768 rows gives one thread 512 and the
other 256, and one of 512 or fewer runs on one thread. `spread_count` and `spread_item` pad such a loop to
threads × MIN_BLOCK iterations and give each thread's block an equal share of the real items (the rest skip).
"""
import taichi as ti

from kernels import x64_rows
from kernels.lanes import emit_tile
from kernels.quant import DENSE


MIN_BLOCK = 512  # Taichi 1.7's make_cpu_multithreaded_range_for: the fewest iterations a thread takes


def cpu_threads() -> int:
    """Threads of Taichi's x64 backend (ti.init's cpu_max_num_threads; the hardware's by default)."""
    return ti.lang.impl.current_cfg().cpu_max_num_threads


@ti.func
def spread_count(n: ti.i32) -> ti.i32:
    """Iterations of a loop over n items whose blocks (one per thread) each hold an equal share of them."""
    return ti.max(n, ti.static(cpu_threads() * MIN_BLOCK))


@ti.func
def spread_item(g: ti.i32, n: ti.i32) -> ti.i32:
    """The item of iteration g of a `spread_count(n)` loop, or -1 (an iteration with nothing to do). Each thread's
    items are consecutive."""
    share = (n + ti.static(cpu_threads() - 1)) // ti.static(cpu_threads())  # items per thread
    short = share < MIN_BLOCK  # then each thread's block is MIN_BLOCK iterations, its first `share` real
    item = ti.select(short, g // MIN_BLOCK * share + g % MIN_BLOCK, g)
    return ti.select(item < n and (not short or g % MIN_BLOCK < share), item, -1)


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
                tile: ti.template(), gate: ti.template() = None, gate_col: ti.i32 = 0, storage: ti.template() = DENSE,
                parts: ti.template() = None, room: ti.template() = 0):
    """lanes.linear_task on the CPU (the same contract and arithmetic; the groups in `row_and_tile` order; no split
    products, so `parts` and `room` go unused).
    Dense at tile 1 (decode): group p and group p + ⌈n/2⌉ in one loop (`x64_rows.dot_pair`), so each thread reads
    two far-apart runs of rows at once (a head-shaped fp16 matrix: 22.7 GB/s against 17.2 one run at a time)."""
    T = X.shape[0]
    n_tiles = (T + tile - 1) // tile
    n = n_out * n_tiles
    if ti.static(tile == 1 and storage == DENSE):
        half = (n + 1) // 2
        for g in range(spread_count(half)):  # each thread an equal share of the pairs
            p = spread_item(g, half)
            if p >= 0:
                q = ti.min(p + half, n - 1)  # n odd: the last pair reads its first row twice, emits it once
                o1, t1, o2, t2 = p // n_tiles, p % n_tiles, q // n_tiles, q % n_tiles
                sums = x64_rows.dot_pair(W, layer, w_row + o1, t1, w_row + o2, t2, X, x_col, n_in)
                emit_tile(ti.Vector([sums[0]]), Y, y_col + o1, t1, T, 0, act, accumulate, gate, gate_col + o1)
                if p + half < n:
                    emit_tile(ti.Vector([sums[1]]), Y, y_col + o2, t2, T, 0, act, accumulate, gate, gate_col + o2)
    else:
        for g in range(spread_count(n)):  # each thread an equal share of the groups
            group = spread_item(g, n)
            if group >= 0:
                at = row_and_tile(group, n_out, n_tiles, tile)
                o, t0 = at[0], at[1]
                acc = x64_rows.dot_tile(W, layer, w_row + o, 0, X, x_col, n_in, t0, T, tile, storage)
                emit_tile(acc, Y, y_col + o, t0, T, 0, act, accumulate, gate, gate_col + o)
