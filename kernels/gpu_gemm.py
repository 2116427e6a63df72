"""Tiled matrix products on a GPU for passes of many positions (prefill, large batches): `gemm_task`.

`lanes.linear_task` gives each lane group one weight row (or four) and a tile of 8 positions, so every weight is read
from memory once per 8 positions and every input once per 4 rows, and each multiply-add waits on a load
(BENCHMARKS.md: ~2.5-5 TFLOP/s on the H100). Here a workgroup owns a block of `positions` positions × `block_rows`
output rows (a `Tiling`: PREFILL for passes of PASS_TILE, BATCH for batch decode); it walks the inputs in steps of
`step` columns, each step staged once in workgroup shared memory (xs, ws; kernels/gemm_staging.py), and each thread
keeps a register tile of `per` × `per` sums, so a staged value serves `per` sums per shared-memory load. The next
step's values are loaded into registers while the current one is multiplied. Quantized rows (kernels/quant.py) are
staged the same way: each entry's code word and scale word are loaded, and decoded into the staged block
(`gpu_rows.element_value`), so the multiply loop is the dense one.

Must match ref.common.linear (and the activation, gate and accumulation of `lanes.emit_tile`) to spec/tolerances.md
§Taichi kernels: the sums add the same terms as the lane kernels, in another order.

Thread layout in a group of (positions / per) × (block_rows / per) threads: thread (tm, tn), tn the fast index, owns
positions t0 + tm + i·(positions / per) and rows o0 + tn + j·(block_rows / per), i, j < per; with `Tiling.run` R > 1
its positions and rows come in runs of R neighbours (`tile_offset`: i = q·R + e holds t0 + q·(positions / per)·R +
tm·R + e), so its loads of a staged column are runs of R neighbouring entries that start on a multiple of R (the
staged columns are then padded by R entries: `column_padding`). On the H100 runs of 2 (PREFILL_WIDE, BATCH_WIDE)
and 4 (BATCH) took 5-9 % off the products (benchmarks/gemm_probe.py; BENCHMARKS.md). At each staged column a warp
reads block_rows/per neighbouring ws entries (or runs) and 32·per/block_rows xs entries (broadcasts): no bank
conflicts. The staged tiles are stored column-major with one padding entry per column (run 1), so a warp's staging
stores (the `step` = 32 neighbouring columns of one position or row, whose loads are one 128-byte line of X or of
quantized codes) fall in 32 different banks.

A `route` splits the output rows into blocks of consecutive rows that read different input columns and write
different output columns (v6's r, k, v, g projections, each from its own mixed input): a tuple of blocks
(first row, x_col, y_col, act[, w_first, w_col, gate_first, width]), first rows ascending from 0; rows o of the
block starting at `first` read X[:, x_col:x_col+width] and W's row w_row + w_first + o - first (w_first: by default
`first`, the rows in order) from column w_col (by default 0) on, and write column y_col + o - first, with act, times
the gate's column gate_col + gate_first + o - first (gate_first: by default `first`); width 0 (the default) is
n_in, and a block's workgroups walk only its own steps (dense rows only: v7's second stages, of four widths). v6's
data mix is a route of five blocks that read the same W rows, each from its own columns, and share the gate's.
Every block starts on a multiple of the workgroup's rows (`block_rows`), so one staged input serves all of a
workgroup's rows.

A workgroup may also split the input steps among `groups` thread groups (a `Tiling` field), each with its own
staged blocks and register tiles over steps g, g + groups, ...; their sums meet in shared memory at the end. Short
passes (batch decode: 32 positions) have too few (position block, row block) pairs to fill the card; the groups
give each workgroup more threads and keep every weight read once. Splits (the low-rank products, `LOW_RANK`) do
the same across workgroups: each takes a contiguous share of the input steps and keeps its sums in a `parts`
array, and a second task (`split_sums_task`) adds them in split order. How many workgroups split a product is
chosen in each pass from its positions (`split_count`): enough to bring its threads to `Tiling.fill`, at most
`Tiling.splits`. A prefill chunk's products of C rows have few (position block, row block) workgroups (64 for C
2048 at 256 positions in PREFILL_WIDE); four splits took them from 157.5 µs (PREFILL) to 91.9, 549.6 to 303.6 for
the channel mix's value (H100, benchmarks/gemm_probe.py; BENCHMARKS.md), while a 1024-token chunk fills the card
without.

A thread's register tile is emitted one sum at a time, in loops (`pick_row`, `pick`: selects keep the tile in
registers), so each task compiles one epilogue: unrolled, PREFILL_WIDE's 64 sums each compiled their own
(activation, gate, accumulation, parts), and a v6 layer of tile 64 with five such products took 4m38 to compile on
lavapipe against 1m00 now.

A task of more than Taichi's grid of work items (131072 threads on Vulkan) gives each thread several items, its
workgroup going on to the next together: every item ends with a barrier after its last read of workgroup memory.
"""
import math
from typing import NamedTuple

