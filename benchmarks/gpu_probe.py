"""Where does a GPU layer's time go? Matrix-vector readers and host transfers, timed alone on one arch.

Each reader computes Y[t, o] = W[o, :] · X[t, :] for every output row o and position t, one row per subgroup of
lanes (kernels/lanes.py), replayed `--repeats` times in one Taichi graph; a one-element kernel gives the graph's
per-dispatch cost. Readers:
  current     kernels.lanes.linear_task, as the layer kernels run it
  branchfree  whole steps of LANES*unroll columns with no `if` around the loads, then a guarded tail
  u32pair     the same over f16 pairs packed in u32 words (one 4-byte load per lane per step)
Every reader is checked against NumPy before it is timed.

Usage: python3 benchmarks/gpu_probe.py --arch vulkan|cuda [--repeats 50] [--only launches,transfers,readbacks,readers]
"""
import argparse
import functools
import time

import numpy as np
import taichi as ti

import kernels
from kernels import lanes
from kernels.common import ACT_NONE
from kernels.launch import Replay, kernel

SHAPES = [tuple(int(v) for v in s.split("x")) for s in __import__("os").environ.get("PROBE_SHAPES", "2048x2048,8192x2048,2048x8192,65536x2048").split(",")]
UNROLL = 16


@ti.func
def _row_index(t0: ti.i32, u: ti.i32, T: ti.i32) -> ti.i32:
    return ti.min(t0 + u, T - 1)  # clamped: the loads stay unconditional; emit skips rows past T


