"""Time one matrix product of a pass of several positions on Vulkan under our command buffers (runtime "commands"),
from device timestamps: `gpu_gemm.gemm_task` in several workgroup shapes against the lane kernel (`lanes.linear_task`
at tile 8), each checked against NumPy.

    python3 benchmarks/gemm_probe.py --positions 32,256 --shapes 2048x2048,7168x2048,2048x7168 \
        --variants lanes,64x32x32x4x4x1,32x16x16x4x4x8

A variant is "lanes", "skinny-R-S-C" (`skinny_product`: R rows a subgroup, S subgroups a workgroup, inputs staged
C columns at a time; at most 32 positions), "skinnyg-R-P" (`skinny_global_product`: R rows and P positions a
subgroup), or a `gpu_gemm.Tiling`: positions x rows x step x unroll x per x groups [x splits]. Each case
is one kernel recorded `--repeats` times into one pass, timed after `--warm-up` seconds of load (an idle H100 runs
the first dispatches after a pause at a quarter of its speed: benchmarks/decode_probe.py); its time is the median of
its calls (a split product's two dispatches added). Prints one RESULT line per (variant, positions, shape):
microseconds and TFLOP/s.
"""
import argparse
import functools
import statistics
import sys

import numpy as np
import taichi as ti

sys.path.insert(0, "benchmarks")

import kernels  # noqa: E402
from kernels import arrays, gpu_gemm, lanes  # noqa: E402
from kernels.common import ACT_NONE  # noqa: E402
from kernels.launch import kernel  # noqa: E402
from kernels.lanes import linear_task  # noqa: E402
from kernels.quant import half_to_f32  # noqa: E402

VARIANTS = "lanes,64x32x32x4x4x1,32x16x16x4x4x8,32x16x32x4x4x4,32x32x32x4x4x4,32x16x16x4x4x4"


@kernel
def lanes_product(W: ti.types.ndarray(), X: ti.types.ndarray(), Y: ti.types.ndarray()):
    linear_task(W, 0, 0, W.shape[1], W.shape[2], X, 0, Y, 0, ACT_NONE, False, 8)


@functools.cache
def gemm_product(shape: gpu_gemm.Tiling):
    @kernel
    def product(W: ti.types.ndarray(), X: ti.types.ndarray(), Y: ti.types.ndarray(), P: ti.types.ndarray()):
        gpu_gemm.gemm_task(W, 0, 0, W.shape[1], W.shape[2], X, ((0, 0, 0, ACT_NONE),), Y, False, shape=shape,
                           parts=(P, 0) if ti.static(shape.splits > 1) else None)
    return product


@functools.cache
def route_product(shape: gpu_gemm.Tiling, blocks: int, C: int, kind: str = "apart"):
    """A product of blocks·C rows in `blocks` route blocks, as v6's and v7's projections: block m reads columns m·C of
    a scratch array ("same": all read columns 0 on) and writes its columns (blocks + m)·C (X and Y the same array)."""
    route = tuple((m * C, 0 if kind == "same" else m * C, (blocks + m) * C, ACT_NONE) for m in range(blocks))

    @kernel
    def product(W: ti.types.ndarray(), X: ti.types.ndarray()):
        gpu_gemm.gemm_task(W, 0, 0, blocks * C, C, X, route, X, False, shape=shape)
    return product


SKINNY_POSITIONS = 32  # skinny_product's register tile: every position of a batch-decode pass


