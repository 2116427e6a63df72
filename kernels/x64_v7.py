"""RWKV-7's WKV recurrence on the CPU (arch x64: kernels/lanes.py LANES == 1).

`wkv_task` here is kernels/v7_wkv.py wkv_gate_task's CPU recurrence, with the same contract: ref.v7.wkv_step over
each row's tokens, S <- S diag(w) + (S (-kk))(kk a)ᵀ + v kᵀ, y = S r into sc's Y columns. On the CPU the state keeps
the reference's layout S[b, l, h, i (value), j (key)] (kernels/v7_wkv.py `cell`).

Why a branch of its own (BENCHMARKS.md, "Taichi engine on this CPU"), from the optimized LLVM IR:
- A store into an ndarray inside a loop makes the x64 code reload every array's data pointer and shape after it
  (the store might alias them). Storing S[b, l, h, i, j] then costs 5 loads and 4 multiplies per element (~18
  cycles: 0.25 ms of a 0.33 ms one-token step per layer). So S is read and written here through its row-major
  linear index in the last axis, S[0, 0, 0, 0, at + ...] (Taichi's ndarrays are C-contiguous and not bounds
  checked outside debug mode): the products by 0 fold away and a store costs one pointer load.
- A loop that reads several columns of sc at an i32 index that might wrap stays scalar, and so does a loop with
  the compile-time trip count N (LLVM unrolls it fully, then leaves it scalar).
So an item (b, h, ROWS value rows) copies its block of S into a local array once per pass, and at each token first
copies the head's w, kk, kk·a, k and r into local arrays (a loop per column); the loops over the keys, whose trip
count is the key axis read at run time (`S.shape[4]`, which is N), then read and write local arrays only and
vectorize (8 floats a step). The block goes back to S once per pass. The items are spread evenly over the threads
(x64_tasks.spread_item). Larger blocks are faster for long passes (64 rows: 1.15 ms against 1.45 ms for 128 tokens
of one layer) but the local array's initialisation is unrolled, so compiling takes longer (28 s against 2.7 s).
"""
import taichi as ti

from kernels import x64_tasks
from kernels.lanes import LENGTH, START

ROWS = 8  # value rows per item: a local block of ROWS × N floats


@ti.func
def wkv_task(s: ti.template(), S: ti.template(), layer: ti.i32, plan: ti.template(), sc: ti.template()):
    """Must match ref.v7.wkv_step over each row's tokens (spec/tolerances.md: its fp32 kernel row)."""
    rows = ti.static(min(ROWS, s.N))
    blocks = ti.static((s.N + rows - 1) // rows)
    n_items = S.shape[0] * s.H * blocks
    for g in range(x64_tasks.spread_count(n_items)):
        item = x64_tasks.spread_item(g, n_items)
        if item >= 0:
            b, h, i0 = item // (s.H * blocks), item // blocks % s.H, item % blocks * rows
            if plan[LENGTH, b] > 0:
                wkv_rows(s, S, layer, plan, sc, b, h, i0, rows)


@ti.func
def wkv_rows(s: ti.template(), S: ti.template(), layer: ti.i32, plan: ti.template(), sc: ti.template(), b: ti.i32,
             h: ti.i32, i0: ti.i32, rows: ti.template()):
    """Value rows i0.. (at most `rows`) of head h, row b's tokens in order."""
    N = ti.static(s.N)
    n = S.shape[4]  # N, read at run time: the key loops vectorize
    m = ti.min(rows, N - i0)
    at = (((b * S.shape[1] + layer) * S.shape[2] + h) * S.shape[3] + i0) * n  # S[b, layer, h, i0, 0]'s linear index
    block = ti.Vector([0.0] * (rows * N))  # S[b, layer, h, i0 + i, j] at i·N + j
    for i in range(m):
        for j in range(n):
            block[i * N + j] = S[0, 0, 0, 0, at + i * N + j]
    w = ti.Vector([0.0] * N)  # the head's columns at the current token
    kk = ti.Vector([0.0] * N)
    kk_a = ti.Vector([0.0] * N)
    k = ti.Vector([0.0] * N)
    r = ti.Vector([0.0] * N)
    base = h * N
    for step in range(plan[LENGTH, b]):
        t = plan[START, b] + step
        for j in range(n):
            w[j] = sc[t, s.LORA + base + j]
        for j in range(n):
            kk[j] = sc[t, s.KK + base + j]
        for j in range(n):
            kk_a[j] = kk[j] * sc[t, s.LORA + s.C + base + j]
        for j in range(n):
            k[j] = sc[t, s.PROJ + s.C + base + j]
        for j in range(n):
            r[j] = sc[t, s.PROJ + base + j]
        for i in range(m):
            removed = 0.0
            for j in range(n):
                removed -= block[i * N + j] * kk[j]
            v = sc[t, s.PROJ + 2 * s.C + base + i0 + i]
            out = 0.0
            for j in range(n):
                new = block[i * N + j] * w[j] + removed * kk_a[j] + v * k[j]
                block[i * N + j] = new
                out += new * r[j]
            sc[t, s.Y + base + i0 + i] = out
    for i in range(m):
        for j in range(n):
            S[0, 0, 0, 0, at + i * N + j] = block[i * N + j]
