"""RWKV-6's (and RWKV-5's) device layout: where every weight sits in the stacked arrays and every intermediate in the
scratch buffer (`Shape`), and the load-time stacking of canonical blocks into them (`device_blocks`). The layer
kernel that reads them is kernels/v6.py; kernels/v5.py packs v5's weights into the same layout.
"""
import dataclasses

import numpy as np
import taichi as ti

from kernels import quant
from kernels.layer_norms import STATS_COLUMNS
from kernels.quant import DENSE, storage_of
from kernels.stacking import LayerGroups, stack_in_groups, upload

# Blocks of the scratch buffer's mixed inputs, and the matching rows of V6Layers.vec from MIX on. The kernel orders
# the five data-dependent mixes r, k, v, g, w (the reference: w, k, v, r, g) so that mixed block 1 + m feeds
# projection m; `REF_ORDER` permutes the reference's maa_* blocks into this order at load.
MIX_X, MIX_R, MIX_K, MIX_V, MIX_G, MIX_W = range(6)
REF_ORDER = (3, 1, 2, 4, 0)  # the reference's index of r, k, v, g, w in its w, k, v, r, g order

# Rows of V6Layers.vec (L, NV, C): every per-channel vector of a layer.
LN1, LN2 = 0, 2  # weight, then bias
MIX = 4  # six rows: maa_x, then the mixes of r, k, v, g, w (v5: 1 - mix, and no maa_x or w)
FFN_MIX = 10  # two rows: the channel mix's k, then r (v5: 1 - mix)
DECAY = 12  # v6: time_decay, raw (w = exp(-exp(time_decay + LoRA)) per token); v5: the static decay w itself
BONUS = 13  # u, (H, N) flattened
LNX = 14  # weight, then bias
NV = 16


@dataclasses.dataclass(frozen=True)
class Shape:
    """A model's sizes and, from them, where each matrix and buffer sits in the packed arrays (compile-time)."""
    C: int
    H: int
    F: int
    Dm: int  # width of each of the five token-shift LoRAs (0: v5, static mixes)
    Dd: int  # width of the decay LoRA (0: v5, static decay)
    gated: bool  # the output gate silu(x_g W_gᵀ): v6, v5.1, v5.2 (not v5.0)

    @property
    def N(self) -> int:
        return self.C // self.H

    @property
    def data_dependent(self) -> bool:  # v6
        return self.Dm > 0

    # rows of V6Layers.mats (L, ROWS, C): the matrices that read C inputs; the first Q_ROWS are those spec/quant.md
    # §1 quantizes, then the low-rank first stages (never quantized: in a quantized group they are V6Layers.low)
    @property
    def PROJ_ROWS(self) -> int:  # rows 0.. : receptance, key, value, gate (if gated)
        return (4 if self.gated else 3) * self.C

    @property
    def OUT(self) -> int:
        return self.PROJ_ROWS

    @property
    def FFN_KEY(self) -> int:
        return self.OUT + self.C

    @property
    def FFN_RECEPTANCE(self) -> int:
        return self.FFN_KEY + self.F

    @property
    def Q_ROWS(self) -> int:
        return self.FFN_RECEPTANCE + self.C

    # the low-rank rows, from the low-rank base (Q_ROWS in a dense mats; 0 in a quantized group's `low`)
    @property
    def DECAY_FIRST(self) -> int:  # decay_w1 (v6)
        return 0

    @property
    def MAA_FIRST(self) -> int:  # maa_w1's five Dm-row blocks, in the kernel's r, k, v, g, w order (v6)
        return self.Dd

    @property
    def LOW_ROWS(self) -> int:
        return max(self.Dd + 5 * self.Dm, 1)  # v5: one unused row

    @property
    def ROWS(self) -> int:
        return self.Q_ROWS + self.LOW_ROWS

    @property
    def N_PROJ(self) -> int:  # the projections task's rows: r, k, v, gate, then decay_w1's
        return self.PROJ_ROWS + self.Dd

    # columns of V6Layers.second (L, C, SECOND): maa_w2's five blocks (r, k, v, g, w), then decay_w2 (v6)
    @property
    def DECAY_SECOND(self) -> int:
        return 5 * self.Dm

    @property
    def SECOND(self) -> int:
        return max(5 * self.Dm + self.Dd, 1)  # v5: one unused column

    # columns of the scratch buffer (T, WIDTH)
    @property
    def MIXED(self) -> int:  # six blocks: xxx, then x_r, x_k, x_v, x_g, x_w; the channel mix's k, r reuse two
        return 0

    @property
    def DELTA(self) -> int:  # prev - x: written by shift_mix_task right after the six mixed blocks (v6)
        return self.MIXED + 6 * self.C

    @property
    def LORA(self) -> int:  # tanh(xxx W1ᵀ): five Dm-wide blocks r, k, v, g, w (v6)
        return self.DELTA + self.C

    @property
    def PROJ(self) -> int:  # r, k, v, g, then the decay LoRA's first stage (Dd): the projections task's rows
        return self.LORA + 5 * self.Dm

    @property
    def DECAY_LOW(self) -> int:
        return self.PROJ + 4 * self.C

    @property
    def W(self) -> int:  # the per-token decay (v6)
        return self.DECAY_LOW + self.Dd

    @property
    def Y(self) -> int:  # the WKV's output, then (in place) the gated GroupNorm
        return self.W + self.C

    @property
    def FFN_R(self) -> int:
        return self.Y + self.C

    @property
    def HIDDEN(self) -> int:
        return self.FFN_R + self.C

    @property
    def PARTS(self) -> int:  # the time mix's split low-rank products' partial sums (F columns; gpu_gemm.LOW_RANK)
        return self.HIDDEN  # the channel mix's hidden block, unused until then

    @property
    def SPLITS(self) -> int:  # partial sums of the output and channel-mix products (gpu_gemm's splits, SPLIT_ROOM
        return self.MIXED + 2 * self.C  # columns): mixed blocks 2-5, unused after the projections and the decay
        # and beside the channel mix's two inputs

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
class V6Layers:
    """A group of layers' weights stacked on a leading axis, on the device (few arrays: few kernel arguments);
    kernels/stacking.py groups the layers so each array stays within Taichi's index range.

    `storage` DENSE: mats and ffn_value hold floats, and mats ends with the low-rank rows (low is None).
    A quantized scheme: mats and ffn_value hold u32 rows (kernels/quant.py), and the low-rank rows are `low`."""
    shape: Shape
    vec: object  # (L, NV, C) f32: every per-channel vector
    mats: object  # (L, ROWS or Q_ROWS, C or words): receptance, key, value, gate | output | ffn key, receptance | low
    second: object  # (L, C, Shape.SECOND): maa_w2's five blocks, then decay_w2, side by side along the input axis
    ffn_value: object  # (L, C, F or words)
    storage: str = DENSE
    low: object = None  # quantized groups: (L, LOW_ROWS, C) decay_w1 | maa_w1, dense

    @property
    def n_layer(self) -> int:
        return self.vec.shape[0]