@functools.cache
def skinny_product(rows: int, subgroups: int, chunk: int):
    """A candidate for batch decode: Y = X · W^T for up to 32 positions, W's fp16 pairs as u32 words (1, out, in/2).
    Each subgroup (LANES lanes) takes `rows` rows and every position (a register tile of rows × 32 sums), its lanes
    splitting the columns (one word of each row a lane and step: coalesced), the sums added over the lanes at the
    end. The workgroup stages X's positions `chunk` columns at a time in workgroup memory, the two halves of a pair
    in two planes (a lane's reads fall in distinct banks), and every subgroup reads them."""
    lanes_n, P = lanes.LANES, SKINNY_POSITIONS
    group, block = subgroups * lanes_n, subgroups * rows
    pairs = chunk // 2

    @kernel
    def product(W: ti.types.ndarray(), X: ti.types.ndarray(), Y: ti.types.ndarray()):
        ti.loop_config(block_dim=group)
        for thread in range((W.shape[1] + block - 1) // block * group):
            n_out, n_pairs, T = W.shape[1], W.shape[2], X.shape[0]
            tid = thread % group
            sub, lane = tid // lanes_n, tid % lanes_n
            o0 = thread // group * block + sub * rows
            xs = ti.simt.block.SharedArray((P, 2, pairs), ti.f32)
            acc = ti.Matrix([[0.0] * P for _ in ti.static(range(rows))])
            for c in range((n_pairs + pairs - 1) // pairs):
                staged = ti.Vector([0.0] * (P * chunk // group))
                for i in ti.static(range(P * chunk // group)):  # loads first, clamped (no branch), then stores
                    e = tid + i * group
                    p, col = e // chunk, c * chunk + e % chunk
                    v = X[ti.min(p, T - 1), ti.min(col, 2 * n_pairs - 1)]
                    staged[i] = ti.select(p < T and col < 2 * n_pairs, v, 0.0)
                for i in ti.static(range(P * chunk // group)):
                    e = tid + i * group
                    xs[e // chunk, e % 2, e % chunk // 2] = staged[i]
                ti.simt.block.sync()
                for j in range(pairs // lanes_n):
                    kp = j * lanes_n + lane
                    w0 = ti.Vector([0.0] * rows)
                    w1 = ti.Vector([0.0] * rows)
                    if c * pairs + kp < n_pairs:
                        for r in ti.static(range(rows)):
                            word = W[0, ti.min(o0 + r, n_out - 1), c * pairs + kp]
                            w0[r], w1[r] = half_to_f32(word), half_to_f32(word >> 16)
                    x0 = ti.Vector([xs[p, 0, kp] for p in ti.static(range(P))])
                    x1 = ti.Vector([xs[p, 1, kp] for p in ti.static(range(P))])
                    acc += w0.outer_product(x0) + w1.outer_product(x1)
                ti.simt.block.sync()
            emit_sums(acc, Y, o0, 0, n_out, T, lane)
    return product


@functools.cache
def skinny_global_product(rows: int, positions: int):
    """`skinny_product` without staging: each subgroup reads its `positions` positions' inputs itself (L1)."""
    lanes_n, P = lanes.LANES, positions

    @kernel
    def product(W: ti.types.ndarray(), X: ti.types.ndarray(), Y: ti.types.ndarray()):
        ti.loop_config(block_dim=128)
        for thread in range((W.shape[1] + rows - 1) // rows * ((X.shape[0] + P - 1) // P) * lanes_n):
            n_out, n_pairs, T = W.shape[1], W.shape[2], X.shape[0]
            lane, item = thread % lanes_n, thread // lanes_n
            t_blocks = (T + P - 1) // P
            o0, t0 = item // t_blocks * rows, item % t_blocks * P
            acc = ti.Matrix([[0.0] * P for _ in ti.static(range(rows))])
            for j in range((n_pairs + lanes_n - 1) // lanes_n):
                kp = ti.min(j * lanes_n + lane, n_pairs - 1)
                live = j * lanes_n + lane < n_pairs
                w0 = ti.Vector([0.0] * rows)
                w1 = ti.Vector([0.0] * rows)
                for r in ti.static(range(rows)):
                    word = W[0, ti.min(o0 + r, n_out - 1), kp]
                    w0[r] = ti.select(live, half_to_f32(word), 0.0)
                    w1[r] = ti.select(live, half_to_f32(word >> 16), 0.0)
                x0 = ti.Vector([X[ti.min(t0 + p, T - 1), 2 * kp] for p in ti.static(range(P))])
                x1 = ti.Vector([X[ti.min(t0 + p, T - 1), 2 * kp + 1] for p in ti.static(range(P))])
                acc += w0.outer_product(x0) + w1.outer_product(x1)
            emit_sums(acc, Y, o0, t0, n_out, T, lane)
    return product


@ti.func
def emit_sums(acc: ti.template(), Y: ti.template(), o0: ti.i32, t0: ti.i32, n_out: ti.i32, T: ti.i32, lane: ti.i32):
    """The skinny forms' register tile acc[r, p] summed over the subgroup's lanes into Y[t0 + p, o0 + r], each sum
    stored by one lane in turn."""
    for r in ti.static(range(acc.n)):
        for p in ti.static(range(acc.m)):
            s = ti.simt.subgroup.reduce_add(acc[r, p])
            if lane == (r * acc.m + p) % lanes.LANES and o0 + r < n_out and t0 + p < T:
                Y[t0 + p, o0 + r] = s


def product_of(variant: str):
    """The kernel of a variant, and its number of splits (the room its partial sums take)."""
    if variant == "lanes":
        return lanes_product, 0
    if variant.startswith("skinnyg"):
        return skinny_global_product(*(int(v) for v in variant.split("-")[1:])), 0
    if variant.startswith("skinny"):
        return skinny_product(*(int(v) for v in variant.split("-")[1:])), 0
    shape = gpu_gemm.Tiling(*(int(v) for v in variant.split("x")))
    return gemm_product(shape), shape.splits


def median_call(calls: list, warm_up: float) -> float:
    """Seconds: the median device time of the calls but the first, each call's dispatches added (a split product
    has two), timed after `warm_up` seconds of load."""
    from decode_probe import dispatch_seconds  # after init: it builds kernels
    times = dispatch_seconds(calls, warm_up)
    per = len(times) // len(calls)
    return statistics.median(sum(times[i * per:(i + 1) * per]) for i in range(1, len(calls)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--positions", default="32,256")
    parser.add_argument("--shapes", default="2048x2048,7168x2048,2048x7168")  # out x in
    parser.add_argument("--variants", default=VARIANTS)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--warm-up", type=float, default=0.5, help="seconds of load before each case")
    parser.add_argument("--route", type=int, default=0, help="blocks of a routed product (out = blocks·in)")
    parser.add_argument("--pad", type=int, default=0, help="columns after a routed product's scratch columns")
    parser.add_argument("--route-kind", default="apart", help="apart: each block its own input columns; same: one")
    args = parser.parse_args()
    if args.route:
        return main_route(args)
    kernels.init("vulkan", "commands")
    print(f"device {arrays.context().name}", flush=True)
    rng = np.random.default_rng(0)
    for T in (int(v) for v in args.positions.split(",")):
        for shape in args.shapes.split(","):
            n_out, n_in = (int(v) for v in shape.split("x"))
            w = (rng.standard_normal((1, n_out, n_in), dtype=np.float32) / np.sqrt(n_in)).astype(np.float16)
            x = rng.standard_normal((T, n_in), dtype=np.float32)
            want = x.astype(np.float64) @ w[0].astype(np.float64).T
            W, X = arrays.upload(w, ti.f16), arrays.upload(x, ti.f32)
            words = arrays.upload(w.view(np.uint32), ti.u32)  # the skinny variants' fp16 pairs
            for variant in args.variants.split(","):
                if variant.startswith("skinny-") and T > SKINNY_POSITIONS:
                    print(f"RESULT {variant} T={T} {shape}: skipped (at most {SKINNY_POSITIONS} positions)", flush=True)
                    continue
                try:
                    fn, splits = product_of(variant)
                    Y = arrays.new(ti.f32, (T, n_out))
                    weights = words if variant.startswith("skinny") else W
                    call_args = (weights, X, Y) + ((arrays.new(ti.f32, (T, max(1, splits) * n_out)),) if splits else ())
                    fn(*call_args)
                    err = np.abs(Y.to_numpy() - want).max() / np.abs(want).max()
                    seconds = median_call([(fn.compiled, call_args)] * args.repeats, args.warm_up)
                except Exception as e:  # a shape the device refuses: say so, go on
                    print(f"RESULT {variant} T={T} {shape}: failed: {type(e).__name__}: {e}", flush=True)
                    continue
                tflops = 2 * T * n_out * n_in / seconds / 1e12
                print(f"RESULT {variant:18s} T={T:4d} {shape:9s} {seconds * 1e6:8.1f} us {tflops:6.2f} TFLOP/s "
                      f"err {err:.1e}", flush=True)


def main_route(args) -> None:
    """--route B: each variant (no splits) as a product of B blocks reading and writing one scratch array."""
    kernels.init("vulkan", "commands")
    print(f"device {arrays.context().name}", flush=True)
    rng = np.random.default_rng(0)
    C = int(args.shapes.split(",")[0].split("x")[1])
    for T in (int(v) for v in args.positions.split(",")):
        w = (rng.standard_normal((1, args.route * C, C), dtype=np.float32) / np.sqrt(C)).astype(np.float16)
        x = rng.standard_normal((T, 2 * args.route * C + args.pad), dtype=np.float32)
        start = (lambda m: 0) if args.route_kind == "same" else (lambda m: m * C)  # noqa: E731
        want = np.concatenate([x[:, start(m):start(m) + C].astype(np.float64) @ w[0, m * C:(m + 1) * C].T
                               for m in range(args.route)], axis=1)
        W = arrays.upload(w, ti.f16)
        for variant in args.variants.split(","):
            fn = route_product(gpu_gemm.Tiling(*(int(v) for v in variant.split("x"))), args.route, C, args.route_kind)
            X = arrays.upload(x, ti.f32)
            fn(W, X)
            err = np.abs(X.to_numpy()[:, args.route * C:2 * args.route * C] - want).max() / np.abs(want).max()
            seconds = median_call([(fn.compiled, (W, X))] * args.repeats, args.warm_up)
            tflops = 2 * T * args.route * C * C / seconds / 1e12
            print(f"RESULT route{args.route} {args.route_kind} pad {args.pad} {variant:18s} T={T:4d} "
                  f"{seconds * 1e6:8.1f} us {tflops:6.2f} TFLOP/s err {err:.1e}", flush=True)


if __name__ == "__main__":
    main()
