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
from kernels.common import ACT_RELU_SQUARED, ACT_SIGMOID, ACT_TANH
from kernels.quant import DENSE

FULL_MASK = 0xFFFFFFFF
ROW, FIRST, START, LENGTH, LAST = range(5)  # rows of a pass's packed plan (kernels/engine.py Pass.packed)
ROW_UNROLL = 8  # loads in flight per lane in a row reduction read from memory twice (`row_partial`)
ROW_VALUES = 64  # GPU: a row of up to ROW_VALUES·LANES values is held in registers for its statistics (`row_stats`)
GROUP = 128  # threads per workgroup: several rows per workgroup
TOKEN_TILE = 8  # a lane group's positions in a pass of more than one (engine.py's tile, or lane_tile's)
ROW_TILE = 4  # GPU, tiles of positions: weight rows per lane group (a register tile of ROW_TILE × tile sums)
ROW_TILE_UNROLL = 2  # steps of LANES columns in flight per lane in dot_rows_tile
PIECE_CHANNELS = 4  # channels per lane of a LayerNorm + mix piece (`pieces`): all their loads in flight at once
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
def row_partial(x: ti.template(), t: ti.i32, col: ti.i32, n: ti.i32, lane: ti.i32, center: ti.f32,
                squared: ti.template()) -> ti.f32:
    """This lane's share of Σ_j x[t, col+j] (or, `squared`, Σ_j (x[t, col+j] - center)²): ROW_UNROLL loads in flight
    per lane in whole steps with no condition around them, then the guarded rest."""
    part = 0.0
    span = LANES * ROW_UNROLL
    full = n // span
    for q in range(full + (n - full * span + LANES - 1) // LANES):
        if q < full:
            values = ti.Vector([0.0] * ROW_UNROLL)
            for u in ti.static(range(ROW_UNROLL)):
                values[u] = x[t, col + q * span + u * LANES + lane]
            for u in ti.static(range(ROW_UNROLL)):
                part += (values[u] - center) ** 2 if ti.static(squared) else values[u]
        else:
            j = full * span + (q - full) * LANES + lane
            if j < n:
                part += (x[t, col + j] - center) ** 2 if ti.static(squared) else x[t, col + j]
    return part


@ti.func
def mean_and_inv(x: ti.template(), t: ti.i32, col: ti.i32, n: ti.i32, lane: ti.i32, eps: ti.f32) -> ti.math.vec2:
    """(mean, 1/sqrt(biased var + eps)) of x[t, col:col+n], two passes as ref.common.layer_norm.
    A row is read by one subgroup, so latency, not bandwidth, bounds it: see `row_partial`."""
    mean = lane_sum(row_partial(x, t, col, n, lane, 0.0, False)) / n
    var = lane_sum(row_partial(x, t, col, n, lane, mean, True)) / n
    return ti.math.vec2(mean, 1.0 / ti.sqrt(var + eps))


@ti.func
def row_stats(x: ti.template(), t: ti.i32, n: ti.i32, lane: ti.i32, eps: ti.f32) -> ti.math.vec2:
    """`mean_and_inv` of the row x[t, :n] (a LayerNorm's statistics). On a GPU, a row of at most ROW_VALUES·LANES
    values is loaded once, every load in flight together, and both passes run over the registers: one memory round
    trip where `row_partial` makes 2·n/(LANES·ROW_UNROLL) (a decode step's LayerNorm was 24 µs on the H100)."""
    stats = ti.math.vec2(0.0, 0.0)
    if ti.static(LANES == 1):
        stats = mean_and_inv(x, t, 0, n, lane, eps)
    elif n <= LANES * ROW_VALUES:  # branch-free: an `if` per value made the code compile 4x slower (lavapipe)
        values = ti.Vector([0.0] * ROW_VALUES)
        for m in ti.static(range(ROW_VALUES)):
            values[m] = x[t, ti.min(m * LANES + lane, n - 1)]  # clamped: no branch around a load
        total = 0.0
        for m in ti.static(range(ROW_VALUES)):
            total += ti.select(m * LANES + lane < n, values[m], 0.0)
        mean = lane_sum(total) / n
        spread = 0.0
        for m in ti.static(range(ROW_VALUES)):
            spread += ti.select(m * LANES + lane < n, (values[m] - mean) ** 2, 0.0)
        stats = ti.math.vec2(mean, 1.0 / ti.sqrt(lane_sum(spread) / n + eps))
    else:
        stats = mean_and_inv(x, t, 0, n, lane, eps)
    return stats


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


def _given(value) -> bool:
    """For `ti.static` (Taichi scope has no `is not`): whether an optional template argument was passed."""
    return value is not None


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
                gate_col: ti.template() = 0, storage: ti.template() = DENSE, keep: ti.template() = None):
    """One task: Y[:, y_col:y_col+n_out] (+)= act(X[:, x_col:x_col+n_in] @ W[layer, w_row:w_row+n_out, :n_in]ᵀ),
    times gate[:, gate_col:gate_col+n_out] element by element when a `gate` array is given (the v5/v6 channel mix's
    receptance). `storage`: W's (DENSE, or a quantized scheme: kernels/quant.py). Must match ref.common.linear
    (and the product that follows it), a QuantizedMatrix's included. A GPU pass of `gpu_gemm.PASS_TILE` positions
    per tile takes W (dense or quantized) through `gpu_gemm.gemm_task`, anything else through the lanes at
    `lane_tile(tile)`. `keep` (tile 1 on a GPU: kernels/norm_linear.py): (kept, kept_col, state, state_layer, plan),
    and the task also copies kept[t, kept_col + o] into state[b, state_layer, o] at each row b's last position t."""
    if ti.static(gpu_gemm.takes(tile)):
        gpu_gemm.gemm_task(W, layer, w_row, n_out, n_in, X, ((0, x_col, y_col, act),), Y, accumulate, gate, gate_col,
                           storage)
    else:
        lane_linear_task(W, layer, w_row, n_out, n_in, X, x_col, Y, y_col, act, accumulate,
                         ti.static(lane_tile(tile)), gate, gate_col, storage, keep)


