"""NF4 (and Int8) rows read at one position (a batch-1 decode step's quantized products) on Vulkan, timed alone
under our command buffers from device timestamps (decode_probe.py's harness): the engine's readers against candidate
forms. Run it on an older tree (PYTHONPATH) to time that tree's readers.

Readers:
  fp16            lanes.linear_task on the dense f16 matrix (the bar to beat)
  lanes, int8     lanes.linear_task on the NF4 or Int8 rows (kernels/gpu_rows.py)
  tab-uU[-bc]     the NF4 codes looked up in a workgroup table (a column of 16 entries per thread: no barrier, no
                  bank conflict), a word's 8 codes unrolled, each block's absmax factored out of its codes' sum, U
                  words in flight per lane; "-bc": lane s decodes the scale of the group's block s and the subgroup
                  broadcasts it; "-loop": the slots in a run-time loop instead, each code times its block's absmax
  rows-R          tab-u1-bc with R neighbouring rows a lane group, each input loaded once for the R rows
Each reader is checked against x @ dequantize(W).T (float64).

Usage: python3 benchmarks/quant_probe.py [--readers fp16,lanes,tab-u4,...] [--shapes 2048x2048,...]
"""
import argparse
import functools

import numpy as np
import taichi as ti

import kernels
from kernels import arrays, lanes, quant
from kernels.common import ACT_NONE
from kernels.launch import kernel
from ai00ref.weights.quant import quantize

from decode_probe import median_dispatch

READERS = "fp16,lanes,tab-u4,tab-u8,tab-u4-bc,tab-u8-bc,tab-u4-bc-loop"
SHAPES = "2048x2048,7168x2048,2048x7168"
TABLE = quant.CODE_VALUES["nf4"]


@functools.cache
def lanes_reader(scheme: str):
    @kernel
    def read(W: ti.types.ndarray(), X: ti.types.ndarray(), Y: ti.types.ndarray()):
        lanes.linear_task(W, 0, 0, Y.shape[1], X.shape[1], X, 0, Y, 0, ACT_NONE, False, 1, storage=scheme)

    return read


@kernel
def fp16_reader(W: ti.types.ndarray(), X: ti.types.ndarray(), Y: ti.types.ndarray()):
    lanes.linear_task(W, 0, 0, W.shape[1], W.shape[2], X, 0, Y, 0, ACT_NONE, False, 1)


