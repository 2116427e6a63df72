"""The reference engine's contract and invariants, for every variant (no oracle needed).

- a sequence equals its tokens fed one by one; a batch equals its rows run alone
- forward never mutates the state it is given; copies are independent
- float64 agrees with float32; detection reads every size from names and shapes
"""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from ai00ref.model_info import read_model_info
from ai00ref.ref.model import RefModel
from ai00ref.ref.state import from_official, to_official
from ai00ref.weights.canonical import canonical_weights
from ai00ref.weights.convert import pth_to_st_tensors
from ai00ref.weights.random_model import VARIANTS, RandomModelSpec, random_model_tensors

VOCAB = 64


def make_model(variant: str, dtype: str = "float32", **shape) -> RefModel:
    spec = RandomModelSpec(variant, n_layer=shape.get("n_layer", 2), n_embd=shape.get("n_embd", 32),
                           n_vocab=VOCAB, head_size=shape.get("head_size", 8))
    tensors = pth_to_st_tensors(random_model_tensors(spec))
    info = read_model_info(tensors)
    return RefModel(canonical_weights(tensors, info, dtype=dtype, log_bonus=variant == "v5.0"), dtype)


MODELS = {variant: make_model(variant) for variant in VARIANTS}
token_rows = st.lists(st.integers(0, VOCAB - 1), min_size=1, max_size=6)


@pytest.mark.parametrize("variant", VARIANTS)
def test_info_reads_every_size(variant):
    info = MODELS[variant].info
    # Ai00's converter repeats v5.1's per-head decay to (H, N), which makes it a v5.2 file (spec/v5.md §1)
    expected = "v5.2" if variant == "v5.1" else variant
    assert (info.variant, info.n_layer, info.n_embd, info.n_vocab) == (expected, 2, 32, VOCAB)
    assert info.version == variant[:2]
    assert (info.n_head, info.head_size) == ((1, 32) if variant == "v4" else (4, 8))


@pytest.mark.parametrize("variant", VARIANTS)
@given(tokens=token_rows)
def test_sequence_equals_tokens_one_by_one(variant, tokens):
    model = MODELS[variant]
    whole, whole_state = model.forward([tokens], model.new_state())
    state = model.new_state()
    for token in tokens:
        logits, state = model.forward([[token]], state)
    np.testing.assert_allclose(logits, whole, rtol=1e-5, atol=1e-5)
    for a, b in zip(to_official(state), to_official(whole_state)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("variant", VARIANTS)
@given(rows=st.lists(token_rows, min_size=1, max_size=4))
def test_batch_rows_are_independent(variant, rows):
    model = MODELS[variant]
    batched, state = model.forward(rows, model.new_state(len(rows)))
    assert batched.shape == (len(rows), VOCAB) and batched.dtype == np.float32
    for b, row in enumerate(rows):
        alone, alone_state = model.forward([row], model.new_state())
        np.testing.assert_array_equal(batched[b], alone[0])
        for x, y in zip(to_official(state, b), to_official(alone_state)):
            np.testing.assert_array_equal(x, y)


@pytest.mark.parametrize("variant", VARIANTS)
def test_forward_leaves_its_input_state_alone(variant):
    model = MODELS[variant]
    state = model.new_state(2)
    before = [a.copy() for a in state.arrays().values()]
    _, after = model.forward([[1, 2], [3]], state)
    for a, b in zip(state.arrays().values(), before):
        np.testing.assert_array_equal(a, b)
    copy = after.copy()
    copy.att_x[...] = 7
    assert not np.any(after.att_x == 7)


@pytest.mark.parametrize("variant", VARIANTS)
def test_state_rows_and_concat_continue_identically(variant):
    model = MODELS[variant]
    _, state = model.forward([[1, 2, 3], [4, 5]], model.new_state(2))
    swapped = type(state).concat([state.rows(1), state.rows(0)])
    direct, _ = model.forward([[6], [7]], state)
    crossed, _ = model.forward([[7], [6]], swapped)
    np.testing.assert_array_equal(direct[::-1], crossed)


@pytest.mark.parametrize("variant", VARIANTS)
def test_official_state_layout_round_trips(variant):
    model = MODELS[variant]
    _, state = model.forward([[1, 2, 3]], model.new_state())
    back = from_official(model.info, to_official(state))
    for a, b in zip(back.arrays().values(), state.arrays().values()):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("variant", VARIANTS)
def test_float64_agrees_with_float32(variant):
    m32, m64 = MODELS[variant], make_model(variant, "float64")
    tokens = [[0, 5, 9, 33, 12, 63]]
    l32, _ = m32.forward(tokens, m32.new_state())
    l64, _ = m64.forward(tokens, m64.new_state())
    assert l64.dtype == np.float64
    assert np.linalg.norm(l32 - l64) / np.linalg.norm(l64) < 1e-5


def test_empty_rows_keep_their_state_and_give_zero_logits():
    model = MODELS["v7"]
    state = model.new_state(3)
    _, state = model.forward([[5, 6], [7], [8, 9, 10]], state)
    logits, after = model.forward([[1], [], [2]], state)
    alone, alone_state = model.forward([[1], [2]], state.rows([0, 2]))
    assert not logits[1].any()
    for name, array in after.arrays().items():
        np.testing.assert_array_equal(array[1], state.arrays()[name][1])
        np.testing.assert_array_equal(array[[0, 2]], alone_state.arrays()[name])
    np.testing.assert_array_equal(logits[[0, 2]], alone)


def test_assign_row_overwrites_one_row():
    model = MODELS["v6"]
    _, state = model.forward([[5], [6]], model.new_state(2))
    _, other = model.forward([[9, 9]], model.new_state(1))
    state.assign_row(1, other)
    for name, array in state.arrays().items():
        np.testing.assert_array_equal(array[1], other.arrays()[name][0])
        assert not np.array_equal(array[0], other.arrays()[name][0])


def test_full_output_returns_every_token():
    model = MODELS["v7"]
    full, _ = model.forward([[1, 2, 3], [4]], model.new_state(2), full_output=True)
    last, _ = model.forward([[1, 2, 3], [4]], model.new_state(2))
    assert [f.shape for f in full] == [(3, VOCAB), (1, VOCAB)]
    np.testing.assert_allclose(full[0][-1], last[0], rtol=1e-5, atol=1e-6)  # BLAS rounds (3,C) and (1,C) apart


@pytest.mark.parametrize("tokens, message", [
    ([[1], [2]], "2 token rows for a state of batch 1"),
    ([[]], "every token row is empty"),
    ([[VOCAB]], "outside"),
    ([[-1]], "outside"),
])
def test_bad_tokens_are_refused(tokens, message):
    model = MODELS["v6"]
    with pytest.raises(ValueError, match=message):
        model.forward(tokens, model.new_state(1))
