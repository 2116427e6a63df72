"""What a launch costs on this arch: many small kernels vs one kernel of many tasks, eager and in a graph.

    python benchmarks/launch_cost.py --arch cuda

Prints microseconds per dispatch for: one-task kernels launched from Python, the same in a `ti.graph`, one
kernel holding TASKS top-level loops (each its own dispatch) launched from Python and in a graph, and a
2048x2048 fp16 mat-vec (one workgroup per row) alone and as TASKS mat-vecs in one kernel.
The TASKS-task kernel three ways: loops of one run-time bound (x.shape[0]), of constant bounds, and of TASKS
different run-time bounds. On LLVM arches (CUDA, x64) Taichi computes a run-time bound in a serial task of its own
(one thread, one more dispatch) before the loop that reads it; the last two rows show what such tasks cost.
"""
import argparse
import time

import taichi as ti

N, TASKS, REPEATS = 2048, 16, 50


def timed(fn, repeats):
    fn()
    ti.sync()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    ti.sync()
    return (time.perf_counter() - start) / repeats


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--arch", default="cuda")
    args = parser.parse_args()
    ti.init(arch=getattr(ti, args.arch), enable_fallback=False, offline_cache=True, log_level=ti.WARN)
    print("arch", ti.lang.impl.current_cfg().arch)

    @ti.kernel
    def one(x: ti.types.ndarray(), y: ti.types.ndarray()):
        for i in range(x.shape[0]):
            y[i] = x[i] * 1.0001 + 1.0

    @ti.kernel
    def many(x: ti.types.ndarray(), y: ti.types.ndarray()):
        for _ in ti.static(range(TASKS // 2)):
            for i in range(x.shape[0]):
                y[i] = x[i] * 1.0001 + 1.0
            for i in range(x.shape[0]):
                x[i] = y[i] * 0.9999 - 1.0

    @ti.kernel
    def many_const(x: ti.types.ndarray(), y: ti.types.ndarray()):
        for _ in ti.static(range(TASKS // 2)):
            for i in range(N):
                y[i] = x[i] * 1.0001 + 1.0
            for i in range(N):
                x[i] = y[i] * 0.9999 - 1.0

    @ti.kernel
    def many_bounds(x: ti.types.ndarray(), y: ti.types.ndarray()):
        for k in ti.static(range(TASKS // 2)):
            for i in range(x.shape[0] - 2 * k):
                y[i] = x[i] * 1.0001 + 1.0
            for i in range(x.shape[0] - 2 * k - 1):
                x[i] = y[i] * 0.9999 - 1.0

    @ti.kernel
    def subgroup_size() -> ti.i32:
        r = 0
        for _ in range(1):
            r = ti.simt.subgroup.group_size()
        return r

    vulkan = args.arch == "vulkan"
    lanes = subgroup_size() if vulkan else 32  # one subgroup per row: no shared memory (Vulkan: one such task)
    print("lanes per row", lanes)

    @ti.func
    def matvec_row(W: ti.template(), x: ti.template(), y: ti.template(), g: ti.i32):
        o, lane = g // lanes, g % lanes
        acc = 0.0
        for k in range(W.shape[1] // lanes):
            acc += ti.cast(W[o, k * lanes + lane], ti.f32) * x[k * lanes + lane]
        if ti.static(vulkan):
            acc = ti.simt.subgroup.reduce_add(acc)
        else:
            for s in ti.static(range(5)):
                acc += ti.simt.warp.shfl_down_f32(ti.u32(0xFFFFFFFF), acc, 16 >> s)
        if lane == 0:
            y[o] = acc

    @ti.kernel
    def matvec(W: ti.types.ndarray(), x: ti.types.ndarray(), y: ti.types.ndarray()):
        ti.loop_config(block_dim=128)
        for g in range(W.shape[0] * lanes):
            matvec_row(W, x, y, g)

    @ti.kernel
    def matvecs(W: ti.types.ndarray(), x: ti.types.ndarray(), y: ti.types.ndarray()):
        for _ in ti.static(range(TASKS)):
            ti.loop_config(block_dim=128)
            for g in range(W.shape[0] * lanes):
                matvec_row(W, x, y, g)

    x, y = ti.ndarray(ti.f32, N), ti.ndarray(ti.f32, N)
    W = ti.ndarray(ti.f16, (N, N))
    W.fill(0.001)
    x.fill(1.0)

    def graph_of(kernel, count, *arrays):
        builder = ti.graph.GraphBuilder()
        syms = [ti.graph.Arg(ti.graph.ArgKind.NDARRAY, f"a{i}", a.dtype, ndim=len(a.shape))
                for i, a in enumerate(arrays)]
        for _ in range(count):
            builder.dispatch(kernel, *syms)
        graph = builder.compile()
        named = {f"a{i}": a for i, a in enumerate(arrays)}
        return lambda: graph.run(named)

    rows = [
        ("1-task kernel, eager", timed(lambda: one(x, y), REPEATS * TASKS) * 1e6),
        ("1-task kernel, graph of 16", timed(graph_of(one, TASKS, x, y), REPEATS) / TASKS * 1e6),
        (f"{TASKS}-task kernel, eager (per task)", timed(lambda: many(x, y), REPEATS) / TASKS * 1e6),
        (f"{TASKS}-task kernel, graph of 4 (per task)", timed(graph_of(many, 4, x, y), REPEATS) / TASKS / 4 * 1e6),
        (f"{TASKS}-task, constant bounds, graph of 4", timed(graph_of(many_const, 4, x, y), REPEATS) / TASKS / 4 * 1e6),
        (f"{TASKS}-task, {TASKS} run-time bounds, graph of 4",
         timed(graph_of(many_bounds, 4, x, y), REPEATS) / TASKS / 4 * 1e6),
        ("matvec 2048^2 f16, eager", timed(lambda: matvec(W, x, y), REPEATS) * 1e6),
        ("matvec 2048^2 f16, graph of 16", timed(graph_of(matvec, TASKS, W, x, y), REPEATS) / TASKS * 1e6),
        (f"matvec x{TASKS} in one kernel, eager (per task)", timed(lambda: matvecs(W, x, y), REPEATS) / TASKS * 1e6),
    ]
    for name, us in rows:
        print(f"{name:48s} {us:8.1f} us")
    print(f"matvec bytes {N * N * 2 / 1e6:.1f} MB; y[:2] = {y.to_numpy()[:2]} (expect ~2.049)")


if __name__ == "__main__":
    main()
