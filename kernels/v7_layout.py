"""RWKV-7's device layout: where every weight sits in the stacked arrays (`V7Layers`, rows of `vec`) and every
intermediate in the scratch buffer (`Shape`), and the load-time stacking of canonical blocks into them
(`device_blocks`). The layer kernel that reads them is kernels/v7.py (its WKV and output gate: kernels/v7_wkv.py).
"""
import dataclasses

import numpy as np
import taichi as ti

from kernels import quant
from kernels.layer_norms import STATS_COLUMNS
from kernels.quant import DENSE, storage_of
from kernels.stacking import LayerGroups, stack_in_groups, upload

# Rows of V7Layers.vec (L, NV, C): every per-channel vector of a layer.
LN1, LN2 = 0, 2  # weight, then bias
MIX = 4  # six rows: the token-shift mixes of r, k, v, w, a, g (the order of the `mixed` buffer's blocks)
MIX_R, MIX_K, MIX_V, MIX_W, MIX_A, MIX_G = range(6)
FFN_MIX = 10
W0, A0, V0, K_K, K_A, LNX, R_K = 11, 12, 13, 14, 15, 16, 18  # LNX: weight, then bias; R_K: (H, N) flattened
NV = 19


@dataclasses.dataclass(frozen=True)
class Shape:
    """A model's sizes and, from them, where each matrix and buffer sits in the packed arrays (compile-time)."""
    C: int
    H: int
    Dw: int
    Da: int
    Dg: int
    Dv: int
    F: int

    @property
    def N(self) -> int:
        return self.C // self.H

    @property
    def D(self) -> int:  # the four low-rank widths together
        return self.Dw + self.Da + self.Dg + self.Dv

    # rows of V7Layers.mats (L, ROWS, C): the matrices that read C inputs; the first Q_ROWS are those spec/quant.md
    # §1 quantizes, then the low-rank first stages (never quantized: in a quantized group they are V7Layers.low)
    @property
    def RKV(self) -> int:
        return 0

    @property
    def OUT(self) -> int:
        return 3 * self.C

    @property
    def FFN_KEY(self) -> int:
        return 4 * self.C

    @property
    def Q_ROWS(self) -> int:
        return 4 * self.C + self.F

    @property
    def FIRST(self) -> int:  # w1, a1, g1, v1 in a dense group's mats (a quantized group's `low` holds them from 0)
        return self.Q_ROWS

    @property
    def ROWS(self) -> int:
        return self.Q_ROWS + self.D

    # columns of the scratch buffer (T, WIDTH)
    @property
    def MIXED(self) -> int:  # six mixed inputs r, k, v, w, a, g; the channel mix's one reuses the first block
        return 0

    @property
    def PROJ(self) -> int:  # r, k (as the WKV uses it: second_stage_task writes it), v, then the first stages' outputs
        return 6 * self.C

    @property
    def LOW(self) -> int:
        return self.PROJ + 3 * self.C

    @property
    def LORA(self) -> int:  # the decay w, the rate a, the gate g, then the v gate's second stage
        return self.LOW + self.D

    @property
    def KK(self) -> int:
        return self.LORA + 4 * self.C

    @property
    def Y(self) -> int:
        return self.KK + self.C

    @property
    def V_FIRST(self) -> int:
        return self.Y + self.C

    @property
    def K_RAW(self) -> int:  # the key projection as it comes out of the matrix (kk and the WKV's k are made from it)
        return self.V_FIRST + self.C

    @property
    def HIDDEN(self) -> int:
        return self.K_RAW + self.C

    @property
    def PARTS(self) -> int:  # the time mix's split low-rank products' partial sums (F columns; gpu_gemm.LOW_RANK)
        return self.HIDDEN  # the channel mix's hidden block, unused until then

    @property
    def SPLITS(self) -> int:  # partial sums of the output and channel-mix products (gpu_gemm's splits, SPLIT_ROOM
        return self.MIXED + 2 * self.C  # columns): mixed blocks 2-5, unused after the projections,
        # and beside the channel mix's input

    @property
    def SPLIT_ROOM(self) -> int:
        return 4 * self.C

    @property
    def STATS(self) -> int:  # a LayerNorm's statistics of each position (layer_norms.row_stats_task): two columns
        return self.HIDDEN + self.F

    @property
    def WIDTH(self) -> int:  # (STATS_COLUMNS: rows of whole 128-byte lines, for the tiled products' staging loads)
        return self.STATS + STATS_COLUMNS


