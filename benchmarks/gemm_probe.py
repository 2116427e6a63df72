"""Time one dense matrix product of a pass of many positions: `gpu_gemm.gemm_task` against the lane kernel
(`lanes.linear_task` at tile 8, with ROW_TILE rows per lane group), on one arch, with a check of each against NumPy.

    python3 benchmarks/gemm_probe.py --arch cuda --positions 32,512 --shapes 2048x2048,7168x2048,2048x7168

Prints one RESULT line per (kernel, variant, positions, shape): microseconds per product (20 replays in one graph,
after a warm-up) and TFLOP/s. Variants set gpu_gemm's BLOCK_T / MAX_ROWS / STEP_K / UNROLL_K (/ PER, default 4) before
their kernels compile.
"""
import argparse
import functools
import sys
import time

import numpy as np

sys.path.insert(0, ".")

import kernels  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--arch", default="cuda")
    p.add_argument("--positions", default="32,512")
    p.add_argument("--shapes", default="2048x2048,7168x2048,2048x7168")  # out x in
    p.add_argument("--variants", default="64x64x32x4,64x64x16x4,64x32x16x4")  # BLOCK_T x MAX_ROWS x STEP_K x UNROLL_K
    p.add_argument("--repeats", type=int, default=20)
    a = p.parse_args()
    print("arch:", kernels.init(a.arch, "taichi"), flush=True)  # probes Taichi's runtime (ti.ndarray, ti.graph)
    import taichi as ti
    from kernels import gpu_gemm
    from kernels.common import ACT_NONE
    from kernels.lanes import linear_task

    @functools.cache
    def lane_runner():
        @ti.kernel
        def run(W: ti.types.ndarray(), X: ti.types.ndarray(), Y: ti.types.ndarray()):
            linear_task(W, 0, 0, W.shape[1], W.shape[2], X, 0, Y, 0, ACT_NONE, False, 8)
        return run

    @functools.cache
    def gemm_runner(variant):
        @ti.kernel
        def run(W: ti.types.ndarray(), X: ti.types.ndarray(), Y: ti.types.ndarray()):
            gpu_gemm.gemm_task(W, 0, 0, W.shape[1], W.shape[2], X, ((0, 0, 0, ACT_NONE),), Y, False)
        return run

    rng = np.random.default_rng(0)
    for T in (int(v) for v in a.positions.split(",")):
        for shape in a.shapes.split(","):
            n_out, n_in = (int(v) for v in shape.split("x"))
            W = (rng.standard_normal((1, n_out, n_in), dtype=np.float32) / np.sqrt(n_in)).astype(np.float16)
            X = rng.standard_normal((T, n_in), dtype=np.float32)
            expected = X.astype(np.float64) @ W[0].astype(np.float64).T
            dW = ti.ndarray(ti.f16, W.shape)
            dW.from_numpy(W)
            dX = ti.ndarray(ti.f32, X.shape)
            dX.from_numpy(X)
            dY = ti.ndarray(ti.f32, (T, n_out))
            cases = [("lanes", "tile8", lane_runner)] + [("gemm", v, functools.partial(variant_runner, v, gemm_runner))
                                                          for v in a.variants.split(",")]
            for name, variant, make in cases:
                runner = make()
                start = time.perf_counter()
                runner(dW, dX, dY)
                ti.sync()
                compile_s = time.perf_counter() - start
                err = np.abs(dY.to_numpy() - expected).max() / np.abs(expected).max()
                start = time.perf_counter()
                for _ in range(a.repeats):
                    runner(dW, dX, dY)
                ti.sync()
                us = (time.perf_counter() - start) / a.repeats * 1e6
                tflops = 2 * T * n_out * n_in / us / 1e6
                print(f"RESULT {name} {variant} T={T} {shape} {us:.1f} us {tflops:.2f} TFLOP/s "
                      f"err {err:.1e} first call {compile_s:.1f} s", flush=True)


def variant_runner(variant: str, gemm_runner):
    from kernels import gpu_gemm
    values = [int(v) for v in variant.split("x")]
    gpu_gemm.BLOCK_T, gpu_gemm.MAX_ROWS, gpu_gemm.STEP_K, gpu_gemm.UNROLL_K = values[:4]
    gpu_gemm.PER = values[4] if len(values) > 4 else 4
    return gemm_runner(variant)


if __name__ == "__main__":
    main()
