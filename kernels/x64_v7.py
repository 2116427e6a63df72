"""RWKV-7's WKV recurrence on the CPU (arch x64, one thread per value row: kernels/lanes.py LANES == 1).

`wkv_task` here is kernels/v7.py wkv_task's CPU branch, with the same contract: ref.v7.wkv_step over each row's
tokens, S <- S diag(w) + (S (-kk))(kk a)ᵀ + v kᵀ, y = S r, thread (b, h, i) owning value row i of head h. On the CPU
the state keeps the reference's layout S[b, l, h, i (value), j (key)] (kernels/v7.py `cell`).

Why a branch of its own (BENCHMARKS.md, "Taichi engine on this CPU"): the shared loop reads and writes S in the
ndarray at every step, and LLVM cannot prove those stores miss the scratch array's loads in the same loop, so the
key loop stayed scalar (~45 % of a 256-token prefill). Here a thread copies its row of S into a local array once per
pass, walks every token of its row in registers and L1 (the key loops vectorize), and writes the row back once.
"""
import taichi as ti

from kernels.lanes import LENGTH, START


@ti.func
def wkv_task(s: ti.template(), S: ti.template(), layer: ti.i32, plan: ti.template(), sc: ti.template()):
    """Must match ref.v7.wkv_step over each row's tokens (spec/tolerances.md: its fp32 kernel row)."""
    N = ti.static(s.N)
    R, K, V, W, A = s.PROJ, s.PROJ + s.C, s.PROJ + 2 * s.C, s.LORA, s.LORA + s.C
    for b, h, i in ti.ndrange(S.shape[0], s.H, N):
        if plan[LENGTH, b] == 1:  # one token (decode): in place, as the shared loop (no copy to amortize)
            t = plan[START, b]
            removed = 0.0
            for j in range(N):
                removed -= S[b, layer, h, i, j] * sc[t, s.KK + h * N + j]
            out = 0.0
            v = sc[t, V + h * N + i]
            for j in range(N):
                c = h * N + j
                new = S[b, layer, h, i, j] * sc[t, W + c] + removed * sc[t, s.KK + c] * sc[t, A + c] + v * sc[t, K + c]
                S[b, layer, h, i, j] = new
                out += new * sc[t, R + c]
            sc[t, s.Y + h * N + i] = out
        elif plan[LENGTH, b] > 1:
            row = ti.Vector([0.0] * N)  # S[b, layer, h, i, :]: a local array (dynamic index), never aliased
            for j in range(N):
                row[j] = S[b, layer, h, i, j]
            for step in range(plan[LENGTH, b]):
                t = plan[START, b] + step
                removed = 0.0
                for j in range(N):
                    removed -= row[j] * sc[t, s.KK + h * N + j]
                out = 0.0
                v = sc[t, V + h * N + i]
                for j in range(N):
                    c = h * N + j
                    new = row[j] * sc[t, W + c] + removed * sc[t, s.KK + c] * sc[t, A + c] + v * sc[t, K + c]
                    row[j] = new
                    out += new * sc[t, R + c]
                sc[t, s.Y + h * N + i] = out
            for j in range(N):
                S[b, layer, h, i, j] = row[j]
