"""A pass's input rows, gathered on the device: x[t] = table[ids[t]], the table holding LN0(emb) (applied once at
load, kernels/engine.py), in the precision's dtype. Must match the reference's embedding lookup followed by
ref.common.layer_norm(ln0) (to fp16 rounding of the table with precision fp16: spec/tolerances.md).

Why on the device: on Vulkan, every host-to-device copy through Taichi (`from_numpy`) is a kernel launch on a host
array that ends in a wait, ~0.7-1.5 ms on the H100 whatever its size (benchmarks/gpu_probe.py). A pass of at most
GRAPH_IDS positions therefore takes its token ids as a kernel argument, recorded into the pass's graph (a vector
argument costs nothing measurable there); longer passes upload their ids, one small copy per pass.
"""
import taichi as ti

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
def embed_from_argument(ids: IDS, table: ti.types.ndarray(), x: ti.types.ndarray()):
    for t, c in ti.ndrange(x.shape[0], x.shape[1]):
        x[t, c] = ti.cast(table[id_at(ids, t), c], ti.f32)


@kernel
def embed_from_array(ids: ti.types.ndarray(), table: ti.types.ndarray(), x: ti.types.ndarray()):
    for t, c in ti.ndrange(x.shape[0], x.shape[1]):
        x[t, c] = ti.cast(table[ids[t], c], ti.f32)