def lane_tile(tile: int) -> int:
    """The positions a lane group takes at once in a pass of `tile` (gpu_gemm.PASS_TILE's passes: TOKEN_TILE)."""
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
    split = ti.static(row_split(tile, n_out, n_in, storage))
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
                          accumulate, gate, gate_col + o)
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


def row_split(tile: int, n_out: int, n_in: int, storage: str) -> int:
    """Lane groups per output row in `lane_linear_task`: two for dense rows of at least SPLIT_COLUMNS at one
    position on a GPU, else one. A batch-1 step's long rows (v6's 2048 × 7168 channel-mix value, v7's 2048 × 8192)
    left too few loads in flight with one group per row: 18.3 µs against 14.4 µs split in two
    (benchmarks/decode_probe.py, H100). The halves are added through shared memory, so the row's groups share a
    workgroup, and every workgroup must be whole (its barrier is reached by all its threads): n_out · 2 · LANES a
    multiple of GROUP. Sizes known only at run time (kernel arguments) get one group. Called in ti.static."""
    if not (isinstance(n_out, int) and isinstance(n_in, int)):
        return 1
    whole = (n_out * 2 * LANES) % GROUP == 0
    return 2 if tile == 1 and LANES > 1 and storage == DENSE and n_in >= SPLIT_COLUMNS and whole else 1


