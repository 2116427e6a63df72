"""LayerNorm rows on the lane layout (kernels/lanes.py): the statistics (`row_stats`, `mean_and_inv`), a layer
part's LayerNorm + token shift + mixes (`shift_mix_task`: by pieces of channels, in a prefill pass after a task
that makes each position's statistics once, `row_stats_task`) and the head's and embedding's LayerNorm
(`gather_norm_task`, `norm_row`). Must match ref.common.layer_norm, previous_tokens and lerp_previous
(spec/kernels.md §6 "LayerNorm + token shift"); a GPU decode pass of a dense group folds them into the matrix tasks
instead (kernels/norm_linear.py).
"""
import taichi as ti

from kernels import gpu_gemm, lanes
from kernels.lanes import FIRST, GROUP, LAST, ROW, lane_sum, task_item, task_range, task_rounds

ROW_UNROLL = 8  # loads in flight per lane in a row reduction read from memory twice (`row_partial`)
ROW_VALUES = 64  # GPU: a row of up to ROW_VALUES·LANES values is held in registers for its statistics (`row_stats`)
PIECE_CHANNELS = 4  # channels per lane of a LayerNorm + mix piece (`pieces`): all their loads in flight at once
STATS_COLUMNS = 32  # a scratch buffer's columns for `row_stats_task` (two used; whole 128-byte lines a row)


