"""The end of a `gpu_gemm.gemm_task` thread's work: each sum of its register tile to its output (`finish`, `emit`),
with the loads an output needs (`emit_inputs`: the value it adds to, the gate) issued for a row of the tile before
any of its stores (`tile_inputs`), and the selects that read the tile at a run-time index (`pick_row`, `pick`).
"""
import taichi as ti

from kernels import lanes


@ti.func
def tile_inputs(Y: ti.template(), t: ti.i32, first_o: ti.i32, offsets: ti.template(), block: ti.template(), T: ti.i32,
                n_out: ti.i32, accumulate: ti.template(), gate: ti.template(), gate_col: ti.template(),
                parts: ti.template(), splits: ti.i32):
    """`emit_inputs` of outputs (t, first_o + offsets[j]) as the rows of a matrix (loaded together; none where the
    product neither accumulates nor is gated, or keeps partial sums in this pass)."""
    loaded = [emit_inputs(Y, t, first_o + offsets[j], block, T, n_out, accumulate, gate, gate_col, parts, splits)
              for j in ti.static(range(len(offsets)))]
    return ti.Matrix([[loaded[j][0], loaded[j][1]] for j in ti.static(range(len(offsets)))])


@ti.func
def emit_inputs(Y: ti.template(), t: ti.i32, o: ti.i32, block: ti.template(), T: ti.i32, n_out: ti.i32,
                accumulate: ti.template(), gate: ti.template(), gate_col: ti.template(), parts: ti.template(),
                splits: ti.i32) -> ti.math.vec2:
    """What `emit` reads for output (t, o) (in range or not: clamped): Y's value before (with `accumulate`, else 0)
    and the gate's (else 1); nothing where `finish` keeps the sum as a split's part instead (`keeps_parts`: the
    defaults, unused). A thread loads these for a row of its tile (or all its outputs) before it stores any: to
    the compiler every store may change what a later load reads, so a load after a store waits for it (v6's data mix,
    64 outputs a thread in PREFILL_WIDE: 48.9 → 42.7 µs a layer in a 256-token chunk on the H100)."""
    inputs = ti.math.vec2(0.0, 1.0)
    tt, oo = ti.min(t, T - 1), ti.min(o, n_out - 1)
    if not keeps_parts(parts, splits):
        if ti.static(accumulate):
            inputs[0] = Y[tt, block[2] + oo - block[0]]
        if ti.static(lanes._given(gate)):
            inputs[1] = gate[tt, gate_col + block[6] + oo - block[0]]
    return inputs


@ti.func
def keeps_parts(parts: ti.template(), splits: ti.i32) -> ti.i32:
    """Whether a workgroup keeps its sums as a split's part (as `finish` does): a product given `parts`, split in
    this pass."""
    kept = 0
    if ti.static(lanes._given(parts)):
        kept = ti.cast(splits > 1, ti.i32)
    return kept


@ti.func
def emit(Y: ti.template(), t: ti.i32, o: ti.i32, total: ti.f32, block: ti.template(), T: ti.i32, n_out: ti.i32,
         accumulate: ti.template(), gate: ti.template(), inputs: ti.math.vec2):
    """One output: Y[t, y_col + o - first] (+)= act(total), times gate[t, gate_col + gate_first + o - first] when
    given; `inputs`: `emit_inputs` for (t, o)."""
    if t < T and o < n_out:
        s = lanes.activate(total, block[3])
        if ti.static(lanes._given(gate)):
            s *= inputs[1]
        col = block[2] + o - block[0]
        if ti.static(accumulate):
            Y[t, col] = inputs[0] + s
        else:
            Y[t, col] = s


@ti.func
def pick_row(acc: ti.template(), i: ti.i32):
    """Row i of a register tile, i known at run time (selects: the tile stays in registers)."""
    row = ti.Vector([acc[0, j] for j in ti.static(range(acc.m))])
    for ii in ti.static(range(1, acc.n)):
        for j in ti.static(range(acc.m)):
            row[j] = ti.select(i == ii, acc[ii, j], row[j])
    return row


@ti.func
def pick(row: ti.template(), j: ti.i32) -> ti.f32:
    """Entry j of a register vector, j known at run time."""
    value = row[0]
    for jj in ti.static(range(1, row.n)):
        value = ti.select(j == jj, row[jj], value)
    return value


@ti.func
def finish(Y: ti.template(), t: ti.i32, o: ti.i32, total: ti.f32, block: ti.template(), T: ti.i32, n_out: ti.i32,
           accumulate: ti.template(), gate: ti.template(), inputs: ti.math.vec2, parts: ti.template(),
           split: ti.i32, splits: ti.i32):
    """A workgroup's sum for position t, output row o: `emit`ted (`inputs`: its `emit_inputs`), or (a pass that
    splits the product) kept as split `split`'s part in parts = (P, col): P[t, col + split·n_out + o]."""
    if ti.static(lanes._given(parts)):
        if splits > 1:
            if t < T and o < n_out:
                parts[0][t, parts[1] + split * n_out + o] = total
        else:
            emit(Y, t, o, total, block, T, n_out, accumulate, gate, inputs)
    else:
        emit(Y, t, o, total, block, T, n_out, accumulate, gate, inputs)
