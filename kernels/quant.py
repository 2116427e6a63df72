"""Quantized matrices on the device: Int8, NF4 and SF4 rows read directly by the matrix kernels (spec/quant.md §4,
spec/kernels.md §7). Nothing here materializes a float matrix: `word_scale` and `code_weight` dequantize the codes of
one u32 word in registers, and `kernels/lanes.py: dot_tile` multiplies them into its sums.

Device layout of a quantized (R, K) matrix: one u32 array (R, row_words(scheme, K)); row r holds first the row's
codes as little-endian words (Int8: 4 codes a word, byte e = element 4j+e; NF4/SF4: 8 codes a word, nibble e =
element 8j+e), then its block scales (Int8: one word per 128-element block, [lo, hi] as two fp16 halves, lo in the
low half; NF4/SF4: two blocks' fp16 absmax a word, the even block in the low half). That is the bytes of
`QuantizedMatrix.codes` then `.scales`, row by row (an NF4 row with an odd number of blocks gets one zero half).
Codes and scales share one array so that a layer launch takes one array argument per stacked matrix set.

Every product must match ai00ref.ref.common.linear with the QuantizedMatrix (its `dequantize`: quant.dequantize_int8,
quant.dequantize_fp4) to spec/tolerances.md §Quantized.
"""
import dataclasses
import sys
from typing import Sequence

import numpy as np
import taichi as ti

from kernels import arrays
from ai00ref.weights.quant import FP4_BLOCK, INT8_BLOCK, TABLES, QuantizedMatrix

DENSE = "dense"  # a float matrix (f16 or f32, the precision's dtype)
SCHEMES = ("int8", "nf4", "sf4")
CODES_PER_WORD = {"int8": 4, "nf4": 8, "sf4": 8}
BLOCK = {"int8": INT8_BLOCK, "nf4": FP4_BLOCK, "sf4": FP4_BLOCK}
CODE_VALUES = {"int8": [0.0], **{name: [float(v) for v in table] for name, table in TABLES.items()}}


def storage_of(matrix) -> str:
    """DENSE for a float matrix, else the QuantizedMatrix's scheme."""
    return matrix.scheme if isinstance(matrix, QuantizedMatrix) else DENSE


# ---- host side: QuantizedMatrix -> u32 rows ----

