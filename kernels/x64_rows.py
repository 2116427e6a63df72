"""Row dot products on the CPU (arch x64, one thread per row: kernels/lanes.py LANES == 1).

`dot_tile` here is lanes.dot_tile's CPU branch: the same contract (this row's W[layer, o, w_col:w_col+n_in] · X[t0+u,
x_col:x_col+n_in] for the `tile` positions u), written so that LLVM vectorizes the inner loop. Must match
ai00ref.ref.common.linear (a QuantizedMatrix's `dequantize` included) to spec/tolerances.md.
"""
import taichi as ti

from kernels import quant
from kernels.quant import DENSE


@ti.func
def dot_tile(W: ti.template(), layer: ti.i32, o: ti.i32, w_col: ti.i32, X: ti.template(), x_col: ti.i32,
             n_in: ti.i32, t0: ti.i32, T: ti.i32, tile: ti.template(), storage: ti.template()):
    acc = ti.Vector([0.0] * tile)
    if ti.static(storage != DENSE):
        acc = dot_tile_quantized(W, layer, o, X, x_col, n_in, t0, T, tile, storage)
    else:  # one plain dot product per position (LLVM vectorizes it); the row stays in L1
        for u in ti.static(range(tile)):
            if t0 + u < T:
                s = 0.0
                for k in range(n_in):
                    s += ti.cast(W[layer, o, w_col + k], ti.f32) * X[t0 + u, x_col + k]
                acc[u] = s
    return acc


@ti.func
def dot_tile_quantized(W: ti.template(), layer: ti.i32, o: ti.i32, X: ti.template(), x_col: ti.i32, n_in: ti.i32,
                       t0: ti.i32, T: ti.i32, tile: ti.template(), scheme: ti.template()):
    """A quantized row (kernels/quant.py layout, w_col 0): each code dequantized in registers as it is used."""
    acc = ti.Vector([0.0] * tile)
    per_word = ti.static(quant.CODES_PER_WORD[scheme])
    block = ti.static(quant.BLOCK[scheme])
    n_words = (n_in + per_word - 1) // per_word  # words holding real elements (the padding's are skipped)
    scale_at = (n_in + block - 1) // block * block // per_word  # quant.code_words
    for j in range(n_words):
        word, scale = W[layer, o, j], quant.word_scale(W, layer, o, j, scale_at, scheme)
        for e in range(per_word):
            k = j * per_word + e
            if k < n_in:
                w = quant.code_weight(word, e, scale, scheme)
                for u in ti.static(range(tile)):
                    if t0 + u < T:
                        acc[u] += w * X[t0 + u, x_col + k]
    return acc
