"""Weight quantization as web-rwkv does it: Int8, NF4 and SF4 (spec/quant.md).

    q = quantize(w, "nf4")      # (R, K) float matrix -> QuantizedMatrix: codes + fp16 block scales
    w_hat = q.dequantize()      # (R, K) float32, what every matmul with q multiplies by

R = rows (outputs), K = the input (reduction) dimension. Blocks run along K inside one row: a row of K elements
is padded to Kp = ceil(K / block) * block and cut into Kp / block blocks. When K is a multiple of the block
(every released model) the bytes equal web-rwkv's buffers, which cut the row-major flattened matrix into blocks.
Checked by tests/test_quant.py (hand-computed cases, a literal transcription of the shaders, error bounds).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SCHEMES = ("int8", "nf4", "sf4")
INT8_BLOCK = 128  # web-rwkv INT8_BLOCK_SIZE: elements per (min, max) pair
FP4_BLOCK = 64  # web-rwkv NF4_BLOCK_SIZE: elements per absmax (NF4 and SF4)
FP16_MAX = 65504.0  # the scales are stored as fp16
CHUNK_ELEMENTS = 1 << 22  # the nearest-code search runs over this many elements at a time (bounds temporaries)

# QLoRA's NormalFloat-4 table (bitsandbytes), as web-rwkv `Float4Quant::new` lists it.
NF4_TABLE = np.array([
    -1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453, -0.28444138169288635,
    -0.18477343022823334, -0.09105003625154495, 0.0, 0.07958029955625534, 0.16093020141124725,
    0.24611230194568634, 0.33791524171829224, 0.44070982933044434, 0.5626170039176941, 0.7229568362236023, 1.0,
], dtype=np.float32)
NF4_ZERO_CODE = 7  # NF4_TABLE[7] == SF4 table[7] == 0: the code of padding and of all-zero blocks
SF4_NU = 5.0  # web-rwkv's `Quant::SF4` uses Student's t with 5 degrees of freedom


# ---- the SF4 table: Student-t quantiles (spec/quant.md §3) ----

def student_t_cdf(t: np.ndarray, nu: int) -> np.ndarray:
    """Student's t CDF for odd nu, closed form: 1/2 + (θ + sinθ cosθ Σ_k c_k cos^{2k}θ)/π, θ = atan(t/√nu),
    c_0 = 1, c_k = c_{k-1}·2k/(2k+1), k < (nu-1)/2; no sum for nu = 1 (Abramowitz & Stegun 26.7.3)."""
    if nu % 2 != 1:
        raise ValueError(f"student_t_cdf takes an odd nu, not {nu}")
    theta = np.arctan(np.asarray(t, np.float64) / np.sqrt(nu))
    cos2, term = np.cos(theta) ** 2, np.ones_like(theta)
    series = np.ones_like(theta) if nu > 1 else np.zeros_like(theta)
    for k in range(1, (int(nu) - 1) // 2):
        term = term * cos2 * (2 * k) / (2 * k + 1)
        series = series + term
    return 0.5 + (theta + np.sin(theta) * np.cos(theta) * series) / np.pi


def student_t_quantile(p: np.ndarray, nu: int) -> np.ndarray:
    """The inverse of `student_t_cdf` by bisection to float64 resolution (p in (0, 1)); exactly 0 at p = 1/2."""
    p = np.asarray(p, np.float64)
    low, high = np.full_like(p, -1e3), np.full_like(p, 1e3)
    for _ in range(100):  # 2e3 / 2^100: far below float64 spacing
        mid = (low + high) / 2
        below = student_t_cdf(mid, nu) < p
        low, high = np.where(below, mid, low), np.where(below, high, mid)
    return np.where(p == 0.5, 0.0, (low + high) / 2)


def sf4_probabilities() -> np.ndarray:
    """web-rwkv `quantile_student`: 7 steps from δ up to 0.5 (excluded), 9 from 0.5 to 1-δ; δ = (1/32+1/30)/2."""
    delta = (1 / 32 + 1 / 30) / 2
    lower = delta + (0.5 - delta) / 7 * np.arange(7)  # 7 negative codes
    upper = 0.5 + (1 - delta - 0.5) / 8 * np.arange(9)  # zero and 8 positive codes
    return np.concatenate([lower, upper])


def sf4_table(nu: float = SF4_NU) -> np.ndarray:
    """The 16 SF4 codes: Student-t quantiles of `sf4_probabilities`, divided by the largest, as float32."""
    quantiles = student_t_quantile(sf4_probabilities(), int(nu))
    return (quantiles / quantiles.max()).astype(np.float32)


SF4_TABLE = sf4_table()
TABLES = {"nf4": NF4_TABLE, "sf4": SF4_TABLE}


# ---- the stored form ----

@dataclass(frozen=True, eq=False)
class QuantizedMatrix:
    """A quantized (R, K) matrix in the layout a GPU kernel reads directly (spec/quant.md §4).

    int8:     codes (R, Kp) uint8, one per element;            scales (R, Kp/128, 2) float16: [min, max] per block
    nf4, sf4: codes (R, Kp/2) uint8, element 2j in the low     scales (R, Kp/64) float16: absmax per block
              nibble of byte j, element 2j+1 in the high one
    """
    scheme: str  # one of SCHEMES
    shape: tuple[int, int]  # (R, K) of the dense matrix
    codes: np.ndarray  # uint8, see above
    scales: np.ndarray  # float16, see above

    @property
    def nbytes(self) -> int:
        """Codes plus scales: what the matrix occupies (the fp16 matrix takes 2·R·K)."""
        return self.codes.nbytes + self.scales.nbytes

    def dequantize(self) -> np.ndarray:
        """The (R, K) float32 matrix the codes stand for."""
        if self.scheme == "int8":
            return dequantize_int8(self.codes, self.scales, self.shape[1])
        return dequantize_fp4(self.codes, self.scales, TABLES[self.scheme], self.shape[1])


def quantize(w: np.ndarray, scheme: str) -> QuantizedMatrix:
    """Quantize a 2-D float matrix with one of SCHEMES. Raises ValueError for values fp16 scales cannot hold."""
    if scheme not in SCHEMES:
        raise ValueError(f"unknown quantization {scheme!r}; expected one of {', '.join(SCHEMES)}")
    w = np.asarray(w)
    if w.ndim != 2 or w.shape[1] == 0:
        raise ValueError(f"quantize takes a 2-D matrix with at least one column, not shape {w.shape}")
    if not np.all(np.isfinite(w)) or np.abs(w).max(initial=0) > FP16_MAX:
        raise ValueError(f"cannot quantize values outside fp16's range ±{FP16_MAX:g} (or inf/NaN)")
    if scheme == "int8":
        codes, scales = quantize_int8(w)
    else:
        codes, scales = quantize_fp4(w, TABLES[scheme])
    return QuantizedMatrix(scheme, (int(w.shape[0]), int(w.shape[1])), codes, scales)


def padded_blocks(w: np.ndarray, block: int) -> tuple[np.ndarray, np.ndarray]:
    """(R, K) -> the float32 blocks (R, Kp/block, block), zero-padded, and a mask of the real elements."""
    R, K = w.shape
    Kp = -(-K // block) * block
    values = np.zeros((R, Kp), np.float32)
    values[:, :K] = w
    real = np.zeros((R, Kp), bool)
    real[:, :K] = True
    return values.reshape(R, Kp // block, block), real.reshape(R, Kp // block, block)


# ---- Int8: per-block min and max (quant_mat_int8.wgsl) ----

def quantize_int8(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """q = floor(0.5 + 255·clamp((w - lo) / (hi - lo), 0, 1)) with lo, hi the block's min and max rounded to fp16.

    All in float32, as the shader (pack4x8unorm rounds half up). A block with hi == lo gets q = 0 (the shader
    divides 0 by 0 there). Padding gets q = 0 and is left out of min and max. -> codes (R, Kp), scales (R, nb, 2).
    """
    values, real = padded_blocks(w, INT8_BLOCK)
    lo = np.where(real, values, np.inf).min(axis=-1).astype(np.float16)  # (R, nb)
    hi = np.where(real, values, -np.inf).max(axis=-1).astype(np.float16)  # (R, nb)
    lo32, hi32 = lo.astype(np.float32)[..., None], hi.astype(np.float32)[..., None]
    span = hi32 - lo32  # (R, nb, 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        x = np.clip((values - lo32) / span, 0, 1)
    x = np.where((span > 0) & real, x, 0)
    codes = np.floor(np.float32(0.5) + np.float32(255) * x).astype(np.uint8)
    return codes.reshape(w.shape[0], -1), np.stack([lo, hi], axis=-1)


def dequantize_int8(codes: np.ndarray, scales: np.ndarray, K: int) -> np.ndarray:
    """w = lo + (hi - lo)·q/255 in float32 (the shader fuses it into one fma) -> (R, K)."""
    R, n_blocks = scales.shape[:2]
    lo, hi = (scales[..., i].astype(np.float32)[..., None] for i in (0, 1))  # (R, nb, 1)
    q = codes.reshape(R, n_blocks, INT8_BLOCK).astype(np.float32) / np.float32(255)
    return (lo + (hi - lo) * q).reshape(R, -1)[:, :K]


# ---- NF4 / SF4: per-block absmax and a 16-code table (quant_mat_nf4.wgsl) ----

def nearest_codes(x: np.ndarray, table: np.ndarray) -> np.ndarray:
    """Index of the entry of the sorted table nearest to each x (float32 distances); a tie goes to the higher index,
    as the shader's `if abs(q - x) <= min_err` scan over the whole table in order.

    Only the two entries around x can be nearest (a rounded |t - x| still grows with |t - x|), so instead of 16
    distances per element this compares those two: code `above` = the first entry >= x, and the one below it.
    """
    above = np.clip(np.searchsorted(table, x), 1, len(table) - 1)  # (n,) in 1..15
    below = above - 1
    take_above = np.abs(table[above] - x) <= np.abs(table[below] - x)
    return np.where(take_above, above, below).astype(np.uint8)


def quantize_fp4(w: np.ndarray, table: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """q = the nearest code to w·(1/absmax), absmax = max|w| over the block in float32 (as the shader; the fp16
    absmax is stored only afterwards). An all-zero block and padding get the zero code 7.
    -> codes (R, Kp/2) packed two per byte, scales (R, nb) fp16."""
    values, real = padded_blocks(w, FP4_BLOCK)
    absmax = np.abs(values).max(axis=-1, keepdims=True)  # (R, nb, 1) float32; padding is 0 and never the max
    with np.errstate(divide="ignore"):
        x = values * np.where(absmax > 0, np.float32(1) / absmax, 0).astype(np.float32)  # (R, nb, 64)
    flat = x.reshape(-1)
    codes = np.empty(flat.shape, np.uint8)
    for start in range(0, flat.size, CHUNK_ELEMENTS):
        codes[start:start + CHUNK_ELEMENTS] = nearest_codes(flat[start:start + CHUNK_ELEMENTS], table)
    codes = np.where(real.reshape(-1), codes, NF4_ZERO_CODE).astype(np.uint8)
    return pack_nibbles(codes.reshape(w.shape[0], -1)), absmax[..., 0].astype(np.float16)


def dequantize_fp4(codes: np.ndarray, scales: np.ndarray, table: np.ndarray, K: int) -> np.ndarray:
    """w = table[q]·absmax (the fp16 absmax, in float32) -> (R, K)."""
    R, n_blocks = scales.shape
    q = unpack_nibbles(codes).reshape(R, n_blocks, FP4_BLOCK)
    return (table[q] * scales.astype(np.float32)[..., None]).reshape(R, -1)[:, :K]


def pack_nibbles(codes: np.ndarray) -> np.ndarray:
    """(R, 2n) 4-bit codes -> (R, n) bytes: element 2j in the low nibble of byte j, 2j+1 in the high one."""
    return (codes[:, 0::2] | (codes[:, 1::2] << 4)).astype(np.uint8)


def unpack_nibbles(packed: np.ndarray) -> np.ndarray:
    """(R, n) bytes -> (R, 2n) codes, the inverse of `pack_nibbles`."""
    codes = np.empty((packed.shape[0], 2 * packed.shape[1]), np.uint8)
    codes[:, 0::2], codes[:, 1::2] = packed & 0x0F, packed >> 4
    return codes


# ---- which layers: Ai00's `quant` and `quant_type` ----

@dataclass(frozen=True)
class QuantConfig:
    layers: int = 0  # layers 0..layers-1 get `scheme` (Ai00 `quant`)
    scheme: str = "none"  # "none" or one of SCHEMES (Ai00 `quant_type`, lower case)

    @property
    def active(self) -> bool:
        return self.layers > 0 and self.scheme != "none"


NO_QUANT = QuantConfig()


def quant_config(quant: int = 0, quant_type: str = "int8") -> QuantConfig:
    """Validated settings; Ai00's spellings ("Int8", "NF4", "SF4", "None") are accepted. Inactive -> NO_QUANT."""
    if isinstance(quant, bool) or not isinstance(quant, (int, np.integer)) or quant < 0:
        raise ValueError(f"quant must be a number of layers >= 0, not {quant!r}")
    scheme = str(quant_type).lower()
    if scheme not in SCHEMES + ("none",):
        raise ValueError(f"unknown quant_type {quant_type!r}; expected one of int8, nf4, sf4 (or none)")
    config = QuantConfig(int(quant), scheme)
    return config if config.active else NO_QUANT
