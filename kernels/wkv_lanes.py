"""How a WKV task spreads a head's keys over threads: the prefill WKV's keys per lane (`lane_wkv_task` in
kernels/v6.py and kernels/v7_wkv.py), and the decode WKV's workgroup per head, its keys in parts
(kernels/v6.py `wkv_gate_task`, kernels/v7_wkv.py `lane_wkv_gate_task`). spec/kernels.md §5."""
import taichi as ti

from kernels import lanes


@ti.func
def lane_keys(N: ti.template(), lane: ti.i32):
    """Keys j = m·LANES + lane of a head of N keys: lane `lane`'s share in a prefill WKV (kernels/v6.py and
    kernels/v7_wkv.py `lane_wkv_task`); past N, key N-1 again (the callers mask those sums and stores)."""
    per_lane = ti.static((N + lanes.LANES - 1) // lanes.LANES)
    return ti.Vector([ti.min(m * lanes.LANES + lane, N - 1) for m in ti.static(range(per_lane))])


@ti.func
def value_column_item(g: ti.i32, H: ti.template(), N: ti.template()) -> ti.math.ivec4:
    """Item g of a prefill WKV task, LANES lanes per (row b, head h, value column i): (lane, b, h, i)."""
    column = g // lanes.LANES
    return ti.math.ivec4(g % lanes.LANES, column // (H * N), column // N % H, column % N)


@ti.func
def ahead(start: ti.i32, step: ti.i32, length: ti.i32, T: ti.i32) -> ti.i32:
    """The position whose inputs a prefill WKV loads during `step`: the next step's (the row's last at its last
    step; a row with no tokens reads position `start`, clamped to the pass, and uses nothing). Loading a step ahead
    lets the loads' latency pass while the lanes work on this step."""
    return ti.min(start + ti.min(step + 1, ti.max(length - 1, 0)), T - 1)


@ti.func
def keep_output(kept: ti.f32, out: ti.f32, step: ti.i32, lane: ti.i32) -> ti.f32:
    """A prefill WKV keeps its outputs in registers: lane step % LANES holds step's (a subgroup sum, so every lane
    has it), until `store_outputs`."""
    return ti.select(lane == step % lanes.LANES, out, kept)


@ti.func
def store_outputs(sc: ti.template(), column: ti.i32, start: ti.i32, step: ti.i32, length: ti.i32, lane: ti.i32,
                  kept: ti.f32):
    """After every LANES-th step and the row's last: lane l stores its kept output, step base + l's, into column
    `column` of its position. One store per LANES steps: a load after a store waits for it (kernels/v7_wkv.py
    `lane_wkv_gate_task`), so a store at every step kept the next step's loads from starting early."""
    if step % lanes.LANES == lanes.LANES - 1 or step == length - 1:
        base = step - step % lanes.LANES
        if base + lane <= step:
            sc[start + base + lane, column] = kept


KEY_PARTS = 4  # decode WKV (GPU): threads per value column of a head, each over a contiguous quarter of its keys
KEY_BLOCK = 16  # decode WKV (GPU): a part's keys whose loads are issued together, before their stores
KEYS_AT_ONCE = 8  # a thread per value column (v6 `wkv_task`, v7 `thread_wkv_task`): keys loaded together


def padded(N: int) -> int:
    """N rounded up to a power of two: the value columns of a decode WKV workgroup. Called in ti.static."""
    return 1 << (N - 1).bit_length()


def head_threads(N: int) -> int:
    """Threads of a decode WKV workgroup, one per (row, head): KEY_PARTS × padded(N), a power of two, so CUDA's
    constant task ranges (lanes.task_range) never split a workgroup between rounds. Called in ti.static."""
    return KEY_PARTS * padded(N)


def part_keys(N: int) -> int:
    """Keys per part: the part p holds keys p·part_keys(N) + q, those below N. Called in ti.static."""
    return (N + KEY_PARTS - 1) // KEY_PARTS


@ti.func
def head_item(g: ti.i32, H: ti.template(), N: ti.template()) -> ti.math.ivec4:
    """Item g of a decode WKV task: (row b, head h, key part p, value column i); columns i ≥ N only pad the
    workgroup (they load column N-1, store nothing and add nothing)."""
    per, width = ti.static(head_threads(N)), ti.static(padded(N))
    tid, head = g % per, g // per
    return ti.math.ivec4(head // H, head % H, tid // width, tid % width)


@ti.func
def part_block(N: ti.template(), p: ti.i32, block: ti.i32):
    """The keys of `block` (KEY_BLOCK of them, fewer for small heads) in part p, clamped to N - 1, and a mask of
    those that count (inside the part and below N)."""
    K = ti.static(part_keys(N))
    J = ti.static(min(KEY_BLOCK, K))
    keys = ti.Vector([0] * J)
    live = ti.Vector([0] * J)
    for q in ti.static(range(J)):
        local = block * J + q
        key = p * K + local
        keys[q] = ti.min(key, N - 1)
        live[q] = ti.cast(local < K and key < N, ti.i32)
    return keys, live


def part_blocks(N: int) -> int:
    """Blocks of `part_block` per part. Called in ti.static."""
    K = part_keys(N)
    J = min(KEY_BLOCK, K)
    return (K + J - 1) // J


@ti.func
def add_parts(value: ti.f32, p: ti.i32, i: ti.i32, N: ti.template()) -> ti.f32:
    """Σ over the KEY_PARTS threads of value column i of their `value`s, in part order (so in key order by parts),
    through workgroup memory; every thread of the column gets it. Every thread of the workgroup must call it."""
    width = ti.static(padded(N))
    parts = ti.simt.block.SharedArray((ti.static(KEY_PARTS * padded(N)),), ti.f32)
    parts[p * width + i] = value
    ti.simt.block.sync()
    total = 0.0
    for q in ti.static(range(KEY_PARTS)):
        total += parts[q * width + i]
    ti.simt.block.sync()  # read before the next call writes
    return total


@ti.func
def column_stats(y: ti.f32, p: ti.i32, i: ti.i32, N: ti.template(), eps: ti.f32) -> ti.math.vec2:
    """(mean, 1/sqrt(biased var + eps)) of the head's N column values (part 0's thread of each column gives its y),
    two passes in column order as ref.common.group_norm (`column_total` of y, then of (y - mean)²); every thread gets
    them. Every thread of the workgroup must call it."""
    mean = column_total(y, p, i, N) / N
    return ti.math.vec2(mean, 1.0 / ti.sqrt(column_total((y - mean) ** 2, p, i, N) / N + eps))


@ti.func
def column_total(value: ti.f32, p: ti.i32, i: ti.i32, N: ti.template()) -> ti.f32:
    """Σ over the head's N value columns of `value` (part 0's thread of each column gives it), in column order,
    through workgroup memory; every thread gets it. Every thread of the workgroup must call it."""
    columns = ti.simt.block.SharedArray((ti.static(padded(N)),), ti.f32)
    if p == 0:
        columns[i] = value
    ti.simt.block.sync()
    total = 0.0
    for c in range(N):
        total += columns[c]
    ti.simt.block.sync()
    return total
