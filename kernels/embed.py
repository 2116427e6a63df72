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
from kernels.lanes import GROUP
from kernels.layer_norms import gather_norm_task, norm_row, pieces
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


@kernel
def embed_from_argument(ids: IDS, table: ti.types.ndarray(), ln0: ti.types.ndarray(), eps: ti.f32,
                        x: ti.types.ndarray()):
    """x[t] = LN0(table[ids[t]]), LANES threads per piece of a position (`layer_norms.pieces`); ln0 holds LN0's weight
    and bias as (1, 2, C)."""
    ti.loop_config(block_dim=GROUP)
    for thread in range(lanes.task_range(x.shape[0] * pieces(x.shape[1]) * lanes.LANES)):
        for rnd in range(lanes.task_rounds(thread, x.shape[0] * pieces(x.shape[1]) * lanes.LANES)):
            g = lanes.task_item(thread, rnd)
            lane, group = g % lanes.LANES, g // lanes.LANES
            t, piece = group // pieces(x.shape[1]), group % pieces(x.shape[1])
            norm_row(table, id_at(ids, t), 1, ln0, eps, x, t, piece, lane)


@kernel
def embed_from_array(ids: ti.types.ndarray(), table: ti.types.ndarray(), ln0: ti.types.ndarray(), eps: ti.f32,
                     x: ti.types.ndarray()):
    """The same with the ids in an array: the head's gather and norm, picking every id."""
    gather_norm_task(table, ids, ln0, eps, x)
