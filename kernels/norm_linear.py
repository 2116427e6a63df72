"""A decode pass's LayerNorm and token shift folded into the matrix task that reads them (GPU, tile 1, dense).

A layer part's LayerNorm + token shift (`layer_norms.shift_mix_task`) is a task of its own: on the H100 it took 13-18 µs
of a decode layer's ~130 µs, mostly the wait for the task before it and its own latency, for almost no work. Here
the task that multiplies its output by a matrix makes it itself: a workgroup of NORM_GROUP threads
  1. loads position t's row x[t] (and x[t-1], or the row's last position, where the token shift needs it), each
     thread a few channels, and takes the LayerNorm statistics over the workgroup (`block_stats`: two passes over
     the registers, as ref.common.layer_norm);
  2. writes into workgroup memory (`stage_mixed`) the mixed input z + (prev - z)·mix of every channel (one mix, or
     two), or z and prev - z for rows that each take their own mix, prev the previous position's LayerNorm or the
     row's shift state;
  3. runs NORM_GROUP / LANES output rows, one per lane group, against the staged input (`dot_staged`, the terms of
     `lanes.dot_tile` in its order).
The row block 0 workgroup also writes z into scratch columns, and the task after (`lanes.linear_task` with `keep`,
v7's `second_stage_task`, v6's `data_mix_task`) copies each row's last z into the shift state: the state cannot
change while this task still reads it. Here: `norm_mix_linear_task` (v7's channel mix); the version modules' own
folded tasks (kernels/v7.py `folded_projections_task`, kernels/v6.py `folded_maa_task`, `folded_ffn_in_task`) use
`items`, `item`, `stage_mixed` and `dot_staged`.

Must match ref.common.layer_norm, previous_tokens, lerp_previous and ref.common.linear (spec/kernels.md §6) to
spec/tolerances.md: the statistics add the same terms in another order.
"""
import taichi as ti

from kernels import lanes
from kernels.lanes import FIRST, LAST, ROW, _given, emit_value, lane_sum

NORM_GROUP = 512  # threads of a workgroup: NORM_GROUP / LANES output rows share one staged input


def group_rows() -> int:
    """Output rows per workgroup (one per lane group). Called in ti.static."""
    return NORM_GROUP // lanes.LANES


def takes(tile: int) -> bool:
    """Whether a pass of `tile` folds its LayerNorms into the matrix tasks: GPU decode passes (v7's of dense groups
    only: its folded tasks read dense rows). Called in ti.static."""
    return tile == 1 and lanes.LANES > 1


@ti.func
def block_sum(value: ti.f32, lane: ti.i32, group: ti.i32, partials: ti.template()) -> ti.f32:
    """Σ of every thread's `value` over the workgroup (lane groups' subgroup sums, then in group order); every thread
    gets it. Every thread of the workgroup must call it."""
    total = lane_sum(value)
    if lane == 0:
        partials[group] = total
    ti.simt.block.sync()
    whole = 0.0
    for q in range(ti.static(group_rows())):  # not unrolled: Taichi 1.7 shares a constant index's statement between the tasks
        whole += partials[q]  # of a kernel, and a second folded task then fails to compile ("does not yet exist")
    ti.simt.block.sync()  # read before the next call writes
    return whole


def channels(n: int) -> int:
    """Channels per thread of a row of n spread over the workgroup: thread tid holds c = k·NORM_GROUP + tid. Called
    in ti.static."""
    return (n + NORM_GROUP - 1) // NORM_GROUP


@ti.func
def row_values(x: ti.template(), t: ti.i32, n: ti.template(), tid: ti.i32):
    """This thread's channels of x[t], clamped loads: callers mask channels past n."""
    return ti.Vector([x[t, ti.min(k * NORM_GROUP + tid, n - 1)] for k in ti.static(range(channels(n)))])


@ti.func
def row_values3(x: ti.template(), t: ti.i32, row: ti.i32, n: ti.template(), tid: ti.i32):
    """This thread's channels of x[t, row] (a 3-d array), clamped loads: callers mask channels past n."""
    return ti.Vector([x[t, row, ti.min(k * NORM_GROUP + tid, n - 1)] for k in ti.static(range(channels(n)))])