@ti.func
def group_scales(W: ti.template(), o: ti.i32, scale_at: ti.i32, g: ti.i32, lane: ti.i32,
                 broadcast: ti.template()):
    """The absmax of each block of group g (whole blocks of 64 in a group of 8·LANES elements)."""
    segments = ti.static(8 * lanes.LANES // 64)
    scales = ti.Vector([0.0] * segments)
    if ti.static(broadcast):
        b = g * segments + ti.min(lane, segments - 1)
        mine = quant.half_to_f32((W[0, o, scale_at + b // 2] >> (16 * (b % 2))) & 0xFFFF)
        for s in ti.static(range(segments)):
            scales[s] = ti.simt.subgroup.broadcast(mine, ti.u32(s))
    else:
        for s in ti.static(range(segments)):
            b = g * segments + s
            scales[s] = quant.half_to_f32((W[0, o, scale_at + b // 2] >> (16 * (b % 2))) & 0xFFFF)
    return scales


@ti.func
def table_group(word: ti.u32, scales: ti.template(), g: ti.i32, X: ti.template(), lane: ti.i32, tab: ti.template(),
                tid: ti.i32) -> ti.f32:
    segments = ti.static(8 * lanes.LANES // 64)
    run = ti.static(8 // segments)
    total = 0.0
    for s in ti.static(range(segments)):
        part = 0.0
        for e in ti.static(range(s * run, (s + 1) * run)):
            q = ti.cast((word >> (4 * e)) & 0xF, ti.i32)
            part += tab[q * lanes.GROUP + tid] * X[0, g * 8 * lanes.LANES + e * lanes.LANES + lane]
        total += scales[s] * part
    return total


@ti.func
def table_group_loop(word: ti.u32, scales: ti.template(), g: ti.i32, X: ti.template(), lane: ti.i32,
                     tab: ti.template(), tid: ti.i32) -> ti.f32:
    """`table_group` with the slots in a run-time loop, each code times its block's absmax."""
    segments = ti.static(8 * lanes.LANES // 64)
    run = ti.static(8 // segments)
    total = 0.0
    for e in range(8):
        scale = scales[0]
        for s in ti.static(range(1, segments)):
            scale = ti.select(e // run == s, scales[s], scale)
        q = ti.cast((word >> (4 * e)) & 0xF, ti.i32)
        total += scale * (tab[q * lanes.GROUP + tid] * X[0, g * 8 * lanes.LANES + e * lanes.LANES + lane])
    return total


@functools.cache
def table_reader(unroll: int, broadcast: bool, loop: bool = False):
    group_sum = table_group_loop if loop else table_group

    @kernel
    def read(W: ti.types.ndarray(), X: ti.types.ndarray(), Y: ti.types.ndarray()):
        ti.loop_config(block_dim=lanes.GROUP)
        for g in range(Y.shape[1] * lanes.LANES):
            lane, o, tid = g % lanes.LANES, g // lanes.LANES, g % lanes.GROUP
            tab = ti.simt.block.SharedArray((16 * lanes.GROUP,), ti.f32)
            for q in ti.static(range(16)):
                tab[q * lanes.GROUP + tid] = quant.code_value(ti.u32(q), "nf4")
            scale_at = quant.first_scale_word(X.shape[1], "nf4")
            groups = scale_at // lanes.LANES  # the probe's K is whole groups
            acc = 0.0
            for step in range(groups // unroll):
                words = ti.Vector([W[0, o, (step * unroll + q) * lanes.LANES + lane] for q in ti.static(range(unroll))])
                for q in ti.static(range(unroll)):
                    scales = group_scales(W, o, scale_at, step * unroll + q, lane, broadcast)
                    acc += group_sum(words[q], scales, step * unroll + q, X, lane, tab, tid)
            for gg in range(groups // unroll * unroll, groups):
                scales = group_scales(W, o, scale_at, gg, lane, broadcast)
                acc += group_sum(W[0, o, gg * lanes.LANES + lane], scales, gg, X, lane, tab, tid)
            total = lanes.lane_sum(acc)
            if lane == 0:
                Y[0, o] = total

    return read


@functools.cache
def rows_reader(rows: int):
    """"rows-R": a lane group takes R neighbouring rows, each input loaded once for the R rows (tab-u1-bc's
    table and scales, the slots unrolled)."""
    segments = 8 * lanes.LANES // 64
    run = 8 // segments

    @kernel
    def read(W: ti.types.ndarray(), X: ti.types.ndarray(), Y: ti.types.ndarray()):
        ti.loop_config(block_dim=lanes.GROUP)
        for g in range(Y.shape[1] // rows * lanes.LANES):
            lane, o0, tid = g % lanes.LANES, g // lanes.LANES * rows, g % lanes.GROUP
            tab = ti.simt.block.SharedArray((16 * lanes.GROUP,), ti.f32)
            for q in ti.static(range(16)):
                tab[q * lanes.GROUP + tid] = quant.code_value(ti.u32(q), "nf4")
            scale_at = quant.first_scale_word(X.shape[1], "nf4")
            acc = ti.Vector([0.0] * rows)
            for gg in range(scale_at // lanes.LANES):
                words = ti.Vector([W[0, o0 + r, gg * lanes.LANES + lane] for r in ti.static(range(rows))])
                scales = ti.Matrix([[0.0] * segments for _ in ti.static(range(rows))])
                for r in ti.static(range(rows)):
                    row_scales = group_scales(W, o0 + r, scale_at, gg, lane, True)
                    for s in ti.static(range(segments)):
                        scales[r, s] = row_scales[s]
                for s in ti.static(range(segments)):
                    part = ti.Vector([0.0] * rows)
                    for e in ti.static(range(s * run, (s + 1) * run)):
                        x = X[0, gg * 8 * lanes.LANES + e * lanes.LANES + lane]
                        for r in ti.static(range(rows)):
                            part[r] += tab[ti.cast((words[r] >> (4 * e)) & 0xF, ti.i32) * lanes.GROUP + tid] * x
                    for r in ti.static(range(rows)):
                        acc[r] += scales[r, s] * part[r]
            for r in ti.static(range(rows)):
                total = lanes.lane_sum(acc[r])
                if lane == 0:
                    Y[0, o0 + r] = total

    return read


def probe(names: list, shapes: list, repeats: int, warm_up: float) -> None:
    rng = np.random.default_rng(0)
    for R, K in shapes:
        assert K % (8 * lanes.LANES) == 0, "whole groups only"
        w16 = (rng.standard_normal((R, K)) * 0.05).astype(np.float16)
        x = rng.standard_normal((1, K)).astype(np.float32)
        dense, X = arrays.upload(w16[None], ti.f16), arrays.upload(x, ti.f32)
        for name in names:
            matrix = quantize(w16, "int8" if name == "int8" else "nf4")
            want = x.astype(np.float64) @ matrix.dequantize().astype(np.float64).T
            rows = quant.upload(matrix).rows
            Y = arrays.upload(np.zeros((1, R), np.float32), ti.f32)
            if name == "fp16":
                fn, W, bytes_read, goal = fp16_reader, dense, R * K * 2, x @ w16.astype(np.float32).T
            else:
                parts = name.split("-")
                if name in ("lanes", "int8"):
                    fn = lanes_reader("int8" if name == "int8" else "nf4")
                elif parts[0] == "rows":
                    fn = rows_reader(int(parts[1]))
                else:
                    fn = table_reader(int(parts[1][1:]), "bc" in parts, "loop" in parts)
                W, bytes_read, goal = rows, rows.shape[1] * rows.shape[2] * 4, want
            fn(W, X, Y)
            err = np.linalg.norm(Y.to_numpy() - goal) / np.linalg.norm(goal)
            dt = median_dispatch([(fn.compiled, (W, X, Y))] * repeats, warm_up)
            print(f"RESULT {name:10s} {R}x{K}: {dt * 1e6:7.1f} us {bytes_read / dt / 1e9:6.0f} GB/s  "
                  f"relL2 {err:.1e}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--readers", default=READERS)
    parser.add_argument("--shapes", default=SHAPES)
    parser.add_argument("--warm-up", type=float, default=0.5, help="seconds of load before each case")
    args = parser.parse_args()
    kernels.init("vulkan", "commands")
    print(f"device {arrays.context().name}, {lanes.LANES} lanes", flush=True)
    shapes = [tuple(int(v) for v in s.split("x")) for s in args.shapes.split(",") if s]
    probe([r for r in args.readers.split(",") if r], shapes, args.repeats, args.warm_up)


if __name__ == "__main__":
    main()
