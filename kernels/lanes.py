"""Lane building blocks: a row is worked by LANES threads (one subgroup on a GPU, one thread on the CPU).

Why lanes and not workgroups: a Taichi kernel launch costs ~20 us even inside a graph, while each task (top-level
loop) of one kernel costs ~6 us (benchmarks/launch_cost.py, H100, spec/kernels.md §6), so a whole layer is one
kernel of many tasks, and a row's sums go through subgroup (warp) operations, with no workgroup barrier. Long
passes (prefill) run their matrices as shared-memory tiled products instead (kernels/gpu_gemm.py).

Everything here is a `ti.func` used inside the layer kernels; tests reach them through small wrapper kernels.
Matrices are stacked by layer: W (L, out, in), so one compiled kernel serves every layer.
"""

import taichi as ti

import kernels
from kernels import gpu_gemm, gpu_rows, x64_rows
from kernels.gpu_rows import given as _given
from kernels.common import ACT_RELU_SQUARED, ACT_SIGMOID, ACT_TANH
from kernels.quant import DENSE

FULL_MASK = 0xFFFFFFFF
ROW, FIRST, START, LENGTH, LAST = range(5)  # rows of a pass's packed plan (kernels/engine.py Pass.packed)
GROUP = 128  # threads per workgroup: several rows per workgroup
TOKEN_TILE = 8  # a lane group's positions in a pass of more than one (engine.py's tile, or lane_tile's)
ROW_TILE = 4  # GPU, tiles of positions: weight rows per lane group (a register tile of ROW_TILE × tile sums)
ROW_TILE_UNROLL = 2  # steps of LANES columns in flight per lane in dot_rows_tile
SPLIT_COLUMNS = 4096  # GPU, one position: dense rows at least this long are read by two lane groups (`row_split`)


LANES = 1  # threads per row: set once by kernels.init (a subgroup on a GPU, 1 on the CPU); read when kernels compile
THREADS = 1 << 20  # CUDA: every task's loop range, a constant (`task_range`); Taichi's own grid for a run-time range


@ti.func
def task_range(items: ti.template()):
    """The range of a task's top-level loop over `items` work items (an expression of shapes and constants, never a
    variable: see below). On CUDA a constant, THREADS, each thread then taking items thread, thread + THREADS, ...
    (`task_rounds`, `task_item`); elsewhere `items`, one round each.

    Why: on LLVM arches Taichi computes a loop bound that is not a constant in a serial task of its own, before the
    loop, and on CUDA that task is one more dispatch (~8 us: benchmarks/launch_cost.py); a v6 layer had seven
    (benchmarks/task_profile.py). So a task's scalars are template arguments and its variables live inside its loop:
    a value computed at the kernel's top level and read by a task is also passed through a serial task. Vulkan
    computes such a bound inside the task, and the CPU's serial tasks cost nothing."""
    return ti.static(THREADS) if ti.static(constant_ranges()) else items


@ti.func
def task_rounds(thread: ti.i32, items: ti.template()):
    """How many items `thread` of a `task_range` loop takes."""
    return (items - thread + THREADS - 1) // THREADS if ti.static(constant_ranges()) else 1


@ti.func
def task_item(thread: ti.i32, r: ti.i32):
    """The item of `thread`'s round r."""
    return thread + r * THREADS if ti.static(constant_ranges()) else thread


@ti.func
def tiles(T: ti.template(), tile: ti.template()):
    """Tiles of `tile` positions over T positions."""
    return (T + tile - 1) // tile


@ti.func
def row_tile_items(n_rows: ti.template(), T: ti.template(), tile: ti.template()):
    """Work items of a task over (output row, tile of positions), LANES lanes each."""
    return n_rows * tiles(T, tile) * LANES