def stack_layers(shape: Shape, vectors, quantizable, low, second, ffn_value, matrix_dtype) -> LayerGroups:
    """Per-layer host weights -> V6Layers, in groups of layers of one storage (kernels/stacking.py): vectors (NV, C),
    quantizable (the Q_ROWS rows' matrices in order, float or QuantizedMatrix), low (LOW_ROWS, C), second
    (C, SECOND), ffn_value (C, F) float or QuantizedMatrix."""
    host_dtype = np.float16 if matrix_dtype == ti.f16 else np.float32
    storage = [storage_of(ffn) for ffn in ffn_value]
    per_layer = [len(vectors[0]) * shape.C, shape.ROWS * shape.C, np.size(second[0]), shape.C * shape.F]

    def stack(layers, kind) -> V6Layers:
        def matrices(per_layer_rows):  # each layer's matrices, their rows one after another
            if kind == DENSE:
                return upload([np.concatenate([np.asarray(m, np.float32) for m in rows]) for rows in per_layer_rows],
                              host_dtype)
            return upload([quant.stack_rows(rows) for rows in per_layer_rows], np.uint32)

        q_rows = [quantizable[i] for i in layers]
        low_rows = [np.asarray(low[i], np.float32) for i in layers]
        return V6Layers(shape=shape, vec=upload([vectors[i] for i in layers], np.float32),
                        mats=matrices([[*q, w] for q, w in zip(q_rows, low_rows)] if kind == DENSE else q_rows),
                        second=upload([second[i] for i in layers], host_dtype),
                        ffn_value=matrices([[ffn_value[i]] for i in layers]), storage=kind,
                        low=None if kind == DENSE else upload(low_rows, host_dtype))

    return stack_in_groups(range(len(vectors)), per_layer, stack, storage)


def _vectors(block) -> np.ndarray:
    att, ffn = block.att, block.ffn
    maa = np.asarray(att.maa_wkvrg)[list(REF_ORDER)]  # (5, C) r, k, v, g, w
    rows = [block.ln1.weight, block.ln1.bias, block.ln2.weight, block.ln2.bias, att.maa_x, *maa, ffn.mix_k,
            ffn.mix_r, att.decay, np.ravel(att.bonus), att.ln_x.weight, att.ln_x.bias]
    return np.stack(rows).astype(np.float32)


def _maa_first(att) -> np.ndarray:
    """maa_w1 (5Dm, C), its Dm-row blocks permuted into r, k, v, g, w."""
    blocks = np.asarray(att.maa_w1).reshape(5, -1, att.maa_w1.shape[1])
    return blocks[list(REF_ORDER)].reshape(att.maa_w1.shape)


def _second(att) -> np.ndarray:
    """maa_w2 (5, C, Dm) in r, k, v, g, w order and decay_w2 (C, Dd), side by side: (C, 5Dm + Dd)."""
    maa_w2 = np.asarray(att.maa_w2)[list(REF_ORDER)]
    return np.concatenate([*maa_w2, att.decay_w2], axis=1)


def device_blocks(blocks, matrix_dtype) -> LayerGroups:
    """Canonical v6 blocks -> V6Layers in groups (the load-time stacking; matrices in `matrix_dtype`, vectors f32)."""
    att = blocks[0].att
    shape = Shape(C=att.maa_x.shape[0], H=att.bonus.shape[0], F=blocks[0].ffn.key.shape[0],
                  Dm=att.maa_w2.shape[2], Dd=att.decay_w1.shape[0], gated=True)
    quantizable = [[b.att.receptance, b.att.key, b.att.value, b.att.gate, b.att.output, b.ffn.key, b.ffn.receptance]
                   for b in blocks]
    low = [np.concatenate([b.att.decay_w1, _maa_first(b.att)]) for b in blocks]
    return stack_layers(shape, [_vectors(b) for b in blocks], quantizable, low, [_second(b.att) for b in blocks],
                        [b.ffn.value for b in blocks], matrix_dtype)
