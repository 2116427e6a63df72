"""The CPU's code order for quantized rows (kernels/x64_rows.py `cpu_code_order`, spec/kernels.md §7), on the host:
in each group of 128 elements (G words), code slot e of word j holds element e·G + j; the scales are unchanged.
The kernels that read this order are checked against the reference in tests/test_kernels_quant.py (on arch cpu)."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import taichi_arch

taichi_arch.import_taichi()

from ai00ref.weights.quant import SCHEMES, quantize  # noqa: E402
from test_kernels_common_v7 import normal, rng_of, seeds  # noqa: E402

pytestmark = pytest.mark.taichi


def code_at(rows: np.ndarray, scheme: str, word: np.ndarray, slot: np.ndarray) -> np.ndarray:
    """Each row's code in slot `slot` of word `word` (little-endian: Int8 byte `slot`, NF4/SF4 nibble `slot`)."""
    bits = 8 if scheme == "int8" else 4
    return (rows[:, word] >> (bits * slot.astype(np.uint32))) & ((1 << bits) - 1)


@given(scheme=st.sampled_from(SCHEMES), R=st.integers(1, 4), K=st.integers(1, 600), seed=seeds)
def test_cpu_code_order_puts_element_e_g_plus_j_in_slot_e_of_word_j(scheme, R, K, seed):
    from kernels.quant import CODES_PER_WORD, code_words, device_rows
    from kernels.x64_rows import GROUP, cpu_code_order

    q = quantize(normal(rng_of(seed), R, K), scheme)
    natural = device_rows(q)
    ordered = cpu_code_order(natural, scheme, K)
    per_word, n_words = CODES_PER_WORD[scheme], code_words(scheme, K)
    assert ordered.dtype == np.uint32 and ordered.shape == natural.shape
    np.testing.assert_array_equal(ordered[:, n_words:], natural[:, n_words:])  # the scales
    k = np.arange(n_words * per_word)  # every element of the padded row
    start = k // GROUP * GROUP
    G = np.minimum(GROUP, n_words * per_word - start) // per_word  # the group's words
    cpu_word, cpu_slot = start // per_word + (k - start) % G, (k - start) // G
    np.testing.assert_array_equal(code_at(ordered, scheme, cpu_word, cpu_slot),
                                  code_at(natural, scheme, k // per_word, k % per_word))