import taichi as ti

from kernels import gpu_rows, lanes
from kernels.gemm_epilogue import emit, emit_inputs, finish, pick, pick_row, tile_inputs
from kernels.gemm_staging import fetch_w, no_w, no_x, stage_x, store_w, store_x
from kernels.quant import DENSE


class Tiling(NamedTuple):
    """A `gemm_task` workgroup's shape."""
    positions: int  # positions per workgroup
    rows: int  # output rows per workgroup at most, fewer when a route's blocks start on a smaller multiple
    step: int  # input columns staged per step
    unroll: int  # staged columns per iteration of the multiply loop
    per: int  # a thread's register tile: per positions × per rows
    groups: int  # thread groups splitting the input steps, their sums added at the end
    splits: int = 1  # workgroups splitting the input steps at most, their sums added by a second task (`parts`)
    fill: int = 32768  # threads from which a product in this shape fills the H100 unsplit (`split_count`)
    run: int = 1  # a thread's positions and rows come in runs of this many neighbours (`tile_offset`)


PASS_TILE = 64  # a pass's tile (kernels/engine.py) from which its products take the PREFILL shapes
BATCH_TILE = 32  # a pass's tile from which (below PASS_TILE) they take the BATCH shapes
# Workgroup shapes (BENCHMARKS.md, benchmarks/gemm_probe.py on the H100): products of WIDE_OUT rows or more take the
# wide ones, whose larger row blocks still leave enough workgroups to fill the card.
PREFILL = Tiling(64, 32, 32, 4, 4, 1)  # (with splits it would fill at ~131072 threads: BENCHMARKS.md)
PREFILL_WIDE = Tiling(128, 64, 16, 8, 8, 1, run=2)  # unroll 8 and runs of 2: 5-10 % faster than 4 and 1
BATCH = Tiling(32, 16, 16, 4, 4, 8, run=4)  # runs of 4: 5-7 % faster than 1 at batch 32
BATCH_WIDE = Tiling(32, 32, 32, 4, 4, 2, run=2)  # 2 groups: 4 ran v7's 3-block r, k, v route at half speed
# (unroll 8 took another 3-8 % off the batch shapes, and made a v6 model's first passes compile ~12 % longer on
# lavapipe: CI's 15 minutes; PREFILL_WIDE's unroll 8 costs no compile time)
LOW_RANK = Tiling(32, 16, 16, 4, 4, 4, 16)  # at most 16 splits: `low_rank_shape`
WIDE_OUT = 4096
MAX_SPLITS = 4  # of a product given room for its partial sums (`shape_for`): 8 were slower than 4 at 256 positions
MIN_ROWS = 16  # routes whose blocks start on a multiple of fewer rows go through the lane kernels