@ti.func
def row_partial(x: ti.template(), t: ti.i32, col: ti.i32, n: ti.i32, lane: ti.i32, center: ti.f32,
                squared: ti.template()) -> ti.f32:
    """This lane's share of Σ_j x[t, col+j] (or, `squared`, Σ_j (x[t, col+j] - center)²): ROW_UNROLL loads in flight
    per lane in whole steps with no condition around them, then the guarded rest."""
    part = 0.0
    span = lanes.LANES * ROW_UNROLL
    full = n // span
    for q in range(full + (n - full * span + lanes.LANES - 1) // lanes.LANES):
        if q < full:
            values = ti.Vector([0.0] * ROW_UNROLL)
            for u in ti.static(range(ROW_UNROLL)):
                values[u] = x[t, col + q * span + u * lanes.LANES + lane]
            for u in ti.static(range(ROW_UNROLL)):
                part += (values[u] - center) ** 2 if ti.static(squared) else values[u]
        else:
            j = full * span + (q - full) * lanes.LANES + lane
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
    """`mean_and_inv` of the row x[t, :n] (a LayerNorm's statistics). On a GPU, a row of at most ROW_VALUES·lanes.LANES
    values is loaded once, every load in flight together, and both passes run over the registers: one memory round
    trip where `row_partial` makes 2·n/(lanes.LANES·ROW_UNROLL) (a decode step's LayerNorm was 24 µs on the H100)."""
    stats = ti.math.vec2(0.0, 0.0)
    if ti.static(lanes.LANES == 1):
        stats = mean_and_inv(x, t, 0, n, lane, eps)
    elif n <= lanes.LANES * ROW_VALUES:  # branch-free: an `if` per value made the code compile 4x slower (lavapipe)
        values = ti.Vector([0.0] * ROW_VALUES)
        for m in ti.static(range(ROW_VALUES)):
            values[m] = x[t, ti.min(m * lanes.LANES + lane, n - 1)]  # clamped: no branch around a load
        total = 0.0
        for m in ti.static(range(ROW_VALUES)):
            total += ti.select(m * lanes.LANES + lane < n, values[m], 0.0)
        mean = lane_sum(total) / n
        spread = 0.0
        for m in ti.static(range(ROW_VALUES)):
            spread += ti.select(m * lanes.LANES + lane < n, (values[m] - mean) ** 2, 0.0)
        stats = ti.math.vec2(mean, 1.0 / ti.sqrt(lane_sum(spread) / n + eps))
    else:
        stats = mean_and_inv(x, t, 0, n, lane, eps)
    return stats


@ti.func
def pieces(C: ti.template()):
    """Pieces a position's C channels are cut into for `shift_mix_task` and `gather_norm_task`: PIECE_CHANNELS per
    lane on a GPU (so each lane's loads are all in flight at once; every piece's lane group computes the row's
    statistics itself), one on the CPU."""
    width = PIECE_CHANNELS * lanes.LANES
    return 1 if ti.static(lanes.LANES == 1) else (C + width - 1) // width


@ti.func
def piece_rounds(C: ti.i32) -> ti.i32:
    """Rounds of PIECE_CHANNELS channels a lane takes over its piece: one on a GPU, all of the row on the CPU."""
    return (C + PIECE_CHANNELS - 1) // PIECE_CHANNELS if ti.static(lanes.LANES == 1) else 1


@ti.func
def piece_channels(C: ti.i32, piece: ti.i32, lane: ti.i32, q: ti.i32) -> ti.i32:
    """Channel q of `lane` in `piece` (see `pieces`): on a GPU, PIECE_CHANNELS·lanes.LANES neighbouring channels per piece,
    lane-interleaved; on the CPU, the whole row. May pass C in the last round (the caller clamps its loads)."""
    c = q
    if ti.static(lanes.LANES > 1):
        c = piece * PIECE_CHANNELS * lanes.LANES + q * lanes.LANES + lane
    return c


@ti.func
def row_stats_task(x: ti.template(), eps: ti.template(), stats: ti.template(), col: ti.template()):
    """stats[t, col], stats[t, col + 1] = `row_stats` of x[t] (mean, 1/sqrt(var + eps)) for every position t: a lane
    group per position."""
    ti.loop_config(block_dim=GROUP)
    for thread in range(task_range(x.shape[0] * lanes.LANES)):
        for rnd in range(task_rounds(thread, x.shape[0] * lanes.LANES)):
            g = task_item(thread, rnd)
            lane, t = g % lanes.LANES, g // lanes.LANES
            values = row_stats(x, t, x.shape[1], lane, eps)
            if lane == 0:
                stats[t, col] = values[0]
                stats[t, col + 1] = values[1]


@ti.func
def shift_mix_task(x: ti.template(), vec: ti.template(), slot: ti.template(), ln_row: ti.template(),
                   mix_row: ti.template(), n_mix: ti.template(), shift: ti.template(), layer: ti.template(),
                   plan: ti.template(), eps: ti.template(), out: ti.template(), out_col: ti.template(),
                   stats_col: ti.template(), keep_delta: ti.template() = False):
    """LayerNorm, token shift and the token-shift mixes of one layer part, for every position t:

    out[t, out_col + m*C + c] = z + (prev - z) * vec[slot, mix_row + m, c],  z = LN(x[t]), prev = LN(x[t-1]) or the state,
    LN's weight and bias in vec[slot, ln_row] and vec[slot, ln_row + 1] (`slot`: the layer's index in its weight
    group, kernels/stacking.py), the state shift[b, layer]. The first position of each row also
    stores LN(x[last]) as the row's new shift state: it alone touches that state, reading before writing.
    With `keep_delta`, block n_mix gets prev - z as well (kernels/v6.py: data_mix_task scales it by the LoRA).
    `stats_col` (`stats_column`) ≥ 0: each position's statistics are kept in out[t, stats_col:stats_col + 2] first
    (`row_stats_task`), and every piece of the position reads them there; -1: each piece makes them itself, for its
    position and the one before it (the same values).
    Must match ref.common.layer_norm, previous_tokens and lerp_previous (the v6/v7 mixing convention).
    """
    if ti.static(stats_col >= 0):
        row_stats_task(x, eps, out, stats_col)
    ti.loop_config(block_dim=GROUP)
    for thread in range(task_range(x.shape[0] * pieces(x.shape[1]) * lanes.LANES)):
        for rnd in range(task_rounds(thread, x.shape[0] * pieces(x.shape[1]) * lanes.LANES)):
            g = task_item(thread, rnd)
            shift_mix_piece(x, vec, slot, ln_row, mix_row, n_mix, shift, layer, plan, eps, out, out_col, stats_col,
                            keep_delta, g % lanes.LANES, g // lanes.LANES)


def stats_column(first_free: int, tile: int) -> int:
    """Where `shift_mix_task` keeps each position's statistics in a pass of `tile`: `first_free` (a scratch buffer's
    STATS columns) in a prefill pass (tile ≥ gpu_gemm.PASS_TILE), else -1, each piece making them itself. At C 2048
    that is 32 times a position: in a 256-token chunk on the H100 (v6, µs a layer) LN1 and its mixes took 36.5 as one
    task, 15.9 + 9.7 as two; at batch 32 21.4 as one, 16.6 + 8.4 as two (most of a small task's time is the wait
    for the task before it: spec/kernels.md §6). Called in ti.static."""
    return first_free if tile >= gpu_gemm.PASS_TILE else -1


@ti.func
def shift_mix_piece(x: ti.template(), vec: ti.template(), slot: ti.i32, ln_row: ti.template(), mix_row: ti.template(),
                    n_mix: ti.template(), shift: ti.template(), layer: ti.i32, plan: ti.template(), eps: ti.f32,
                    out: ti.template(), out_col: ti.template(), stats_col: ti.template(), keep_delta: ti.template(),
                    lane: ti.i32, group: ti.i32):
    """`shift_mix_task`'s work for one lane of one group: position t's piece of the channels."""
    C = x.shape[1]
    n_pieces = pieces(C)
    t, piece = group // n_pieces, group % n_pieces
    b, is_first = plan[ROW, t], plan[FIRST, t]
    last = plan[LAST, b]
    source = ti.select(is_first == 0, t - 1, last)  # `other`'s position: t-1; at a row's first, its last
    now, other = ti.math.vec2(0.0, 0.0), ti.math.vec2(0.0, 0.0)
    if ti.static(stats_col >= 0):
        now = ti.math.vec2(out[t, stats_col], out[t, stats_col + 1])
        other = ti.math.vec2(out[source, stats_col], out[source, stats_col + 1])
    else:
        for r in range(1 + ti.cast(source != t, ti.i32)):  # a loop: `row_stats` is compiled once
            stats = row_stats(x, ti.select(r == 0, t, source), C, lane, eps)
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
    for thread in range(task_range(picks.shape[0] * pieces(x.shape[1]) * lanes.LANES)):
        for rnd in range(task_rounds(thread, picks.shape[0] * pieces(x.shape[1]) * lanes.LANES)):
            g = task_item(thread, rnd)
            lane, group = g % lanes.LANES, g // lanes.LANES
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