@dataclasses.dataclass
class V7Layers:
    """A group of layers' weights stacked on a leading axis, on the device (few arrays: few kernel arguments);
    kernels/stacking.py groups the layers so each array stays within Taichi's index range.

    `storage` DENSE: mats and ffn_value hold floats, and mats ends with the low-rank rows (low is None).
    A quantized scheme: mats and ffn_value hold u32 rows (kernels/quant.py), and the low-rank rows are `low`."""
    shape: Shape
    vec: object  # (L, NV, C) f32: every per-channel vector
    mats: object  # (L, ROWS or Q_ROWS, C or words): receptance, key, value | output | ffn key | w1, a1, g1, v1
    second: object  # (L, C, D): w2 | a2 | g2 | v2 side by side along the input axis (v2 zero in layer 0)
    ffn_value: object  # (L, C, F or words)
    storage: str = DENSE
    low: object = None  # quantized groups: (L, D, C) w1 | a1 | g1 | v1, dense

    @property
    def n_layer(self) -> int:
        return self.vec.shape[0]


def _vectors(block) -> np.ndarray:
    att, ffn = block.att, block.ffn
    v0 = att.v0 if att.v0 is not None else np.zeros_like(att.w0)
    rows = [block.ln1.weight, block.ln1.bias, block.ln2.weight, block.ln2.bias,
            att.x_r, att.x_k, att.x_v, att.x_w, att.x_a, att.x_g, ffn.mix_k,
            att.w0, att.a0, v0, att.k_k, att.k_a, att.ln_x.weight, att.ln_x.bias, np.ravel(att.r_k)]
    return np.stack(rows).astype(np.float32)


def device_blocks(blocks, matrix_dtype) -> LayerGroups:
    """Canonical v7 blocks -> V7Layers in groups (the load-time stacking; matrices in `matrix_dtype`, vectors f32)."""
    host_dtype = np.float16 if matrix_dtype == ti.f16 else np.float32
    att = blocks[-1].att  # any layer past 0 has v1, v2 (a one-layer model has none: Dv 1, all zeros)
    C = att.w0.shape[0]
    Dv = att.v1.shape[0] if att.v1 is not None else 1
    shape = Shape(C=C, H=att.r_k.shape[0], Dw=att.w1.shape[0], Da=att.a1.shape[0], Dg=att.g1.shape[0], Dv=Dv,
                  F=blocks[0].ffn.key.shape[0])

    def v1(block):
        return block.att.v1 if block.att.v1 is not None else np.zeros((Dv, C), np.float32)

    def v2(block):
        return block.att.v2 if block.att.v2 is not None else np.zeros((C, Dv), np.float32)

    def matrices(per_layer_rows, storage):  # each layer's matrices, their rows one after another
        if storage == DENSE:
            return upload([np.concatenate([np.asarray(m, np.float32) for m in rows]) for rows in per_layer_rows],
                          host_dtype)
        return upload([quant.stack_rows(rows) for rows in per_layer_rows], np.uint32)

    def stack(group, storage) -> V7Layers:
        quantizable = [[b.att.receptance, b.att.key, b.att.value, b.att.output, b.ffn.key] for b in group]
        low = [[b.att.w1, b.att.a1, b.att.g1, v1(b)] for b in group]
        return V7Layers(
            shape=shape,
            vec=upload([_vectors(b) for b in group], np.float32),
            mats=matrices([q + w for q, w in zip(quantizable, low)] if storage == DENSE else quantizable, storage),
            second=upload([np.concatenate([b.att.w2, b.att.a2, b.att.g2, v2(b)], axis=1) for b in group], host_dtype),
            ffn_value=matrices([[b.ffn.value] for b in group], storage),
            storage=storage, low=None if storage == DENSE else matrices(low, DENSE),
        )

    return stack_in_groups(blocks, (NV * C, shape.ROWS * C, C * shape.D, C * shape.F), stack,
                           [storage_of(b.ffn.value) for b in blocks])