def shape_for(tile: int, n_out: int, route: tuple = ((0, 0, 0, 0),), room: int = 0):
    """The `Tiling` with which gemm_task takes a product of n_out rows (in `route`'s blocks) in a pass of `tile`, or
    None where the lane kernels take it: passes below BATCH_TILE, the x64 CPU, a route whose blocks start on a
    multiple of fewer than MIN_ROWS rows. A product given `room` columns for partial sums of at least two splits
    takes the wide shape and may split (up to MAX_SPLITS: `split_count`); others take the wide shapes from WIDE_OUT
    rows. (The low-rank products, a few hundred rows, take `low_rank_shape`.) Called in ti.static."""
    if tile < BATCH_TILE or lanes.LANES == 1:
        return None
    splits = max(1, min(MAX_SPLITS, room // n_out)) if room else 1  # (no room: n_out may be a run-time value)
    wide = n_out >= WIDE_OUT or splits > 1
    if tile >= PASS_TILE:
        shape = PREFILL_WIDE if wide else PREFILL
    else:
        shape = BATCH_WIDE if wide else BATCH
    shape = shape._replace(splits=splits)
    return shape if block_rows(route, shape) >= MIN_ROWS else None


def takes(tile: int, n_out: int, route: tuple = ((0, 0, 0, 0),)) -> bool:
    """Whether `shape_for` gives a workgroup shape (Taichi scope has no `is not`)."""
    return shape_for(tile, n_out, route) is not None


def low_rank_shape(tile: int, n_out: int, room: int, route: tuple = ((0, 0, 0, 0),)):
    """The `Tiling` of a low-rank product (a LoRA stage: a few hundred rows over C inputs) of n_out rows in a pass of
    `tile`, or None where the lane kernels take it (as `shape_for`): LOW_RANK, whose workgroups each take 1/splits of
    the inputs, with as many splits as `room` columns of partial sums hold (at least one). In BATCH shape, one
    workgroup per block of rows, a v6 maa LoRA (160 rows) had 10 workgroups for the whole card: 36.9 µs a layer at
    batch 32; LOW_RANK takes 12.4 µs (H100, `benchmarks/gemm_probe.py`; BENCHMARKS.md). Called in ti.static."""
    if tile < BATCH_TILE or lanes.LANES == 1:
        return None
    shape = LOW_RANK._replace(splits=max(1, min(LOW_RANK.splits, room // n_out)))
    return shape if block_rows(route, shape) >= MIN_ROWS else None


def takes_low_rank(tile: int, n_out: int, room: int, route: tuple = ((0, 0, 0, 0),)) -> bool:
    """Whether `low_rank_shape` gives a workgroup shape."""
    return low_rank_shape(tile, n_out, room, route) is not None


def block_rows(route: tuple, shape: Tiling) -> int:
    """Output rows per workgroup: the largest power of two ≤ shape.rows dividing every block's first row."""
    rows = shape.rows
    for first, *_ in route:
        rows = math.gcd(rows, first) if first else rows
    return rows


def group_threads(shape: Tiling, rows: int) -> int:
    """Threads of one input group: one per (position, row) register tile."""
    return (shape.positions // shape.per) * (rows // shape.per)


@ti.func
def workgroup_blocks(n_out: ti.template(), T: ti.template(), rows: ti.template(), shape: ti.template()):
    """(Position block, row block) pairs of a product of n_out rows over T positions."""
    return (T + shape.positions - 1) // shape.positions * ((n_out + rows - 1) // rows)


@ti.func
def split_count(n_out: ti.template(), T: ti.template(), rows: ti.template(), shape: ti.template()):
    """Workgroups splitting each block's input steps in a pass of T positions: enough for the product's threads to
    reach shape.fill, at most shape.splits (an expression of T: a task's range may hold it)."""
    threads = ti.static(group_threads(shape, rows) * shape.groups)
    return ti.max(1, ti.min(shape.splits, shape.fill // (workgroup_blocks(n_out, T, rows, shape) * threads)))


@ti.func
def gemm_items(n_out: ti.template(), T: ti.template(), rows: ti.template(), shape: ti.template()):
    """Work items of a `gemm_task`: one per thread of every (position block, row block, split) workgroup."""
    return (workgroup_blocks(n_out, T, rows, shape) * ti.static(group_threads(shape, rows) * shape.groups)
            * split_count(n_out, T, rows, shape))


def full_block(block: tuple) -> tuple:
    """A route block with its defaults: (first, x_col, y_col, act, w_first, w_col, gate_first, width); width 0: the
    product's n_in."""
    first = block[0]
    return tuple(block) + (first, 0, first, 0)[len(block) - 4:]


def from_first_column(route: tuple) -> bool:
    """Whether every block of the route reads W from column 0."""
    return all(full_block(block)[5] == 0 for block in route)


def of_full_width(route: tuple) -> bool:
    """Whether every block of the route reads all n_in columns."""
    return all(full_block(block)[7] == 0 for block in route)


@ti.func
def route_of(route: ti.template(), o: ti.i32):
    """`full_block` of the route block holding output row o, as a vector of 8 ints."""
    found = ti.Vector(ti.static(full_block(route[0])), dt=ti.i32)
    for q in ti.static(range(1, len(route))):
        if o >= route[q][0]:
            found = ti.Vector(ti.static(full_block(route[q])), dt=ti.i32)
    return found


@ti.func
def gemm_task(W: ti.template(), layer: ti.template(), w_row: ti.template(), n_out: ti.template(),
              n_in: ti.template(), X: ti.template(), route: ti.template(), Y: ti.template(),
              accumulate: ti.template(), gate: ti.template() = None, gate_col: ti.template() = 0,
              storage: ti.template() = DENSE, shape: ti.template() = PREFILL, parts: ti.template() = None):
    """One task: for every position t and output row o (in route block (first, x_col, y_col, act, w_first, w_col,
    gate_first), module docstring): Y[t, y_col + o - first] (+)= act(X[t, x_col:x_col+n_in] ·
    W[layer, w_row + w_first + o - first, w_col:w_col+n_in]), times gate[t, gate_col + gate_first + o - first] when a
    gate array is given. W dense (f16 or f32) or quantized (`storage`: u32 rows in the GPU's code order,
    kernels/quant.py; w_col 0), X and Y f32. `shape`: the workgroup's `Tiling`. With shape.splits > 1, `parts`:
    (P, col), P f32 with room for P[t, col + sp·n_out + o], split sp's sum, for shape.splits splits
    (`split_count` of them take part in a pass; `split_sums_task`)."""
    rows = ti.static(block_rows(route, shape))
    split_parts = ti.static(parts if ti.static(shape.splits > 1) else None)  # where `finish` keeps a split's sums
    P = ti.static(shape.per)
    pos_threads = ti.static(shape.positions // P)  # one name per ti.static: a tuple's would be run-time values
    row_threads = ti.static(rows // P)
    row_offsets = ti.static(tile_offsets(row_threads, shape))  # a thread's rows from its first (`tile_inputs`)
    group_size = ti.static(group_threads(shape, rows))
    threads = ti.static(group_size * shape.groups)
    pad = ti.static(column_padding(shape))
    ti.static_assert(storage == DENSE or ti.static(from_first_column(route) and of_full_width(route)),
                     "quantized rows are read whole, from their first column")
    ti.static_assert(shape.groups == 1 or rows <= shape.step, "the groups' sums are added in the staged X blocks")
    ti.static_assert(shape.positions * rows % threads == 0 and shape.positions * shape.step % group_size == 0
                     and rows * shape.step % group_size == 0, "every thread stages and emits as many values")
    ti.static_assert(shape.splits == 1 or ti.static(lanes._given(parts)), "split products need room for their sums")
    ti.loop_config(block_dim=threads)
    for thread in range(lanes.task_range(gemm_items(n_out, X.shape[0], rows, shape))):
        for rnd in range(lanes.task_rounds(thread, gemm_items(n_out, X.shape[0], rows, shape))):
            T = X.shape[0]
            splits = split_count(n_out, T, rows, shape)
            g = lanes.task_item(thread, rnd)
            tid, split, block = g % threads, g // threads % splits, g // threads // splits
            group, gid = tid // group_size, tid % group_size
            t_blocks = (T + shape.positions - 1) // shape.positions
            o0, t0 = block // t_blocks * rows, block % t_blocks * shape.positions
            tm, tn = gid // row_threads, gid % row_threads
            first_position, first_row = tm * shape.run, tn * shape.run  # the thread's first entries (`tile_offset`)
            part = route_of(route, o0)
            # this block's inputs (its `width`); n_in as before, at compile time, in a route of full-width blocks
            block_in = n_in if ti.static(of_full_width(route)) else ti.select(part[7] > 0, part[7], n_in)
            entries = gpu_rows.lane_table(tid % lanes.LANES, lanes.LANES, storage)  # NF4/SF4 on CUDA: table by shuffle
            xs = ti.simt.block.SharedArray((shape.groups, shape.step, shape.positions + pad), ti.f32)
            ws = ti.simt.block.SharedArray((shape.groups, shape.step, rows + pad), ti.f32)
            acc = ti.Matrix([[0.0] * P for _ in ti.static(range(P))])  # acc[i, j]: position i, row j
            split_steps = ((block_in + shape.step - 1) // shape.step + splits - 1) // splits
            first_step = split * split_steps  # this workgroup's steps: first_step + r·groups + group, r < rounds
            limit = ti.min(block_in, (first_step + split_steps) * shape.step)  # its columns end here (others': 0)
            rounds = (split_steps + shape.groups - 1) // shape.groups
            x_next, w_next = no_x(group_size, shape), no_w(group_size, rows, storage, shape)
            # round s stages what round s - 1 loaded and multiplies it while loading round s's columns (group g's
            # step s·groups + g; past n_in, zeros); round 0 stages zeros (its products add nothing), so the loads are
            # compiled once (lavapipe: 86 s for a v6 layer at tile 64 with a first load before the loop)
            for r in range(rounds + 1):
                store_x(xs, group, x_next, gid, group_size, shape)
                store_w(ws, group, w_next, gid, group_size, storage, entries, shape)
                ti.simt.block.sync()
                k_next = (first_step + ti.min(r, rounds - 1) * shape.groups + group) * shape.step  # last round: no if
                x_next = stage_x(X, part[1], limit, t0, T, k_next, gid, group_size, shape)
                w_next = fetch_w(W, layer, w_row + part[4] - part[0], part[5], o0, n_out, block_in, k_next, gid,
                                 group_size, rows, storage, shape)
                for kq in range(shape.step // shape.unroll):  # a loop, not unrolled whole: CUDA compiles a layer in s
                    for q in ti.static(range(shape.unroll)):
                        kk = kq * shape.unroll + q
                        x = ti.Vector([xs[group, kk, first_position + ti.static(tile_offset(i, pos_threads, shape))]
                                       for i in ti.static(range(P))])
                        w = ti.Vector([ws[group, kk, first_row + ti.static(tile_offset(j, row_threads, shape))]
                                       for j in ti.static(range(P))])
                        acc += x.outer_product(w)
                ti.simt.block.sync()
            if ti.static(shape.groups == 1):  # the sums one at a time (loops, not unrolled: one `finish` compiled)
                for i in range(P):
                    row = pick_row(acc, i)
                    t = t0 + tile_entry(tm, i, pos_threads, shape)
                    inputs = tile_inputs(Y, t, o0 + first_row, ti.static(row_offsets), part, T, n_out, accumulate,
                                         gate, gate_col, split_parts, splits)
                    for j in range(P):
                        finish(Y, t, o0 + tile_entry(tn, j, row_threads, shape), pick(row, j), part, T, n_out,
                               accumulate, gate, pick_row(inputs, j), split_parts, split, splits)
            else:  # each group's sums into its staged X block (xs[group, row, position]), then added over the groups
                for i in ti.static(range(P)):
                    for j in ti.static(range(P)):
                        xs[group, first_row + ti.static(tile_offset(j, row_threads, shape)),
                           first_position + ti.static(tile_offset(i, pos_threads, shape))] = acc[i, j]
                ti.simt.block.sync()
                outputs = ti.static(shape.positions * rows // threads)  # (a loop: BATCH 8 % slower)
                inputs = [emit_inputs(Y, t0 + (tid + q * threads) // rows, o0 + (tid + q * threads) % rows, part, T,
                                      n_out, accumulate, gate, gate_col, split_parts, splits)
                          for q in ti.static(range(outputs))]
                for q in ti.static(range(outputs)):
                    e = tid + q * threads
                    m, n = e // rows, e % rows
                    total = 0.0
                    for h in ti.static(range(shape.groups)):
                        total += xs[h, n, m]
                    finish(Y, t0 + m, o0 + n, total, part, T, n_out, accumulate, gate, inputs[q], split_parts,
                           split, splits)
                ti.simt.block.sync()  # read before this thread's next item (past Taichi's grid) stages its own
    if ti.static(shape.splits > 1):
        split_sums_task(n_out, X, route, Y, accumulate, gate, gate_col, rows, shape, parts)


def tile_offset(i: int, threads: int, shape: Tiling) -> int:
    """Where entry i of a thread's register tile sits in the workgroup's block (positions, or rows, of `threads`
    threads along that side), from the thread's first entry (thread·run): runs of shape.run neighbours, the threads'
    runs side by side (run 1: i·threads). Called in ti.static: the multiply loop indexes the staged blocks at a
    run-time base plus constants (a ti.func per index made a v6 model's first passes compile ~8 % longer on
    lavapipe: BENCHMARKS.md)."""
    return i // shape.run * threads * shape.run + i % shape.run


def tile_offsets(threads: int, shape: Tiling) -> tuple:
    """`tile_offset` of every entry of a thread's register tile along one side."""
    return tuple(tile_offset(i, threads, shape) for i in range(shape.per))


@ti.func
def tile_entry(thread: ti.i32, i: ti.i32, threads: ti.template(), shape: ti.template()) -> ti.i32:
    """`tile_offset` from thread `thread`'s first entry, i known at run time (the epilogue's loops)."""
    entry = i * threads + thread
    if ti.static(shape.run > 1):
        entry = i // shape.run * threads * shape.run + thread * shape.run + i % shape.run
    return entry


def column_padding(shape: Tiling) -> int:
    """Entries after each staged column: one (the staging stores fall in distinct banks), or shape.run, so that every
    thread's runs start on a multiple of shape.run entries (loads of run neighbours may go together)."""
    return 1 if shape.run == 1 else shape.run


@ti.func
def split_sums_task(n_out: ti.template(), X: ti.template(), route: ti.template(), Y: ti.template(),
                    accumulate: ti.template(), gate: ti.template(), gate_col: ti.template(), rows: ti.template(),
                    shape: ti.template(), parts: ti.template()):
    """A split product's second task: each output's parts (`finish`) added in split order, and `emit`ted; no work in
    a pass whose product is not split (`split_count` 1)."""
    for thread in range(lanes.task_range(sum_items(n_out, X.shape[0], rows, shape))):
        for rnd in range(lanes.task_rounds(thread, sum_items(n_out, X.shape[0], rows, shape))):
            e = lanes.task_item(thread, rnd)
            t, o = e // n_out, e % n_out
            total = 0.0
            for sp in range(split_count(n_out, X.shape[0], rows, shape)):
                total += parts[0][t, parts[1] + sp * n_out + o]
            block = route_of(route, o)
            emit(Y, t, o, total, block, X.shape[0], n_out, accumulate, gate,
                 emit_inputs(Y, t, o, block, X.shape[0], n_out, accumulate, gate, gate_col, None, 1))


@ti.func
def sum_items(n_out: ti.template(), T: ti.template(), rows: ti.template(), shape: ti.template()):
    """Work items of a `split_sums_task`: one per output, none where the pass does not split the product."""
    return T * n_out * ti.min(split_count(n_out, T, rows, shape) - 1, 1)
