"""Row dot products on the CPU (arch x64, one thread per row: kernels/lanes.py LANES == 1).

`dot_tile` here is lanes.dot_tile's CPU branch: the same contract (this row's W[layer, o, w_col:w_col+n_in] · X[t0+u,
x_col:x_col+n_in] for the `tile` positions u), written so that LLVM vectorizes the inner loop: no condition inside it
(positions past T read the last position instead, and emit_tile drops them), and every load in it contiguous. Must
match ai00ref.ref.common.linear (a QuantizedMatrix's `dequantize` included) to spec/tolerances.md.

Quantized rows on the CPU (spec/kernels.md §7): the scales as kernels/quant.py lays them out, but the codes in the
CPU's order (`cpu_code_order`, applied at upload by quant.stack_rows / quant.upload): in each group of GROUP elements
(G words), code slot e of word j holds element e·G + j of the group. Then the loop over a group's words reads the
words and, for each slot e, the inputs x[e·G + j] contiguously, and LLVM vectorizes it across 8 words (in the
web-rwkv order, slot e of word j is element per·j + e: strided inputs, which it gathered one by one). A group is one
Int8 block, or two NF4/SF4 blocks (slots 0-3 and 4-7), so each block's scale is decoded once and factored out of
its sum: Int8 Σ w·x = lo·Σx + (hi − lo)/255·Σ q·x; NF4/SF4 absmax·Σ table[q]·x.
"""
import numpy as np
import taichi as ti

from kernels import quant
from kernels.quant import DENSE

GROUP = 128  # elements per group of the CPU code order: one Int8 block, two NF4/SF4 blocks


@ti.func
def dot_tile(W: ti.template(), layer: ti.i32, o: ti.i32, w_col: ti.i32, X: ti.template(), x_col: ti.i32,
             n_in: ti.i32, t0: ti.i32, T: ti.i32, tile: ti.template(), storage: ti.template()):
    acc = ti.Vector([0.0] * tile)
    rows = ti.Vector([ti.min(t0 + u, T - 1) for u in ti.static(range(tile))])  # past T: the last position again
    if ti.static(storage != DENSE):
        acc = dot_tile_quantized(W, layer, o, X, x_col, n_in, rows, tile, storage)
    else:  # each weight read once for the tile's positions; the tile's inputs stay in L1
        for k in range(n_in):
            w = ti.cast(W[layer, o, w_col + k], ti.f32)
            for u in ti.static(range(tile)):
                acc[u] += w * X[rows[u], x_col + k]
    return acc


@ti.func
def dot_pair(W: ti.template(), layer: ti.i32, o1: ti.i32, t1: ti.i32, o2: ti.i32, t2: ti.i32, X: ti.template(),
             x_col: ti.i32, n_in: ti.i32) -> ti.math.vec2:
    """(W[layer, o1, :n_in] · X[t1, x_col:x_col+n_in], W[layer, o2, :n_in] · X[t2, x_col:x_col+n_in]) in one loop
    (dense rows, one position each): `dot_tile`'s sums at tile 1, two rows' weights streaming at once."""
    a, b = 0.0, 0.0
    for k in range(n_in):
        a += ti.cast(W[layer, o1, k], ti.f32) * X[t1, x_col + k]
        b += ti.cast(W[layer, o2, k], ti.f32) * X[t2, x_col + k]
    return ti.math.vec2(a, b)


@ti.func
def dot_tile_quantized(W: ti.template(), layer: ti.i32, o: ti.i32, X: ti.template(), x_col: ti.i32, n_in: ti.i32,
                       rows: ti.template(), tile: ti.template(), scheme: ti.template()):
    """A quantized row in the CPU's code order (w_col 0): whole groups by `group_dot`, the rest element by element."""
    acc = ti.Vector([0.0] * tile)
    per_word = ti.static(quant.CODES_PER_WORD[scheme])
    G = ti.static(GROUP // per_word)
    scale_at = quant.first_scale_word(n_in, scheme)
    n_groups = n_in // GROUP
    for g in range(n_groups):
        acc += group_dot(W, layer, o, X, x_col, rows, g, scale_at, tile, scheme)
    rest = n_in - n_groups * GROUP  # a last group that is partly padding: element by element, k < n_in
    if rest > 0:
        words = ti.min(G, scale_at - n_groups * G)  # an NF4/SF4 row's last group may hold one block: 8 words
        for i in range(rest):
            k = n_groups * GROUP + i
            word = W[layer, o, n_groups * G + i % words]
            w = quant.code_weight(word, i // words, quant.word_scale(W, layer, o, k // per_word, scale_at, scheme),
                                  scheme)
            for u in ti.static(range(tile)):
                acc[u] += w * X[rows[u], x_col + k]
    return acc


@ti.func
def group_dot(W: ti.template(), layer: ti.i32, o: ti.i32, X: ti.template(), x_col: ti.i32, rows: ti.template(),
              g: ti.i32, scale_at: ti.i32, tile: ti.template(), scheme: ti.template()):
    """Group g's share of the dot products (its scales factored out): one sum per block and position, over the
    group's slots (one sum per slot measured slower at tile 1: more horizontal sums per block)."""
    per_word = ti.static(quant.CODES_PER_WORD[scheme])
    G = ti.static(GROUP // per_word)
    parts = ti.static(1 if scheme == "int8" else 2)  # blocks per group: slots e of part e // (per_word // parts)
    sq = ti.Matrix([[0.0] * tile for _ in ti.static(range(parts))])  # Σ code·x (Int8) or Σ table[code]·x
    sx = ti.Matrix([[0.0] * tile for _ in ti.static(range(parts))])  # Σ x (Int8 only)
    for j in range(G):
        word = W[layer, o, g * G + j]
        for e in ti.static(range(per_word)):
            a = ti.static(e // (per_word // parts))
            if ti.static(scheme == "int8"):
                q = ti.cast((word >> (8 * e)) & 0xFF, ti.f32)
                for u in ti.static(range(tile)):
                    x = X[rows[u], x_col + g * GROUP + e * G + j]
                    sx[a, u] += x
                    sq[a, u] += q * x
            else:
                value = quant.code_value((word >> (4 * e)) & 0xF, scheme)
                for u in ti.static(range(tile)):
                    sq[a, u] += value * X[rows[u], x_col + g * GROUP + e * G + j]
    out = ti.Vector([0.0] * tile)
    pair = W[layer, o, scale_at + g]  # Int8: this block's [lo, hi]; NF4/SF4: blocks 2g, 2g + 1's absmax
    if ti.static(scheme == "int8"):
        lo = quant.half_to_f32(pair & 0xFFFF)
        step = (quant.half_to_f32(pair >> 16) - lo) / 255.0
        for u in ti.static(range(tile)):
            out[u] = lo * sx[0, u] + step * sq[0, u]
    else:
        absmax = ti.Vector([quant.half_to_f32(pair & 0xFFFF), quant.half_to_f32(pair >> 16)])
        for u in ti.static(range(tile)):
            out[u] = absmax[0] * sq[0, u] + absmax[1] * sq[1, u]
    return out


def cpu_code_order(rows: np.ndarray, scheme: str, K: int) -> np.ndarray:
    """(R, row_words) u32 rows in kernels/quant.py's order (device_rows) -> the CPU's: in each group of GROUP elements
    (the last may be shorter: an NF4/SF4 row of an odd number of blocks), code slot e of word j holds element e·G + j
    of the group, G the group's words."""
    return quant.grouped_code_order(rows, scheme, K, GROUP)
