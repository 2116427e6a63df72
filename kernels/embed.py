"""A pass's input rows, made on the device: x[t] = LN0(emb[ids[t]]). Must match the reference's embedding lookup
followed by ref.common.layer_norm(ln0) per token (spec/kernels.md §2; the table in the precision's dtype, so an
fp16-stored model, as Ai00's files are, loses nothing with precision fp16).

Why on the device: on Vulkan, every host-to-device copy through Taichi (`from_numpy`) is a kernel launch on a host
array that ends in a wait, ~0.7-1.5 ms on the H100 whatever its size (benchmarks/gpu_probe.py). A pass of at most
GRAPH_IDS positions therefore takes its token ids as a kernel argument, recorded into the pass's graph (a vector
argument costs nothing measurable there); longer passes upload their ids, one small copy per pass.
"""
import taichi as ti

from kernels import lanes
from kernels.lanes import GROUP, mean_and_inv
from kernels.launch import kernel

GRAPH_IDS = 32  # passes of at most this many positions take their ids as a graph argument
IDS = ti.types.vector(GRAPH_IDS, ti.i32)


@ti.func
def id_at(ids: ti.template(), t: ti.i32) -> ti.i32:
    """ids[t] of an argument vector, by compile-time indices (a run-time index into an argument vector makes Taichi
    copy it into a local array in every thread)."""
    value = 0
    for j in ti.static(range(GRAPH_IDS)):
        if t == j:
            value = ids[j]
    return value


@ti.func
def embed_task(ids: ti.template(), from_argument: ti.template(), table: ti.template(), ln0: ti.template(),
               eps: ti.f32, x: ti.template()):
    """x[t] = LN(table[ids[t]]) with LN0's weight ln0[0, 0] and bias ln0[0, 1]: LANES threads per position."""
    T, C = x.shape[0], x.shape[1]
    n_lanes = ti.static(lanes.LANES)
    ti.loop_config(block_dim=GROUP)
    for g in range(T * n_lanes):
        lane, t = g % n_lanes, g // n_lanes
        row = 0
        if ti.static(from_argument):
            row = id_at(ids, t)
        else:
            row = ids[t]
        stats = mean_and_inv(table, row, 0, C, lane, eps)
        for q in range((C + n_lanes - 1) // n_lanes):
            c = q * n_lanes + lane
            if c < C:
                x[t, c] = (ti.cast(table[row, c], ti.f32) - stats[0]) * stats[1] * ln0[0, 0, c] + ln0[0, 1, c]


@kernel
def embed_from_argument(ids: IDS, table: ti.types.ndarray(), ln0: ti.types.ndarray(), eps: ti.f32,
                        x: ti.types.ndarray()):
    embed_task(ids, True, table, ln0, eps, x)


@kernel
def embed_from_array(ids: ti.types.ndarray(), table: ti.types.ndarray(), ln0: ti.types.ndarray(), eps: ti.f32,
                     x: ti.types.ndarray()):
    embed_task(ids, False, table, ln0, eps, x)
