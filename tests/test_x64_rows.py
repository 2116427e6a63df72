"""The CPU's own pieces (kernels/x64_rows.py, x64_tasks.py).

- The code orders for quantized rows (`cpu_code_order`, `quant.grouped_code_order`, spec/kernels.md §7), on the host:
  in each group (the CPU's 128 elements, a GPU's one word per lane; G words), code slot e of word j holds element
  e·G + j; the scales are unchanged. The kernels that read this order
  are checked against the reference in tests/test_kernels_quant.py (on arch cpu).
- x64_tasks.linear_task (the v7 layer's output and channel-mix matrices on the CPU) against ref.common.linear, as
  tests/test_kernels_lanes.py checks lanes.linear_task: tile 1 reads its groups in pairs (`x64_rows.dot_pair`), an
  odd count of groups leaving a last pair with one; both tiles spread their groups over the threads.
"""
import functools

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import taichi_arch

ti = taichi_arch.import_taichi()

from kernels.launch import kernel  # noqa: E402  (a test kernel runs on the runtime in use, as the engine's do)

from ai00ref.weights.quant import SCHEMES, quantize  # noqa: E402
from test_kernels_common_v7 import ACTIVATIONS, assert_close, dev, dims, normal, rng_of, seeds  # noqa: E402

pytestmark = pytest.mark.taichi


def code_at(rows: np.ndarray, scheme: str, word: np.ndarray, slot: np.ndarray) -> np.ndarray:
    """Each row's code in slot `slot` of word `word` (little-endian: Int8 byte `slot`, NF4/SF4 nibble `slot`)."""
    bits = 8 if scheme == "int8" else 4
    return (rows[:, word] >> (bits * slot.astype(np.uint32))) & ((1 << bits) - 1)


@given(scheme=st.sampled_from(SCHEMES), R=st.integers(1, 4), K=st.integers(1, 600), seed=seeds,
       lanes=st.sampled_from([None, 4, 8, 16, 32]))
def test_code_order_puts_element_e_g_plus_j_in_slot_e_of_word_j(scheme, R, K, seed, lanes):
    """The CPU's order (lanes None: groups of GROUP elements) and a GPU's (one word per lane in a group)."""
    from kernels.quant import CODES_PER_WORD, code_words, device_rows, grouped_code_order
    from kernels.x64_rows import GROUP, cpu_code_order

    q = quantize(normal(rng_of(seed), R, K), scheme)
    natural = device_rows(q)
    per_word, n_words = CODES_PER_WORD[scheme], code_words(scheme, K)
    group = GROUP if lanes is None else per_word * lanes
    ordered = cpu_code_order(natural, scheme, K) if lanes is None else grouped_code_order(natural, scheme, K, group)
    assert ordered.dtype == np.uint32 and ordered.shape == natural.shape
    np.testing.assert_array_equal(ordered[:, n_words:], natural[:, n_words:])  # the scales
    k = np.arange(n_words * per_word)  # every element of the padded row
    start = k // group * group
    G = np.minimum(group, n_words * per_word - start) // per_word  # the group's words
    word, slot = start // per_word + (k - start) % G, (k - start) // G
    np.testing.assert_array_equal(code_at(ordered, scheme, word, slot),
                                  code_at(natural, scheme, k // per_word, k % per_word))


@pytest.fixture(scope="module")
def started(taichi_arch):
    return taichi_arch


@functools.cache
def x64_linear_runner(act: int, accumulate: bool, tile: int):
    from kernels import x64_tasks

    @kernel
    def run(W: ti.types.ndarray(), layer: ti.i32, w_row: ti.i32, n_out: ti.i32, n_in: ti.i32,
            X: ti.types.ndarray(), x_col: ti.i32, Y: ti.types.ndarray(), y_col: ti.i32):
        x64_tasks.linear_task(W, layer, w_row, n_out, n_in, X, x_col, Y, y_col, act, accumulate, tile)
    return run


@pytest.mark.skipif(taichi_arch.ARCH != "cpu", reason="the x64 backend's own task (kernels/lanes.py LANES == 1)")
@given(T=st.integers(1, 11), n_in=st.one_of(dims, st.sampled_from([31, 32, 33, 300])), n_out=dims,
       offsets=st.tuples(st.integers(0, 3), st.integers(0, 5), st.integers(0, 4)),
       act=st.sampled_from(sorted(ACTIVATIONS)), accumulate=st.booleans(), f16=st.booleans(),
       tile=st.sampled_from([1, 8]), seed=seeds)
def test_x64_linear_task(started, T, n_in, n_out, offsets, act, accumulate, f16, tile, seed):
    """Y[:, y_col:] (+)= act(X[:, x_col:x_col+in] W[1, w_row:w_row+out, :in]ᵀ) vs ref.common.linear."""
    from ai00ref.ref import common as ref

    w_row, x_col, y_col = offsets
    rng = rng_of(seed)
    W = normal(rng, 2, w_row + n_out + 2, n_in + 3, scale=n_in ** -0.5)  # wider than used: the offsets must hold
    if f16:
        W = W.astype(np.float16).astype(np.float32)
    X, Y0 = normal(rng, T, x_col + n_in + 1), normal(rng, T, y_col + n_out + 2)
    code, fn = ACTIVATIONS[act]
    Y = dev(Y0)
    x64_linear_runner(code, accumulate, tile)(dev(W, ti.f16 if f16 else ti.f32), 1, w_row, n_out, n_in, dev(X),
                                              x_col, Y, y_col)
    used_W, used_X = np.float64(W[1, w_row:w_row + n_out, :n_in]), np.float64(X[:, x_col:x_col + n_in])
    s = ref.linear(used_X, used_W)
    terms = np.abs(used_X) @ np.abs(used_W).T * (2 * np.abs(s) if act == "relu_squared" else 1.0)
    expected, all_terms = np.float64(Y0), np.abs(np.float64(Y0))
    expected[:, y_col:y_col + n_out] = fn(s) + (Y0[:, y_col:y_col + n_out] if accumulate else 0)
    all_terms[:, y_col:y_col + n_out] = terms + (np.abs(Y0[:, y_col:y_col + n_out]) if accumulate else 0)
    assert_close(Y.to_numpy(), expected, all_terms)
