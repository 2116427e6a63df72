"""How a WKV task spreads a head's keys over a lane group (kernels/lanes.py): the decode WKV's key blocks
(kernels/v6.py `wkv_gate_task`, kernels/v7_wkv.py `lane_wkv_gate_task`) and the prefill WKV's keys per lane
(`lane_wkv_task` in both). spec/kernels.md §3-4."""
import math

import taichi as ti

from kernels import lanes


def key_block(N: int) -> int:
    """Keys of a head whose loads a GPU decode WKV issues together (kernels/v6.py, v7_wkv.py): 8, or fewer when
    8 does not divide the head size N. Called in ti.static."""
    return math.gcd(N, 8)


@ti.func
def key_block_of(S: ti.template(), b: ti.i32, layer: ti.i32, h: ti.i32, j0: ti.i32, cols: ti.template(),
                 J: ti.template()):
    """S[b, layer, h, j0 + q, cols[m]] for the J keys of a `key_block` and this lane's value columns, (J, M), all
    loaded together: the decode WKV tasks' state block, in the key-major layout both v6 and v7 keep on a GPU."""
    return ti.Matrix([[S[b, layer, h, j0 + q, cols[m]] for m in ti.static(range(cols.n))]
                      for q in ti.static(range(J))])


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