@ti.func
def dot_branchfree(W: ti.template(), o: ti.i32, X: ti.template(), n_in: ti.i32, t0: ti.i32, T: ti.i32,
                   lane: ti.i32, tile: ti.template()):
    L = ti.static(lanes.LANES)
    unroll = ti.static(UNROLL if tile == 1 else 4)
    acc = ti.Vector([0.0] * tile)
    full = n_in // (L * unroll)
    for step in range(full):
        base = step * unroll * L + lane
        w = ti.Vector([0.0] * unroll)
        for q in ti.static(range(unroll)):
            w[q] = ti.cast(W[o, base + q * L], ti.f32)
        for q in ti.static(range(unroll)):
            for u in ti.static(range(tile)):
                acc[u] += w[q] * X[_row_index(t0, u, T), base + q * L]
    for q in range((n_in - full * unroll * L + L - 1) // L):
        k = full * unroll * L + q * L + lane
        if k < n_in:
            w = ti.cast(W[o, k], ti.f32)
            for u in ti.static(range(tile)):
                acc[u] += w * X[_row_index(t0, u, T), k]
    return acc


@ti.func
def dot_u32pair(W: ti.template(), o: ti.i32, X: ti.template(), n_in: ti.i32, t0: ti.i32, T: ti.i32,
                lane: ti.i32, tile: ti.template()):
    L = ti.static(lanes.LANES)
    unroll = ti.static(UNROLL // 2 if tile == 1 else 2)
    acc = ti.Vector([0.0] * tile)
    n_words = n_in // 2
    full = n_words // (L * unroll)
    for step in range(full):
        base = step * unroll * L + lane
        words = ti.Vector([ti.u32(0)] * unroll)
        for q in ti.static(range(unroll)):
            words[q] = W[o, base + q * L]
        for q in ti.static(range(unroll)):
            lo = ti.cast(ti.bit_cast(ti.cast(words[q] & 0xFFFF, ti.u16), ti.f16), ti.f32)
            hi = ti.cast(ti.bit_cast(ti.cast(words[q] >> 16, ti.u16), ti.f16), ti.f32)
            k = 2 * (base + q * L)
            for u in ti.static(range(tile)):
                row = _row_index(t0, u, T)
                acc[u] += lo * X[row, k] + hi * X[row, k + 1]
    for q in range((n_words - full * unroll * L + L - 1) // L):
        j = full * unroll * L + q * L + lane
        if j < n_words:
            lo = ti.cast(ti.bit_cast(ti.cast(W[o, j] & 0xFFFF, ti.u16), ti.f16), ti.f32)
            hi = ti.cast(ti.bit_cast(ti.cast(W[o, j] >> 16, ti.u16), ti.f16), ti.f32)
            for u in ti.static(range(tile)):
                row = _row_index(t0, u, T)
                acc[u] += lo * X[row, 2 * j] + hi * X[row, 2 * j + 1]
    return acc


@functools.cache
def reader_kernel(name: str, tile: int):
    dot = {"branchfree": dot_branchfree, "u32pair": dot_u32pair}.get(name)

    @kernel
    def current(W: ti.types.ndarray(), X: ti.types.ndarray(), Y: ti.types.ndarray()):
        lanes.linear_task(W, 0, 0, W.shape[1], W.shape[2], X, 0, Y, 0, ACT_NONE, False, tile)

    @kernel
    def other(W: ti.types.ndarray(), X: ti.types.ndarray(), Y: ti.types.ndarray()):
        T = X.shape[0]
        n_tiles = (T + tile - 1) // tile
        ti.loop_config(block_dim=lanes.GROUP)
        for g in range(W.shape[0] * n_tiles * lanes.LANES):
            lane, group = g % lanes.LANES, g // lanes.LANES
            o, t0 = group // n_tiles, group % n_tiles * tile
            acc = dot(W, o, X, X.shape[1], t0, T, lane, tile)
            lanes.emit_tile(acc, Y, o, t0, T, lane, ACT_NONE, False)

    return current if name == "current" else other


@kernel
def touch(Y: ti.types.ndarray()):
    for i in range(1):
        Y[0, 0] = Y[0, 0] + 1.0


def replay_time(fn, args, repeats: int) -> float:
    replay = Replay([(fn.compiled, args)] * repeats, {})
    replay.run()
    ti.sync()
    start = time.perf_counter()
    replay.run()
    ti.sync()
    return (time.perf_counter() - start) / repeats


def probe_readers(repeats: int) -> None:
    rng = np.random.default_rng(0)
    base = replay_time(touch, (ti.ndarray(ti.f32, (1, 1)),), repeats)
    print(f"RESULT dispatch one-element kernel {base * 1e6:.1f} us")
    for R, K in SHAPES:
        w16 = (rng.standard_normal((R, K)) * 0.05).astype(np.float16)
        W3 = ti.ndarray(ti.f16, (1, R, K))
        W3.from_numpy(w16[None])
        W2 = ti.ndarray(ti.f16, (R, K))
        W2.from_numpy(w16)
        Wp = ti.ndarray(ti.u32, (R, K // 2))
        Wp.from_numpy(w16.view(np.uint32))
        for T, tile in ((1, 1), (32, 8)):
            x = rng.standard_normal((T, K)).astype(np.float32)
            X = ti.ndarray(ti.f32, (T, K))
            X.from_numpy(x)
            Y = ti.ndarray(ti.f32, (T, R))
            want = x @ w16.astype(np.float32).T
            for name, Wn in (("current", W3), ("branchfree", W2), ("u32pair", Wp)):
                fn = reader_kernel(name, tile)
                Y.fill(0.0)
                fn(Wn, X, Y)
                err = np.linalg.norm(Y.to_numpy() - want) / np.linalg.norm(want)
                dt = replay_time(fn, (Wn, X, Y), repeats)
                print(f"RESULT reader {name:10s} {R}x{K} T={T:2d} tile={tile}: {dt * 1e6:8.1f} us "
                      f"{R * K * 2 / dt / 1e9:7.0f} GB/s  relL2 {err:.1e}")


def _per_call(op, repeats: int) -> float:
    op()
    start = time.perf_counter()
    for _ in range(repeats):
        op()
    return (time.perf_counter() - start) / repeats


IDS = ti.types.vector(32, ti.i32)


@ti.kernel
def ids_from_argument(ids: IDS, n: ti.i32, out: ti.types.ndarray()):
    for i in range(n):
        value = 0
        for j in ti.static(range(32)):  # a compile-time index into the argument vector
            if i == j:
                value = ids[j]
        out[i] = value


def probe_transfers(repeats: int) -> None:
    """The fixed costs of one pass's host traffic: Taichi's from_numpy/to_numpy run a kernel on an external array
    and wait; element reads/writes; a graph whose token ids travel as a vector argument instead."""
    cases = [("from_numpy f32 (1, 2048)", ti.f32, (1, 2048), "up"), ("from_numpy i32 (8,)", ti.i32, (8,), "up"),
             ("to_numpy f32 (1, 65536)", ti.f32, (1, 65536), "down"), ("to_numpy f16 (1, 65536)", ti.f16, (1, 65536), "down"),
             ("to_numpy f32 (32, 65536)", ti.f32, (32, 65536), "down"), ("to_numpy f32 (4,)", ti.f32, (4,), "down")]
    for name, dtype, shape, way in cases:
        nd = ti.ndarray(dtype, shape)
        host = np.zeros(shape, {ti.f32: np.float32, ti.f16: np.float16, ti.i32: np.int32}[dtype])
        op = (lambda: nd.from_numpy(host)) if way == "up" else nd.to_numpy
        print(f"RESULT transfer {name}: {_per_call(op, repeats) * 1e6:.0f} us")
    ids = ti.ndarray(ti.i32, (32,))
    print(f"RESULT transfer write_int one element: {_per_call(lambda: ids.arr.write_int([0], 7), repeats) * 1e6:.0f} us")
    print(f"RESULT transfer read_int one element: {_per_call(lambda: ids.arr.read_int([0]), repeats) * 1e6:.0f} us")
    Y = ti.ndarray(ti.f32, (1, 1))
    replay = Replay([(touch.compiled, (Y,))], {})
    print(f"RESULT transfer graph run + sync (one dispatch): "
          f"{_per_call(lambda: (replay.run(), ti.sync()), repeats) * 1e6:.0f} us")
    builder = ti.graph.GraphBuilder()
    builder.dispatch(ids_from_argument, ti.graph.Arg(ti.graph.ArgKind.MATRIX, "ids", IDS),
                     ti.graph.Arg(ti.graph.ArgKind.SCALAR, "n", ti.i32),
                     ti.graph.Arg(ti.graph.ArgKind.NDARRAY, "out", ti.i32, ndim=1))
    graph = builder.compile()
    vector = ti.Vector(list(range(100, 132)))
    graph.run({"ids": vector, "n": 32, "out": ids})
    assert ids.to_numpy().tolist() == list(range(100, 132)), ids.to_numpy()
    print(f"RESULT transfer graph with a vector argument of 32 ids, run + sync: "
          f"{_per_call(lambda: (graph.run({'ids': vector, 'n': 32, 'out': ids}), ti.sync()), repeats) * 1e6:.0f} us")


@ti.kernel
def copy_row_out(Y: ti.types.ndarray(), out: ti.types.ndarray()):
    for i in range(Y.shape[1]):
        out[0, i] = Y[0, i]


def cuda_reader(nd):
    """CUDA only: a read of `nd` by the driver's cuMemcpyDtoH from Taichi's device pointer (no kernel); None when
    the driver refuses it (for example without Taichi's context current in this thread)."""
    import ctypes

    driver = ctypes.CDLL("libcuda.so.1")
    pointer = ti.lang.impl.get_runtime().prog.get_ndarray_data_ptr_as_int(nd.arr)
    host = np.empty(nd.shape, np.float32)

    def read():
        ti.sync()
        code = driver.cuMemcpyDtoH_v2(ctypes.c_void_p(host.ctypes.data), ctypes.c_uint64(pointer),
                                      ctypes.c_size_t(host.nbytes))
        if code != 0:
            raise RuntimeError(f"cuMemcpyDtoH: CUDA error {code}")
        return host

    try:
        read()
    except RuntimeError as e:
        print(f"RESULT readback cuMemcpyDtoH unavailable: {e}")
        return None
    return read


def probe_readbacks(arch: str, repeats: int) -> None:
    """One decode step's end: a graph writes the logits row (1, 65536), then the host gets them. Ways: the graph,
    then Taichi's to_numpy (a kernel on a host array, then a sync); the graph, then one eager kernel writing into a
    NumPy array; on CUDA, the graph, a sync and the driver's copy."""
    Y = ti.ndarray(ti.f32, (1, 65536))
    host = np.empty((1, 65536), np.float32)
    replay = Replay([(touch.compiled, (Y,))], {})
    ways = [("graph + to_numpy", lambda: (replay.run(), Y.to_numpy())),
            ("graph + eager kernel into a NumPy array", lambda: (replay.run(), copy_row_out(Y, host)))]
    if arch == "cuda":
        read = cuda_reader(Y)
        if read is not None:
            ways.append(("graph + sync + cuMemcpyDtoH", lambda: (replay.run(), read())))
    for name, op in ways:
        print(f"RESULT readback {name}: {_per_call(op, repeats) * 1e6:.0f} us")
        got = op()[1]  # the graph adds 1 to Y[0, 0] on every run: compare after one more
        assert np.array_equal(got if got is not None else host, Y.to_numpy()), f"{name} read other values"


def launch_source(n_arrays: int, n_tasks: int) -> str:
    """A kernel of `n_tasks` one-thread tasks over `n_arrays` ndarray arguments (each task touches every array)."""
    names = [f"a{i}" for i in range(n_arrays)]
    body = "\n".join("    for _ in range(1):\n" + "".join(f"        {n}[0] = {n}[0] + 1.0\n" for n in names)
                     for _ in range(n_tasks))
    return f"def probe_launch({', '.join(n + ': ti.types.ndarray()' for n in names)}):\n{body}\n"


def probe_launches(repeats: int) -> None:
    """Per-launch cost in a graph by array arguments and tasks: where a layer launch's fixed cost comes from."""
    import importlib.util
    import pathlib
    import tempfile

    folder = pathlib.Path(tempfile.mkdtemp())
    for n_arrays, n_tasks in ((1, 1), (11, 1), (1, 10), (11, 10)):
        path = folder / f"probe_launch_{n_arrays}_{n_tasks}.py"  # Taichi reads a kernel's source from its file
        path.write_text("import taichi as ti\n\n" + launch_source(n_arrays, n_tasks))
        spec = importlib.util.spec_from_file_location(path.stem, path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        fn = kernel(module.probe_launch)
        arrays = tuple(ti.ndarray(ti.f32, (4,)) for _ in range(n_arrays))
        print(f"RESULT launch {n_arrays:2d} arrays, {n_tasks:2d} tasks: {replay_time(fn, arrays, repeats) * 1e6:7.1f} us")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--arch", default="vulkan", choices=["vulkan", "cuda", "cpu"])
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--only", default="readers,transfers")
    args = parser.parse_args()
    print("arch", kernels.init(args.arch, "taichi"), "lanes", lanes.LANES)  # probes Taichi's runtime
    if "launches" in args.only:
        probe_launches(args.repeats)
    if "transfers" in args.only:
        probe_transfers(args.repeats)
    if "readbacks" in args.only:
        probe_readbacks(args.arch, args.repeats)
    if "readers" in args.only:
        probe_readers(args.repeats)


if __name__ == "__main__":
    main()