@ti.func
def row_tile_item(g: ti.i32, T: ti.i32, tile: ti.template()) -> ti.math.ivec3:
    """Item g of a `row_tile_items` task: (lane, output row, first position of the tile); rows are row-major over
    the tiles, so neighbouring lane groups share a weight row."""
    n_tiles = tiles(T, tile)
    group = g // LANES
    return ti.math.ivec3(g % LANES, group // n_tiles, group % n_tiles * tile)


def constant_ranges() -> bool:
    """Whether tasks loop over `task_range`'s constant range (CUDA). Called in ti.static."""
    return kernels.current_arch() == "cuda"


@ti.func
def lane_sum(value: ti.f32) -> ti.f32:
    """The sum of `value` over the LANES threads of one row; every lane gets it."""
    total = value
    if ti.static(LANES > 1):
        if ti.static(kernels.current_arch() == "vulkan"):
            total = ti.simt.subgroup.reduce_add(value)
        else:
            for step in ti.static(range(LANES.bit_length() - 1)):  # halving offsets: LANES/2, ..., 1
                total += ti.simt.warp.shfl_down_f32(ti.u32(FULL_MASK), total, LANES >> (step + 1))
            total = ti.simt.warp.shfl_sync_f32(ti.u32(FULL_MASK), total, 0)
    return total


@ti.func
def activate(s: ti.f32, act: ti.i32) -> ti.f32:
    """`act` chosen at run time (a segment's activation): common.ACT_*."""
    r = s
    if act == ACT_RELU_SQUARED:
        r = ti.max(s, 0.0) ** 2
    elif act == ACT_SIGMOID:
        r = 1.0 / (1.0 + ti.exp(-s))
    elif act == ACT_TANH:
        r = ti.tanh(s)
    return r


@ti.func
def clamped(t: ti.i32, T: ti.i32) -> ti.i32:
    """A tile's position t, or the pass's last one past the end: the loads stay unconditional (branch-free loops
    keep every load in flight; a load inside an `if` waits for the one before on Vulkan), and `emit_tile` writes
    only positions below T."""
    return ti.min(t, T - 1)


@ti.func
def dot_tile(W: ti.template(), layer: ti.i32, o: ti.i32, w_col: ti.i32, X: ti.template(), x_col: ti.i32,
             n_in: ti.i32, t0: ti.i32, T: ti.i32, lane: ti.i32, tile: ti.template(), storage: ti.template() = DENSE):
    """This lane's share of W[layer, o, w_col:w_col+n_in] · X[t0+u, x_col:x_col+n_in] for the `tile` positions u
    (not yet summed over the lanes). `storage`: DENSE (W holds floats) or a quantized scheme (W holds u32 rows,
    kernels/quant.py; w_col must be 0)."""
    acc = ti.Vector([0.0] * tile)
    if ti.static(LANES == 1):  # the CPU: one thread per row
        acc = x64_rows.dot_tile(W, layer, o, w_col, X, x_col, n_in, t0, T, tile, storage)
    elif ti.static(storage != DENSE):
        acc = gpu_rows.dot_tile(W, layer, o, X, x_col, n_in, t0, T, lane, LANES, tile, storage)
    else:
        unroll = ti.static(16 if tile == 1 else 4)  # weight loads in flight per lane: decode is latency-bound
        span = LANES * unroll
        full = n_in // span
        for step in range(full):  # whole steps, no condition around a load: all `unroll` loads are in flight at once
            k0 = step * span + lane
            w = ti.Vector([0.0] * unroll)
            for q in ti.static(range(unroll)):
                w[q] = ti.cast(W[layer, o, w_col + k0 + q * LANES], ti.f32)
            for q in ti.static(range(unroll)):
                for u in ti.static(range(tile)):
                    acc[u] += w[q] * X[clamped(t0 + u, T), x_col + k0 + q * LANES]
        for q in range((n_in - full * span + LANES - 1) // LANES):  # the rest, one guarded load at a time
            k = full * span + q * LANES + lane
            if k < n_in:
                w = ti.cast(W[layer, o, w_col + k], ti.f32)
                for u in ti.static(range(tile)):
                    acc[u] += w * X[clamped(t0 + u, T), x_col + k]
    return acc


@ti.func
def emit_tile(acc: ti.template(), Y: ti.template(), col: ti.i32, t0: ti.i32, T: ti.i32, lane: ti.i32,
              act: ti.i32, accumulate: ti.template(), gate: ti.template() = None, gate_col: ti.i32 = 0):
    """Y[t0+u, col] = act(Σ_lanes acc[u]) (or += with `accumulate`), written by lane 0; with a `gate` array, the
    value is first multiplied by gate[t0+u, gate_col]."""
    for u in ti.static(range(acc.n)):
        total = lane_sum(acc[u])
        if lane == 0 and t0 + u < T:
            emit_value(total, Y, col, t0 + u, act, accumulate, gate, gate_col)


@ti.func
def emit_value(total: ti.f32, Y: ti.template(), col: ti.i32, t: ti.i32, act: ti.i32, accumulate: ti.template(),
               gate: ti.template(), gate_col: ti.i32):
    """Y[t, col] = act(total) (or += with `accumulate`), times gate[t, gate_col] with a `gate` array."""
    s = activate(total, act)
    if ti.static(_given(gate)):
        s *= gate[t, gate_col]
    if ti.static(accumulate):
        Y[t, col] = Y[t, col] + s  # one writer per element: no atomic add
    else:
        Y[t, col] = s


@ti.func
def linear_task(W: ti.template(), layer: ti.template(), w_row: ti.template(), n_out: ti.template(),
                n_in: ti.template(), X: ti.template(), x_col: ti.template(), Y: ti.template(), y_col: ti.template(),
                act: ti.template(), accumulate: ti.template(), tile: ti.template(), gate: ti.template() = None,
                gate_col: ti.template() = 0, storage: ti.template() = DENSE, keep: ti.template() = None,
                parts: ti.template() = None, room: ti.template() = 0):
    """One task: Y[:, y_col:y_col+n_out] (+)= act(X[:, x_col:x_col+n_in] @ W[layer, w_row:w_row+n_out, :n_in]ᵀ),
    times gate[:, gate_col:gate_col+n_out] element by element when a `gate` array is given (the v5/v6 channel mix's
    receptance). `storage`: W's (DENSE, or a quantized scheme: kernels/quant.py). Must match ref.common.linear
    (and the product that follows it), a QuantizedMatrix's included. Where `gpu_gemm.shape_for` gives a workgroup
    shape (GPU passes of BATCH_TILE and up), W (dense or quantized) goes through `gpu_gemm.gemm_task`, else through
    the lanes at `lane_tile(tile)`. `keep` (tile 1 on a GPU: kernels/norm_linear.py): (kept, kept_col, state,
    state_layer, plan), and the task also copies kept[t, kept_col + o] into state[b, state_layer, o] at each row b's
    last position t. `parts` = (P, col) and `room`: columns of P from col free for a gemm task's partial sums, so
    that it may split the product over the inputs (`gpu_gemm.shape_for`)."""
    if ti.static(gpu_gemm.takes(tile, n_out)):
        gpu_gemm.gemm_task(W, layer, w_row, n_out, n_in, X, ((0, x_col, y_col, act),), Y, accumulate, gate, gate_col,
                           storage, ti.static(gpu_gemm.shape_for(tile, n_out, room=room)), parts)
    else:
        lane_linear_task(W, layer, w_row, n_out, n_in, X, x_col, Y, y_col, act, accumulate,
                         ti.static(lane_tile(tile)), gate, gate_col, storage, keep)


@ti.func
def low_rank_task(W: ti.template(), layer: ti.template(), w_row: ti.template(), n_out: ti.template(),
                  n_in: ti.template(), X: ti.template(), x_col: ti.template(), Y: ti.template(),
                  y_col: ti.template(), act: ti.template(), tile: ti.template(), parts: ti.template(),
                  room: ti.template()):
    """`linear_task` (dense, not accumulated) for a low-rank product, a LoRA stage of a few hundred rows: where
    `gpu_gemm.low_rank_shape` gives a workgroup shape, a gemm task split over the inputs, its partial sums in
    parts = (P, col): `room` columns of P from col; else by the lanes at `lane_tile(tile)`."""
    if ti.static(gpu_gemm.takes_low_rank(tile, n_out, room)):
        gpu_gemm.gemm_task(W, layer, w_row, n_out, n_in, X, ((0, x_col, y_col, act),), Y, False,
                           shape=ti.static(gpu_gemm.low_rank_shape(tile, n_out, room)), parts=parts)
    else:
        lane_linear_task(W, layer, w_row, n_out, n_in, X, x_col, Y, y_col, act, False, ti.static(lane_tile(tile)),
                         None, 0, DENSE, None)


def lane_tile(tile: int) -> int:
    """The positions a lane group takes at once in a pass of `tile` (gpu_gemm's passes: TOKEN_TILE)."""
    return min(tile, TOKEN_TILE)


@ti.func
def lane_linear_task(W: ti.template(), layer: ti.template(), w_row: ti.template(), n_out: ti.template(),
                     n_in: ti.template(), X: ti.template(), x_col: ti.template(), Y: ti.template(),
                     y_col: ti.template(), act: ti.template(), accumulate: ti.template(), tile: ti.template(),
                     gate: ti.template(), gate_col: ti.template(), storage: ti.template(), keep: ti.template()):
    """`linear_task` by lane groups: one per (output row, or ROW_TILE rows of a dense W on a GPU; tile of
    positions), or `row_split` per output row."""
    ti.static_assert(not _given(keep) or tile == 1, "linear_task keeps a state at tile 1 only")
    rows = ti.static(ROW_TILE if tile > 1 and LANES > 1 and storage == DENSE else 1)
    split = ti.static(row_split(tile, n_out, n_in))
    ti.loop_config(block_dim=GROUP)
    for thread in range(task_range(row_tile_items(tiles(n_out, rows), X.shape[0], tile) * split)):
        for rnd in range(task_rounds(thread, row_tile_items(tiles(n_out, rows), X.shape[0], tile) * split)):
            T = X.shape[0]
            g = task_item(thread, rnd)  # lane, then part of the row (with split), then row and tile
            lane, block, t0 = row_tile_item(g // (LANES * split) * LANES + g % LANES, T, tile)
            o = block * rows
            if ti.static(_given(keep)):
                if lane == 0 and g // LANES % split == 0:
                    keep_row(keep, o, t0)
            if ti.static(split > 1):
                split_row(W, layer, w_row + o, n_in, X, x_col, Y, y_col + o, t0, lane, g // LANES, split, act,
                          accumulate, gate, gate_col + o, storage)
            elif ti.static(rows == 1):
                acc = dot_tile(W, layer, w_row + o, 0, X, x_col, n_in, t0, T, lane, tile, storage)
                emit_tile(acc, Y, y_col + o, t0, T, lane, act, accumulate, gate, gate_col + o)
            else:
                acc = dot_rows_tile(W, layer, w_row, o, n_out, X, x_col, n_in, t0, T, lane, rows, tile)
                for q in ti.static(range(rows)):
                    if o + q < n_out:
                        emit_tile(ti.Vector([acc[q, u] for u in ti.static(range(tile))]), Y, y_col + o + q, t0, T,
                                  lane, act, accumulate, gate, gate_col + o + q)


@ti.func
def keep_row(keep: ti.template(), o: ti.i32, t: ti.i32):
    """`linear_task`'s `keep` for output row o at position t: kept[t, kept_col + o] into state[b, state_layer, o]
    if t is its row b's last position."""
    b = keep[4][ROW, t]  # keep: (kept, kept_col, state, state_layer, plan)
    if keep[4][LAST, b] == t:
        keep[2][b, keep[3], o] = keep[0][t, keep[1] + o]


def row_split(tile: int, n_out: int, n_in: int) -> int:
    """Lane groups per output row in `lane_linear_task`: two for rows of at least SPLIT_COLUMNS at one position on a
    GPU, else one. A batch-1 step's long rows (v6's 2048 × 7168 channel-mix value, v7's 2048 × 8192) left too few
    loads in flight with one group per row: 18.3 µs against 14.4 µs split in two (benchmarks/decode_probe.py, H100,
    fp16 rows); quantized rows split by their groups of words (`gpu_rows.dot_tile`'s parts). The halves are added
    through shared memory, so the row's groups share a workgroup, and every workgroup must be whole (its barrier is
    reached by all its threads): n_out · 2 · LANES a multiple of GROUP. Sizes known only at run time (kernel
    arguments) get one group. Called in ti.static."""
    if not (isinstance(n_out, int) and isinstance(n_in, int)):
        return 1
    whole = (n_out * 2 * LANES) % GROUP == 0
    return 2 if tile == 1 and LANES > 1 and n_in >= SPLIT_COLUMNS and whole else 1


@ti.func
def split_row(W: ti.template(), layer: ti.i32, o: ti.i32, n_in: ti.template(), X: ti.template(), x_col: ti.i32,
              Y: ti.template(), y_col: ti.i32, t: ti.i32, lane: ti.i32, group: ti.i32, split: ti.template(),
              act: ti.i32, accumulate: ti.template(), gate: ti.template(), gate_col: ti.i32,
              storage: ti.template() = DENSE):
    """Lane group `group` of `split` ones sharing W[layer, o] · X[t] (`row_split`): each sums its contiguous part of
    the columns (`dot_tile`; a quantized row's part of its groups of words), then the first group's lane 0 adds the
    parts, in order, and emits the row."""
    part = group % split
    total = 0.0
    if ti.static(storage == DENSE):
        width = (n_in + split - 1) // split
        count = ti.min(width, n_in - part * width)
        total = lane_sum(dot_tile(W, layer, o, part * width, X, x_col + part * width, count, t, t + 1, lane, 1)[0])
    else:
        total = lane_sum(gpu_rows.dot_tile(W, layer, o, X, x_col, n_in, t, t + 1, lane, LANES, 1, storage, None, part,
                                           split)[0])
    parts = ti.simt.block.SharedArray((GROUP // LANES,), ti.f32)
    local = group % (GROUP // LANES)  # this group's slot in its workgroup; the row's first group is local - part
    if lane == 0:
        parts[local] = total
    ti.simt.block.sync()
    if lane == 0 and part == 0:
        row = 0.0
        for q in ti.static(range(split)):
            row += parts[local + q]
        emit_value(row, Y, y_col, t, act, accumulate, gate, gate_col)
    ti.simt.block.sync()  # read before this thread's next item (past Taichi's grid) writes its part


@ti.func
def dot_rows_tile(W: ti.template(), layer: ti.i32, w_row: ti.i32, o: ti.i32, n_out: ti.i32, X: ti.template(),
                  x_col: ti.i32, n_in: ti.i32, t0: ti.i32, T: ti.i32, lane: ti.i32, rows: ti.template(),
                  tile: ti.template()):
    """`dot_tile` for `rows` neighbouring weight rows o.. at once (dense, GPU), a register tile of rows × tile sums:
    each weight load serves `tile` positions and each input load `rows` rows. Rows past n_out repeat the last one
    (the caller emits only rows below n_out). Each sum adds the same terms in the same order as `dot_tile`."""
    acc = ti.Matrix([[0.0] * tile for _ in ti.static(range(rows))])
    span = LANES * ROW_TILE_UNROLL
    full = n_in // span
    for step in range(full + (n_in - full * span + LANES - 1) // LANES):
        if step < full:  # a whole step: no condition around its loads
            for q in ti.static(range(ROW_TILE_UNROLL)):
                acc += rows_times_tile(W, layer, w_row, o, n_out, X, x_col, step * span + q * LANES + lane, t0, T,
                                       rows, tile)
        else:
            k = full * span + (step - full) * LANES + lane
            if k < n_in:
                acc += rows_times_tile(W, layer, w_row, o, n_out, X, x_col, k, t0, T, rows, tile)
    return acc


@ti.func
def rows_times_tile(W: ti.template(), layer: ti.i32, w_row: ti.i32, o: ti.i32, n_out: ti.i32, X: ti.template(),
                    x_col: ti.i32, k: ti.i32, t0: ti.i32, T: ti.i32, rows: ti.template(), tile: ti.template()):
    """Column k's terms of `dot_rows_tile`: W[rows o.., k] ⊗ X[tile t0.., k] (rows past n_out repeat the last)."""
    w = ti.Vector([ti.cast(W[layer, w_row + ti.min(o + r, n_out - 1), k], ti.f32) for r in ti.static(range(rows))])
    x = ti.Vector([X[clamped(t0 + u, T), x_col + k] for u in ti.static(range(tile))])
    return w.outer_product(x)