def padded_inputs(scheme: str, K: int) -> int:
    """Kp: K rounded up to whole blocks (spec/quant.md §4)."""
    return -(-K // BLOCK[scheme]) * BLOCK[scheme]


def code_words(scheme: str, K: int) -> int:
    """Words of codes at the start of a row; the scales follow."""
    return padded_inputs(scheme, K) // CODES_PER_WORD[scheme]


def row_words(scheme: str, K: int) -> int:
    blocks = padded_inputs(scheme, K) // BLOCK[scheme]
    return code_words(scheme, K) + (blocks if scheme == "int8" else -(-blocks // 2))


def device_rows(matrix: QuantizedMatrix) -> np.ndarray:
    """One matrix's (R, row_words) u32 rows: its codes' bytes, then its scales' bytes (little-endian words)."""
    assert sys.byteorder == "little", "the u32 views below assume a little-endian host, as the GPU"
    R = matrix.shape[0]
    codes = np.ascontiguousarray(matrix.codes).view(np.uint32)  # int8 (R, Kp/4), nf4/sf4 (R, Kp/8)
    scales = np.ascontiguousarray(matrix.scales).reshape(R, -1)  # f16: int8 [lo, hi] pairs, nf4/sf4 absmax
    if scales.shape[1] % 2:
        scales = np.concatenate([scales, np.zeros((R, 1), np.float16)], axis=1)
    return np.concatenate([codes, scales.view(np.uint32)], axis=1)


def stack_rows(matrices: Sequence[QuantizedMatrix]) -> np.ndarray:
    """Matrices of one scheme and one K, their rows one after another: (Σ R, row_words) u32."""
    schemes, inputs = {m.scheme for m in matrices}, {m.shape[1] for m in matrices}
    assert len(schemes) == 1 and len(inputs) == 1, f"one scheme and K per stack, not {schemes}, {inputs}"
    return arch_order(np.concatenate([device_rows(m) for m in matrices]), schemes.pop(), inputs.pop())


def arch_order(rows: np.ndarray, scheme: str, K: int) -> np.ndarray:
    """The rows as the current arch's reader takes them (spec/kernels.md §7): the codes in groups, slot e of a group's
    word j holding element e·G + j of the group (`grouped_code_order`). On the CPU a group is kernels/x64_rows.py's
    GROUP elements (one thread per row: a vectorizable loop over its words); on a GPU it is one word per lane
    (kernels/gpu_rows.py: the lanes read neighbouring inputs)."""
    import kernels
    from kernels import x64_rows

    if kernels.current_arch() == "cpu":
        return x64_rows.cpu_code_order(rows, scheme, K)
    return grouped_code_order(rows, scheme, K, CODES_PER_WORD[scheme] * kernels.lane_count())


def grouped_code_order(rows: np.ndarray, scheme: str, K: int, group: int) -> np.ndarray:
    """(R, row_words) u32 rows in `device_rows`' order -> the scales unchanged; in each group of `group` elements
    (the last may be shorter: a row's padded length need not be a whole number of groups), code slot e of word j
    holds element e·G + j of the group, G the group's words."""
    assert sys.byteorder == "little", "the u32 views below assume a little-endian host, as the device"
    per_word, n_words = CODES_PER_WORD[scheme], code_words(scheme, K)
    R = rows.shape[0]
    as_bytes = np.ascontiguousarray(rows[:, :n_words]).view(np.uint8)  # little-endian words (device_rows)
    if per_word == 4:
        codes = as_bytes  # (R, Kp): element k is byte k
    else:  # element 8j + e is nibble e of word j: byte k // 2, the low nibble first
        codes = np.stack([as_bytes & 0xF, as_bytes >> 4], axis=-1).reshape(R, -1)
    out = np.empty((R, n_words), np.uint32)
    for start in range(0, codes.shape[1], group):
        part = codes[:, start:start + group]
        G = part.shape[1] // per_word
        slots = part.reshape(R, per_word, G).transpose(0, 2, 1)  # [word j, slot e] = element e·G + j
        if per_word == 8:
            slots = slots[..., 0::2] | (slots[..., 1::2] << 4)  # two nibbles a byte, slot 2b in the low one
        out[:, start // per_word:start // per_word + G] = np.ascontiguousarray(slots, np.uint8).view(np.uint32)[..., 0]
    return np.concatenate([out, rows[:, n_words:]], axis=1)


@dataclasses.dataclass(frozen=True)
class QuantizedRows:
    """One quantized matrix on the device, alone (v4's per-operation kernels; v5-v7 stack theirs by layer)."""
    storage: str  # its scheme
    shape: tuple[int, int]  # (R, K) of the dense matrix
    rows: object  # (1, R, row_words) u32 ndarray: a stack of one layer, as lanes.linear_task reads


def upload(matrix: QuantizedMatrix) -> QuantizedRows:
    rows = arch_order(device_rows(matrix), matrix.scheme, matrix.shape[1])[None]
    return QuantizedRows(matrix.scheme, matrix.shape, arrays.upload(rows, ti.u32))


# ---- device side: one word of codes -> its dequantized weights ----

@ti.func
def half_to_f32(bits: ti.u32) -> ti.f32:
    """An fp16 value's 16 bits (the low half of `bits`) -> f32, exactly (every finite half; scales are finite), by
    the device's own conversion: one instruction on a GPU. (Decoding the fields with integer operations, a branch for
    the subnormals and one for the sign, made an Int8 row's two scales a word cost more than its four codes.)"""
    return ti.cast(ti.bit_cast(ti.cast(bits & 0xFFFF, ti.u16), ti.f16), ti.f32)


@ti.func
def code_value(q: ti.u32, scheme: ti.template()) -> ti.f32:
    """NF4/SF4: table[q] for a 4-bit code q, as a tree of selects on its bits over compile-time constants. (A local
    table indexed at run time is an array in each task, which Taichi's SPIR-V code generator fails on as soon as two
    tasks of one kernel read quantized rows: "Value ... does not yet exist".)"""
    table = ti.static(CODE_VALUES[scheme])
    pairs = ti.Vector([0.0] * 8)
    for i in ti.static(range(8)):
        pairs[i] = ti.select(q & 1 == 1, table[2 * i + 1], table[2 * i])
    quads = ti.Vector([0.0] * 4)
    for i in ti.static(range(4)):
        quads[i] = ti.select((q >> 1) & 1 == 1, pairs[2 * i + 1], pairs[2 * i])
    halves = ti.Vector([0.0] * 2)
    for i in ti.static(range(2)):
        halves[i] = ti.select((q >> 2) & 1 == 1, quads[2 * i + 1], quads[2 * i])
    return ti.select((q >> 3) & 1 == 1, halves[1], halves[0])


@ti.func
def block_scale(W: ti.template(), layer: ti.i32, o: ti.i32, scale_at: ti.i32, b: ti.i32,
                scheme: ti.template()) -> ti.math.vec2:
    """The scale of block b of row o, decoded: Int8 (lo, hi - lo); NF4/SF4 (absmax, 0). `scale_at` is the row's
    first scale word (`code_words`)."""
    return decode_scale(W[layer, o, scale_at + scale_word(b, scheme)], b, scheme)


@ti.func
def first_scale_word(n_in: ti.i32, scheme: ti.template()) -> ti.i32:
    """`code_words` on the device: a row's first scale word, after the codes of its padded length."""
    block = ti.static(BLOCK[scheme])
    return (n_in + block - 1) // block * block // ti.static(CODES_PER_WORD[scheme])


@ti.func
def scale_word(b: ti.i32, scheme: ti.template()) -> ti.i32:
    """The scale word of block b, counted from the row's first one: Int8 one word a block, NF4/SF4 two blocks a word."""
    return b if ti.static(scheme == "int8") else b // 2


@ti.func
def decode_scale(word: ti.u32, b: ti.i32, scheme: ti.template()) -> ti.math.vec2:
    """Block b's scale from its `scale_word`: Int8 (lo, hi - lo); NF4/SF4 (absmax, 0)."""
    scale = ti.math.vec2(0.0, 0.0)
    if ti.static(scheme == "int8"):
        lo = half_to_f32(word & 0xFFFF)
        scale = ti.math.vec2(lo, half_to_f32(word >> 16) - lo)
    else:
        scale[0] = half_to_f32((word >> (16 * (b % 2))) & 0xFFFF)
    return scale


@ti.func
def word_scale(W: ti.template(), layer: ti.i32, o: ti.i32, j: ti.i32, scale_at: ti.i32,
               scheme: ti.template()) -> ti.math.vec2:
    """`block_scale` of the block holding word j of row o (in `device_rows`' order)."""
    return block_scale(W, layer, o, scale_at, j // ti.static(BLOCK[scheme] // CODES_PER_WORD[scheme]), scheme)


@ti.func
def code_weight(word: ti.u32, e: ti.i32, scale: ti.math.vec2, scheme: ti.template()) -> ti.f32:
    """Code e of a word, dequantized with its block's `word_scale`. Must match quant.dequantize_int8
    (lo + (hi - lo)·(q/255)) and quant.dequantize_fp4 (table[q]·absmax)."""
    w = 0.0
    if ti.static(scheme == "int8"):
        w = scale[0] + scale[1] * (ti.cast((word >> (8 * e)) & 0xFF, ti.f32) / 255.0)
    else:
        w = code_value((word >> (4 * e)) & 0xF, scheme) * scale[0]
    return w