def mix_or(mix_row, other: int) -> int:
    """`stage_mixed`'s mix row, or `other` (a row it loads anyway) when it has none. Called in ti.static."""
    return other if mix_row is None else mix_row


@ti.func
def block_stats(values: ti.template(), lane: ti.i32, tid: ti.i32, n: ti.template(), eps: ti.f32,
                partials: ti.template()) -> ti.math.vec2:
    """(mean, 1/sqrt(biased var + eps)) of a row of n values spread over the workgroup (`row_values`), two passes
    over the registers as ref.common.layer_norm."""
    total = 0.0
    for k in ti.static(range(values.n)):
        total += ti.select(k * NORM_GROUP + tid < n, values[k], 0.0)
    mean = block_sum(total, lane, tid // lanes.LANES, partials) / n
    spread = 0.0
    for k in ti.static(range(values.n)):
        spread += ti.select(k * NORM_GROUP + tid < n, (values[k] - mean) ** 2, 0.0)
    var = block_sum(spread, lane, tid // lanes.LANES, partials) / n
    return ti.math.vec2(mean, 1.0 / ti.sqrt(var + eps))


@ti.func
def stage_mixed(x: ti.template(), vec: ti.template(), slot: ti.i32, ln_row: ti.template(), mix_row: ti.template(),
                shift: ti.template(), layer: ti.i32, plan: ti.template(), eps: ti.f32, t: ti.i32, n: ti.template(),
                lane: ti.i32, tid: ti.i32, xs: ti.template(), ds: ti.template(), partials: ti.template(),
                kept: ti.template(), kept_col: ti.template(), keep: ti.i32, delta_col: ti.template() = None,
                second_mix: ti.template() = None):
    """Position t's LayerNorm z = LN(x[t]) and token shift prev (the previous position's LayerNorm, or the row's
    state) for every channel c (layer_norms.shift_mix_piece's), staged for `dot_staged`: with a `mix_row` (an int),
    xs[c] = z + (prev - z)·vec[slot, mix_row, c] (and ds[c] the same with vec row `second_mix`, if given); with
    mix_row None, xs[c] = z and ds[c] = prev - z (each output row then takes its own mix). With `keep`, also kept[t, kept_col + c] = z (and kept[t, delta_col + c] =
    prev - z with a `delta_col`). Ends with a barrier: the stage is ready."""
    b, is_first = plan[ROW, t], plan[FIRST, t]
    last = plan[LAST, b]
    before = t - 1 + is_first  # t-1, or t itself at a row's first position (then unused)
    other_t = ti.select(is_first == 0, before, last)  # whose statistics LN(prev) needs, unless it is the state's
    now_values = row_values(x, t, n, tid)
    other_values = row_values(x, other_t, n, tid)
    weights = row_values3(vec, slot, ln_row, n, tid)
    biases = row_values3(vec, slot, ln_row + 1, n, tid)
    kept_state = row_values3(shift, b, layer, n, tid)
    mixes = row_values3(vec, slot, ti.static(mix_or(mix_row, ln_row)), n, tid)  # unused without a mix_row
    mixes2 = row_values3(vec, slot, ti.static(mix_or(second_mix, ln_row)), n, tid)  # unused without second_mix
    now = block_stats(now_values, lane, tid, n, eps, partials)
    other = now
    if other_t != t:  # the same for the whole workgroup: its barriers are uniform
        other = block_stats(other_values, lane, tid, n, eps, partials)
    for k in ti.static(range(channels(n))):
        c = k * NORM_GROUP + tid
        if c < n:
            z = (now_values[k] - now[0]) * now[1] * weights[k] + biases[k]
            prev = kept_state[k]
            if is_first == 0:
                prev = (other_values[k] - other[0]) * other[1] * weights[k] + biases[k]
            if ti.static(_given(mix_row)):
                xs[c] = z + (prev - z) * mixes[k]
                if ti.static(_given(second_mix)):
                    ds[c] = z + (prev - z) * mixes2[k]
            else:
                xs[c] = z
                ds[c] = prev - z
            if keep:
                kept[t, kept_col + c] = z
                if ti.static(_given(delta_col)):
                    kept[t, delta_col + c] = prev - z
    ti.simt.block.sync()


@ti.func
def staged_input(xs: ti.template(), ds: ti.template(), vec: ti.template(), slot: ti.i32, mix_row: ti.i32,
                 k: ti.i32, mixed: ti.template()) -> ti.f32:
    """Input k of a staged position: xs[k] as staged (`mixed`), or z + (prev - z)·mix from xs = z, ds = prev - z
    and vec row mix_row."""
    value = xs[k]
    if ti.static(not mixed):
        value += ds[k] * vec[slot, mix_row, k]
    return value


@ti.func
def dot_staged(W: ti.template(), layer: ti.i32, o: ti.i32, xs: ti.template(), ds: ti.template(), vec: ti.template(),
               slot: ti.i32, mix_row: ti.i32, n_in: ti.template(), lane: ti.i32, mixed: ti.template()) -> ti.f32:
    """This lane's share of W[layer, o, :n_in] · the staged input (`staged_input`): `lanes.dot_tile`'s terms at
    tile 1, in its order (whole steps of 16 loads per lane, then a guarded rest)."""
    unroll = ti.static(16)
    span = ti.static(lanes.LANES * unroll)
    acc = 0.0
    for step in range(n_in // span):
        k0 = step * span + lane
        w = ti.Vector([ti.cast(W[layer, o, k0 + q * lanes.LANES], ti.f32) for q in ti.static(range(unroll))])
        for q in ti.static(range(unroll)):
            acc += w[q] * staged_input(xs, ds, vec, slot, mix_row, k0 + q * lanes.LANES, mixed)
    for q in range((n_in - n_in // span * span + lanes.LANES - 1) // lanes.LANES):
        k = n_in // span * span + q * lanes.LANES + lane
        if k < n_in:
            acc += ti.cast(W[layer, o, k], ti.f32) * staged_input(xs, ds, vec, slot, mix_row, k, mixed)
    return acc


@ti.func
def items(T: ti.template(), n_out: ti.template()):
    """Threads of a folded task: a workgroup per (block of `group_rows` output rows, position)."""
    return T * ti.static((n_out + group_rows() - 1) // group_rows() * NORM_GROUP)


@ti.func
def item(g: ti.i32, T: ti.i32) -> ti.math.ivec4:
    """Thread g of a folded task: (thread in its workgroup, position t, row block, output row)."""
    tid, block = g % NORM_GROUP, g // NORM_GROUP
    return ti.math.ivec4(tid, block % T, block // T, block // T * ti.static(group_rows()) + tid // lanes.LANES)


@ti.func
def norm_mix_linear_task(x: ti.template(), vec: ti.template(), slot: ti.template(), ln_row: ti.template(),
                         mix_row: ti.template(), shift: ti.template(), layer: ti.template(), plan: ti.template(),
                         eps: ti.template(), W: ti.template(), w_row: ti.template(), n_out: ti.template(),
                         n_in: ti.template(), Y: ti.template(), y_col: ti.template(), act: ti.template(),
                         kept: ti.template(), kept_col: ti.template()):
    """One task: Y[t, y_col + o] = act(mixed(t) · W[slot, w_row + o, :n_in]) for every position t and output row
    o < n_out, mixed(t) = `stage_mixed`'s LayerNorm (vec rows ln_row, ln_row + 1), token shift (state `shift`) and
    mix (vec row mix_row) of x[t, :n_in]; z = LN(x[t]) into kept[t, kept_col:] for the next task to keep as the
    state (`lanes.linear_task`'s `keep`)."""
    ti.loop_config(block_dim=NORM_GROUP)
    for thread in range(lanes.task_range(items(x.shape[0], n_out))):
        for rnd in range(lanes.task_rounds(thread, items(x.shape[0], n_out))):
            tid, t, row_block, o = item(lanes.task_item(thread, rnd), x.shape[0])
            lane = tid % lanes.LANES
            xs = ti.simt.block.SharedArray((n_in,), ti.f32)
            partials = ti.simt.block.SharedArray((ti.static(group_rows()),), ti.f32)
            stage_mixed(x, vec, slot, ln_row, mix_row, shift, layer, plan, eps, t, n_in, lane, tid, xs, xs, partials,
                        kept, kept_col, row_block == 0)
            if o < n_out:
                total = lane_sum(dot_staged(W, slot, w_row + o, xs, xs, vec, slot, 0, n_in, lane, True))
                if lane == 0:
                    emit_value(total, Y, y_col + o, t, act, False, None, 0)