@ti.func
def split_row(W: ti.template(), layer: ti.i32, o: ti.i32, n_in: ti.template(), X: ti.template(), x_col: ti.i32,
              Y: ti.template(), y_col: ti.i32, t: ti.i32, lane: ti.i32, group: ti.i32, split: ti.template(),
              act: ti.i32, accumulate: ti.template(), gate: ti.template(), gate_col: ti.i32):
    """Lane group `group` of `split` ones sharing W[layer, o] · X[t] (`row_split`): each sums its contiguous part of
    the columns (`dot_tile`), then the first group's lane 0 adds the parts, in order, and emits the row."""
    part, width = group % split, (n_in + split - 1) // split
    count = ti.min(width, n_in - part * width)
    total = lane_sum(dot_tile(W, layer, o, part * width, X, x_col + part * width, count, t, t + 1, lane, 1)[0])
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


@ti.func
def pieces(C: ti.template()):
    """Pieces a position's C channels are cut into for `shift_mix_task` and `gather_norm_task`: PIECE_CHANNELS per
    lane on a GPU (so each lane's loads are all in flight at once; every piece's lane group computes the row's
    statistics itself), one on the CPU."""
    return 1 if ti.static(LANES == 1) else (C + PIECE_CHANNELS * LANES - 1) // (PIECE_CHANNELS * LANES)


@ti.func
def piece_rounds(C: ti.i32) -> ti.i32:
    """Rounds of PIECE_CHANNELS channels a lane takes over its piece: one on a GPU, all of the row on the CPU."""
    return (C + PIECE_CHANNELS - 1) // PIECE_CHANNELS if ti.static(LANES == 1) else 1


@ti.func
def piece_channels(C: ti.i32, piece: ti.i32, lane: ti.i32, q: ti.i32) -> ti.i32:
    """Channel q of `lane` in `piece` (see `pieces`): on a GPU, PIECE_CHANNELS·LANES neighbouring channels per piece,
    lane-interleaved; on the CPU, the whole row. May pass C in the last round (the caller clamps its loads)."""
    c = q
    if ti.static(LANES > 1):
        c = piece * PIECE_CHANNELS * LANES + q * LANES + lane
    return c


