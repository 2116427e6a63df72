"""The quantization schemes (spec/quant.md): hand-computed cases, the shaders transcribed, tables, packing, bounds."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from ai00ref.weights import quant as Q

WEB_RWKV_NF4 = [-1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453, -0.28444138169288635,
                -0.18477343022823334, -0.09105003625154495, 0.0, 0.07958029955625534, 0.16093020141124725,
                0.24611230194568634, 0.33791524171829224, 0.44070982933044434, 0.5626170039176941,
                0.7229568362236023, 1.0]  # web-rwkv src/tensor/matrix.rs `Float4Quant::new`


# ---- tables ----

def test_nf4_table_is_web_rwkvs():
    np.testing.assert_array_equal(Q.NF4_TABLE, np.array(WEB_RWKV_NF4, np.float32))


def test_student_t_cdf_matches_textbook_quantiles():
    # t-table, 5 degrees of freedom: one-sided 0.25, 0.10, 0.05, 0.025
    t = np.array([0.726687, 1.475884, 2.015048, 2.570582])
    np.testing.assert_allclose(Q.student_t_cdf(t, 5), [0.75, 0.90, 0.95, 0.975], atol=1e-6)
    np.testing.assert_allclose(Q.student_t_quantile(np.array([0.75, 0.975]), 5), t[[0, 3]], atol=2e-6)
    np.testing.assert_allclose(Q.student_t_cdf(np.array([3.182446]), 3), [0.975], atol=1e-6)
    np.testing.assert_allclose(Q.student_t_cdf(np.array([0.3]), 1), [0.5 + np.arctan(0.3) / np.pi])  # Cauchy


def test_sf4_table_against_an_integrated_density():
    """Independent of the closed-form CDF: the t5 density integrated by the trapezoid rule on a fine grid."""
    t = np.linspace(0, 4, 2_000_001)
    density = (8 / (3 * np.pi * np.sqrt(5))) * (1 + t * t / 5) ** -3  # Γ(3)/(√(5π)Γ(5/2)) = 8/(3π√5)
    cdf = 0.5 + np.concatenate([[0], np.cumsum((density[1:] + density[:-1]) / 2 * (t[1] - t[0]))])
    p = Q.sf4_probabilities()
    quantiles = np.sign(p - 0.5) * np.interp(np.maximum(p, 1 - p), cdf, t)
    np.testing.assert_allclose(Q.SF4_TABLE, quantiles / quantiles.max(), atol=1e-6)


def test_sf4_table_shape():
    table = Q.SF4_TABLE
    assert table.dtype == np.float32 and table.shape == (16,)
    assert table[0] == -1 and table[7] == 0 and table[15] == 1 and np.all(np.diff(table) > 0)
    delta = (1 / 32 + 1 / 30) / 2
    np.testing.assert_allclose(Q.sf4_probabilities()[[0, 6, 7, 15]], [delta, delta + 6 * (0.5 - delta) / 7, 0.5,
                                                                      1 - delta])


# ---- Int8 ----

def test_int8_hand_computed():
    q = Q.quantize(np.array([[-1.0, 0.0, 0.5, 1.0]]), "int8")
    # x = (w+1)/2 = 0, .5, .75, 1 -> floor(0.5 + 255x) = 0, 128 (127.5 rounds up), 191 (191.25), 255
    np.testing.assert_array_equal(q.codes[0, :4], [0, 128, 191, 255])
    np.testing.assert_array_equal(q.codes[0, 4:], 0)  # padding to the 128-block
    assert q.codes.shape == (1, 128) and q.scales.shape == (1, 1, 2) and q.scales.dtype == np.float16
    np.testing.assert_array_equal(q.scales[0, 0], [-1, 1])
    np.testing.assert_allclose(q.dequantize(), [[-1, -1 + 256 / 255, -1 + 382 / 255, 1]], rtol=0, atol=1e-7)


def test_int8_min_max_are_rounded_to_fp16_before_use():
    w = np.array([[0.1, 0.3, 0.7]], np.float32)
    q = Q.quantize(w, "int8")
    lo, hi = np.float16(0.1), np.float16(0.7)
    np.testing.assert_array_equal(q.scales[0, 0], [lo, hi])
    x = (w[0] - np.float32(lo)) / (np.float32(hi) - np.float32(lo))
    np.testing.assert_array_equal(q.codes[0, :3], np.floor(0.5 + 255 * np.clip(x, 0, 1)))


def test_int8_constant_and_zero_blocks_are_exact():
    w = np.zeros((2, 256), np.float32)
    w[0, 128:] = 0.25  # block 1 of row 0 constant, every other block zero
    q = Q.quantize(w, "int8")
    assert not q.codes.any()
    np.testing.assert_array_equal(q.dequantize(), w)


# ---- NF4 / SF4 ----

def test_nf4_hand_computed_with_tie_and_packing():
    half_gap = np.float32(Q.NF4_TABLE[8]) / 2  # exactly halfway between codes 7 (0) and 8: the tie goes up
    w = np.array([[1.0, -1.0, 0.5, -0.2, 0.0, half_gap]], np.float32)
    q = Q.quantize(w, "nf4")
    # 0.5: |0.4407-0.5| = 0.0593 < |0.5626-0.5| = 0.0626 -> 12; -0.2: nearest -0.18477 -> 5
    np.testing.assert_array_equal(Q.unpack_nibbles(q.codes)[0, :6], [15, 0, 12, 5, 7, 8])
    np.testing.assert_array_equal(q.codes[0, :3], [0x0F, 0x5C, 0x87])  # element 2j in the low nibble of byte j
    np.testing.assert_array_equal(q.codes[0, 3:], 0x77)  # padding: the zero code
    assert q.codes.shape == (1, 32) and q.scales.shape == (1, 1) and q.scales[0, 0] == 1
    np.testing.assert_array_equal(q.dequantize()[0], Q.NF4_TABLE[[15, 0, 12, 5, 7, 8]])


def test_fp4_absmax_stored_as_fp16_codes_chosen_with_float32():
    w = np.array([[0.1, -0.03, 0.05]], np.float32)  # absmax 0.1 is not exact in fp16
    q = Q.quantize(w, "nf4")
    assert q.scales[0, 0] == np.float16(0.1)
    x = w[0] * (np.float32(1) / np.float32(0.1))
    expected = [np.flatnonzero(np.abs(Q.NF4_TABLE - v) == np.abs(Q.NF4_TABLE - v).min()).max() for v in x]
    np.testing.assert_array_equal(Q.unpack_nibbles(q.codes)[0, :3], expected)
    np.testing.assert_array_equal(q.dequantize(), Q.NF4_TABLE[expected][None] * np.float32(np.float16(0.1)))


@pytest.mark.parametrize("scheme", ["nf4", "sf4"])
def test_fp4_zero_block_and_partial_last_block(scheme):
    w = np.zeros((3, 70), np.float32)  # K = 70: blocks of 64 + 6 real elements, padded to 128
    w[1, 64:] = [1, 2, 3, -4, 5, 6]
    q = Q.quantize(w, scheme)
    assert q.codes.shape == (3, 64) and q.scales.shape == (3, 2)
    np.testing.assert_array_equal(q.scales[:, 0], 0)
    assert q.scales[1, 1] == 6  # the absmax of the 6 real elements only
    np.testing.assert_array_equal(Q.unpack_nibbles(q.codes)[[0, 2]], Q.NF4_ZERO_CODE)
    np.testing.assert_array_equal(Q.unpack_nibbles(q.codes)[1, 70:], Q.NF4_ZERO_CODE)
    assert q.dequantize().shape == (3, 70) and not q.dequantize()[[0, 2]].any()
    assert q.dequantize()[1, 69] == 6


def test_pack_nibbles_round_trip():
    codes = np.random.default_rng(0).integers(0, 16, (5, 64)).astype(np.uint8)
    packed = Q.pack_nibbles(codes)
    np.testing.assert_array_equal(packed, codes[:, 0::2] + 16 * codes[:, 1::2])
    np.testing.assert_array_equal(Q.unpack_nibbles(packed), codes)


# ---- web-rwkv's shaders transcribed element by element (flattened row-major blocks) ----

def shader_int8(flat: np.ndarray):
    codes, minmax = [], []
    for block in flat.reshape(-1, Q.INT8_BLOCK):
        lo, hi = np.float32(np.float16(block.min())), np.float32(np.float16(block.max()))  # pack2x16float
        minmax += [np.float16(lo), np.float16(hi)]
        for v in block:  # saturate((v - m[0]) / (m[1] - m[0])), pack4x8unorm
            codes.append(int(np.floor(0.5 + 255 * min(1, max(0, np.float32(v - lo) / np.float32(hi - lo))))))
    return np.array(codes, np.uint8), np.array(minmax, np.float16)


def shader_fp4(flat: np.ndarray, table: np.ndarray):
    codes, absmax = [], []
    for block in flat.reshape(-1, Q.FP4_BLOCK):
        a = np.float32(np.abs(block).max())
        absmax.append(np.float16(a))  # the f32 absmax is blitted to f16 after quantizing
        for v in block * (np.float32(1) / a):
            min_err, min_index = 1.0, 0
            for j, code in enumerate(table):
                if abs(code - v) <= min_err:
                    min_err, min_index = abs(code - v), j
            codes.append(min_index)
    codes = np.array(codes, np.uint8)
    return codes[0::2] | (codes[1::2] << 4), np.array(absmax, np.float16)


@pytest.mark.parametrize("scheme", Q.SCHEMES)
def test_bytes_equal_web_rwkvs_buffers_when_rows_are_whole_blocks(scheme):
    rng = np.random.default_rng(1)
    w = (rng.standard_normal((3, 256)) * 0.05).astype(np.float16).astype(np.float32)  # Ai00 .st weights are fp16
    q = Q.quantize(w, scheme)
    if scheme == "int8":
        codes, scales = shader_int8(w.reshape(-1))
    else:
        codes, scales = shader_fp4(w.reshape(-1), Q.TABLES[scheme])
    np.testing.assert_array_equal(q.codes.reshape(-1), codes)
    np.testing.assert_array_equal(q.scales.reshape(-1), scales)


# ---- error bounds over random shapes ----

def max_half_gap(table: np.ndarray) -> float:
    return float(np.diff(table).max() / 2)


@given(rows=st.integers(1, 4), cols=st.integers(1, 300), scale=st.sampled_from([1e-3, 0.05, 3.0]),
       seed=st.integers(0, 2**16), scheme=st.sampled_from(Q.SCHEMES))
def test_round_trip_error_bound(rows, cols, scale, seed, scheme):
    w = (np.random.default_rng(seed).standard_normal((rows, cols)) * scale).astype(np.float32)
    q = Q.quantize(w, scheme)
    w_hat = q.dequantize()
    assert w_hat.shape == w.shape and w_hat.dtype == np.float32
    block = Q.INT8_BLOCK if scheme == "int8" else Q.FP4_BLOCK
    values, real = Q.padded_blocks(w, block)
    error = np.abs(Q.padded_blocks(w_hat, block)[0] - values)  # (R, nb, block)
    if scheme == "int8":
        lo, hi = (q.scales[..., i].astype(np.float32)[..., None] for i in (0, 1))
        true_lo = np.where(real, values, np.inf).min(-1, keepdims=True)
        true_hi = np.where(real, values, -np.inf).max(-1, keepdims=True)
        bound = (hi - lo) / 510 + np.maximum(np.abs(lo - true_lo), np.abs(hi - true_hi))
        bound += 4e-7 * np.maximum(np.abs(lo), np.abs(hi))  # float32 roundoff of the affine map
    else:
        absmax = np.abs(values).max(-1, keepdims=True)
        stored = q.scales.astype(np.float32)[..., None]
        bound = absmax * max_half_gap(Q.TABLES[scheme]) + np.abs(stored - absmax) + 4e-7 * absmax
    assert np.all(error[real] <= np.broadcast_to(bound, error.shape)[real])


# ---- input checks and settings ----

@pytest.mark.parametrize("bad", [np.zeros(4), np.zeros((2, 0)), np.array([[np.inf, 1]]), np.array([[7e4, 1]])])
def test_quantize_refuses_what_it_cannot_store(bad):
    with pytest.raises(ValueError):
        Q.quantize(bad, "nf4")


def test_quantize_refuses_unknown_scheme():
    with pytest.raises(ValueError, match="unknown quantization"):
        Q.quantize(np.ones((1, 4)), "q4")


def test_quant_config_accepts_ai00_spellings():
    assert Q.quant_config(4, "NF4") == Q.QuantConfig(4, "nf4")
    assert Q.quant_config(4, "None") is Q.NO_QUANT and Q.quant_config(0, "SF4") is Q.NO_QUANT
    for bad in [(-1, "int8"), (1.5, "int8"), (True, "int8"), (2, "fp8")]:
        with pytest.raises(ValueError):
            Q.quant_config(*bad)


def test_nbytes_counts_codes_and_scales():
    q8, q4 = Q.quantize(np.ones((4, 256)), "int8"), Q.quantize(np.ones((4, 256)), "sf4")
    assert q8.nbytes == 4 * 256 + 4 * 2 * 2 * 2  # one byte per element, an fp16 pair per 128
    assert q4.nbytes == 4 * 128 + 4 * 4 * 2  # half a byte per element, an fp16 per 64
    assert q8.nbytes / (2 * 4 * 256) <= 0.53 and q4.nbytes / (2 * 4 * 256) <= 0.30


@given(seed=st.integers(0, 2**16), scheme=st.sampled_from(["nf4", "sf4"]))
def test_nearest_codes_equals_the_shaders_full_scan(seed, scheme):
    table = Q.TABLES[scheme]
    rng = np.random.default_rng(seed)
    midpoints = (table[1:] + table[:-1]) / 2  # near-ties, and exact ties where the halving is exact
    x = np.concatenate([rng.uniform(-1.05, 1.05, 200), table, midpoints, np.nextafter(midpoints, 2),
                        np.nextafter(midpoints, -2)]).astype(np.float32)
    scan = []
    for v in x:
        min_err, min_index = 1.0, 0
        for j, code in enumerate(table):
            if abs(code - v) <= min_err:
                min_err, min_index = abs(code - v), j
        scan.append(min_index)
    np.testing.assert_array_equal(Q.nearest_codes(x, table), scan)