@ti.func
def shift_mix_task(x: ti.template(), vec: ti.template(), slot: ti.template(), ln_row: ti.template(),
                   mix_row: ti.template(), n_mix: ti.template(), shift: ti.template(), layer: ti.template(),
                   plan: ti.template(), eps: ti.template(), out: ti.template(), out_col: ti.template(),
                   keep_delta: ti.template() = False):
    """LayerNorm, token shift and the token-shift mixes of one layer part, for every position t:

    out[t, out_col + m*C + c] = z + (prev - z) * vec[slot, mix_row + m, c],  z = LN(x[t]), prev = LN(x[t-1]) or the state,
    LN's weight and bias in vec[slot, ln_row] and vec[slot, ln_row + 1] (`slot`: the layer's index in its weight
    group, kernels/stacking.py), the state shift[b, layer]. The first position of each row also
    stores LN(x[last]) as the row's new shift state: it alone touches that state, reading before writing.
    With `keep_delta`, block n_mix gets prev - z as well (kernels/v6.py: data_mix_task scales it by the LoRA).
    Must match ref.common.layer_norm, previous_tokens and lerp_previous (the v6/v7 mixing convention).
    """
    ti.loop_config(block_dim=GROUP)
    for thread in range(task_range(x.shape[0] * pieces(x.shape[1]) * LANES)):
        for rnd in range(task_rounds(thread, x.shape[0] * pieces(x.shape[1]) * LANES)):
            g = task_item(thread, rnd)
            shift_mix_piece(x, vec, slot, ln_row, mix_row, n_mix, shift, layer, plan, eps, out, out_col, keep_delta,
                            g % LANES, g // LANES)


@ti.func
def shift_mix_piece(x: ti.template(), vec: ti.template(), slot: ti.i32, ln_row: ti.template(), mix_row: ti.template(),
                    n_mix: ti.template(), shift: ti.template(), layer: ti.i32, plan: ti.template(), eps: ti.f32,
                    out: ti.template(), out_col: ti.template(), keep_delta: ti.template(), lane: ti.i32,
                    group: ti.i32):
    """`shift_mix_task`'s work for one lane of one group: position t's piece of the channels."""
    C = x.shape[1]
    n_pieces = pieces(C)
    t, piece = group // n_pieces, group % n_pieces
    b, is_first = plan[ROW, t], plan[FIRST, t]
    last = plan[LAST, b]
    now, other = ti.math.vec2(0.0, 0.0), ti.math.vec2(0.0, 0.0)  # other: position t-1's; at a row's first, last's
    for r in range(1 + ti.cast(is_first == 0 or last != t, ti.i32)):  # a loop: `row_stats` is compiled once
        stats = row_stats(x, ti.select(r == 0, t, ti.select(is_first == 0, t - 1, last)), C, lane, eps)
        if r == 0:
            now = stats
        other = stats
    before = t - 1 + is_first  # position t-1, or t itself at a row's first position (its x[t-1] is never read)
    for r in range(piece_rounds(C)):
        for q in ti.static(range(PIECE_CHANNELS)):
            c = piece_channels(C, piece, lane, r * PIECE_CHANNELS + q)
            k = ti.min(c, C - 1)  # loads at a clamped channel, so none waits behind a branch; stores below C only
            w, bias = vec[slot, ln_row, k], vec[slot, ln_row + 1, k]
            z = (x[t, k] - now[0]) * now[1] * w + bias
            kept, newest = shift[b, layer, k], (x[last, k] - other[0]) * other[1] * w + bias
            prev = ti.select(is_first == 1, kept, (x[before, k] - other[0]) * other[1] * w + bias)
            mixes = ti.Vector([vec[slot, mix_row + m, k] for m in ti.static(range(n_mix))])
            if c < C:
                if is_first == 1:
                    shift[b, layer, c] = newest
                for m in ti.static(range(n_mix)):
                    out[t, out_col + m * C + c] = z + (prev - z) * mixes[m]
                if ti.static(keep_delta):
                    out[t, out_col + n_mix * C + c] = prev - z


@ti.func
def gather_norm_task(x: ti.template(), picks: ti.template(), ln: ti.template(), eps: ti.template(),
                     out: ti.template()):
    """out[k] = LN(x[picks[k]]) with LN's weight ln[0, 0] and bias ln[0, 1]; a pick of -1 (a row absent from the
    pass) gives zeros. Must match ref.common.layer_norm (ln_out) on the positions whose logits are asked for."""
    ti.loop_config(block_dim=GROUP)
    for thread in range(task_range(picks.shape[0] * pieces(x.shape[1]) * LANES)):
        for rnd in range(task_rounds(thread, picks.shape[0] * pieces(x.shape[1]) * LANES)):
            g = task_item(thread, rnd)
            lane, group = g % LANES, g // LANES
            k, piece = group // pieces(x.shape[1]), group % pieces(x.shape[1])
            norm_row(x, ti.max(picks[k], 0), picks[k] >= 0, ln, eps, out, k, piece, lane)


@ti.func
def norm_row(x: ti.template(), t: ti.i32, present: ti.i32, ln: ti.template(), eps: ti.f32, out: ti.template(),
             k: ti.i32, piece: ti.i32, lane: ti.i32):
    """This lane's channels of `piece` (see `pieces`) of out[k] = LN(x[t]) (zeros unless `present`), LN's weight
    ln[0, 0] and bias ln[0, 1]."""
    C = x.shape[1]
    stats = row_stats(x, t, C, lane, eps)
    for r in range(piece_rounds(C)):
        for q in ti.static(range(PIECE_CHANNELS)):
            c = piece_channels(C, piece, lane, r * PIECE_CHANNELS + q)
            j = ti.min(c, C - 1)  # clamped loads, guarded stores: as shift_mix_piece
            value = (x[t, j] - stats[0]) * stats[1] * ln[0, 0, j] + ln[0, 1, j]
            if c < C:
                out[k, c] = ti.select(present != 0, value, 0.0)
